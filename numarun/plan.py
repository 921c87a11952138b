"""The planner: a topology and a job spec in, an exact placement out. Pure and deterministic.

:func:`plan_job` turns a :class:`~numarun.spec.JobSpec` into a :class:`Plan`: for every
process group its workers, each with a home node, a sorted list of CPUs, a memory policy and
its expanded command. :func:`plan_slots` places N anonymous workers ("slots", MPI ranks) over
the machine with the same rules. Nothing here reads files or touches the system: the same
inputs always give the same plan, which is what lets ``numarun plan`` preview a launch.

The rules (each one tested against every machine in ``../shared/topologies``):

* **Usable CPUs** are online, allowed by the cpuset/cgroup, and not in ``reserve_cpus``.
  A physical core is the set of its usable SMT siblings; its *first thread* is the lowest.
* **smt** ``"avoid"``: at most one thread (the first) per physical core. ``"allow"``: whole
  cores for ``cpus_per_worker = "all"``; for a count, siblings are used only once every
  core of the worker's share already has a thread ("fill cores, then siblings").
* **workers = "per-node"**: one worker per selected node that has usable CPUs.
* **workers = "per-socket"**: one worker per package, over the selected nodes in it.
* **workers = N**, N >= node count: workers go to nodes in proportion to their usable
  capacity (cores with smt = avoid, threads with allow) by the largest-remainder method, so
  each node gets the floor or the ceiling of its exact share; within a node, cores are split
  into contiguous, balanced runs. Two workers share a core only when there are more workers
  than cores (then every core is used first). N < node count: each worker takes a group of
  nodes, the nearest ones by distance from the lowest free node, sized to its share.
* A worker's CPUs are within one node except in those multi-node groups and per-socket.
* **Memory**: ``local`` means the worker's own nodes that have memory, or the nearest node
  with memory when they have none (memory-less CPU nodes); ``all`` every allowed node with
  memory; ``local+cpuless`` adds the nearest CPU-less memory node (CXL, HBM).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from numarun.cpulist import format_list
from numarun.errors import NotAllowedError, NumarunError, UnsuitableError
from numarun.mempolicy import NODELESS_MODES, MemoryPolicy
from numarun.topology import Topology
from numarun.value import Value

# The prefix launcher's --per-rank plans every rank of the host before it execs, so this
# module keeps dataclasses, typing, re and pydantic (the spec) off its import path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from numarun.spec import JobSpec, ProcessSpec
    from numarun.supervisor.policy import Supervision

Core = tuple[int, ...]  # one physical core: its usable threads, ascending

_PLACEHOLDER = r"(?<!\$)\{(node|worker|cpus|mem_nodes|name)\}"


class Placement(Value):
    """Where one worker (or MPI rank) runs: CPUs, home node, memory policy."""

    index: int
    node: int  # home node: the worker's node, or the first of its group
    nodes: tuple[int, ...]  # every node its CPUs are on, ascending
    cpus: tuple[int, ...]  # ascending
    cores: int  # physical cores those CPUs are on
    memory: MemoryPolicy


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


class _Context:
    """What a placement error or warning needs to say where it comes from."""

    def __init__(self, where: Callable[[str], str], label: str = "") -> None:
        self.where = where  # (key) -> "file:line: process[i].key"
        self.label = label
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        if message not in self.warnings:  # once per group, however many workers trip it
            self.warnings.append(message)


class _NoFitError(Exception):
    pass


# --- the pool: usable cores per node ---------------------------------------------------------


def node_cores(topology: Topology, node: int, exclude: Iterable[int] = ()) -> list[Core]:
    """The usable physical cores of ``node`` (minus ``exclude``), by lowest thread."""
    usable = topology.usable_cpus(node).difference(exclude)
    groups: dict[int, list[int]] = {}
    for cpu in sorted(usable):
        core = topology.cpus[cpu].core
        # A CPU without core information is a core of its own.
        groups.setdefault(core if core is not None else -1 - cpu, []).append(cpu)
    return sorted((tuple(g) for g in groups.values()), key=lambda g: g[0])


def _units(cores: Sequence[Core], smt: str) -> int:
    return len(cores) if smt == "avoid" else sum(len(c) for c in cores)


def _take(cores: Sequence[Core], want: int | None, smt: str) -> list[int]:
    """CPUs for one worker from its cores: first threads of every core, then second ones."""
    if smt == "avoid":
        pool = [c[0] for c in cores]
    else:
        depth = max((len(c) for c in cores), default=0)
        pool = [c[i] for i in range(depth) for c in cores if i < len(c)]
    if want is None:
        return sorted(pool)
    if want > len(pool):
        raise _NoFitError
    return sorted(pool[:want])


def _balanced(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` sizes differing by at most one, larger first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _split_node(
    cores: Sequence[Core], count: int, want: int | None, smt: str
) -> tuple[list[list[int]], bool]:
    """CPUs for ``count`` workers on one node's cores; True when some of them share a core."""
    n = len(cores)
    if want is not None and count * want <= n:
        # Enough cores for one thread per CPU asked: each worker gets its own cores.
        return [_take(cores[i * want : (i + 1) * want], want, smt) for i in range(count)], False
    if count <= n and (want is None or smt == "allow"):
        out, start = [], 0
        for size in _balanced(n, count):
            out.append(_take(cores[start : start + size], want, smt))
            start += size
        return out, False
    if want is not None:
        raise _NoFitError
    # More workers than cores: every core (or thread) is used before any is shared.
    threads = [t for c in cores for t in (c if smt == "allow" else c[:1])]
    if count <= len(threads):
        out, start = [], 0
        for size in _balanced(len(threads), count):
            out.append(threads[start : start + size])
            start += size
        return out, True
    return [[threads[i * len(threads) // count]] for i in range(count)], True


def _apportion(count: int, weights: Sequence[int], caps: Sequence[int] | None = None) -> list[int]:
    """``count`` split in proportion to ``weights`` by largest remainder, within ``caps``."""
    total = sum(weights)
    shares = [count * w // total for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(count * weights[i] % total), i))
    for i in order[: count - sum(shares)]:
        shares[i] += 1
    if caps is not None:
        spill = 0
        for i, cap in enumerate(caps):
            if shares[i] > cap:
                spill += shares[i] - cap
                shares[i] = cap
        # Excess goes where most room is left, relative to size; ties to lower positions.
        while spill:
            room = [i for i in range(len(caps)) if shares[i] < caps[i]]
            best = max(room, key=lambda i: ((caps[i] - shares[i]) / caps[i], -i))
            shares[best] += 1
            spill -= 1
    return shares


def _group_nodes(
    topology: Topology, nodes: list[int], weights: dict[int, int], count: int
) -> list[list[int]]:
    """``count`` groups of nearby nodes, as even in weight as nearness allows.

    Agglomerative: every node starts as its own group, and the two groups whose farthest
    members are nearest merge, the lighter pair first on a tie, until ``count`` are left.
    (A greedy sweep from node 0 paired nodes 1 and 2 at distance 22 on a machine whose
    near pairs are 0-1 and 2-3 at 16.)
    """
    groups = [[n] for n in nodes]
    while len(groups) > count:
        best: tuple[int, int, int, int, int] | None = None
        for i, first in enumerate(groups):
            for j in range(i + 1, len(groups)):
                second = groups[j]
                span = max(topology.distance(a, b) for a in first for b in second)
                weight = sum(weights[n] for n in first + second)
                key = (span, weight, min(first + second), i, j)
                if best is None or key < best:
                    best = key
        assert best is not None
        i, j = best[3], best[4]
        groups[i] = sorted(groups[i] + groups[j])
        del groups[j]
    return sorted(groups)


# --- memory ------------------------------------------------------------------------------


def _memory(
    topology: Topology,
    *,
    mode: str,
    word: str | None,
    home: int,
    worker_nodes: Sequence[int],
    ctx: _Context,
) -> MemoryPolicy:
    if mode in NODELESS_MODES:
        return MemoryPolicy(mode)
    key = "memory_nodes" if word is not None else "policy"
    if word is None:
        word = "all" if mode in ("interleave", "weighted-interleave") else "local"
    mems = topology.nodes_with_memory()
    if not mems:
        raise UnsuitableError(
            f"{ctx.where(key)}: no node with memory is allowed to this process",
            f"check the cpuset's mems ({topology.allowed.source})",
        )
    nodes: list[int]
    if word == "all":
        nodes = mems
    elif word in ("local", "local+cpuless"):
        nodes = [n for n in worker_nodes if n in mems]
        if not nodes:
            nearest = topology.nearest(home, mems)[0]
            ctx.warn(
                f"{ctx.label}: node {home} has no usable memory; worker memory goes to the "
                f"nearest node with memory, {nearest}"
            )
            nodes = [nearest]
        if word == "local+cpuless":
            cpuless = [n for n in mems if not topology.nodes[n].cpus]
            if cpuless:
                nodes.append(topology.nearest(home, cpuless)[0])
            else:
                ctx.warn(
                    f"{ctx.label}: memory_nodes = local+cpuless but no CPU-less memory node "
                    "is allowed; using local"
                )
    else:
        nodes = sorted(_resolve_nodes(topology, word, ctx.where("memory_nodes"), memory=True))
    if mode == "preferred" and len(nodes) > 1:
        if word not in ("local", "local+cpuless"):
            raise UnsuitableError(
                f"{ctx.where(key)}: mode preferred takes one node but memory_nodes names "
                f"{format_list(nodes)}",
                'use policy = "preferred-many", or name one node',
            )
        nodes = [topology.nearest(home, nodes)[0]]
    return MemoryPolicy(mode, nodes)


def _resolve_nodes(topology: Topology, text: str, where: str, *, memory: bool) -> frozenset[int]:
    """A node spec against the machine: CPU nodes (memory=False) or memory nodes."""
    from numarun.nodespec import parse_spec, resolve

    allowed = frozenset(topology.nodes_with_memory() if memory else topology.nodes_with_cpus())
    try:
        spec = parse_spec(text, option=where)
    except NumarunError as err:
        raise type(err)(err.problem, err.fix) from None
    named = resolve(spec, existing=frozenset(topology.nodes), allowed=allowed, option=where)
    for node in sorted(named - allowed):
        raise _unusable_node(topology, node, where, memory=memory)
    if not named:
        raise UnsuitableError(f"{where}: {text!r} names no usable node", "name other nodes")
    return named


def _unusable_node(topology: Topology, node: int, where: str, *, memory: bool) -> NumarunError:
    info = topology.nodes[node]
    if memory:
        if not info.has_memory:
            return UnsuitableError(
                f"{where}: node {node} has no memory",
                "nodes with memory are "
                + format_list(topology.nodes_with_memory(allowed_only=False)),
            )
        return NotAllowedError(
            f"{where}: node {node}'s memory is not allowed to this process",
            f"allowed memory nodes are {format_list(topology.allowed.mems)} "
            f"({topology.allowed.source})",
        )
    if not info.cpus:
        return UnsuitableError(
            f"{where}: node {node} has no CPUs (a memory-only node)",
            f"nodes with usable CPUs are {format_list(topology.nodes_with_cpus()) or 'none'}",
        )
    if not topology.has_cpus(node):
        return UnsuitableError(
            f"{where}: every CPU of node {node} is offline",
            f"nodes with usable CPUs are {format_list(topology.nodes_with_cpus()) or 'none'}",
        )
    return NotAllowedError(
        f"{where}: node {node}'s CPUs are not allowed to this process",
        f"allowed nodes are {format_list(topology.nodes_with_cpus()) or 'none'} "
        f"({topology.allowed.source})",
    )


# --- placing workers -----------------------------------------------------------------------


def _pool(
    topology: Topology, nodes: Iterable[int], reserve: Iterable[int], ctx: _Context
) -> dict[int, list[Core]]:
    reserved = frozenset(reserve)
    out: dict[int, list[Core]] = {}
    for node in sorted(nodes):
        cores = node_cores(topology, node, reserved)
        if cores:
            out[node] = cores
        else:
            ctx.warn(f"{ctx.label}: every usable CPU of node {node} is reserved")
    if not out:
        raise UnsuitableError(
            f"{ctx.where('reserve_cpus')}: reserve_cpus leaves no CPU to run on",
            "reserve fewer CPUs",
        )
    return out


def _place(
    topology: Topology,
    pool: dict[int, list[Core]],
    *,
    workers: str | int,
    want: int | None,
    smt: str,
    ctx: _Context,
) -> list[tuple[int, list[int], list[int]]]:
    """(home node, nodes, CPUs) per worker."""
    out: list[tuple[int, list[int], list[int]]] = []
    shared = False
    if workers == "per-node":
        for node, cores in pool.items():
            try:
                cpus, _ = _split_node(cores, 1, want, smt)
            except _NoFitError:
                raise _too_many(want=want, node=node, cores=cores, smt=smt, ctx=ctx) from None
            out.append((node, [node], cpus[0]))
        return out
    if workers == "per-socket":
        return _per_socket(topology, pool, want, smt, ctx)
    assert isinstance(workers, int)
    nodes = list(pool)
    weights = {n: _units(pool[n], smt) for n in nodes}
    if want is None and workers < len(nodes):
        for group in _group_nodes(topology, nodes, weights, workers):
            cores = [c for n in topology.nearest(group[0], group) for c in pool[n]]
            out.append((group[0], group, _take(cores, None, smt)))
        return out
    caps = None
    if want is not None:
        caps = [weights[n] // want for n in nodes]
        if sum(caps) < workers:
            raise _workers_do_not_fit(pool, workers=workers, want=want, smt=smt, ctx=ctx)
    counts = _apportion(workers, [weights[n] for n in nodes], caps)
    for node, count in zip(nodes, counts, strict=True):
        if not count:
            continue
        try:
            per_worker, sharing = _split_node(pool[node], count, want, smt)
        except _NoFitError:
            assert want is not None  # only a CPU count can fail to fit
            raise _workers_do_not_fit(pool, workers=workers, want=want, smt=smt, ctx=ctx) from None
        shared = shared or sharing
        out.extend((node, [node], cpus) for cpus in per_worker)
    idle = [n for n, c in zip(nodes, counts, strict=True) if not c]
    if idle:
        ctx.warn(
            f"{ctx.label}: node{'s' if len(idle) > 1 else ''} {format_list(idle)} "
            f"left idle: {workers} workers spread in proportion to usable CPUs"
        )
    if shared:
        total = sum(weights.values())
        ctx.warn(
            f"{ctx.label}: {workers} workers on {total} "
            f"{'cores' if smt == 'avoid' else 'hardware threads'}: some workers share "
            + ("cores (as SMT siblings)" if smt == "allow" else "CPUs")
        )
    return out


def _per_socket(
    topology: Topology, pool: dict[int, list[Core]], want: int | None, smt: str, ctx: _Context
) -> list[tuple[int, list[int], list[int]]]:
    packages: dict[object, dict[int, list[Core]]] = {}
    for node, cores in pool.items():
        for core in cores:
            package = topology.cpus[core[0]].package
            key: object = package if package is not None else ("node", node)
            packages.setdefault(key, {}).setdefault(node, []).append(core)
    out = []
    for _key, by_node in sorted(packages.items(), key=lambda kv: min(kv[1])):
        # Home: the node holding most of the package's capacity, ties to the lower id.
        home = max(by_node, key=lambda n: (_units(by_node[n], smt), -n))
        cores = [c for n in topology.nearest(home, by_node) for c in by_node[n]]
        try:
            cpus = _take(cores, want, smt)
        except _NoFitError:
            raise _too_many(
                want=want, node=home, cores=cores, smt=smt, ctx=ctx, what="socket of node"
            ) from None
        out.append((home, sorted(by_node), cpus))
    return out


def _too_many(
    *,
    want: int | None,
    node: int,
    cores: Sequence[Core],
    smt: str,
    ctx: _Context,
    what: str = "node",
) -> UnsuitableError:
    threads = sum(len(c) for c in cores)
    if smt == "avoid":
        have = f"{len(cores)} usable CPUs with smt = avoid ({threads} with smt = allow)"
        fix = f'lower cpus_per_worker to {len(cores)} or set smt = "allow"'
        if threads <= len(cores):
            have, fix = f"{len(cores)} usable CPUs", f"lower cpus_per_worker to {len(cores)}"
    else:
        have, fix = f"{threads} usable CPUs", f"lower cpus_per_worker to {threads}"
    return UnsuitableError(
        f"{ctx.where('cpus_per_worker')}: cpus_per_worker = {want} but {what} {node} has {have}",
        fix,
    )


def _workers_do_not_fit(
    pool: dict[int, list[Core]],
    *,
    workers: int,
    want: int,
    smt: str,
    ctx: _Context,
) -> UnsuitableError:
    fits = sum(_units(c, smt) // want for c in pool.values())
    allow = sum(_units(c, "allow") // want for c in pool.values())
    more = f" ({allow} with smt = allow)" if smt == "avoid" and allow > fits else ""
    return UnsuitableError(
        f"{ctx.where('workers')}: {workers} workers of {want} CPUs each do not fit: nodes "
        f"{format_list(pool)} hold {fits} such workers{more}, each within one node",
        "lower workers or cpus_per_worker" + (', or set smt = "allow"' if more else ""),
    )


# --- templating ------------------------------------------------------------------------------


def expand(text: str, values: dict[str, str]) -> str:
    """Replace ``{node}``, ``{worker}``, ``{cpus}``, ``{mem_nodes}``, ``{name}`` in ``text``.

    Other braces are left as they are (``${HOME}``, ``{print $1}``), so shell code and JSON
    arguments pass through untouched.
    """
    import re  # here, not at the top: see TYPE_CHECKING above

    return re.sub(_PLACEHOLDER, lambda m: values[m.group(1)], text)


# --- the public entry points -------------------------------------------------------------


def plan_slots(
    topology: Topology,
    count: int,
    *,
    smt: str = "avoid",
    cpus_per_slot: int | None = None,
    nodes: Iterable[int] | None = None,
    reserve: Iterable[int] = (),
    policy: str = "bind",
    memory_nodes: str | None = None,
    warnings: list[str] | None = None,
) -> tuple[Placement, ...]:
    """Place ``count`` workers (MPI ranks, say) over the machine; see the module's rules.

    ``cpus_per_slot`` None gives each slot its share of its node; ``nodes`` None means every
    node with usable CPUs. ``policy`` is a memory policy mode (presets are resolved by the
    caller, see :func:`numarun.presets.find_preset`). Warnings are appended to ``warnings``.
    """
    # mempolicy's spelling table, not presets' (the same one): presets loads tomllib, and
    # numarun --per-rank reaches this on the prefix launcher's start-up path.
    from numarun.mempolicy import canonical_mode

    if count < 1:
        raise UnsuitableError(f"cannot place {count} slots", "ask for at least one")
    try:
        mode = canonical_mode(policy)
    except ValueError:
        raise UnsuitableError(
            f"unknown memory policy mode {policy!r}", "use bind, interleave, ..."
        ) from None
    ctx = _Context(where=lambda key: key, label="slots")
    chosen = sorted(nodes) if nodes is not None else topology.nodes_with_cpus()
    for node in chosen:
        if node not in topology.nodes or not topology.usable_cpus(node):
            if node not in topology.nodes:
                raise UnsuitableError(
                    f"node {node} does not exist", f"nodes are {format_list(topology.nodes)}"
                )
            raise _unusable_node(topology, node, "nodes", memory=False)
    pool = _pool(topology, chosen, reserve, ctx)
    placed = _place(topology, pool, workers=count, want=cpus_per_slot, smt=smt, ctx=ctx)
    out = tuple(
        _placement(
            topology,
            index=i,
            home=home,
            group=group,
            cpus=cpus,
            mode=mode,
            word=memory_nodes,
            ctx=ctx,
        )
        for i, (home, group, cpus) in enumerate(placed)
    )
    if warnings is not None:
        warnings.extend(ctx.warnings)
    return out


def _placement(
    topology: Topology,
    *,
    index: int,
    home: int,
    group: list[int],
    cpus: list[int],
    mode: str,
    word: str | None,
    ctx: _Context,
) -> Placement:
    cpu_nodes = sorted({n for c in cpus if (n := topology.cpus[c].node) is not None})
    return Placement(
        index=index,
        node=home,
        nodes=tuple(cpu_nodes or group),
        cpus=tuple(cpus),
        cores=len(topology.cores_of(cpus)),
        memory=_memory(topology, mode=mode, word=word, home=home, worker_nodes=group, ctx=ctx),
    )


def plan_process(
    topology: Topology, group: ProcessSpec, index: int = 0, spec: JobSpec | None = None
) -> tuple[ProcessPlan, list[str]]:
    """Plan one process group; returns its plan and its warnings."""

    def where(key: str) -> str:
        return spec.where(index, key) if spec is not None else f"process[{index}].{key}"

    ctx = _Context(where=where, label=f"process {group.name!r}")
    if group.nodes.strip().lower() == "all":
        chosen: Iterable[int] = topology.nodes_with_cpus()
    else:
        chosen = _resolve_nodes(topology, group.nodes, where("nodes"), memory=False)
    pool = _pool(topology, chosen, group.reserve_cpus, ctx)
    want = None if group.cpus_per_worker == "all" else int(group.cpus_per_worker)
    placed = _place(topology, pool, workers=group.workers, want=want, smt=group.smt, ctx=ctx)
    workers = []
    for i, (home, nodes, cpus) in enumerate(placed):
        slot = _placement(
            topology,
            index=i,
            home=home,
            group=nodes,
            cpus=cpus,
            mode=group.mode,
            word=group.memory_nodes,
            ctx=ctx,
        )
        workers.append(_worker(group, slot))
    plan = ProcessPlan(
        name=group.name,
        workers=tuple(workers),
        smt=group.smt,
        policy=group.policy,
        preset=group.preset,
        supervision=group.supervision,
    )
    return plan, ctx.warnings


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
    processes: list[ProcessPlan] = []
    warnings: list[str] = []
    for index, group in enumerate(spec.processes):
        plan, found = plan_process(topology, group, index, spec)
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
    """Process groups that would run on the same CPUs."""
    used = [frozenset(c for w in p.workers for c in w.cpus) for p in processes]
    out = []
    for i in range(len(processes)):
        for j in range(i + 1, len(processes)):
            common = used[i] & used[j]
            if common:
                out.append(
                    f"processes {processes[i].name!r} and {processes[j].name!r} share CPUs "
                    f"{format_list(common)}; give them different nodes or cpus_per_worker"
                )
    return out
