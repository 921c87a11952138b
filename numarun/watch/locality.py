"""How much of a process's memory is on its home nodes: one ``numa_maps`` read.

The judged pages are those that follow the allocation policy (anon, heap, stack, shared
memory, huge pages: :data:`numarun.numamaps.JUDGED_KINDS`); file-backed page cache stays
where the first reader put it and is left out, as the placement report judges.

A process's *home nodes* are what its memory policy aims at. A supervisor knows them from
the plan (:func:`locality`); for any other process (:func:`process_locality`) they are read
from the process itself: the nodes of its policy as ``numa_maps`` shows it (``bind:0``,
``prefer:1``, ``interleave:0-1``), or, for the default and ``local`` policies, the nodes of
the CPUs it may run on (``Cpus_allowed_list``), narrowed to its cpuset's memory
(``Mems_allowed_list``). :attr:`Locality.home_source` says which.
"""

from __future__ import annotations

import os

from numarun import procfs
from numarun.errors import ProcessError
from numarun.numamaps import JUDGED_KINDS, Summary, summarize_chunks
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from numarun.topology import Topology

# Policies that name the nodes the pages are to be on; the others follow the CPU.
_NODE_POLICIES = frozenset(
    {"bind", "preferred", "preferred-many", "interleave", "weighted-interleave"}
)


class Locality(Value):
    """A process's judged memory per node and the share of it on its home nodes."""

    pid: int
    home_nodes: tuple[int, ...]  # the policy's nodes, ascending
    node_bytes: dict[int, int]  # judged bytes per node (nodes holding none are left out)
    judged_bytes: int
    home_bytes: int
    local_ratio: float | None  # home_bytes / judged_bytes; None when nothing is judged
    home_source: str = ""  # how the home nodes were found: "plan", "policy bind:0", ...

    @property
    def remote_bytes(self) -> dict[int, int]:
        """Judged bytes on nodes outside home, heaviest node first."""
        home = frozenset(self.home_nodes)
        remote = [(n, b) for n, b in self.node_bytes.items() if n not in home and b > 0]
        remote.sort(key=lambda item: (-item[1], item[0]))
        return dict(remote)


def _proc_root(root: str) -> str:
    return os.path.join(root, "proc")


def _summary(pid: int, root: str) -> Summary | None:
    try:
        return summarize_chunks(procfs.numa_maps_chunks(pid, _proc_root(root)))
    except ProcessError:  # gone, or another user's: nothing to say about it
        return None


def judge(
    pid: int, home_nodes: Iterable[int], summary: Summary, home_source: str = "plan"
) -> Locality:
    """The :class:`Locality` of a process whose numa_maps folded into ``summary``."""
    home = tuple(sorted(set(home_nodes)))
    node_bytes = {n: b for n, b in sorted(summary.node_bytes(JUDGED_KINDS).items()) if b > 0}
    judged = sum(node_bytes.values())
    at_home = sum(node_bytes.get(n, 0) for n in home)
    return Locality(
        pid=pid,
        home_nodes=home,
        node_bytes=node_bytes,
        judged_bytes=judged,
        home_bytes=at_home,
        local_ratio=at_home / judged if judged else None,
        home_source=home_source,
    )


def locality(pid: int, home_nodes: Iterable[int], root: str = "/") -> Locality | None:
    """Process ``pid``'s locality against ``home_nodes``; None when it is gone or unreadable.

    Cheap enough to run every few seconds for many workers: one read of
    ``/proc/PID/numa_maps`` and :func:`numarun.numamaps.summarize_chunks`.
    """
    summary = _summary(pid, root)
    return None if summary is None else judge(pid, home_nodes, summary)


def home_of(
    summary: Summary, cpus: Iterable[int], mems: Iterable[int], topology: Topology
) -> tuple[tuple[int, ...], str]:
    """The home nodes of a process and how they were found (see the module docstring).

    The policy of the judged memory decides when most of it is under a policy that names
    nodes (the union of those nodes); otherwise the nodes of the allowed CPUs, within the
    allowed memory nodes.
    """
    named: set[int] = set()
    named_bytes = judged = 0
    spellings: list[str] = []
    for group in summary.groups.values():
        if group.kind not in JUDGED_KINDS:
            continue
        judged += group.total_bytes
        if group.policy.mode in _NODE_POLICIES and group.policy.nodes:
            named |= group.policy.nodes
            named_bytes += group.total_bytes
            if str(group.policy) not in spellings:
                spellings.append(str(group.policy))
    if named and named_bytes * 2 >= judged:
        return tuple(sorted(named)), "policy " + ", ".join(sorted(spellings))
    from numarun import cpulist

    allowed_mems = frozenset(mems)
    cpu_set = frozenset(cpus)
    nodes = {topology.node_of(c) for c in cpu_set}
    home = sorted(n for n in nodes if n is not None and (not allowed_mems or n in allowed_mems))
    return tuple(home), f"nodes of its cpus {cpulist.format_list(cpu_set)} (default policy)"


def process_locality(pid: int, topology: Topology, root: str = "/") -> Locality | None:
    """The locality of any process against the home nodes read from it (:func:`home_of`);
    None when it is gone or unreadable."""
    try:
        cpus, mems = procfs.allowed(pid, _proc_root(root))
    except ProcessError:
        return None
    summary = _summary(pid, root)
    if summary is None:
        return None
    home, source = home_of(summary, cpus, mems, topology)
    return judge(pid, home, summary, source)
