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
    from collections.abc import Callable, Sequence
    from typing import Any

    from numarun.nodespec import Spec
    from numarun.placement.bounds import Bounds
    from numarun.placement.slots import Context, Placement
    from numarun.spec import JobSpec, ProcessSpec
    from numarun.supervisor.policy import Supervision
    from numarun.supervisor.watchpolicy import Watch
    from numarun.topology import Device

_PLACEHOLDER = r"(?<!\$)\{(node|worker|cpus|mem_nodes|name|gpu)\}"


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
    device: str | None = None  # the device it is placed near: "gpu 0 (0000:41:00.0)"
    gpu: int | None = None  # its GPU (workers = "per-gpu")

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "node": self.node,
            "device": self.device,
            "gpu": self.gpu,
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


class PlanWeights(Value):
    """The weighted-interleave weights a job runs under: those in force, and the job's own.

    ``job`` is what the job's ``weights`` would write (None: it sets none, or cannot here);
    the weights its workers interleave by are ``in_force`` with ``job`` written over them.
    """

    asked: str | None = None  # the job's weights = "..." as written
    auto: bool | None = None  # the kernel derives them itself (Linux 6.16+)
    in_force: dict[int, int] = {}  # noqa: RUF012 - node -> weight; empty before Linux 6.9
    job: dict[int, int] | None = None

    def effective(self) -> dict[int, int]:
        return {**self.in_force, **(self.job or {})}

    def shares(self, nodes: Sequence[int]) -> dict[int, float]:
        """Each node's expected share of a weighted interleave over ``nodes`` (w / sum w)."""
        from numarun.weights import shares

        weights = self.effective()
        return shares({n: weights.get(n, 1) for n in sorted(nodes)})

    def to_dict(self) -> dict[str, Any]:
        def keyed(weights: dict[int, int] | None) -> dict[str, int] | None:
            return None if weights is None else {str(n): w for n, w in sorted(weights.items())}

        return {
            "asked": self.asked,
            "auto": self.auto,
            "in_force": keyed(self.in_force),
            "job": keyed(self.job),
        }


class Plan(Value):
    """The whole job: every process group's workers, and what deserves a second look."""

    processes: tuple[ProcessPlan, ...]
    warnings: tuple[str, ...] = ()
    topology: str = ""  # where the topology came from
    spec: str | None = None  # the spec file
    weights: PlanWeights | None = None  # None: no weighted interleave asked for anywhere
    watch: Watch | None = None  # the spec's [watch] table: what the supervisor samples

    def to_dict(self) -> dict[str, Any]:
        processes = [p.to_dict() for p in self.processes]
        for process, data in zip(self.processes, processes, strict=True):
            for worker, out in zip(process.workers, data["workers"], strict=True):
                out["shares"] = self.shares_of(worker)
        return {
            "spec": self.spec,
            "topology": self.topology,
            "weights": self.weights.to_dict() if self.weights is not None else None,
            "processes": processes,
            "watch": self.watch.to_dict() if self.watch is not None else None,
            "warnings": list(self.warnings),
        }

    def shares_of(self, worker: WorkerPlan) -> dict[str, float] | None:
        """A weighted-interleave worker's expected share per node (rounded), else None."""
        if worker.memory.mode != "weighted-interleave" or self.weights is None:
            return None
        found = self.weights.shares(sorted(worker.memory.nodes))
        return {str(n): round(share, 4) for n, share in found.items()}


def plan_weights(
    topology: Topology, asked: str | None, processes: Sequence[ProcessPlan]
) -> tuple[PlanWeights | None, list[str]]:
    """The weights a job would run under, and why it could not set its own (warnings).

    None when the job sets no weights and no worker interleaves by weight.
    """
    from numarun.errors import NumarunError
    from numarun.weights import wanted_on

    weighted = any(w.memory.mode == "weighted-interleave" for p in processes for w in p.workers)
    if asked is None and not weighted:
        return None, []
    found = topology.weighted_interleave
    in_force = dict(found.weights) if found is not None else {}
    auto = found.auto if found is not None else None
    if asked is None:
        return PlanWeights(auto=auto, in_force=in_force), []
    try:
        job = wanted_on(asked, topology)
    except NumarunError as err:
        warning = f"numarun run would refuse: weights = {asked!r}: {err.message}"
        return PlanWeights(asked=asked, auto=auto, in_force=in_force), [warning]
    return PlanWeights(asked=asked, auto=auto, in_force=in_force, job=job), []


# --- templating ------------------------------------------------------------------------------


def expand(text: str, values: dict[str, str]) -> str:
    """Replace ``{node}``, ``{worker}``, ``{cpus}``, ``{mem_nodes}``, ``{name}``, ``{gpu}``.

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
    from numarun.placement.slots import Context, per_gpu, place, placements, pool_of

    def where(key: str) -> str:
        return spec.where(index, key) if spec is not None else f"process[{index}].{key}"

    ctx = Context(where=where, label=f"process {group.name!r}")
    limits = bounds if bounds is not None else bounds_of(topology)
    chosen, near = _chosen_nodes(topology, group, where, limits, ctx)
    pool = pool_of(topology, chosen, limits.inherited - group.reserve_cpus, ctx)
    want = None if group.cpus_per_worker == "all" else int(group.cpus_per_worker)
    devices: list[Device | None]
    if group.workers == "per-gpu":
        placed, gpus = per_gpu(topology, pool, want=want, smt=group.smt, limits=limits, ctx=ctx)
        devices = list(gpus)
    else:
        placed = place(topology, pool, workers=group.workers, want=want, smt=group.smt, ctx=ctx)
        devices = [near] * len(placed)
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
        workers=tuple(
            _worker(group, slot, device, topology)
            for slot, device in zip(slots, devices, strict=True)
        ),
        smt=group.smt,
        policy=group.policy,
        preset=group.preset,
        supervision=group.supervision,
    )
    return plan, ctx.warnings


def _chosen_nodes(
    topology: Topology,
    group: ProcessSpec,
    where: Callable[[str], str],
    limits: Bounds,
    ctx: Context,
) -> tuple[list[int], Device | None]:
    """The nodes a group's workers go on: ``near``'s device's node, or ``nodes``."""
    from numarun.placement import resolve

    if group.near is not None:
        key = where("near")
        device = resolve.find_device(topology, _spec(group.near, key).device or "", key)
        node, warning = resolve.device_node(
            topology, device, f"{key} {group.near}", limits.inherited
        )
        if warning is not None:
            ctx.warn(warning)
        nodes, _ = resolve.cpu_nodes(_spec(str(node), key), key, topology, limits, limits.inherited)
        return nodes, device
    if group.nodes.strip().lower() == "all":
        return resolve.nodes_with_cpus(topology, limits.inherited), None
    key = where("nodes")
    spec = resolve.device_spec(
        _spec(group.nodes, key), key, topology, limits.inherited, reasons=[], warn=ctx.warn
    )
    return resolve.cpu_nodes(spec, key, topology, limits, limits.inherited)[0], None


def _spec(text: str, where: str) -> Spec:
    from numarun.nodespec import parse_spec

    return parse_spec(text, option=where)


def _worker(
    group: ProcessSpec, slot: Placement, device: Device | None, topology: Topology
) -> WorkerPlan:
    gpu = device.gpu if device is not None and group.workers == "per-gpu" else None
    values = {
        "gpu": str(gpu) if gpu is not None else "",
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
        env=_env(group, values, device, topology, gpu=gpu is not None),
        cwd=expand(group.cwd, values) if group.cwd is not None else None,
        log=None if group.logs == "inherit" else expand(group.logs, values),
        stdin=group.stdin if group.stdin in ("null", "inherit") else expand(group.stdin, values),
        device=device.label() if device is not None else None,
        gpu=gpu,
    )


def _env(
    group: ProcessSpec,
    values: dict[str, str],
    device: Device | None,
    topology: Topology,
    *,
    gpu: bool,
) -> dict[str, str]:
    """The group's environment, expanded; unless it sets them, a per-gpu worker's visible
    devices, and for a worker near a device the device (:func:`resolve.device_env`)."""
    from numarun.placement.resolve import device_env, visible_devices

    env = {k: expand(v, values) for k, v in group.env.items()}
    if device is not None:
        given = {**(visible_devices(topology, device) if gpu else {}), **device_env(device)}
        for name, value in given.items():
            env.setdefault(name, value)
    return env


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
        watch=spec.watch,
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
