"""Issue 14, the supervisor's side: ``[watch]`` sampling, drift, remediation, CPU hotplug.

The supervisor runs on the fake processes and fake time of test_supervise_seams (``Sim``),
and its keeper on a fake kernel: per-process pages per node, per-node free memory, the
usable CPUs and each thread's affinity. Tests change the fake kernel between samples, as
``migratepages`` or ``echo 0 > cpuN/online`` would change the real one, and assert what a
user sees: the events and their words, the pages moved and each thread's CPUs.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from numarun.commands.run import render_status
from numarun.mempolicy import MemoryPolicy
from numarun.supervisor import Backoff, Event, JobSpec, Supervision, Supervisor, WorkerSpec
from numarun.supervisor.watchpolicy import Watch
from numarun.topology import Topology, read_topology
from numarun.watch import Locality, NodeSample
from tests.fakesysfs import FakeMachine
from tests.test_supervise_seams import Run, Sim, supervisor

MiB = 1 << 20


class FakeKernel:
    """Pages, free memory, usable CPUs and affinities, as the keeper sees the kernel."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.usable = frozenset(topology.cpus)
        self.pages: dict[int, dict[int, int]] = {}  # pid -> node -> bytes
        self.free = {n: 400 * MiB for n in topology.nodes}
        self.affinity: dict[int, frozenset[int]] = {}  # tid -> its CPUs
        self.set_calls = 0
        self.moves: list[tuple[int, frozenset[int], frozenset[int]]] = []
        self.cpu = 0.0
        self.calls = 0
        self.cost_per_move = 0.0
        self.cost_per_sample = 0.0  # CPU seconds a sample costs, as the supervisor measures

    def usable_cpus(self) -> frozenset[int] | None:
        return self.usable

    def nodes(self) -> tuple[NodeSample, ...]:
        return tuple(
            NodeSample(
                id=n,
                cpus=tuple(sorted(node.cpus)),
                cpu_utilization=None,
                memory_total_bytes=512 * MiB,
                memory_free_bytes=self.free[n],
                memory_used_bytes=512 * MiB - self.free[n],
            )
            for n, node in self.topology.nodes.items()
        )

    def locality(self, pid: int, home: Iterable[int]) -> Locality | None:
        pages = self.pages.get(pid)
        if pages is None:
            return None
        home_nodes = tuple(sorted(home))
        judged = sum(pages.values())
        at_home = sum(b for n, b in pages.items() if n in home_nodes)
        return Locality(
            pid=pid,
            home_nodes=home_nodes,
            node_bytes={n: b for n, b in pages.items() if b},
            judged_bytes=judged,
            home_bytes=at_home,
            local_ratio=at_home / judged if judged else None,
        )

    def threads(self, pid: int) -> list[int]:
        return [pid, pid + 100_000, pid + 200_000]

    def set_cpus(self, tid: int, cpus: frozenset[int]) -> None:
        self.affinity[tid] = cpus
        self.set_calls += 1

    def cpus_of(self, tid: int) -> frozenset[int] | None:
        return self.affinity.get(tid)

    def node_room(self, node: int) -> int:
        return self.free[node]

    def started(self, pid: int, cpus: frozenset[int]) -> None:
        """A new instance: its threads on its planned CPUs, as the launcher puts them."""
        for tid in self.threads(pid):
            self.affinity[tid] = cpus

    def cpu_seconds(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:  # read before and after each sample: this is after
            self.cpu += self.cost_per_sample
        return self.cpu

    def migrate(self, pid: int, from_nodes: frozenset[int], to_nodes: frozenset[int]) -> int:
        self.cpu += self.cost_per_move  # the kernel copying pages, on the supervisor's time
        self.moves.append((pid, from_nodes, to_nodes))
        pages = self.pages[pid]
        target = min(to_nodes)
        for node in from_nodes:
            moved = pages.pop(node, 0)
            pages[target] = pages.get(target, 0) + moved
            self.free[target] -= moved
        return 0


@pytest.fixture
def topology(tmp_path: Path) -> Topology:
    """Two nodes of two cores of two threads: node 0 CPUs 0-3, node 1 CPUs 4-7."""
    machine = FakeMachine({0: range(4), 1: range(4, 8)}, [(0, 1), (2, 3), (4, 5), (6, 7)])
    machine.write(tmp_path / "root")
    return read_topology(tmp_path / "root", devices=False)


def worker(index: int, node: int, cpus: Iterable[int], smt: str = "avoid") -> WorkerSpec:
    return WorkerSpec(
        "w", index, ("w",), node=node, cpus=frozenset(cpus), memory=MemoryPolicy("local"), smt=smt
    )


def drive(
    kernel: FakeKernel,
    watch: Watch,
    workers: tuple[WorkerSpec, ...],
    on_sample: Callable[[int, Supervisor, Sim], None],
    samples: int,
) -> tuple[Supervisor, Sim, list[Event]]:
    """Run the job on fake time for ``samples`` samples; ``on_sample(n, ...)`` after each."""
    sim = Sim(lambda label, n: Run())
    sup = supervisor(sim, JobSpec("keep", workers, watch=watch))
    sup._keeper_kernel = kernel
    events: list[Event] = []
    n = 0
    for event in sup.events():
        events.append(event)
        if event.kind == "spawned" and event.pid is not None and event.worker is not None:
            kernel.pages.setdefault(event.pid, {event.worker.node or 0: 100 * MiB})
            kernel.started(event.pid, event.worker.cpus or frozenset())
        if event.kind == "sampled":
            n += 1
            on_sample(n, sup, sim)
            if n == samples:
                sup.stop()
    return sup, sim, events


def kinds(events: list[Event], label: str | None = None) -> list[str]:
    watch_kinds = {
        "drift",
        "recovered",
        "remediated",
        "remediation-skipped",
        "cpus-moved",
        "cpus-restored",
        "no-cpus",
    }
    return [
        e.kind
        for e in events
        if e.kind in watch_kinds and (label is None or (e.worker and e.worker.label == label))
    ]


def spawned(events: list[Event], index: int) -> int:
    """The PID worker ``index`` was started with (after the job, the slots are empty)."""
    pid = next(
        e.pid for e in events if e.kind == "spawned" and e.worker and e.worker.index == index
    )
    assert pid is not None
    return pid


def pid_of(sup: Supervisor, index: int) -> int:
    pid = sup.workers[index].pid
    assert pid is not None
    return pid


def test_samples_come_every_interval_on_the_supervisors_clock(topology: Topology) -> None:
    kernel = FakeKernel(topology)
    _sup, _sim, events = drive(
        kernel, Watch(interval=2.5), (worker(0, 0, [0, 2]),), lambda n, s, sim: None, 4
    )
    times = [e.time for e in events if e.kind == "sampled"]
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [2.5, 2.5, 2.5]
    assert kinds(events) == []  # all memory at home, all CPUs usable: nothing to say


def test_samples_that_cost_more_than_the_budget_come_less_often(topology: Topology) -> None:
    kernel = FakeKernel(topology)
    kernel.cost_per_sample = 0.04  # 40 ms of CPU a sample: 4 % of a CPU at 1 s
    _sup, _sim, events = drive(
        kernel, Watch(interval=1), (worker(0, 0, [0, 2]),), lambda n, s, sim: None, 4
    )
    times = [e.time for e in events if e.kind == "sampled"]
    # 40 ms / 0.8 % = 5 s
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [5.0, 5.0, 5.0]
    (said,) = [e for e in events if e.kind == "sampling-slowed"]
    assert said.message == (
        "one sample of 1 workers took 40 ms of CPU: sampling every 5.0 s instead of 1 s, "
        "to stay within 0.8% of a CPU"
    )


def test_a_costly_move_does_not_slow_the_sampling(topology: Topology) -> None:
    kernel = FakeKernel(topology)
    kernel.cost_per_move = 2.0  # a big migration: seconds of system time

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:
            kernel.pages[pid_of(sup, 0)] = {1: 100 * MiB}

    watch = Watch(interval=1, remediate="migrate", migrate_rate_mbps=1000)
    _sup, _sim, events = drive(kernel, watch, (worker(0, 0, [0]),), on_sample, 6)
    times = [e.time for e in events if e.kind == "sampled"]
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [1.0] * 5
    assert kinds(events) == ["drift", "remediated", "recovered"]


def test_drift_after_two_samples_below_then_migrate_back(topology: Topology) -> None:
    kernel = FakeKernel(topology)

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:  # what `migratepages PID 0 1` does between two samples
            kernel.pages[pid_of(sup, 0)] = {0: 10 * MiB, 1: 90 * MiB}

    watch = Watch(interval=1, remediate="migrate", migrate_rate_mbps=64)
    sup, _sim, events = drive(kernel, watch, (worker(0, 0, [0, 2]),), on_sample, 5)
    pid = spawned(events, 0)
    assert kinds(events, "w.0") == ["drift", "remediated", "recovered"]
    drift = next(e for e in events if e.kind == "drift")
    assert "10% of its memory is on node 0" in drift.message
    assert "90.0 MiB on node 1" in drift.message
    moved = next(e for e in events if e.kind == "remediated")
    assert "moved 90.0 MiB (94371840 bytes) from node 1 to node 0" in moved.message
    assert kernel.moves == [(pid, frozenset({1}), frozenset({0}))]
    assert kernel.pages[pid] == {0: 100 * MiB}
    assert sup.keeper is not None and sup.keeper.slot(sup.workers[0].spec).remediations == 1


def test_off_reports_drift_and_moves_nothing(topology: Topology) -> None:
    kernel = FakeKernel(topology)

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:
            kernel.pages[pid_of(sup, 0)] = {1: 100 * MiB}

    _sup, _sim, events = drive(kernel, Watch(interval=1), (worker(0, 0, [0]),), on_sample, 5)
    assert kinds(events) == ["drift"]  # said once, not every sample
    assert kernel.moves == []


def test_one_sample_below_is_not_drift(topology: Topology) -> None:
    kernel = FakeKernel(topology)

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        pid = pid_of(sup, 0)
        kernel.pages[pid] = {1: 100 * MiB} if n % 2 else {0: 100 * MiB}

    _sup, _sim, events = drive(kernel, Watch(interval=1), (worker(0, 0, [0]),), on_sample, 6)
    assert kinds(events) == []


def test_moves_wait_for_the_rate_limit(topology: Topology) -> None:
    kernel = FakeKernel(topology)

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:
            for i in (0, 1):
                kernel.pages[pid_of(sup, i)] = {0: 0, 1: 100 * MiB}

    watch = Watch(interval=1, remediate="migrate", migrate_rate_mbps=25)
    workers = (worker(0, 0, [0]), worker(1, 0, [2]))
    _sup, _sim, events = drive(kernel, watch, workers, on_sample, 10)
    moves = [e for e in events if e.kind == "remediated"]
    assert [e.worker.label for e in moves if e.worker] == ["w.0", "w.1"]
    # 100 MiB at 25 MB/s is 4.19 s: the second move waits that long, in whole intervals.
    assert moves[1].time - moves[0].time == pytest.approx(5.0)
    assert "next move not before 4.2 s" in moves[0].message


def test_no_move_while_the_home_node_lacks_the_room(topology: Topology) -> None:
    kernel = FakeKernel(topology)
    kernel.free[0] = 100 * MiB  # 100 MiB free, less the 64 MiB reserve: 36 MiB of room

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:
            kernel.pages[pid_of(sup, 0)] = {1: 50 * MiB}
        if n == 4:
            kernel.free[0] = 300 * MiB

    watch = Watch(interval=1, remediate="migrate")
    _sup, _sim, events = drive(kernel, watch, (worker(0, 0, [0]),), on_sample, 7)
    assert kinds(events) == ["drift", "remediation-skipped", "remediated", "recovered"]
    skipped = next(e for e in events if e.kind == "remediation-skipped")
    assert skipped.message == (
        "not moving 50.0 MiB from node 1: node 0 has 100.0 MiB free or reclaimable, less a "
        "reserve of 64.0 MiB"
    )
    assert len(kernel.moves) == 1


@pytest.mark.parametrize(("smt", "given"), [("avoid", {0, 3}), ("allow", {0, 1})])
def test_offline_cpu_replaced_by_the_smt_rule_then_restored(
    topology: Topology, smt: str, given: set[int]
) -> None:
    kernel = FakeKernel(topology)

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:
            kernel.usable = frozenset(topology.cpus) - {2}  # echo 0 > cpu2/online
        if n == 3:
            kernel.usable = frozenset(topology.cpus)  # echo 1

    workers = (worker(0, 0, [0, 2], smt), worker(1, 1, [4, 6], smt))
    _sup, _sim, events = drive(kernel, Watch(interval=1), workers, on_sample, 4)
    pid = spawned(events, 0)
    assert kinds(events) == ["cpus-moved", "cpus-restored"]
    moved = next(e for e in events if e.kind == "cpus-moved")
    assert moved.worker is not None and moved.worker.label == "w.0"
    want = ",".join(map(str, sorted(given)))
    assert f"now on CPUs {want.replace('0,1', '0-1')} (2 of 2)" in moved.message
    # Every thread of it was given the new CPUs, then the planned ones back; w.1 untouched.
    assert {kernel.affinity[t] for t in kernel.threads(pid)} == {frozenset({0, 2})}
    other = spawned(events, 1)
    assert {kernel.affinity[t] for t in kernel.threads(other)} == {frozenset({4, 6})}


def test_cpus_of_another_worker_only_when_the_node_has_no_free_ones(topology: Topology) -> None:
    kernel = FakeKernel(topology)
    seen: list[frozenset[int]] = []

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:
            kernel.usable = frozenset(topology.cpus) - {2}
        if n == 2:
            seen.append(kernel.affinity[pid_of(sup, 0)])

    workers = (worker(0, 0, [0, 2], "allow"), worker(1, 0, [1, 3], "allow"))
    _sup, _sim, events = drive(kernel, Watch(interval=1), workers, on_sample, 2)
    # Node 0's other CPUs (1, 3) are w.1's: shared, as the only ones left, one of them.
    assert kinds(events) == ["cpus-moved"]
    assert seen == [frozenset({0, 1})]


def test_a_kernel_that_resets_affinity_after_the_change_is_undone(topology: Topology) -> None:
    """Before Linux 6.2 a cpuset change puts every task of the cgroup on the cpuset's CPUs,
    a little after the change: after the sample that moved the worker, and also for a
    worker whose CPUs all stayed usable."""
    kernel = FakeKernel(topology)
    everything = frozenset(topology.cpus)

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:
            kernel.usable = everything - {2}
        if n == 2:  # the cpuset workqueue runs: all threads on the cpuset's CPUs
            for tid in kernel.affinity:
                kernel.affinity[tid] = everything - {2}

    workers = (worker(0, 0, [0, 2]), worker(1, 1, [4, 6]))
    _sup, _sim, events = drive(kernel, Watch(interval=1), workers, on_sample, 5)
    assert kinds(events) == ["cpus-moved"]  # one event: the reset is undone silently
    w0, w1 = spawned(events, 0), spawned(events, 1)
    assert {kernel.affinity[t] for t in kernel.threads(w0)} == {frozenset({0, 3})}
    assert {kernel.affinity[t] for t in kernel.threads(w1)} == {frozenset({4, 6})}


def test_a_node_without_cpus_is_said_and_nothing_is_set(topology: Topology) -> None:
    kernel = FakeKernel(topology)

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:
            kernel.usable = frozenset({4, 5, 6, 7})

    _sup, _sim, events = drive(kernel, Watch(interval=1), (worker(0, 0, [0, 2]),), on_sample, 4)
    assert kinds(events) == ["no-cpus"]
    (said,) = [e for e in events if e.kind == "no-cpus"]
    assert said.message.startswith("node 0 has no usable CPU left")
    assert "its memory policy is kept" in said.message
    assert kernel.set_calls == 0


def test_status_shows_locality_drift_and_moved_cpus(topology: Topology) -> None:
    kernel = FakeKernel(topology)
    shown: list[str] = []

    def on_sample(n: int, sup: Supervisor, sim: Sim) -> None:
        if n == 1:
            kernel.pages[pid_of(sup, 0)] = {0: 25 * MiB, 1: 75 * MiB}
            kernel.usable = frozenset(topology.cpus) - {2}
        if n == 3:
            shown.append(render_status([("x", sup.snapshot())], {}))

    _sup, _sim, _events = drive(kernel, Watch(interval=1), (worker(0, 0, [0, 2]),), on_sample, 3)
    (text,) = shown
    header, row = text.splitlines()[1:3]
    assert header.split() == [
        "worker", "state", "pid", "up", "starts", "node", "cpus", "memory", "verdict", "local",
        "moves",
    ]  # fmt: skip
    assert "0,3 (planned 0,2)" in row
    assert row.split()[-3:] == ["25%", "drift", "0"]
    assert "w.0 drifted: 25% of its memory is on node 0 (threshold 90%" in text


def test_cpuset_effective_is_read_from_the_nearest_cgroup_that_has_one(tmp_path: Path) -> None:
    from numarun import sysfs

    top = tmp_path / "sys/fs/cgroup"
    job = top / "svc" / "numarun-job-1"
    job.mkdir(parents=True)
    (top / "svc" / "cpuset.cpus.effective").write_text("0-1,3\n")
    fs = sysfs.Root(tmp_path)
    here, mount = "/sys/fs/cgroup/svc/numarun-job-1", "/sys/fs/cgroup"
    assert sysfs.cpuset_cpus_effective(fs, here, mount) == {0, 1, 3}  # the parent's
    (job / "cpuset.cpus.effective").write_text("1\n")
    assert sysfs.cpuset_cpus_effective(fs, here, mount) == {1}  # its own
    assert sysfs.cpuset_cpus_effective(fs, "/sys/fs/cgroup/other", mount) is None


def test_every_thread_of_a_live_process_is_listed() -> None:
    import os
    import threading

    from numarun import procfs

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        tids = procfs.tasks(os.getpid())
        assert os.getpid() in tids and helper.native_id in tids
    finally:
        stop.set()
        helper.join()


def test_a_version_1_state_file_of_an_older_numarun_is_still_read() -> None:
    from numarun.supervisor import state

    old = {
        "format": state.FORMAT,
        "version": 1,
        "job": "old",
        "source": None,
        "state": "running",
        "supervisor": {"pid": 1, "start_ticks": 5, "started": 1.0},
        "workers": [
            {
                "name": "w", "index": 0, "node": 0, "cpus": "0", "memory": None, "argv": ["w"],
                "state": "running", "pid": 2, "started": 1.0, "starts": 1,
                "last_status": None, "failure": None,
            }
        ],
    }  # fmt: skip
    (w,) = state.JobState.from_dict(old).workers
    assert (w.local_ratio, w.drifted, w.remediations, w.cpus_now) == (None, False, 0, None)
    with pytest.raises(state.StateFileError, match="version 3, not one of 1, 2"):
        state.JobState.from_dict({**old, "version": 3})


def test_a_worker_that_starts_after_a_cpu_went_offline_is_moved_too(
    topology: Topology,
) -> None:
    """The CPU goes offline while the worker waits to restart: the sample that saw the
    change had no instance to move; the next instance is moved when it is sampled."""
    kernel = FakeKernel(topology)
    sim = Sim(lambda label, n: Run(runs=0.5) if n == 0 else Run())
    rules = Supervision(restart="always", backoff=Backoff(initial=2.0, max=2.0, jitter=0.0))
    again = dataclasses.replace(worker(0, 0, [0, 2]), supervision=rules)
    sup = supervisor(sim, JobSpec("keep", (again,), watch=Watch(interval=1)))
    sup._keeper_kernel = kernel
    events: list[Event] = []
    for event in sup.events():
        events.append(event)
        if event.kind == "spawned" and event.pid is not None:
            kernel.started(event.pid, frozenset({0, 2}))
        if event.kind == "exited":  # down until t = 2.5; the sample at t = 1 sees cpu2 gone
            kernel.usable = frozenset(topology.cpus) - {2}
        if event.kind == "sampled" and len([e for e in events if e.kind == "sampled"]) == 5:
            sup.stop()
    _first, second = (e.pid for e in events if e.kind == "spawned")
    assert [e.pid for e in events if e.kind == "cpus-moved"] == [second]
    assert second is not None and kernel.affinity[second] == frozenset({0, 3})
