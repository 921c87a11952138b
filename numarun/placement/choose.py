"""Choosing a node when the user names none: the most free memory, then the least busy CPUs.

The chooser is injected (:data:`Chooser`), so the prefix form's planning is tested without
reading ``/proc/stat``; :func:`by_free_memory` is the real one, with the CPU load it breaks
ties by itself injectable.
"""

from __future__ import annotations

from numarun.cpulist import format_list

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numarun.topology import Topology

    #: (topology, candidate nodes: allowed, with CPUs and memory) -> (chosen node, why).
    Chooser = Callable[[Topology, Sequence[int]], tuple[int, str]]
    #: topology -> each node's CPU busy fraction (0..1).
    LoadReader = Callable[[Topology], dict[int, float]]

#: Free memory within this fraction of the best node's counts as a tie: free memory moves
#: by more than this between two reads.
TIE_FRACTION = 0.02


def by_free_memory(load: LoadReader | None = None) -> Chooser:
    """The chooser numarun uses: most free memory; ties within 2 % to the least loaded node."""

    def choose(topology: Topology, candidates: Sequence[int]) -> tuple[int, str]:
        free = {n: topology.nodes[n].memory_free_kb for n in candidates}
        best = max(free.values())
        tied = [n for n in candidates if free[n] >= best * (1 - TIE_FRACTION)]
        if len(tied) == 1:
            chosen = tied[0]
            others = ", ".join(f"node {n} {free[n] // 1024} MiB" for n in candidates if n != chosen)
            return chosen, (
                f"chose node {chosen}: the most free memory ({free[chosen] // 1024} MiB) of "
                "the allowed nodes with CPUs" + (f" ({others})" if others else "")
            )
        busy = (load or live_load(topology.source))(topology)
        chosen = min(tied, key=lambda n: (busy.get(n, 0.0), n))
        shown = ", ".join(
            f"node {n} {free[n] // 1024} MiB free, {busy.get(n, 0.0):.0%} busy" for n in tied
        )
        return chosen, (
            f"chose node {chosen}: nodes {format_list(tied)} tie on free memory (within "
            f"{TIE_FRACTION:.0%}), and it has the least CPU load ({shown})"
        )

    return choose


def live_load(root: str = "/", interval: float = 0.02) -> LoadReader:
    """Each node's CPU busy fraction over its online CPUs, from ``/proc/stat`` under ``root``.

    On the live machine two reads ``interval`` seconds apart give the current load; for a
    snapshot root, whose clock cannot be read twice, the one read gives the average since
    boot. Nodes whose CPUs are not in the file get 0.0.
    """

    def read(topology: Topology) -> dict[int, float]:
        from numarun.sysfs import Root, proc_stat_cpus

        fs = Root(root)
        sample = proc_stat_cpus(fs)
        if root in ("/", "") and interval > 0:
            import time

            time.sleep(interval)
            second = proc_stat_cpus(fs)
            sample = {
                cpu: (second[cpu][0] - sample[cpu][0], second[cpu][1] - sample[cpu][1])
                for cpu in second
                if cpu in sample
            }
        out: dict[int, float] = {}
        for node, info in topology.nodes.items():
            busy = sum(sample[c][0] for c in info.cpus if c in sample)
            total = sum(sample[c][1] for c in info.cpus if c in sample)
            out[node] = busy / total if total else 0.0
        return out

    return read
