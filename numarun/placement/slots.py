"""N workers over a pool of cores, each with its CPUs, its home node and its memory policy.

The rules (each tested against every machine in ``../shared/topologies``):

* **workers = "per-node"**: one worker per node of the pool.
* **workers = "per-socket"**: one worker per package, over the pool's nodes in it.
* **workers = N**, N >= node count: workers go to nodes in proportion to their capacity
  (cores with smt = avoid, threads with allow) by the largest-remainder method; within a
  node, cores are split into contiguous, balanced runs. Two workers share a core only when
  there are more workers than cores. N < node count: each worker takes a group of nearby
  nodes (:func:`~numarun.placement.cores.group_nodes`).
* A worker's CPUs are within one node except in those multi-node groups and per-socket.
* **Memory**: :func:`~numarun.placement.resolve.policy_nodes`, one rule for every front end.
"""

from __future__ import annotations

from numarun import refusals
from numarun.cpulist import format_list
from numarun.errors import UnsuitableError
from numarun.mempolicy import NODELESS_MODES, MemoryPolicy
from numarun.placement import cores as _cores
from numarun.placement.resolve import policy_nodes
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from numarun.placement.bounds import Bounds
    from numarun.placement.cores import Core
    from numarun.topology import Device, Topology


class Placement(Value):
    """Where one worker (or MPI rank) runs: CPUs, home node, memory policy."""

    index: int
    node: int  # home node: the worker's node, or the first of its group
    nodes: tuple[int, ...]  # every node its CPUs are on, ascending
    cpus: tuple[int, ...]  # ascending
    cores: int  # physical cores those CPUs are on
    memory: MemoryPolicy


class Context:
    """Where a placement's refusals and warnings come from, and the warnings so far."""

    __slots__ = ("label", "warnings", "where")

    def __init__(self, where: Callable[[str], str], label: str) -> None:
        self.where = where  # key -> "file:line: process[i].key", or the option's name
        self.label = label  # "process 'redis'", "ranks"
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        text = f"{self.label}: {message}"
        if text not in self.warnings:  # once per group, however many workers trip it
            self.warnings.append(text)


def pool_of(
    topology: Topology, nodes: Iterable[int], usable: frozenset[int], ctx: Context
) -> dict[int, list[Core]]:
    """The cores of ``nodes`` within ``usable``; refuses when none is left."""
    by_node = _cores.cores_by_node(topology, usable)
    out: dict[int, list[Core]] = {}
    for node in sorted(nodes):
        if by_node.get(node):
            out[node] = by_node[node]
        else:
            ctx.warn(f"every usable CPU of node {node} is reserved")
    if not out:
        raise refusals.no_cpus(ctx.where("reserve_cpus"), usable)
    return out


def place(
    topology: Topology,
    pool: dict[int, list[Core]],
    *,
    workers: str | int,
    want: int | None,
    smt: str,
    ctx: Context,
) -> list[tuple[int, list[int], list[int]]]:
    """(home node, nodes, CPUs) per worker."""
    if workers == "per-node":
        out = []
        for node, node_cores in pool.items():
            try:
                cpus, _ = _cores.split_node(node_cores, 1, want, smt)
            except _cores.NoFitError:
                raise _too_many(want, node, node_cores, smt, ctx) from None
            out.append((node, [node], cpus[0]))
        return out
    if workers == "per-socket":
        return _per_socket(topology, pool, want, smt, ctx)
    assert isinstance(workers, int)
    nodes = list(pool)
    weights = {n: _cores.units(pool[n], smt) for n in nodes}
    if want is None and workers < len(nodes):
        out = []
        for group in _cores.group_nodes(topology, nodes, weights, workers):
            group_cores = [c for n in topology.nearest(group[0], group) for c in pool[n]]
            out.append((group[0], group, _cores.take(group_cores, None, smt)))
        return out
    return _spread(pool, workers=workers, want=want, smt=smt, ctx=ctx, weights=weights)


def _spread(
    pool: dict[int, list[Core]],
    *,
    workers: int,
    want: int | None,
    smt: str,
    ctx: Context,
    weights: dict[int, int],
) -> list[tuple[int, list[int], list[int]]]:
    """``workers`` >= nodes (or a CPU count): in proportion to capacity, node by node."""
    nodes = list(pool)
    caps = None
    if want is not None:
        caps = [weights[n] // want for n in nodes]
        if sum(caps) < workers:
            raise _do_not_fit(pool, workers, want, smt, ctx)
    counts = _cores.apportion(workers, [weights[n] for n in nodes], caps)
    out: list[tuple[int, list[int], list[int]]] = []
    shared = False
    for node, count in zip(nodes, counts, strict=True):
        if not count:
            continue
        try:
            per_worker, sharing = _cores.split_node(pool[node], count, want, smt)
        except _cores.NoFitError:
            assert want is not None  # only a CPU count can fail to fit
            raise _do_not_fit(pool, workers, want, smt, ctx) from None
        shared = shared or sharing
        out.extend((node, [node], cpus) for cpus in per_worker)
    idle = [n for n, c in zip(nodes, counts, strict=True) if not c]
    if idle:
        ctx.warn(
            f"node{'s' if len(idle) > 1 else ''} {format_list(idle)} left idle: {workers} "
            "workers spread in proportion to usable CPUs"
        )
    if shared:
        total = sum(weights.values())
        ctx.warn(
            f"{workers} workers on {total} {'cores' if smt == 'avoid' else 'hardware threads'}: "
            "some workers share " + ("cores (as SMT siblings)" if smt == "allow" else "CPUs")
        )
    return out


def _per_socket(
    topology: Topology, pool: dict[int, list[Core]], want: int | None, smt: str, ctx: Context
) -> list[tuple[int, list[int], list[int]]]:
    packages: dict[object, dict[int, list[Core]]] = {}
    for node, node_cores in pool.items():
        for core in node_cores:
            package = topology.cpus[core[0]].package
            key: object = package if package is not None else ("node", node)
            packages.setdefault(key, {}).setdefault(node, []).append(core)
    out = []
    for _key, by_node in sorted(packages.items(), key=lambda kv: min(kv[1])):
        # Home: the node holding most of the package's capacity, ties to the lower id.
        home = max(by_node, key=lambda n: (_cores.units(by_node[n], smt), -n))
        package_cores = [c for n in topology.nearest(home, by_node) for c in by_node[n]]
        try:
            cpus = _cores.take(package_cores, want, smt)
        except _cores.NoFitError:
            raise _too_many(want, home, package_cores, smt, ctx, what="socket of node") from None
        out.append((home, sorted(by_node), cpus))
    return out


def _too_many(
    want: int | None,
    node: int,
    node_cores: list[Core],
    smt: str,
    ctx: Context,
    *,
    what: str = "node",
) -> UnsuitableError:
    threads = sum(len(c) for c in node_cores)
    if smt == "avoid":
        have = f"{len(node_cores)} usable CPUs with smt = avoid ({threads} with smt = allow)"
        fix = f'lower cpus_per_worker to {len(node_cores)} or set smt = "allow"'
        if threads <= len(node_cores):
            have = f"{len(node_cores)} usable CPUs"
            fix = f"lower cpus_per_worker to {len(node_cores)}"
    else:
        have, fix = f"{threads} usable CPUs", f"lower cpus_per_worker to {threads}"
    return UnsuitableError(
        f"{ctx.where('cpus_per_worker')}: cpus_per_worker = {want} but {what} {node} has {have}",
        fix,
    )


def _do_not_fit(
    pool: dict[int, list[Core]], workers: int, want: int, smt: str, ctx: Context
) -> UnsuitableError:
    fits = sum(_cores.units(c, smt) // want for c in pool.values())
    allow = sum(_cores.units(c, "allow") // want for c in pool.values())
    more = f" ({allow} with smt = allow)" if smt == "avoid" and allow > fits else ""
    return UnsuitableError(
        f"{ctx.where('workers')}: {workers} workers of {want} CPUs each do not fit: nodes "
        f"{format_list(pool)} hold {fits} such workers{more}, each within one node",
        "lower workers or cpus_per_worker" + (', or set smt = "allow"' if more else ""),
    )


def per_gpu(
    topology: Topology,
    pool: dict[int, list[Core]],
    *,
    want: int | None,
    smt: str,
    limits: Bounds,
    ctx: Context,
    asked: str = 'workers = "per-gpu"',
) -> tuple[list[tuple[int, list[int], list[int]]], list[Device]]:
    """One worker (or rank) per GPU on the GPU's node, by GPU index; the node's cores split
    evenly between its GPUs (the SMT rule kept). A GPU on a node without CPUs goes to the
    nearest node with CPUs, with one warning. ``asked`` names the request in refusals."""
    from numarun.placement import resolve

    gpus = topology.gpus()
    if not gpus:
        raise refusals.no_gpus(ctx.where("workers"), asked=asked)
    by_node: dict[int, list[Device]] = {}
    for gpu in gpus:
        node, warning = resolve.device_node(topology, gpu, ctx.where("workers"), limits.inherited)
        if warning is not None:
            ctx.warn(warning)
        if node in pool:  # GPUs on nodes the group does not use are not its workers
            by_node.setdefault(node, []).append(gpu)
    if not by_node:
        raise refusals.no_gpus(ctx.where("workers"), nodes=list(pool), asked=asked)
    pairs: list[tuple[Device, tuple[int, list[int], list[int]]]] = []
    for node, here in sorted(by_node.items()):
        placed = place(topology, {node: pool[node]}, workers=len(here), want=want, smt=smt, ctx=ctx)
        pairs.extend(zip(here, placed, strict=True))
    pairs.sort(key=lambda pair: pair[0].gpu or 0)
    return [p for _d, p in pairs], [d for d, _p in pairs]


def placements(
    topology: Topology,
    bounds: Bounds,
    placed: list[tuple[int, list[int], list[int]]],
    *,
    mode: str,
    word: str | None,
    named: frozenset[int] | None,
    ctx: Context,
) -> tuple[Placement, ...]:
    """Each placed worker with its memory policy: ``named`` nodes, or ``word``'s rule."""
    out = []
    key = "memory_nodes" if word is not None or named is not None else "policy"
    for index, (home, group, cpus) in enumerate(placed):
        if mode in NODELESS_MODES:
            memory = MemoryPolicy(mode)
        else:
            if named is not None:
                nodes = sorted(named)
                if mode == "preferred" and len(nodes) > 1:
                    raise refusals.preferred_several(ctx.where(key), nodes)
            else:
                nodes = policy_nodes(
                    topology,
                    bounds,
                    mode=mode,
                    word=word,
                    home=home,
                    worker_nodes=group,
                    where=ctx.where(key),
                    warn=ctx.warn,
                )
            memory = MemoryPolicy(mode, nodes)
        cpu_nodes = sorted({n for c in cpus if (n := topology.cpus[c].node) is not None})
        out.append(
            Placement(
                index=index,
                node=home,
                nodes=tuple(cpu_nodes or group),
                cpus=tuple(cpus),
                cores=len(topology.cores_of(cpus)),
                memory=memory,
            )
        )
    return tuple(out)


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
    usable: frozenset[int] | None = None,
    bounds: Bounds | None = None,
) -> tuple[Placement, ...]:
    """Place ``count`` slots (MPI ranks, say) over the machine; see the module's rules.

    ``usable`` (default: the inherited affinity) is the CPUs to place on, less ``reserve``;
    ``cpus_per_slot`` None gives each slot its share of its node; ``nodes`` None means every
    node with usable CPUs. ``policy`` is a memory policy mode (presets are resolved by the
    caller); ``memory_nodes`` a memory word. Warnings are appended to ``warnings``.
    """
    from numarun.mempolicy import canonical_mode
    from numarun.placement.bounds import bounds_of
    from numarun.placement.resolve import nodes_with_cpus

    if count < 1:
        raise UnsuitableError(f"cannot place {count} slots", "ask for at least one")
    try:
        mode = canonical_mode(policy)
    except ValueError:
        raise UnsuitableError(
            f"unknown memory policy mode {policy!r}", "use bind, interleave, ..."
        ) from None
    limits = bounds if bounds is not None else bounds_of(topology)
    pool_cpus = (limits.inherited if usable is None else usable) - frozenset(reserve)
    ctx = Context(where=lambda key: key, label="slots")
    with_cpus = nodes_with_cpus(topology, pool_cpus)
    chosen = sorted(nodes) if nodes is not None else with_cpus
    for node in chosen:
        if node not in topology.nodes:
            raise refusals.unknown("nodes", "node", [node], topology.nodes)
        if node not in with_cpus:
            raise refusals.cpuless("nodes", node, with_cpus)
    pool = pool_of(topology, chosen, pool_cpus, ctx)
    placed = place(topology, pool, workers=count, want=cpus_per_slot, smt=smt, ctx=ctx)
    out = placements(topology, limits, placed, mode=mode, word=memory_nodes, named=None, ctx=ctx)
    if warnings is not None:
        warnings.extend(ctx.warnings)
    return out
