"""Physical cores per node, and how a worker's CPUs are taken from them.

A core is one entry of :attr:`Topology.cores <numarun.topology.Topology.cores>` (its SMT
siblings), restricted to the CPUs a placement may use; its *first thread* is the lowest.
``smt = "avoid"`` takes at most the first thread of each core; ``"allow"`` takes first
threads of every core before any second thread ("fill cores, then siblings").
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from numarun.topology import Topology

Core = tuple[int, ...]  # one physical core: its usable threads, ascending


class NoFitError(Exception):
    """Internal: a CPU count does not fit; the caller turns it into a refusal."""


def cores_by_node(topology: Topology, usable: Iterable[int]) -> dict[int, list[Core]]:
    """Every node's cores within ``usable``, by lowest thread; nodes without any left out."""
    keep = frozenset(usable)
    out: dict[int, list[Core]] = {}
    for core in topology.cores:
        threads = tuple(sorted(core.cpus & keep))
        node = topology.node_of(threads[0]) if threads else None
        if node is not None:
            out.setdefault(node, []).append(threads)
    return {n: sorted(out[n], key=lambda c: c[0]) for n in sorted(out)}


def node_cores(topology: Topology, node: int, usable: Iterable[int]) -> list[Core]:
    """The cores of ``node`` within ``usable``, by lowest thread."""
    return cores_by_node(topology, usable).get(node, [])


def one_per_core(topology: Topology, cpus: Iterable[int]) -> frozenset[int]:
    """The lowest-numbered CPU of ``cpus`` on each physical core (``--smt avoid``)."""
    by_core: dict[object, int] = {}
    for cpu in sorted(cpus):
        info = topology.cpus.get(cpu)
        key: object = info.core if info is not None and info.core is not None else ("cpu", cpu)
        by_core.setdefault(key, cpu)
    return frozenset(by_core.values())


def units(cores: Sequence[Core], smt: str) -> int:
    """How many CPUs the cores offer under the SMT rule."""
    return len(cores) if smt == "avoid" else sum(len(c) for c in cores)


def take(cores: Sequence[Core], want: int | None, smt: str) -> list[int]:
    """CPUs for one worker from its cores: first threads of every core, then second ones."""
    if smt == "avoid":
        pool = [c[0] for c in cores]
    else:
        depth = max((len(c) for c in cores), default=0)
        pool = [c[i] for i in range(depth) for c in cores if i < len(c)]
    if want is None:
        return sorted(pool)
    if want > len(pool):
        raise NoFitError
    return sorted(pool[:want])


def balanced(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` sizes differing by at most one, larger first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def split_node(
    cores: Sequence[Core], count: int, want: int | None, smt: str
) -> tuple[list[list[int]], bool]:
    """CPUs for ``count`` workers on one node's cores; True when some of them share a core."""
    n = len(cores)
    if want is not None and count * want <= n:
        # Enough cores for one thread per CPU asked: each worker gets its own cores.
        return [take(cores[i * want : (i + 1) * want], want, smt) for i in range(count)], False
    if count <= n and (want is None or smt == "allow"):
        out, start = [], 0
        for size in balanced(n, count):
            out.append(take(cores[start : start + size], want, smt))
            start += size
        return out, False
    if want is not None:
        raise NoFitError
    # More workers than cores: every core (or thread) is used before any is shared.
    threads = [t for c in cores for t in (c if smt == "allow" else c[:1])]
    if count <= len(threads):
        out, start = [], 0
        for size in balanced(len(threads), count):
            out.append(threads[start : start + size])
            start += size
        return out, True
    return [[threads[i * len(threads) // count]] for i in range(count)], True


def apportion(count: int, weights: Sequence[int], caps: Sequence[int] | None = None) -> list[int]:
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


def group_nodes(
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
