"""Keeping a running job's placement true: drift, remediation, CPU hotplug (``[watch]``).

The supervisor calls :meth:`Keeper.sample` every ``interval`` seconds from its one loop, on
its timer like a restart's (no thread, nothing in between: an idle job costs one sample an
interval). A sample does three things, cheapest first:

1. **CPUs.** It reads the online CPUs and the job cgroup's ``cpuset.cpus.effective`` (two
   small files) and compares them with the last reading. Only when they changed, or a
   worker restarted since its CPUs were moved, is anything computed: each worker whose
   planned CPUs are not all usable gets, for every thread (``/proc/PID/task/*``), its
   usable planned CPUs plus as many other usable CPUs of its node as it lost, chosen by
   its process group's ``smt`` rule with the placement engine's own core rules
   (:mod:`numarun.placement.cores`), CPUs no other worker runs on first. When the planned
   CPUs are usable again it gets them back. A node with no usable CPU left is said so; the
   worker keeps its memory policy (and the kernel runs it where its cpuset allows).
2. **Nodes.** One :meth:`numarun.watch.Sampler.sample_nodes` (free memory, utilisation).
3. **Workers.** One ``numa_maps`` read each (:func:`numarun.watch.locality` against the
   policy's nodes, or the home node for ``local`` and ``default``). Below ``threshold``
   for :data:`~numarun.supervisor.watchpolicy.DRIFT_SAMPLES` samples in a row is a drift
   event; back at or above it, a recovery.

The CPU budget. Reading ``numa_maps`` makes the kernel walk every page table of the
worker (about 7 ms of CPU per GiB here), so a sample's cost grows with the job's memory.
The supervisor measures each sample's CPU time (the sample and the state file it rewrites)
and waits at least cost / :data:`~numarun.supervisor.watchpolicy.CPU_BUDGET` before the
next one (:meth:`Keeper.wait_after`): sampling never takes more than that share of a CPU,
and says so once when it has to come less often than the interval.

With ``remediate = "migrate"`` a drifted worker's pages are moved back with
``migrate_pages(2)``: from its heaviest remote node to its home nodes, one node per move.

The rate limit. ``migrate_pages`` moves every page the process has on the nodes it is
given, in one call, however many there are: a move cannot be cut to a size. So the rate is
kept by choosing and waiting instead: at most one node of one worker is moved per sample
(the heaviest remote one, whose size the sample has just counted), and after a move of
*S* bytes the next move of the job waits until *S* / ``migrate_rate_mbps`` seconds have
passed, skipping the samples in between. Over time the job moves at most the rate on
average; a single node's pages may move faster than the rate, once.

The room rule (numad's as a reference: it moves a process only to a node with the free
memory to take it). A move goes ahead only when the home nodes' room, less a reserve of the
larger of :data:`RESERVE_BYTES` and :data:`RESERVE_SHARE` of their memory, holds the bytes
to move; otherwise it is skipped with one note per drift, and tried again later. The room
is ``MemFree`` plus ``Inactive(file)`` of ``nodeN/meminfo``: the page cache the kernel
reclaims first when ``migrate_pages`` allocates on that node (a long-running machine's
free memory is mostly cache), read only when a move is due.

Everything the keeper reads or changes goes through a :class:`KeeperKernel` (the real one,
:class:`LiveKernel`, reads through numarun.sysfs and numarun.procfs), so that tests drive
drift, migration and hotplug with a fake one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from numarun.cpulist import format_list
from numarun.supervisor.watchpolicy import CPU_BUDGET, DRIFT_SAMPLES, Watch

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from numarun.supervisor.model import EventKind, WorkerSpec
    from numarun.topology import Topology
    from numarun.watch import Locality, NodeSample

#: After the usable CPUs change, this many samples (that one included) look at every
#: worker's CPUs, not only at those the keeper set (see Keeper._keep_cpus).
SETTLE_SAMPLES = 3
#: The home nodes keep at least this much free after a move ...
RESERVE_BYTES = 64 << 20
#: ... or this share of their memory, whichever is larger.
RESERVE_SHARE = 0.03
MIB = 1 << 20


class KeeperKernel(Protocol):
    """What the keeper reads and changes: the seam tests replace."""

    topology: Topology

    def usable_cpus(self) -> frozenset[int] | None:
        """The CPUs the job's workers may run on now (online, in the job's cpuset)."""
        ...

    def nodes(self) -> tuple[NodeSample, ...]: ...

    def locality(self, pid: int, home: Iterable[int]) -> Locality | None: ...

    def threads(self, pid: int) -> list[int]:
        """Every thread of ``pid``; empty when it is gone."""
        ...

    def set_cpus(self, tid: int, cpus: frozenset[int]) -> None:
        """Set one thread's affinity; ProcessLookupError when it is gone."""
        ...

    def cpus_of(self, tid: int) -> frozenset[int] | None:
        """One thread's affinity now; None when it is gone."""
        ...

    def node_room(self, node: int) -> int:
        """Bytes a node can take: free, and file pages on its inactive list (reclaimed
        first when an allocation needs the room)."""
        ...

    def migrate(self, pid: int, from_nodes: frozenset[int], to_nodes: frozenset[int]) -> int:
        """``migrate_pages(2)``: the pages that could not be moved."""
        ...

    def cpu_seconds(self) -> float:
        """The supervisor's CPU time so far (user + system), for the sampling budget."""
        ...


class LiveKernel:
    """The real kernel: sysfs, procfs, ``sched_setaffinity`` and ``migrate_pages``."""

    def __init__(self, topology: Topology, cgroup_dir: str | None = None) -> None:
        from numarun import sysfs
        from numarun.watch import Sampler

        self.topology = topology
        self._fs = sysfs.Root("/")
        self._sampler = Sampler(topology)
        self._cpu_ids = sorted(topology.cpus)
        self._cgroup: tuple[str, str] | None = None
        if cgroup_dir is None:
            from numarun.supervisor.contain import own_cgroup_dir

            cgroup_dir = own_cgroup_dir()
        top = next((p for _d, p, t, _o in sysfs.proc_mounts(self._fs) if t == "cgroup2"), None)
        if cgroup_dir is not None and top is not None:
            self._cgroup = (cgroup_dir, top)

    def usable_cpus(self) -> frozenset[int] | None:
        from numarun import sysfs

        online = sysfs.cpus_online(self._fs)
        if online is None:
            return None
        if self._cgroup is not None:
            allowed = sysfs.cpuset_cpus_effective(self._fs, *self._cgroup)
            if allowed is not None:
                return online & allowed
        return online

    def nodes(self) -> tuple[NodeSample, ...]:
        return self._sampler.sample_nodes()

    def locality(self, pid: int, home: Iterable[int]) -> Locality | None:
        from numarun.watch import locality

        return locality(pid, home)

    def threads(self, pid: int) -> list[int]:
        from numarun import procfs
        from numarun.errors import ProcessError

        try:
            return procfs.tasks(pid)
        except ProcessError:
            return []

    def set_cpus(self, tid: int, cpus: frozenset[int]) -> None:
        os.sched_setaffinity(tid, cpus)

    def cpus_of(self, tid: int) -> frozenset[int] | None:
        try:
            return frozenset(os.sched_getaffinity(tid))
        except OSError:
            return None

    def node_room(self, node: int) -> int:
        from numarun import sysfs

        info = sysfs.node_meminfo(self._fs, node)
        return (info.get("MemFree", 0) + info.get("Inactive(file)", 0)) * 1024

    def migrate(self, pid: int, from_nodes: frozenset[int], to_nodes: frozenset[int]) -> int:
        from numarun.mempolicy import migrate_pages

        return migrate_pages(pid, from_nodes, to_nodes)

    def cpu_seconds(self) -> float:
        import time

        return time.process_time()


@dataclass(frozen=True)
class Finding:
    """Something a sample found about a worker (or, worker None, the job)."""

    kind: EventKind  # drift, recovered, remediated, cpus-moved, ...
    worker: WorkerSpec | None
    pid: int | None
    message: str


@dataclass
class Kept:
    """What the keeper knows of one worker slot between samples."""

    pid: int | None = None  # the instance the rest is about
    below: int = 0  # samples below the threshold in a row
    drifted: bool = False
    locality: Locality | None = None
    remediations: int = 0  # moves done, over every instance of the slot
    moved_bytes: int = 0
    blocked_said: bool = False  # the room rule's note, once per drift
    cpus: frozenset[int] | None = None  # what its threads were given (None: as planned)
    cpus_pid: int | None = None  # the instance they were given to
    no_cpus_said: bool = False
    drift: str | None = None  # the drift event's words, while drifted

    @property
    def local_ratio(self) -> float | None:
        return self.locality.local_ratio if self.locality is not None else None


def home_nodes(spec: WorkerSpec) -> frozenset[int]:
    """The nodes a worker's memory is meant to be on: its policy's, else its home node."""
    if spec.memory is not None and spec.memory.nodes:
        return frozenset(spec.memory.nodes)
    return frozenset({spec.node}) if spec.node is not None else frozenset()


class Keeper:
    """Samples a job's workers every interval; see the module docstring for the rules."""

    def __init__(self, watch: Watch, kernel: KeeperKernel) -> None:
        self.watch = watch
        self.kernel = kernel
        self.kept: dict[str, Kept] = {}
        self.nodes: tuple[NodeSample, ...] = ()
        self.samples = 0
        self._usable: frozenset[int] | None = None
        self._settle = 0  # samples left in which every worker's CPUs are looked at
        self._migrate_at = 0.0  # the supervisor's clock: no move before this
        self.cost = 0.0  # CPU seconds of the latest sample
        self.migrate_cpu = 0.0  # CPU seconds of migrate_pages, not yet set against a sample
        self._slowed_said = False

    def wait_after(self, cost: float) -> tuple[float, Finding | None]:
        """Seconds until the next sample after one that cost ``cost`` CPU seconds (less
        what its ``migrate_pages`` took): the interval, or longer to stay within
        :data:`CPU_BUDGET`; and a note, the first time."""
        cost, self.migrate_cpu = max(0.0, cost - self.migrate_cpu), 0.0
        self.cost = cost
        interval = self.watch.interval
        needed = cost / CPU_BUDGET
        if needed <= interval:
            return interval, None
        note = None
        if not self._slowed_said:
            self._slowed_said = True
            note = Finding(
                "sampling-slowed",
                None,
                None,
                f"one sample of {len(self.kept)} workers took {cost * 1000:.0f} ms of CPU: "
                f"sampling every {needed:.1f} s instead of {interval:g} s, to stay within "
                f"{CPU_BUDGET:.1%} of a CPU",
            )
        return needed, note

    def slot(self, spec: WorkerSpec) -> Kept:
        return self.kept.setdefault(spec.label, Kept())

    def sample(self, now: float, running: Sequence[tuple[WorkerSpec, int]]) -> list[Finding]:
        """One sample of the running workers ``(spec, pid)``: what changed, as findings."""
        self.samples += 1
        found = self._cpus(running)
        self.nodes = self.kernel.nodes()
        for spec, pid in running:
            found += self._judge(spec, pid)
        if self.watch.remediate == "migrate" and now >= self._migrate_at:
            found += self._remediate(now, running)
        return found

    # -- drift ----------------------------------------------------------------------------

    def _judge(self, spec: WorkerSpec, pid: int) -> list[Finding]:
        kept = self.slot(spec)
        if kept.pid != pid:  # a new instance: its history starts again
            kept.pid, kept.below, kept.drifted, kept.blocked_said = pid, 0, False, False
            kept.locality = None
        home = home_nodes(spec)
        if not home:
            return []
        found = self.kernel.locality(pid, home)
        if found is None or found.local_ratio is None:
            return []  # gone, unreadable, or nothing judged yet: no verdict either way
        kept.locality = found
        ratio, threshold = found.local_ratio, self.watch.threshold
        where = f"node {format_list(home)}" if len(home) == 1 else f"nodes {format_list(home)}"
        if ratio < threshold:
            kept.below += 1
            if kept.below >= DRIFT_SAMPLES and not kept.drifted:
                kept.drifted = True
                remote = ", ".join(f"{_mib(b)} on node {n}" for n, b in found.remote_bytes.items())
                kept.drift = (
                    f"{ratio:.0%} of its memory is on {where} (threshold "
                    f"{threshold:.0%}, {kept.below} samples in a row): {remote}"
                )
                return [Finding("drift", spec, pid, kept.drift)]
            return []
        kept.below = 0
        if kept.drifted:
            kept.drifted, kept.blocked_said, kept.drift = False, False, None
            return [Finding("recovered", spec, pid, f"{ratio:.0%} of its memory is on {where}")]
        return []

    # -- remediation ----------------------------------------------------------------------

    def _remediate(self, now: float, running: Sequence[tuple[WorkerSpec, int]]) -> list[Finding]:
        """At most one move a sample: the first drifted worker's heaviest remote node."""
        total = {n.id: n.memory_total_bytes for n in self.nodes}
        for spec, pid in running:
            kept = self.slot(spec)
            if not kept.drifted or kept.locality is None or kept.pid != pid:
                continue
            remote = kept.locality.remote_bytes
            if not remote:
                continue
            source, size = next(iter(remote.items()))
            home = home_nodes(spec)
            room = sum(self.kernel.node_room(n) for n in home)  # read only for a move
            reserve = max(RESERVE_BYTES, int(RESERVE_SHARE * sum(total.get(n, 0) for n in home)))
            if room - reserve < size:
                if kept.blocked_said:
                    continue
                kept.blocked_said = True
                return [
                    Finding(
                        "remediation-skipped",
                        spec,
                        pid,
                        f"not moving {_mib(size)} from node {source}: {_nodes(home)} "
                        f"{'has' if len(home) == 1 else 'have'} {_mib(room)} free or "
                        f"reclaimable, less a reserve of {_mib(reserve)}",
                    )
                ]
            return [self._move(now, spec, pid, source=source, size=size)]
        return []

    def _move(self, now: float, spec: WorkerSpec, pid: int, *, source: int, size: int) -> Finding:
        from numarun.errors import NumarunError

        kept, home = self.slot(spec), home_nodes(spec)
        began = self.kernel.cpu_seconds()
        try:
            left = self.kernel.migrate(pid, frozenset({source}), home)
        except NumarunError as err:
            return Finding("remediation-failed", spec, pid, err.message)
        finally:
            # Moving pages is remediation's cost, bounded by its own rate limit; the
            # sampling budget counts the sample alone.
            self.migrate_cpu += self.kernel.cpu_seconds() - began
        kept.remediations += 1
        kept.moved_bytes += size
        # The rate limit: the next move waits as long as this one's bytes take at the rate.
        self._migrate_at = now + size / (self.watch.migrate_rate_mbps * 1e6)
        stayed = f", {left} pages could not be moved" if left > 0 else ""
        return Finding(
            "remediated",
            spec,
            pid,
            f"moved {_mib(size)} ({size} bytes) from node {source} to {_nodes(home)} "
            f"with migrate_pages{stayed}; next move not before {self._migrate_at - now:.1f} s",
        )

    # -- CPU hotplug and shrinking cpusets ------------------------------------------------

    def _cpus(self, running: Sequence[tuple[WorkerSpec, int]]) -> list[Finding]:
        usable = self.kernel.usable_cpus()
        if usable is None:
            return []
        if usable != self._usable:
            self._usable = usable
            self._settle = SETTLE_SAMPLES
        found: list[Finding] = []
        for spec, pid in running:
            if spec.cpus is None:
                continue
            kept = self.slot(spec)
            touched = kept.cpus_pid == pid  # this instance's CPUs were set by the keeper
            # A new instance starts on its planned CPUs: moved again if some are not usable.
            fresh = not touched and (kept.cpus is not None or not spec.cpus <= usable)
            if not (self._settle or touched or fresh):
                continue
            busy = frozenset().union(
                *(
                    self.slot(s).cpus or s.cpus or frozenset()
                    for s, _p in running
                    if s.label != spec.label
                )
            )
            finding = self._keep_cpus(spec, pid, usable, busy)
            if finding is not None:
                found.append(finding)
        if self._settle:
            self._settle -= 1
        return found

    def _keep_cpus(
        self, spec: WorkerSpec, pid: int, usable: frozenset[int], busy: frozenset[int]
    ) -> Finding | None:
        """Give one worker the CPUs it should have now; the event, when they changed.

        What its main thread has is read (one ``sched_getaffinity``) and set again when it
        differs: kernels before 6.2 reset every task of a cgroup v2 cpuset to the cpuset's
        CPUs when a CPU goes or comes, a little after the change (a workqueue), which
        undoes a setting made at the sample that saw the change; the samples that follow
        one (:data:`SETTLE_SAMPLES`), and every sample of a worker the keeper moved, look.
        """
        assert spec.cpus is not None
        kept = self.slot(spec)
        target = self._target(spec, usable, busy)
        if target is None:
            if kept.no_cpus_said:
                return None
            kept.no_cpus_said = True
            return Finding(
                "no-cpus",
                spec,
                pid,
                f"node {spec.node} has no usable CPU left (CPUs {format_list(spec.cpus)} "
                "planned): the kernel runs it where its cpuset allows; its memory policy "
                "is kept",
            )
        kept.no_cpus_said = False
        touched = kept.cpus_pid == pid
        announced = kept.cpus if touched and kept.cpus is not None else spec.cpus
        actual = self.kernel.cpus_of(pid)
        if actual is None:
            return None  # gone: its exit is the supervisor's business
        if actual != target:
            self._apply(pid, target)
            kept.cpus_pid = pid
        if target == announced:
            return None
        kept.cpus_pid = pid
        if target == spec.cpus:
            kept.cpus = None
            return Finding("cpus-restored", spec, pid, f"CPUs {format_list(target)}")
        kept.cpus = target
        gone = spec.cpus - usable
        return Finding(
            "cpus-moved",
            spec,
            pid,
            f"CPUs {format_list(gone)} of its {format_list(spec.cpus)} are offline or "
            f"outside the cpuset: now on CPUs {format_list(target)} "
            f"({len(target)} of {len(spec.cpus)})",
        )

    def _target(
        self, spec: WorkerSpec, usable: frozenset[int], busy: frozenset[int]
    ) -> frozenset[int] | None:
        """The CPUs a worker should run on now; None when its node has none usable."""
        from numarun.placement.cores import node_cores, take, units

        planned = spec.cpus or frozenset()
        kept = planned & usable
        lost = len(planned) - len(kept)
        if lost == 0:
            return planned
        topology = self.kernel.topology
        node_usable = frozenset(c for c in usable if topology.node_of(c) == spec.node)
        if not node_usable:
            return None
        chosen = set(kept)
        siblings = {cpu: core.cpus for core in topology.cores for cpu in core.cpus}
        # Other workers' CPUs only when the node has no free ones left.
        for pool in (node_usable - planned - busy, node_usable - planned):
            cores = node_cores(topology, spec.node, pool - chosen) if spec.node is not None else []
            if spec.smt == "avoid":  # one thread per core: not a sibling of one it has
                cores = [c for c in cores if not siblings.get(c[0], frozenset()) & chosen]
            want = min(len(planned) - len(chosen), units(cores, spec.smt))
            if want > 0:
                chosen.update(take(cores, want, spec.smt))
            if len(chosen) >= len(planned):
                break
        return frozenset(chosen) if chosen else None

    def _apply(self, pid: int, cpus: frozenset[int]) -> None:
        for tid in self.kernel.threads(pid):
            try:
                self.kernel.set_cpus(tid, cpus)
            except (ProcessLookupError, PermissionError):
                continue  # a thread that exits meanwhile needs no CPUs


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


def _nodes(nodes: Iterable[int]) -> str:
    ids = sorted(nodes)
    return f"node {ids[0]}" if len(ids) == 1 else f"nodes {format_list(ids)}"
