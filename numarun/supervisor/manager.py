"""The supervisor: start a job's workers, keep them alive, stop them, leave nothing behind.

One thread, one ``select`` loop, no polling: the loop sleeps until a worker writes output
(its pipes), a worker exits (its pidfd, Linux 5.3+, becomes readable), a signal arrives
(``signal.set_wakeup_fd``), or the next timer is due (a restart after backoff, a stop
deadline). An idle job with no pending timer waits in ``select`` with no timeout and costs
no CPU at all.

Every state change is also an :class:`~numarun.supervisor.model.Event`, which
:meth:`Supervisor.events` yields in order; the ``numarun run`` command and
``examples/orchestrate.py`` are thin loops over it.
"""

from __future__ import annotations

import os
import random
import resource
import selectors
import signal
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from numarun import procfs
from numarun.cpulist import format_list
from numarun.errors import NumarunError, SupervisorError
from numarun.supervisor import state as statefile
from numarun.supervisor.clock import Clock, RealClock
from numarun.supervisor.contain import JobCgroup
from numarun.supervisor.guardian import Guardian
from numarun.supervisor.keeper import Keeper, KeeperKernel
from numarun.supervisor.model import (
    Event,
    EventKind,
    ExitStatus,
    JobSpec,
    WorkerSpec,
)
from numarun.supervisor.printer import LineSplitter, PrefixPrinter, Printer
from numarun.supervisor.process import (
    Instance,
    Launcher,
    Placer,
    ProcessLauncher,
    spawn_error_status,
)

WorkerState = Literal["pending", "running", "backoff", "stopping", "exited", "stopped", "failed"]
DOWN: frozenset[str] = frozenset({"exited", "stopped", "failed"})

# Signals that ask the supervisor to stop the job gracefully; repeating one does not make
# it less graceful (a second ``numarun stop`` must not kill a database mid-flush) ...
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# ... except a second Ctrl-C, a person at the terminal who has seen it is still stopping.
SECOND_KILLS = signal.SIGINT
# Kill every worker at once: ``numarun stop --now``, or Ctrl-\ at the terminal.
KILL_SIGNAL = signal.SIGQUIT
# The longest single wait in select: epoll takes milliseconds in a C int (about 24 days),
# so a longer timer is waited for in steps rather than overflowing.
MAX_WAIT = 3600.0


@dataclass
class Worker:
    """One worker slot at run time: its spec, its current instance, and its history."""

    spec: WorkerSpec
    state: WorkerState = "pending"
    instance: Instance | None = None
    starts: int = 0
    consecutive: int = 0  # restarts since the last instance that stayed up
    exits: deque[float] = field(default_factory=deque)  # exit times within the crash window
    last_status: ExitStatus | None = None
    last_pid: int | None = None
    failure: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    next_start: float | None = None
    stop_deadline: float | None = None

    @property
    def pid(self) -> int | None:
        return self.instance.pid if self.instance is not None else None


@dataclass
class _Stream:
    worker: Worker
    name: str  # "stdout" or "stderr"
    fd: int
    splitter: LineSplitter = field(default_factory=LineSplitter)


@dataclass(frozen=True)
class JobResult:
    """How the job ended. ``exit_code`` is what ``numarun run`` exits with."""

    failed: tuple[Worker, ...]
    reason: str  # why the job stopped ("all workers exited", "SIGTERM", "web.1 failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else SupervisorError.exit_code

    def error(self) -> SupervisorError:
        """The one-line error ``numarun run`` ends with when workers failed."""
        parts = [f"{w.spec.label} {w.failure}" for w in self.failed]
        noun = "worker" if len(self.failed) == 1 else "workers"
        return SupervisorError(
            f"{len(self.failed)} {noun} failed: " + "; ".join(parts),
            "see each worker's last lines above; fix the program, or raise crash_loop = "
            "{ limit = ..., window = ... } or set restart in the job spec",
        )


class Supervisor:
    """Run a :class:`JobSpec`: ``start()``, iterate ``events()``, ``stop()``.

    ``printer`` receives workers' output lines and the supervisor's notes (default: the
    prefixed terminal printer); ``clock`` gives time and waits (inject
    :class:`~numarun.supervisor.clock.FakeClock` to test restarts without sleeping);
    ``rng`` draws the backoff jitter; ``launcher`` starts, signals and reaps processes
    (default: the real :class:`~numarun.supervisor.process.ProcessLauncher`; tests inject
    fake processes, as honcho injects its process constructor); ``state_dir`` is where
    the state file goes (None: the runtime directory; False: no state file);
    ``guardian`` starts the process that kills the workers if the supervisor itself is
    killed; ``cgroup`` None runs the job in a cgroup of its own where numarun may create
    one (see :mod:`~numarun.supervisor.contain`; ``NUMARUN_CGROUP=0`` turns it off), False
    never; ``output_events`` also yields every output line as an ``output`` event (for
    scripts that wait for "ready" lines); ``keeper_kernel`` is what the job's ``[watch]``
    sampling reads and changes (default: the live kernel; see
    :mod:`~numarun.supervisor.keeper`).

    One supervisor, one thread: call every method from the thread that called ``start``
    (that thread's placement is what workers inherit while they are started). With a job
    cgroup, the whole calling process is in it while workers start, and back in its own
    cgroup after (:meth:`~numarun.supervisor.process.ThreadPlacement.apply`).
    """

    def __init__(
        self,
        job: JobSpec,
        *,
        printer: Printer | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        launcher: Launcher | None = None,
        state_dir: str | Literal[False] | None = None,
        guardian: bool = True,
        cgroup: bool | None = None,
        tail_lines: int = 20,
        output_events: bool = False,
        keeper_kernel: KeeperKernel | None = None,
    ) -> None:
        self.job = job
        self.printer: Printer = printer if printer is not None else PrefixPrinter(job.workers)
        self.clock: Clock = clock if clock is not None else RealClock()
        self.rng = rng if rng is not None else random.Random()
        self.launcher: Launcher = launcher if launcher is not None else ProcessLauncher()
        self.workers = [Worker(w, tail=deque(maxlen=tail_lines)) for w in job.workers]
        self.state_path: str | None = (
            None if state_dir is False else statefile.state_path(job.name, state_dir or None)
        )
        self._want_guardian = guardian
        self._want_cgroup = cgroup
        self._cgroup: JobCgroup | None = None
        self._output_events = output_events
        self._guardian: Guardian | None = None
        self._sel = selectors.DefaultSelector()
        self._streams: dict[int, _Stream] = {}
        self._queue: deque[Event] = deque()
        self._placement: Placer | None = None
        self._started = False
        self._finished = False
        self._stopping = False
        self._forced = False
        self._reason = ""
        self._dirty = False
        self._state_failed = False
        self._signal_fd: int | None = None
        self._started_wall = 0.0
        self._keeper_kernel = keeper_kernel
        #: The job's [watch] sampling (None without a [watch] table); see .keeper.
        self.keeper: Keeper | None = None
        self._next_sample: float | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        """Start every worker. Raises (and leaves nothing running) if one cannot start."""
        if self._started:
            return
        self._started = True
        self._started_wall = self.clock.wall()
        if isinstance(self.launcher, ProcessLauncher):
            # Every worker of every group, before the first one starts (fake launchers
            # start no real programs: nothing of theirs to look for).
            from numarun.preflight import check_workers

            check_workers(self.job.workers, self.job.source)
        if self.state_path is not None:
            # Before anything starts: a state directory that cannot be trusted, or a
            # running job of the same name, refuses the job with nothing to undo.
            statefile.prepare_dir(os.path.dirname(self.state_path))
            statefile.refuse_running(self.state_path, self.job.name)
        _raise_fd_limit(3 * len(self.workers) + 64)
        self._placement = self.launcher.placer()
        if self._want_cgroup is not False and isinstance(self.launcher, ProcessLauncher):
            from numarun.supervisor.contain import JobCgroup

            self._cgroup = JobCgroup.create(self.job.name)
            self.launcher.contain(self._cgroup)
        if self.job.watch is not None:
            self._start_keeper()
        if self._want_guardian:
            self._guardian = Guardian(
                [self.state_path] if self.state_path else [],
                cgroup=self._cgroup.path if self._cgroup is not None else None,
            )
        try:
            try:
                for worker in _start_order(self.workers):
                    self._spawn(worker, initial=True)
            finally:
                # First: out of the job's cgroup before an abort kills what is in it.
                self._placement.restore()
        except BaseException:
            self._abort()
            raise
        self._flush_state()

    def events(self) -> Iterator[Event]:
        """Run the job, yielding each event as it happens, until every worker is down."""
        self.start()
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self._finished:
                return
            if all(w.state in DOWN for w in self.workers):
                self._finish()
                continue
            self._flush_state()
            ready = self.clock.select(self._sel, self._timeout())
            for key, _mask in ready:
                # Handling one ready file can close another of the same batch (a reaped
                # worker's pipes are drained to their end): act only on files still ours.
                kind = key.data[0]
                if kind == "out":
                    stream: _Stream = key.data[1]
                    if self._streams.get(key.fd) is stream:
                        self._read(stream)
                elif kind == "exit":
                    worker: Worker = key.data[1]
                    if worker.instance is not None and worker.instance.pidfd == key.fd:
                        self._reap(worker)
                elif kind == "signal":
                    self._read_signals()
            self._run_timers()

    def run(self) -> JobResult:
        """Start, supervise until every worker is down, and say how it ended."""
        for _event in self.events():
            pass
        return self.result()

    def stop(self, reason: str = "stop requested", *, force: bool = False) -> None:
        """Stop the job: each worker's stop signal to its process group, SIGKILL after
        its ``stop_timeout`` (at once with ``force``). Returns at once; the events loop
        then runs until every worker is down."""
        if self._stopping and (not force or self._forced):
            return
        now = self.clock.now()
        if not self._stopping:
            self._stopping = True
            self._reason = reason
            self._emit("job-stopping", message=reason)
        self._forced = self._forced or force
        for w in self.workers:
            if w.state in ("pending", "backoff"):
                w.state = "stopped"
                w.next_start = None
                self._emit("done", w, message="stopped before its restart")
            elif w.state == "running" or (w.state == "stopping" and force):
                assert w.instance is not None
                signum = signal.SIGKILL if force else w.spec.supervision.signum
                self.launcher.signal_group(w.instance.pid, signum)
                w.state = "stopping"
                w.stop_deadline = None if force else now + w.spec.supervision.stop_timeout
                self._emit("stopping", w, pid=w.instance.pid, message=f"sent {_signame(signum)}")
        self._dirty = True

    def result(self) -> JobResult:
        failed = tuple(w for w in self.workers if w.state == "failed")
        return JobResult(failed=failed, reason=self._reason or "all workers exited")

    def close(self) -> None:
        """Kill whatever still runs (SIGKILL to every group), reap it, release everything.

        For callers that leave :meth:`events` early; a loop that ran to its end has
        nothing left to do here.
        """
        if self._finished:
            return
        for w in self.workers:
            if w.instance is not None:
                self.launcher.signal_group(w.instance.pid, signal.SIGKILL)
        for w in self.workers:
            if w.instance is not None:
                try:
                    self.launcher.reap(w.instance.pid, block=True)
                except ChildProcessError:
                    pass
                self._release(w)
        for w in self.workers:
            if w.state not in DOWN:
                w.state = "stopped"
                w.next_start = w.stop_deadline = None
        self._finish()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def handle_signals(self) -> Iterator[None]:
        """Within the block, SIGINT/SIGTERM/SIGHUP stop the job, SIGQUIT kills it (see
        :meth:`on_signal`).

        Main thread only (Python's rule for signal handlers). The handlers do nothing in
        Python; ``set_wakeup_fd`` writes each signal's number to a pipe the loop selects
        on, so a signal is handled in the loop, between two events, never inside one.
        """
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        handled = (*STOP_SIGNALS, KILL_SIGNAL)
        old_handlers = {s: signal.signal(s, _ignore_in_python) for s in handled}
        old_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._signal_fd = read_end
        self._sel.register(read_end, selectors.EVENT_READ, ("signal",))
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_fd)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            if self._signal_fd is not None:
                self._sel.unregister(read_end)
                self._signal_fd = None
            if self._finished:
                self._sel.close()
            os.close(read_end)
            os.close(write_end)

    def snapshot(self) -> statefile.JobState:
        """What the state file holds (and ``numarun status`` shows)."""
        return statefile.JobState(
            job=self.job.name,
            source=self.job.source,
            state="stopping" if self._stopping else "running",
            supervisor=statefile.SupervisorState(
                pid=os.getpid(),
                start_ticks=procfs.start_ticks(os.getpid()),
                started=self._started_wall,
                guardian=self._guardian.proc.pid if self._guardian else None,
                cgroup=self._cgroup.path if self._cgroup is not None else None,
            ),
            workers=tuple(
                statefile.WorkerState(
                    name=w.spec.name,
                    index=w.spec.index,
                    node=w.spec.node,
                    cpus=format_list(w.spec.cpus) if w.spec.cpus is not None else None,
                    memory=str(w.spec.memory) if w.spec.memory is not None else None,
                    argv=w.spec.argv,
                    state=w.state,
                    pid=w.pid,
                    started=w.instance.started_wall if w.instance else None,
                    starts=w.starts,
                    last_status=str(w.last_status) if w.last_status else None,
                    failure=w.failure or None,
                    **self._watched(w),
                )
                for w in self.workers
            ),
        )

    def _watched(self, w: Worker) -> dict[str, Any]:
        """A worker's [watch] fields of the state file (none without a [watch] table)."""
        if self.keeper is None:
            return {}
        kept = self.keeper.slot(w.spec)
        current = kept.pid == w.pid and w.pid is not None
        ratio = kept.local_ratio if current else None
        return {
            "local_ratio": round(ratio, 4) if ratio is not None else None,
            "drifted": kept.drifted and current,
            "drift": kept.drift if kept.drifted and current else None,
            "remediations": kept.remediations,
            "cpus_now": format_list(kept.cpus)
            if kept.cpus is not None and kept.cpus_pid == w.pid
            else None,
        }

    # -- starting -----------------------------------------------------------------------

    def _spawn(self, w: Worker, *, initial: bool = False) -> None:
        assert self._placement is not None
        now, wall = self.clock.now(), self.clock.wall()
        w.next_start = None
        try:
            inst = self.launcher.spawn(w.spec, self._placement, now, wall)
        except NumarunError as err:
            if initial:
                raise
            w.starts += 1
            status = ExitStatus(code=spawn_error_status(err))
            w.last_status = status
            w.tail.append(err.message)
            self._emit("spawn-failed", w, status=status, message=err.message)
            self._after_exit(w, status, ran=0.0)
            return
        w.instance = inst
        w.last_pid = inst.pid
        w.starts += 1
        w.state = "running"
        if self._guardian is not None:
            self._guardian.watch(inst.pid)
        self._sel.register(inst.pidfd, selectors.EVENT_READ, ("exit", w))
        for name, fd in (("stdout", inst.stdout), ("stderr", inst.stderr)):
            if fd is not None:
                stream = _Stream(w, name, fd)
                self._streams[fd] = stream
                self._sel.register(fd, selectors.EVENT_READ, ("out", stream))
        self._emit("spawned", w, pid=inst.pid, message=w.spec.placement_text())
        self._dirty = True

    # -- output -------------------------------------------------------------------------

    def _read(self, stream: _Stream) -> None:
        """Read what the pipe holds now; at end of file, flush the last line and close."""
        while True:
            try:
                chunk = os.read(stream.fd, 65536)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not chunk:
                self._emit_lines(stream, stream.splitter.finish())
                self._sel.unregister(stream.fd)
                del self._streams[stream.fd]
                os.close(stream.fd)
                return
            self._emit_lines(stream, stream.splitter.feed(chunk))
            if len(chunk) < 65536:
                return

    def _emit_lines(self, stream: _Stream, lines: list[str]) -> None:
        w = stream.worker
        for text in lines:
            w.tail.append(text)
            self.printer.line(w.spec, stream.name, text)
            if self._output_events:
                self._queue.append(
                    Event("output", self.clock.now(), w.spec, message=text, stream=stream.name)
                )

    # -- exits --------------------------------------------------------------------------

    def _reap(self, w: Worker) -> None:
        inst = w.instance
        if inst is None:
            return
        try:
            raw = self.launcher.reap(inst.pid)
        except ChildProcessError:
            # Reaped by someone else (a library caller's waitpid(-1)): status unknown.
            raw = 255 << 8
        if raw is None:
            return
        self._release(w)
        status = ExitStatus.from_wait(raw)
        w.last_status = status
        self._emit("exited", w, pid=inst.pid, status=status)
        self._after_exit(w, status, ran=self.clock.now() - inst.started)

    def _release(self, w: Worker) -> None:
        """Forget a reaped instance: pidfd, its leftover process group, pending output."""
        inst = w.instance
        assert inst is not None
        w.instance = None
        self._sel.unregister(inst.pidfd)
        os.close(inst.pidfd)
        # A worker's process group does not outlive it: helpers it left behind would keep
        # its port or files busy for the next instance, and the guardian can forget it.
        self.launcher.signal_group(inst.pid, signal.SIGKILL)
        if self._guardian is not None:
            self._guardian.forget(inst.pid)
        for fd in (inst.stdout, inst.stderr):
            stream = self._streams.get(fd) if fd is not None else None
            if stream is not None:
                self._read(stream)  # what it wrote before it died, before we judge it
        if w.spec.log is not None:
            w.tail.extend(_file_tail(w.spec.log, w.tail.maxlen or 20))
        self._dirty = True

    def _after_exit(self, w: Worker, status: ExitStatus, ran: float) -> None:
        now = self.clock.now()
        if w.state == "stopping" or self._stopping:
            w.state = "stopped"
            w.stop_deadline = None
            self._emit("done", w, status=status, message="stopped")
            return
        rs = w.spec.supervision
        loop = rs.crash_loop
        failure = not status.success
        if ran >= loop.window:
            w.consecutive = 0
        want = rs.restart == "always" or (rs.restart == "on-failure" and failure)
        if want:
            if loop.limit:
                w.exits.append(now)
                while w.exits and w.exits[0] < now - loop.window:
                    w.exits.popleft()
            if loop.limit and len(w.exits) >= loop.limit:
                self._fail(
                    w,
                    f"{status}, crash loop: {len(w.exits)} exits within "
                    f"{_seconds(loop.window)} (crash_loop.limit {loop.limit})",
                )
                return
            w.consecutive += 1
            delay = rs.backoff.delay(w.consecutive, self.rng.random())
            w.state = "backoff"
            w.next_start = now + delay
            self._emit("restarting", w, status=status, delay=delay)
        elif failure:
            self._fail(w, f"{status} (restart = {rs.restart})")
        else:
            w.state = "exited"
            self._emit("done", w, status=status, message="exited")

    def _fail(self, w: Worker, why: str) -> None:
        w.state = "failed"
        w.failure = why
        w.next_start = None
        self._emit("failed", w, status=w.last_status, message=why)
        for text in w.tail:
            self.printer.note(w.spec, f"last output: {text}")
        if w.spec.supervision.on_failure == "stop-job":
            self.stop(f"{w.spec.label} failed")

    # -- timers -------------------------------------------------------------------------

    def _timeout(self) -> float | None:
        deadlines = [w.next_start for w in self.workers if w.next_start is not None]
        deadlines += [w.stop_deadline for w in self.workers if w.stop_deadline is not None]
        if self._next_sample is not None and not self._stopping:
            deadlines.append(self._next_sample)
        if not deadlines:
            return None
        return min(MAX_WAIT, max(0.0, min(deadlines) - self.clock.now()))

    def _run_timers(self) -> None:
        now = self.clock.now()
        assert self._placement is not None
        if not self._stopping:
            self._sample_due(now)
        try:
            for w in self.workers:
                if w.state == "backoff" and w.next_start is not None and w.next_start <= now:
                    self._spawn(w)
                elif (
                    w.state == "stopping"
                    and w.stop_deadline is not None
                    and w.stop_deadline <= now
                    and w.instance is not None
                ):
                    w.stop_deadline = None
                    self.launcher.signal_group(w.instance.pid, signal.SIGKILL)
                    self._emit(
                        "killed",
                        w,
                        pid=w.instance.pid,
                        message=f"still running {_seconds(w.spec.supervision.stop_timeout)} "
                        f"after {w.spec.supervision.stop_signal}: sent SIGKILL",
                    )
        finally:
            self._placement.restore()

    # -- watching -----------------------------------------------------------------------

    def _start_keeper(self) -> None:
        assert self.job.watch is not None
        kernel = self._keeper_kernel
        if kernel is None:
            from numarun.supervisor.keeper import LiveKernel
            from numarun.topology import read_topology

            cgroup = self._cgroup.path if self._cgroup is not None else None
            kernel = LiveKernel(read_topology(devices=False), cgroup)
        self.keeper = Keeper(self.job.watch, kernel)
        self._next_sample = self.clock.now() + self.job.watch.interval

    def _sample_due(self, now: float) -> None:
        """Sample the running workers when the interval is up, and emit what it found.

        The sample's CPU cost (with the state file it rewrites) sets the next wait: the
        interval, or longer where that would spend more than the budget (see
        :meth:`~numarun.supervisor.keeper.Keeper.wait_after`)."""
        keeper = self.keeper
        if keeper is None or self._next_sample is None or now < self._next_sample:
            return
        spent = keeper.kernel.cpu_seconds()
        running = [
            (w.spec, w.instance.pid)
            for w in self.workers
            if w.state == "running" and w.instance is not None
        ]
        by_label = {w.spec.label: w for w in self.workers}
        for finding in keeper.sample(now, running):
            worker = by_label.get(finding.worker.label) if finding.worker is not None else None
            self._emit(finding.kind, worker, pid=finding.pid, message=finding.message)
        self._dirty = True
        self._flush_state()
        wait, note = keeper.wait_after(keeper.kernel.cpu_seconds() - spent)
        if note is not None:
            self._emit(note.kind, message=note.message)
        # The next one a wait after this one was due (no drift with a busy loop), but never
        # in the past after a long stall.
        self._next_sample = max(self._next_sample + wait, now + wait / 2)
        self._emit("sampled", message=f"sample {keeper.samples}")

    # -- signals ------------------------------------------------------------------------

    def _read_signals(self) -> None:
        assert self._signal_fd is not None
        try:
            data = os.read(self._signal_fd, 512)
        except BlockingIOError:
            return
        for signum in data:
            self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        """What a signal to the supervisor does (the loop calls it; tests may, too).

        The first stop signal stops the job gracefully. Repeating it keeps waiting (a
        second ``numarun stop`` is what an operator types when the first one's wait ran
        out, and must not kill a database mid-flush); only a second Ctrl-C, or
        :data:`KILL_SIGNAL` (``numarun stop --now``), kills every worker at once.
        """
        name = _signame(signum)
        if signum == KILL_SIGNAL:
            self.printer.note(None, f"{name}: killing every worker now")
            self.stop(name, force=True)
        elif not self._stopping:
            again = "Ctrl-C again" if signum == SECOND_KILLS else "numarun stop --now"
            self.printer.note(None, f"{name}: stopping ({again} to kill at once)")
            self.stop(name)
        elif signum == SECOND_KILLS:
            self.printer.note(None, f"{name} again: killing every worker now")
            self.stop(name, force=True)
        elif not self._forced:
            left = [w.spec.label for w in self.workers if w.state == "stopping"]
            self.printer.note(
                None,
                f"{name} again: still stopping, waiting for {_names(left)} to exit "
                f"(numarun stop --now {self.job.name} or Ctrl-C twice kills at once)",
            )

    # -- the end ------------------------------------------------------------------------

    def _finish(self) -> None:
        if self._cgroup is not None:
            # Every worker is down: what is left in the job's cgroup escaped its process
            # group (a daemon's double fork) and would hold its pipes or ports.
            self._cgroup.close()
            self._cgroup = None
            if isinstance(self.launcher, ProcessLauncher):
                self.launcher.contain(None)
        for stream in list(self._streams.values()):
            self._read(stream)
        for fd, stream in list(self._streams.items()):
            # Still open: something that escaped the worker's process group holds the
            # pipe. What it writes from now on goes nowhere.
            self._emit_lines(stream, stream.splitter.finish())
            self._sel.unregister(fd)
            os.close(fd)
        self._streams.clear()
        if self._guardian is not None:
            self._guardian.close()
            self._guardian = None
        if self.state_path is not None:
            statefile.remove_state(self.state_path)
        if self._signal_fd is None:
            self._sel.close()
        self._finished = True
        self._emit("job-done", message=self.result().reason)

    def _abort(self) -> None:
        """Undo a start that failed half-way: kill and reap what was started."""
        self._stopping = True
        self.close()

    def _flush_state(self) -> None:
        if self._dirty and self.state_path is not None and not self._finished:
            try:
                statefile.write_state(self.state_path, self.snapshot())
            except OSError as err:
                # A full disk must not end the supervision of running workers; say it once.
                if not self._state_failed:
                    self.printer.note(
                        None,
                        f"cannot write the state file {self.state_path}: {err.strerror}; "
                        "numarun status and stop will not see this job's changes",
                    )
                self._state_failed = True
            else:
                self._state_failed = False
        self._dirty = False

    def _emit(
        self,
        kind: EventKind,
        worker: Worker | None = None,
        *,
        pid: int | None = None,
        status: ExitStatus | None = None,
        delay: float | None = None,
        message: str = "",
    ) -> None:
        event = Event(
            kind=kind,
            time=self.clock.now(),
            worker=worker.spec if worker is not None else None,
            pid=pid,
            status=status,
            delay=delay,
            message=message,
        )
        self._queue.append(event)
        note = _note(event)
        if note:
            self.printer.note(worker.spec if worker else None, note)


def _start_order(workers: list[Worker]) -> list[Worker]:
    """The first start's order: one worker of each CPU set in turn (0, 128, 1, 129, ... for
    a plan that puts 0-127 on CPU 0 and 128-255 on CPU 1), each set's in index order.

    A worker is born on its own CPUs, which the supervisor's thread holds while it spawns
    it (see :mod:`numarun.supervisor.process`); in index order the next spawn waits on the
    same CPU for the last one's exec, where in turns it runs beside it: 256 workers of a
    2-CPU plan start in ~0.3 s against ~0.5 s (bench/supervisor_bench.py).
    """
    by_cpus: dict[frozenset[int] | None, deque[Worker]] = {}
    for worker in workers:
        by_cpus.setdefault(worker.spec.cpus, deque()).append(worker)
    order: list[Worker] = []
    queues = list(by_cpus.values())
    while queues:
        order.extend(queue.popleft() for queue in queues)
        queues = [queue for queue in queues if queue]
    return order


def _note(event: Event) -> str:
    kind = event.kind
    if kind == "spawned":
        return f"started, pid {event.pid} ({event.message})"
    if kind == "restarting":
        return f"{event.status}; restarting in {event.delay:.2f} s"
    if kind == "failed":
        return f"failed: {event.message}"
    if kind in ("spawn-failed", "killed"):
        return event.message
    if kind == "done":
        return f"{event.message} ({event.status})" if event.status else event.message
    if kind == "job-stopping":
        return f"stopping the job ({event.message})"
    return _WATCH_NOTES.get(kind, "{}").format(event.message) if kind in _WATCH_NOTES else ""


# How the [watch] events read in the output (the message says the rest).
_WATCH_NOTES = {
    "drift": "drift: {}",
    "recovered": "back on its nodes: {}",
    "remediated": "remediation: {}",
    "remediation-skipped": "remediation skipped: {}",
    "remediation-failed": "remediation failed: {}",
    "cpus-moved": "{}",
    "cpus-restored": "its planned CPUs are back: {}",
    "no-cpus": "{}",
    "sampling-slowed": "{}",
}


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _names(labels: list[str]) -> str:
    if not labels:
        return "the last workers"
    return ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _ignore_in_python(signum: int, frame: object) -> None:
    """Handled by the loop through the wakeup fd; nothing to do inside the handler."""


def _file_tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def _raise_fd_limit(needed: int) -> None:
    """Each worker holds three descriptors here (pidfd, two pipes): raise the soft limit
    towards the hard one when the job needs more than it allows. Workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
