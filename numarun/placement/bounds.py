"""What this process may use: the cpuset's limit, and the affinity it inherited within it.

The two are modelled apart because they mean different things. The cgroup's cpuset (and the
online CPUs) bound everything: the kernel refuses an affinity or a memory node outside it.
The inherited CPU affinity (``taskset``, a launcher's binding) is someone's choice: as with
numactl and taskset, an explicit CPU or node option may widen it within the cpuset, while the
choices numarun makes itself (the node for ``--policy bind`` without nodes, the slots of
``--per-rank``, a job's workers) stay inside it and say so.
"""

from __future__ import annotations

from numarun.cpulist import format_list
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from numarun.topology import Topology


class Bounds(Value):
    """The CPU and memory-node sets a placement works within, and how to name each."""

    cpus: frozenset[int]  # online CPUs the cpuset allows: explicit options may use any
    inherited: frozenset[int]  # of those, the inherited affinity: numarun's own choices
    mems: frozenset[int]  # memory nodes the cpuset allows
    cpuset: str  # "cgroup v2 /sys/fs/cgroup/job" or "the machine"
    affinity: str  # how to name the inherited affinity in a message
    # numactl's -a: ``all``, ``!`` and ``+`` count the whole machine, not the cpuset; the
    # kernel then keeps what the cpuset allows (explicit ids are still checked).
    whole_machine: bool = False

    def source_of(self, cpus: frozenset[int]) -> str:
        """What keeps ``cpus`` from this process: the cpuset, or only the affinity."""
        if cpus <= self.cpus:
            return self.affinity
        return self.cpuset


def bounds_of(topology: Topology, *, whole_machine: bool = False) -> Bounds:
    allowed = topology.allowed
    online = topology.online_cpus()
    cpuset_cpus: frozenset[int] = allowed.cpuset_cpus & online
    inherited = allowed.cpus & online
    if allowed.cpuset_source == "whole machine":
        cpuset = "this machine (its online CPUs)"
    else:
        cpuset = f"its cgroup's cpuset ({allowed.cpuset_source})"
    if inherited == cpuset_cpus:
        affinity = cpuset
    else:
        affinity = f"its inherited CPU affinity ({format_list(inherited)}: taskset or a launcher)"
    return Bounds(
        cpus=cpuset_cpus,
        inherited=inherited,
        mems=allowed.mems,
        cpuset=cpuset,
        affinity=affinity,
        whole_machine=whole_machine,
    )
