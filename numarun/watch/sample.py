"""Per-node samples of memory, CPU utilisation and allocator counters; balancing counters.

A :class:`Sampler` reads, for each node of the topology, ``nodeN/meminfo`` (memory total,
free, used), ``nodeN/numastat`` (the allocator's cumulative counters, pages since boot) and
the node's CPUs' lines of ``/proc/stat``. Utilisation is a rate, so it needs two readings:
the sampler keeps the previous ``/proc/stat`` reading and gives the busy share of the
node's CPUs between the two (None on the first sample, or when no jiffy passed).

Counters stay cumulative here, as the kernel gives them (and as Prometheus wants them);
callers that show rates take differences between two samples.
"""

from __future__ import annotations

import time

from numarun import sysfs
from numarun.numastat import COUNTERS
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from numarun.topology import Topology

# The nodeN/numastat counters a NodeSample carries, in the kernel's order: numastat's.
NODE_COUNTERS: tuple[str, ...] = COUNTERS

# The /proc/vmstat counters of NUMA balancing and memory tiering that Balancing carries.
BALANCING_COUNTERS: tuple[str, ...] = (
    "numa_hint_faults",
    "numa_hint_faults_local",
    "numa_pages_migrated",
    "pgpromote_success",
    "pgdemote_kswapd",
    "pgdemote_direct",
)


class NodeSample(Value):
    """One node at one moment: memory (bytes), CPU utilisation, allocator counters (pages)."""

    id: int
    cpus: tuple[int, ...]  # every CPU the node lists
    cpu_utilization: float | None  # 0.0-1.0 since the previous sample; None on the first
    memory_total_bytes: int
    memory_free_bytes: int
    memory_used_bytes: int
    numa_hit: int | None = None  # cumulative, from nodeN/numastat; None where absent
    numa_miss: int | None = None
    numa_foreign: int | None = None
    interleave_hit: int | None = None
    local_node: int | None = None
    other_node: int | None = None
    tier: int | None = None  # memory_tierN holding it (lower is faster); None: no tiering

    @property
    def memory_used_share(self) -> float | None:
        """The share of the node's memory in use; None for a node without memory."""
        if self.memory_total_bytes <= 0:
            return None
        return self.memory_used_bytes / self.memory_total_bytes


class Balancing(Value):
    """Machine-wide cumulative counters of NUMA balancing and tiering (``/proc/vmstat``).

    Each is None where the kernel does not count it (no ``CONFIG_NUMA_BALANCING``, or a
    kernel older than the counter).
    """

    mode: int | None = None  # kernel.numa_balancing: 0 off, 1 normal, 2 tiering, 3 both
    numa_hint_faults: int | None = None
    numa_hint_faults_local: int | None = None
    numa_pages_migrated: int | None = None
    pgpromote_success: int | None = None
    pgdemote_kswapd: int | None = None
    pgdemote_direct: int | None = None


class Sampler:
    """Reads node samples and balancing counters; keeps what a rate needs between calls."""

    def __init__(
        self,
        topology: Topology | None = None,
        root: str = "/",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if topology is None:
            from numarun.topology import read_topology

            topology = read_topology(root, devices=False)
        self.topology = topology
        self.root = root
        self.clock = clock
        self._fs = sysfs.Root(root)
        self._numa = bool(sysfs.node_ids(self._fs))
        self._stat: dict[int, tuple[int, int]] | None = None
        self.taken_at: float | None = None  # clock() at the latest sample_nodes
        self.interval: float | None = None  # seconds between the latest two

    def sample_nodes(self) -> tuple[NodeSample, ...]:
        """Every node of the topology now, by id; utilisation since the previous call."""
        now = self.clock()
        stat = sysfs.proc_stat_cpus(self._fs)
        previous, self._stat = self._stat, stat
        self.interval = None if self.taken_at is None else now - self.taken_at
        self.taken_at = now
        out = []
        for node in self.topology.nodes.values():
            cpus = tuple(sorted(node.cpus))
            meminfo = (
                sysfs.node_meminfo(self._fs, node.id)
                if self._numa
                else sysfs.proc_meminfo(self._fs)
            )
            counters = (sysfs.node_numastat(self._fs, node.id) if self._numa else None) or {}
            total = meminfo.get("MemTotal", 0) * 1024
            free = meminfo.get("MemFree", 0) * 1024
            used = meminfo["MemUsed"] * 1024 if "MemUsed" in meminfo else max(0, total - free)
            out.append(
                NodeSample(
                    id=node.id,
                    cpus=cpus,
                    cpu_utilization=utilization(previous, stat, cpus),
                    memory_total_bytes=total,
                    memory_free_bytes=free,
                    memory_used_bytes=used,
                    tier=node.tier,
                    **{name: counters.get(name) for name in NODE_COUNTERS},
                )
            )
        return tuple(out)

    def balancing(self) -> Balancing:
        """The balancing counters now (cumulative) and the balancing mode."""
        vmstat = sysfs.proc_vmstat(self._fs) or {}
        return Balancing(
            mode=sysfs.numa_balancing_mode(self._fs),
            **{name: vmstat.get(name) for name in BALANCING_COUNTERS},
        )


def utilization(
    before: dict[int, tuple[int, int]] | None,
    after: dict[int, tuple[int, int]],
    cpus: tuple[int, ...],
) -> float | None:
    """The busy share of ``cpus`` between two ``/proc/stat`` readings (busy, total jiffies).

    CPUs missing from either reading (offline, or hot-added between) are left out; None
    when there is no earlier reading or no jiffy passed on the CPUs of both.
    """
    if before is None:
        return None
    busy = total = 0
    for cpu in cpus:
        if cpu in before and cpu in after:
            busy += max(0, after[cpu][0] - before[cpu][0])
            total += max(0, after[cpu][1] - before[cpu][1])
    if total <= 0:
        return None
    return min(1.0, busy / total)
