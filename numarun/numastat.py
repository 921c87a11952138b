"""The whole machine's memory per node, as ``numastat -m`` and ``numastat -n`` show it.

* ``nodeN/meminfo``: ``Node 0 MemTotal:  5335252 kB`` lines; values in kB except the
  ``HugePages_*`` counts, which are numbers of default-size huge pages.
* ``nodeN/numastat``: the allocator's counters, in pages, since boot:

  ``numa_hit``        allocated on this node as intended;
  ``numa_miss``       allocated here although another node was preferred (each has a
                      ``numa_foreign`` on that other node);
  ``numa_foreign``    intended for this node but allocated elsewhere;
  ``interleave_hit``  interleaved allocations that landed on the node they aimed at;
  ``local_node``      allocated here for a task running on this node;
  ``other_node``      allocated here for a task running on another node.

Everything is read under a root (``/`` live, an unpacked snapshot in tests). A machine
without node directories (non-NUMA kernel) is one node 0 with ``/proc/meminfo``'s memory
and no counters, as numactl reports it.
"""

from __future__ import annotations

import os

from numarun import sysfs
from numarun.value import Value

# The numastat counters in the kernel's (and numastat's) order.
COUNTERS: tuple[str, ...] = (
    "numa_hit",
    "numa_miss",
    "numa_foreign",
    "interleave_hit",
    "local_node",
    "other_node",
)

# The meminfo rows `numarun numastat` shows by default (numastat -m shows every row; JSON
# carries every row too).
MEMINFO_ROWS: tuple[str, ...] = (
    "MemTotal",
    "MemFree",
    "MemUsed",
    "FilePages",
    "AnonPages",
    "Shmem",
    "Slab",
    "AnonHugePages",
    "HugePages_Total",
    "HugePages_Free",
)


class NodeMemory(Value):
    """One node's memory use (kB, huge page counts as counts) and allocator counters."""

    id: int
    meminfo: dict[str, int]
    counters: dict[str, int]  # pages; empty where the kernel has no nodeN/numastat

    @property
    def total_bytes(self) -> int:
        return self.meminfo.get("MemTotal", 0) * 1024

    @property
    def free_bytes(self) -> int:
        return self.meminfo.get("MemFree", 0) * 1024

    @property
    def used_bytes(self) -> int:
        used = self.meminfo.get("MemUsed")
        if used is None:
            return max(0, self.total_bytes - self.free_bytes)
        return used * 1024

    def __repr__(self) -> str:
        return f"NodeMemory({self.id}, free={self.free_bytes}, total={self.total_bytes})"


def node_memory(node: int, root: str | os.PathLike[str] = "/") -> NodeMemory:
    """One node's meminfo and counters."""
    fs = sysfs.Root(root)
    return NodeMemory(
        id=node,
        meminfo=sysfs.node_meminfo(fs, node),
        counters=sysfs.node_numastat(fs, node) or {},
    )


def machine(root: str | os.PathLike[str] = "/") -> dict[int, NodeMemory]:
    """Every node's memory and counters, by node id ascending."""
    fs = sysfs.Root(root)
    ids = sysfs.node_ids(fs)
    if not ids:
        return {0: NodeMemory(id=0, meminfo=sysfs.proc_meminfo(fs), counters={})}
    return {node: node_memory(node, root) for node in ids}


def free_bytes(root: str | os.PathLike[str] = "/") -> dict[int, int]:
    """Free memory per node: what the report asks to judge whether a node had room."""
    return {node: mem.free_bytes for node, mem in machine(root).items()}
