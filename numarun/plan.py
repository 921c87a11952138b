"""The planner: a topology and a job spec in, an exact placement out. Pure and deterministic.

:func:`plan_job` turns a :class:`~numarun.spec.JobSpec` into a :class:`Plan`: for every
process group its workers, each with a home node, a sorted list of CPUs, a memory policy and
its expanded command. Nothing here reads files or touches the system: the same
inputs always give the same plan, which is what lets ``numarun plan`` preview a launch.

The planner is a short composition over the placement engine (:mod:`numarun.placement`):
the pool of usable cores (inherited affinity, less ``reserve_cpus``), the workers placed on it
(:mod:`numarun.placement.slots`, whose docstring has the rules) and each one's memory policy
(:func:`numarun.placement.resolve.policy_nodes`). What is left here is the job's own part:
commands, environment, templating and the supervision settings each worker carries.
"""

from __future__ import annotations

from numarun import refusals
from numarun.cpulist import format_list
from numarun.mempolicy import NODELESS_MODES, MemoryPolicy
from numarun.topology import Topology
from numarun.value import Value

# The prefix launcher's --per-rank plans every rank of the host before it execs, so this
# module keeps dataclasses, typing, re and pydantic (the spec) off its import path.
#: Past this many pairs of process groups sharing CPUs, one summary line says it.
MAX_OVERLAP_LINES = 3

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from numarun.nodespec import Spec
    from numarun.placement.bounds import Bounds
    from numarun.placement.slots import Placement
    from numarun.spec import JobSpec, ProcessSpec
    from numarun.supervisor.policy import Supervision

_PLACEHOLDER = r"(?<!\$)\{(node|worker|cpus|mem_nodes|name)\}"


class WorkerPlan(Value):
    """One worker of a process group, ready to launch."""

    name: str  # the process group's name
    index: int  # 0-based within the group
    node: int
    nodes: tuple[int, ...]
    cpus: tuple[int, ...]
    cores: int
    memory: MemoryPolicy
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None
    log: str | None  # None: inherit numarun's stdout/stderr
    stdin: str  # "null", "inherit" or a path

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "node": self.node,
            "nodes": list(self.nodes),
            "cpus": list(self.cpus),
            "cpu_list": format_list(self.cpus),
            "cores": self.cores,
            "memory": {"mode": self.memory.mode, "nodes": sorted(self.memory.nodes)},
            "argv": list(self.argv),
            "env": dict(self.env),
            "cwd": self.cwd,
            "log": self.log,
            "stdin": self.stdin,
        }


class ProcessPlan(Value):
    """A process group's workers and what the supervisor does with them."""

    name: str
    workers: tuple[WorkerPlan, ...]
    smt: str
    policy: str  # as written: a mode or a preset name
    preset: str | None
    supervision: Supervision  # restarts and stopping, as the spec validated them

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "policy": self.policy,
            "preset": self.preset,
            "smt": self.smt,
            "supervision": self.supervision.to_dict(),
            "workers": [w.to_dict() for w in self.workers],
        }


class Plan(Value):
    """The whole job: every process group's workers, and what deserves a second look."""

    processes: tuple[ProcessPlan, ...]
    warnings: tuple[str, ...] = ()
    topology: str = ""  # where the topology came from
    spec: str | None = None  # the spec file

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "topology": self.topology,
            "processes": [p.to_dict() for p in self.processes],
            "warnings": list(self.warnings),
        }


# --- templating ------------------------------------------------------------------------------


def expand(text: str, values: dict[str, str]) -> str:
    """Replace ``{node}``, ``{worker}``, ``{cpus}``, ``{mem_nodes}``, ``{name}`` in ``text``.

    Other braces are left as they are (``${HOME}``, ``{print $1}``), so shell code and JSON
    arguments pass through untouched.
    """
    import re  # here, not at the top: see TYPE_CHECKING above

    return re.sub(_PLACEHOLDER, lambda m: values[m.group(1)], text)


# --- the public entry points -------------------------------------------------------------


def plan_process(
    topology: Topology,
    group: ProcessSpec,
    index: int = 0,
    spec: JobSpec | None = None,
    bounds: Bounds | None = None,
) -> tuple[ProcessPlan, list[str]]:
    """Plan one process group; returns its plan and its warnings.

    Workers are numarun's own choice, so they stay within the inherited CPU affinity
    (``bounds.inherited``), less ``reserve_cpus``.
    """
    from numarun.placement import resolve
    from numarun.placement.bounds import bounds_of
    from numarun.placement.slots import Context, place, placements, pool_of

    def where(key: str) -> str:
        return spec.where(index, key) if spec is not None else f"process[{index}].{key}"

    ctx = Context(where=where, label=f"process {group.name!r}")
    limits = bounds if bounds is not None else bounds_of(topology)
    if group.nodes.strip().lower() == "all":
        chosen = resolve.nodes_with_cpus(topology, limits.inherited)
    else:
        nodes = resolve.device_spec(
            _spec(group.nodes, where("nodes")), where("nodes"), topology, limits.inherited,
            reasons=[], warn=ctx.warn,
        )  # fmt: skip
        chosen, _ = resolve.cpu_nodes(nodes, where("nodes"), topology, limits, limits.inherited)
    pool = pool_of(topology, chosen, limits.inherited - group.reserve_cpus, ctx)
    want = None if group.cpus_per_worker == "all" else int(group.cpus_per_worker)
    placed = place(topology, pool, workers=group.workers, want=want, smt=group.smt, ctx=ctx)
    word, named = group.memory_nodes, None
    key = where("memory_nodes")
    if word is not None and group.mode in NODELESS_MODES:
        raise refusals.nodeless_with_nodes(key, group.mode, f"memory_nodes = {word!r}")
    if word is not None and word not in resolve.MEMORY_WORDS:
        memory = resolve.device_spec(
            _spec(word, key), key, topology, limits.inherited, reasons=[], warn=ctx.warn
        )
        named, word = resolve.named_memory_nodes(memory, key, topology, limits), None
    slots = placements(topology, limits, placed, mode=group.mode, word=word, named=named, ctx=ctx)
    plan = ProcessPlan(
        name=group.name,
        workers=tuple(_worker(group, slot) for slot in slots),
        smt=group.smt,
        policy=group.policy,
        preset=group.preset,
        supervision=group.supervision,
    )
    return plan, ctx.warnings


def _spec(text: str, where: str) -> Spec:
    from numarun.nodespec import parse_spec

    return parse_spec(text, option=where)


def _worker(group: ProcessSpec, slot: Placement) -> WorkerPlan:
    values = {
        "node": str(slot.node),
        "worker": str(slot.index),
        "cpus": format_list(slot.cpus),
        # default/local name no nodes: the worker's own nodes are where its memory goes.
        "mem_nodes": format_list(slot.memory.nodes or slot.nodes),
        "name": group.name,
    }
    if isinstance(group.command, str):
        argv: tuple[str, ...] = ("/bin/sh", "-c", expand(group.command, values))
    else:
        argv = tuple(expand(arg, values) for arg in group.command)
    return WorkerPlan(
        name=group.name,
        index=slot.index,
        node=slot.node,
        nodes=slot.nodes,
        cpus=slot.cpus,
        cores=slot.cores,
        memory=slot.memory,
        argv=argv,
        env={k: expand(v, values) for k, v in group.env.items()},
        cwd=expand(group.cwd, values) if group.cwd is not None else None,
        log=None if group.logs == "inherit" else expand(group.logs, values),
        stdin=group.stdin if group.stdin in ("null", "inherit") else expand(group.stdin, values),
    )


def plan_job(topology: Topology, spec: JobSpec) -> Plan:
    """Plan every process group of ``spec`` on ``topology``."""
    from numarun.placement.bounds import bounds_of

    limits = bounds_of(topology)
    processes: list[ProcessPlan] = []
    warnings: list[str] = []
    for index, group in enumerate(spec.processes):
        plan, found = plan_process(topology, group, index, spec, limits)
        processes.append(plan)
        warnings.extend(found)
    warnings.extend(_overlaps(processes))
    return Plan(
        processes=tuple(processes),
        warnings=tuple(warnings),
        topology=topology.source,
        spec=spec.path,
    )


def _overlaps(processes: Sequence[ProcessPlan]) -> list[str]:
    """Process groups that would run on the same CPUs: one line a pair, or one in all.

    Many groups on one machine (a group per shard, say) would give a line for every pair;
    past a few pairs one summary line says the same without burying the other warnings.
    """
    used = [frozenset(c for w in p.workers for c in w.cpus) for p in processes]
    pairs = []
    for i in range(len(processes)):
        for j in range(i + 1, len(processes)):
            common = used[i] & used[j]
            if common:
                pairs.append((processes[i].name, processes[j].name, common))
    if len(pairs) > MAX_OVERLAP_LINES:
        shared = frozenset().union(*(common for _a, _b, common in pairs))
        names = sorted({n for a, b, _c in pairs for n in (a, b)})
        return [
            f"{len(pairs)} pairs of the {len(names)} processes {', '.join(map(repr, names))} "
            f"share CPUs (CPUs {format_list(shared)}); give them different nodes or "
            "cpus_per_worker"
        ]
    return [
        f"processes {a!r} and {b!r} share CPUs {format_list(common)}; give them different "
        "nodes or cpus_per_worker"
        for a, b, common in pairs
    ]
