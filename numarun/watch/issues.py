"""The seed's rules over one sample: memory and CPU imbalance, processes below threshold.

* **memory-imbalance**: the shares of each node's memory in use are more than
  ``memory_imbalance`` (0.30) apart, fullest node against emptiest. Shares, not bytes, so
  nodes of different sizes compare fairly; nodes without memory are left out. Where the
  kernel has memory tiers, nodes are compared within their tier only: a CXL or HBM node
  that is emptier than DRAM is how tiering is meant to look, not an imbalance.
* **cpu-imbalance**: the CPU utilisation of the busiest node is more than
  ``cpu_imbalance`` (0.20, 20 points) above the idlest's; nodes without CPUs, and samples
  without utilisation (the first), are left out.
* **below-threshold**: a process with less than ``locality`` (0.90) of its judged memory on
  its home nodes. Its ``nodes`` are the remote nodes holding its pages, heaviest first.
  A process with less than ``min_judged_bytes`` (4 MiB) judged is not flagged: a few
  pages would decide its share.

Each issue names the nodes concerned first to last (fullest or busiest first), its value
and the threshold it crossed, so scripts need not parse the message.
"""

from __future__ import annotations

from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from numarun.watch.locality import Locality
    from numarun.watch.sample import NodeSample

MEMORY_IMBALANCE = "memory-imbalance"
CPU_IMBALANCE = "cpu-imbalance"
BELOW_THRESHOLD = "below-threshold"
KINDS: tuple[str, ...] = (MEMORY_IMBALANCE, CPU_IMBALANCE, BELOW_THRESHOLD)


class Thresholds(Value):
    """Where an imbalance or a locality becomes an issue (fractions, 0.0-1.0)."""

    memory_imbalance: float = 0.30  # memory use more than 30 points apart across nodes
    cpu_imbalance: float = 0.20  # CPU utilisation more than 20 points apart
    locality: float = 0.90  # a process with less of its judged memory at home
    min_judged_bytes: int = 4 << 20  # smaller processes are not judged for locality


class Issue(Value):
    """One finding of :func:`find_issues`."""

    kind: str  # one of KINDS
    message: str
    nodes: tuple[int, ...]
    pid: int | None = None
    value: float
    threshold: float


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def _nodes(ids: Iterable[int]) -> str:
    ids = list(ids)
    return ("node " if len(ids) == 1 else "nodes ") + ",".join(str(n) for n in ids)


def memory_imbalance(nodes: Iterable[NodeSample], threshold: float) -> Issue | None:
    """The widest spread of memory use within one memory tier, if over ``threshold``."""
    tiers: dict[int | None, list[tuple[float, NodeSample]]] = {}
    for n in nodes:
        if (share := n.memory_used_share) is not None:
            tiers.setdefault(n.tier, []).append((share, n))
    spreads = []
    for shares in tiers.values():
        if len(shares) >= 2:
            shares.sort(key=lambda item: (-item[0], item[1].id))
            spreads.append((shares[0][0] - shares[-1][0], shares[0], shares[-1]))
    if not spreads:
        return None
    spread, (high, full), (low, empty) = max(spreads, key=lambda item: item[0])
    if spread <= threshold:
        return None
    within = f" (memory tier {full.tier})" if len(tiers) > 1 else ""
    return Issue(
        kind=MEMORY_IMBALANCE,
        message=(
            f"node {full.id} has {high:.0%} of its memory in use "
            f"({_gib(full.memory_used_bytes)} of {_gib(full.memory_total_bytes)}), "
            f"node {empty.id} {low:.0%}{within}: {(high - low) * 100:.0f} points apart, "
            f"more than {threshold * 100:.0f}"
        ),
        nodes=(full.id, empty.id),
        value=round(high - low, 4),
        threshold=threshold,
    )


def cpu_imbalance(nodes: Iterable[NodeSample], threshold: float) -> Issue | None:
    used = [(u, n) for n in nodes if n.cpus and (u := n.cpu_utilization) is not None]
    if len(used) < 2:
        return None
    used.sort(key=lambda item: (-item[0], item[1].id))
    (high, busy), (low, idle) = used[0], used[-1]
    if high - low <= threshold:
        return None
    return Issue(
        kind=CPU_IMBALANCE,
        message=(
            f"node {busy.id}'s CPUs are {high:.0%} busy, node {idle.id}'s {low:.0%}: "
            f"{(high - low) * 100:.0f} points apart, more than {threshold * 100:.0f}"
        ),
        nodes=(busy.id, idle.id),
        value=round(high - low, 4),
        threshold=threshold,
    )


def below_threshold(found: Locality, threshold: float, min_bytes: int = 0) -> Issue | None:
    ratio = found.local_ratio
    if ratio is None or ratio >= threshold or found.judged_bytes < min_bytes:
        return None
    remote = found.remote_bytes
    where = ", ".join(f"{_gib(b)} on node {n}" for n, b in remote.items())
    return Issue(
        kind=BELOW_THRESHOLD,
        message=(
            f"process {found.pid} has {ratio:.0%} of {_gib(found.judged_bytes)} on "
            f"its home {_nodes(found.home_nodes)}, below {threshold:.0%}"
            + (f"; {where}" if where else "")
        ),
        nodes=tuple(remote),
        pid=found.pid,
        value=round(ratio, 4),
        threshold=threshold,
    )


def find_issues(
    nodes: Iterable[NodeSample], localities: Iterable[Locality], thresholds: Thresholds
) -> tuple[Issue, ...]:
    """The issues of one sample: memory imbalance, CPU imbalance, then each process below
    its locality threshold, in the order of ``localities``."""
    nodes = tuple(nodes)
    found = [
        memory_imbalance(nodes, thresholds.memory_imbalance),
        cpu_imbalance(nodes, thresholds.cpu_imbalance),
        *(
            below_threshold(loc, thresholds.locality, thresholds.min_judged_bytes)
            for loc in localities
        ),
    ]
    return tuple(issue for issue in found if issue is not None)
