"""The supervisor's restart and stop logic on fake processes and fake time: nothing forks.

:class:`Sim` is both the supervisor's launcher and its clock. Its processes are scripts
(how long an instance runs, how it ends, what it does on its stop signal); its clock moves
only to the next thing due (an exit, a backoff, a stop deadline), so a test of days of
restarts runs in milliseconds and every time it asserts is exact. Each process's exit is
a byte on a pipe, which the supervisor selects on as it would on a pidfd.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import random
import selectors
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from numarun.errors import CommandNotFoundError
from numarun.supervisor import (
    Backoff,
    CrashLoop,
    Event,
    JobSpec,
    QuietPrinter,
    Supervision,
    Supervisor,
    WorkerSpec,
)
from numarun.supervisor.clock import Ready
from numarun.supervisor.process import Instance, Placer

EPOLL_MAX_SECONDS = (2**31 - 1) / 1000  # what epoll_wait can wait, as select() checks


@dataclass(frozen=True)
class Run:
    """One instance's script: it runs ``runs`` seconds (inf: until stopped), then ends."""

    runs: float = math.inf
    code: int = 0
    killed_by: int | None = None
    lines: tuple[str, ...] = ()
    on_stop: str | float = "exit"  # "exit" at once by the signal, "ignore", or seconds
    cannot_start: bool = False


@dataclass
class FakeProcess:
    pid: int
    run: Run
    exit_w: int
    status: int | None = None  # raw wait status once ended
    reaped: bool = False
    signals: list[int] = field(default_factory=list)


class NoPlacement:
    def apply(self, worker: WorkerSpec) -> None:
        pass

    def restore(self) -> None:
        pass


class Sim:
    """A fake launcher and a fake clock sharing one timeline."""

    def __init__(self, script: Callable[[str, int], Run]) -> None:
        self.script = script
        self.t = 1000.0
        self.procs: dict[int, FakeProcess] = {}
        self.starts: dict[str, int] = {}
        self.sent: list[tuple[float, str, str]] = []  # (time, worker, signal name)
        self.waits: list[float] = []
        self._due: list[tuple[float, int]] = []  # (exit time, pid)
        self._next_pid = 4000
        self._label: dict[int, str] = {}

    # -- the clock ----------------------------------------------------------------------

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t

    def select(self, selector: selectors.BaseSelector, timeout: float | None) -> Ready:
        if timeout is not None and timeout > EPOLL_MAX_SECONDS:
            raise OverflowError("timeout is too large")  # as selectors.EpollSelector does
        ready = selector.select(0)
        if ready:
            return ready
        deadline = None if timeout is None else self.t + timeout
        while self._due and self.procs[self._due[0][1]].status is not None:
            heapq.heappop(self._due)  # ended earlier, by a signal
        if self._due and (deadline is None or self._due[0][0] <= deadline):
            when, pid = heapq.heappop(self._due)
            self.t = max(self.t, when)
            proc = self.procs[pid]
            self._end(proc, code=proc.run.code, killed_by=proc.run.killed_by)
            return selector.select(0)
        assert deadline is not None, "the supervisor would wait for ever"
        self.waits.append(timeout or 0.0)
        self.t = deadline
        return []

    # -- the launcher -------------------------------------------------------------------

    def placer(self) -> Placer:
        return NoPlacement()

    def spawn(self, worker: WorkerSpec, placer: Placer, now: float, wall: float) -> Instance:
        n = self.starts.get(worker.label, 0)
        self.starts[worker.label] = n + 1
        run = self.script(worker.label, n)
        if run.cannot_start:
            raise CommandNotFoundError(f"{worker.label}: {worker.argv[0]}: command not found")
        self._next_pid += 1
        exit_r, exit_w = os.pipe()
        out_r, out_w = os.pipe()
        os.set_blocking(out_r, False)
        os.write(out_w, b"".join(line.encode() + b"\n" for line in run.lines))
        os.close(out_w)
        proc = FakeProcess(self._next_pid, run, exit_w)
        self.procs[proc.pid] = proc
        self._label[proc.pid] = worker.label
        if run.runs == 0:
            self._end(proc, code=run.code, killed_by=run.killed_by)
        elif run.runs < math.inf:
            heapq.heappush(self._due, (now + run.runs, proc.pid))
        return Instance(proc.pid, exit_r, out_r, None, now, wall)

    def signal_group(self, pgid: int, signum: int) -> bool:
        proc = self.procs[pgid]
        if proc.reaped:
            return False
        self.sent.append((self.t, self._label[pgid], signal.Signals(signum).name))
        if proc.status is not None:
            return True  # a zombie still has its group until it is reaped
        proc.signals.append(signum)
        if signum == signal.SIGKILL or proc.run.on_stop == "exit":
            self._end(proc, killed_by=signum)
        elif isinstance(proc.run.on_stop, float):
            heapq.heappush(self._due, (self.t + proc.run.on_stop, pgid))
        return True

    def reap(self, pid: int, *, block: bool = False) -> int | None:
        proc = self.procs[pid]
        if proc.reaped:
            raise ChildProcessError(pid)
        if proc.status is None:
            assert not block, "a blocking reap of a process that never ends"
            return None
        proc.reaped = True
        return proc.status

    def _end(self, proc: FakeProcess, *, code: int = 0, killed_by: int | None = None) -> None:
        proc.status = killed_by if killed_by is not None else code << 8
        os.write(proc.exit_w, b"x")
        os.close(proc.exit_w)

    def live(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.status is None]


def job(*workers: WorkerSpec, name: str = "sim") -> JobSpec:
    return JobSpec(name, tuple(workers))


def slot(name: str, index: int = 0, **supervision: object) -> WorkerSpec:
    return WorkerSpec(name, index, (name,), supervision=Supervision(**supervision))  # type: ignore[arg-type]


def supervisor(sim: Sim, spec: JobSpec) -> Supervisor:
    return Supervisor(
        spec,
        printer=QuietPrinter(),
        clock=sim,
        launcher=sim,
        rng=random.Random(5),
        state_dir=False,
        guardian=False,
    )


def run(sim: Sim, *workers: WorkerSpec) -> tuple[Supervisor, list[Event]]:
    sup = supervisor(sim, job(*workers))
    events = list(sup.events())
    return sup, events


def of(events: list[Event], label: str, kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind and e.worker and e.worker.label == label]


# -- restarts -----------------------------------------------------------------------------


def test_a_crash_loop_backs_off_exponentially_then_fails_the_job() -> None:
    sim = Sim(lambda label, n: Run(runs=1.0, code=3, lines=(f"boom {n}",)))
    backoff = Backoff(initial=2.0, max=10.0, jitter=0.0)
    sup, events = run(sim, slot("db", backoff=backoff, crash_loop=CrashLoop(limit=5, window=600)))
    assert [e.delay for e in of(events, "db.0", "restarting")] == [2.0, 4.0, 8.0, 10.0]
    # Each start is one run (1 s) plus the backoff after the previous exit.
    starts = [e.time for e in of(events, "db.0", "spawned")]
    assert [b - a for a, b in itertools.pairwise(starts)] == [3.0, 5.0, 9.0, 11.0]
    (failed,) = of(events, "db.0", "failed")
    assert failed.message == "exit status 3, crash loop: 5 exits within 600 s (crash_loop.limit 5)"
    assert sup.result().exit_code == 11 and list(sup.workers[0].tail)[-1] == "boom 4"
    assert sim.live() == []


def test_the_backoff_starts_again_once_an_instance_stayed_up_for_the_window() -> None:
    # Two quick crashes, one long run (longer than the window), then quick crashes again.
    runs = [0.5, 0.5, 100.0, 0.5, 0.5]
    sim = Sim(lambda label, n: Run(runs=runs[n], code=1) if n < len(runs) else Run(runs=math.inf))
    policy = {"backoff": Backoff(initial=1.0, max=60.0, jitter=0.0)}
    sup = supervisor(sim, job(slot("w", crash_loop=CrashLoop(limit=10, window=50), **policy)))
    delays: list[float] = []
    for event in sup.events():
        if event.kind == "restarting":
            delays.append(event.delay or 0.0)
            if len(delays) == len(runs):
                sup.stop()
    assert delays == [1.0, 2.0, 1.0, 2.0, 4.0]


def test_exits_spread_wider_than_the_window_never_add_up_to_a_crash_loop() -> None:
    sim = Sim(lambda label, n: Run(runs=40.0, code=1) if n < 6 else Run(runs=math.inf))
    sup = supervisor(
        sim,
        job(
            slot(
                "w",
                backoff=Backoff(initial=1.0, max=1.0, jitter=0.0),
                crash_loop=CrashLoop(limit=2, window=30),
            )
        ),
    )
    for event in sup.events():
        if event.kind == "spawned" and sim.starts["w.0"] == 7:
            sup.stop()
    assert sup.result().ok and sup.workers[0].starts == 7


def test_on_failure_stop_job_stops_the_other_workers_gracefully() -> None:
    sim = Sim(lambda label, n: Run(runs=5.0, code=2) if label == "bad.0" else Run())
    sup, events = run(sim, slot("bad", restart="never"), slot("good", restart="never"))
    assert sup.result().reason == "bad.0 failed"
    assert (1005.0, "good.0", "SIGTERM") in sim.sent
    assert [e.kind for e in events if e.worker and e.worker.label == "good.0"] == [
        "spawned",
        "stopping",
        "exited",
        "done",
    ]


def test_on_failure_continue_leaves_the_others_running() -> None:
    sim = Sim(lambda label, n: Run(runs=5.0, code=2) if label == "bad.0" else Run(runs=50.0))
    sup, events = run(
        sim, slot("bad", restart="never", on_failure="continue"), slot("good", restart="never")
    )
    assert not [s for s in sim.sent if s[1] == "good.0" and s[2] != "SIGKILL"]
    (done,) = of(events, "good.0", "done")
    assert done.time == 1050.0 and done.message == "exited"
    assert [w.state for w in sup.workers] == ["failed", "exited"]


def test_restart_never_and_a_clean_exit_end_the_worker_without_a_failure() -> None:
    sim = Sim(lambda label, n: Run(runs=1.0, code=0))
    sup, events = run(sim, slot("once", restart="on-failure"))
    assert [e.kind for e in events if e.worker] == ["spawned", "exited", "done"]
    assert sup.result().ok


def test_a_restart_that_cannot_start_counts_as_a_crash() -> None:
    sim = Sim(lambda label, n: Run(runs=1.0, code=1) if n == 0 else Run(cannot_start=True))
    _sup, events = run(sim, slot("gone", crash_loop=CrashLoop(limit=3, window=60)))
    assert len(of(events, "gone.0", "spawn-failed")) == 2
    assert "exit status 127, crash loop: 3 exits" in of(events, "gone.0", "failed")[0].message


# -- stopping -----------------------------------------------------------------------------


def stubborn_job(sim: Sim, stop_timeout: float) -> Supervisor:
    return supervisor(sim, job(slot("db", stop_timeout=stop_timeout, stop_signal="SIGINT")))


def test_a_worker_that_ignores_its_stop_signal_is_killed_after_stop_timeout() -> None:
    sim = Sim(lambda label, n: Run(on_stop="ignore"))
    sup = stubborn_job(sim, 30.0)
    for event in sup.events():
        if event.kind == "spawned":
            sup.stop()
    assert sim.sent[:2] == [(1000.0, "db.0", "SIGINT"), (1030.0, "db.0", "SIGKILL")]
    assert sup.result().ok and sup.workers[0].last_status is not None
    assert sup.workers[0].last_status.signal == signal.SIGKILL


def test_repeated_stop_requests_stay_graceful_until_the_worker_exits_by_itself() -> None:
    sim = Sim(lambda label, n: Run(on_stop=20.0))  # flushes for 20 s, then exits 0
    sup = stubborn_job(sim, 60.0)
    seen: list[Event] = []
    for event in sup.events():
        seen.append(event)
        if event.kind == "spawned":
            sup.on_signal(signal.SIGTERM)  # numarun stop
        elif event.kind == "stopping":
            sup.on_signal(signal.SIGTERM)  # numarun stop, again
            sup.on_signal(signal.SIGHUP)
    assert [s[2] for s in sim.sent] == ["SIGINT"]  # its stop signal, once; no SIGKILL
    assert "killed" not in [e.kind for e in seen]
    assert sup.workers[0].last_status is not None and sup.workers[0].last_status.code == 0
    assert sim.t == 1020.0
    notes = sup.printer.notes  # type: ignore[attr-defined]
    assert any("SIGTERM again: still stopping, waiting for db.0 to exit" in n for n in notes)


def test_a_second_ctrl_c_or_the_kill_signal_kills_at_once() -> None:
    for second in (signal.SIGINT, signal.SIGQUIT):
        sim = Sim(lambda label, n: Run(on_stop=20.0))
        sup = stubborn_job(sim, 60.0)
        for event in sup.events():
            if event.kind == "spawned":
                sup.on_signal(signal.SIGINT)
            elif event.kind == "stopping" and "SIGINT" in event.message:
                sup.on_signal(second)
        assert [s[2] for s in sim.sent][:2] == ["SIGINT", "SIGKILL"]
        assert sim.t == 1000.0


def test_huge_timers_built_in_python_are_waited_in_steps_not_overflowed() -> None:
    # The spec refuses these; a library caller can still build them by hand.
    sim = Sim(lambda label, n: Run(runs=1.0, code=1) if n == 0 else Run(on_stop="ignore"))
    backoff = Backoff(initial=3e6, max=3e6, jitter=0.0)  # over epoll's 24.8 days
    sup = supervisor(sim, job(slot("w", backoff=backoff, stop_timeout=1e7)))
    for event in sup.events():
        if event.kind == "spawned" and sim.starts["w.0"] == 2:
            sup.stop()
    assert sup.workers[0].starts == 2
    assert sim.t == pytest.approx(1001.0 + 3e6 + 1e7)
    assert max(sim.waits) <= 3600.0
