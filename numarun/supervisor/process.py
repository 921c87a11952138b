"""Starting one worker instance with its placement in force from its first instruction.

How a worker is started, and why this way
-----------------------------------------
The memory policy and the CPU affinity must already hold when the program's first
instruction runs, so they cannot be applied after the fact from outside (``migrate_pages``
and ``sched_setaffinity(pid)`` leave a window under the default policy). Both are
attributes of a *thread* that ``clone`` copies to the child and ``execve`` keeps.

The options were:

* ``fork()`` and Python code in the child (``os.fork`` or ``Popen(preexec_fn=...)``): the
  child runs Python after ``fork`` in a process that may have other threads (a library
  caller's, a driver's); a lock held by one of them at the fork (the import lock, a
  ``logging`` or ``stdout`` lock, malloc's) stays locked in the child for ever. CPython
  documents ``preexec_fn`` as unsafe with threads for that reason. It also copies the
  supervisor's page tables for every start (measured ~1.5 ms per worker here).
* a trampoline (exec ``python -m numarun --cpus .. -- argv``): safe, but a Python start-up
  per worker, ~10-20 ms of CPU each, which 256 workers on a small machine pay in seconds.
* ``posix_spawn``: fast and thread-safe, but Python's binding cannot set a working
  directory.
* **what numarun does**: set the policy and affinity on the *supervisor's own thread*,
  start the child with :class:`subprocess.Popen` without ``preexec_fn`` (CPython then uses
  ``vfork``; the child runs only async-signal-safe C: ``setsid``, ``dup2``, ``chdir``,
  closing descriptors, ``execve``), and restore the thread's own policy and affinity
  right after. ``clone`` copies the calling thread's policy and affinity into the child,
  so the program starts with them; no other thread of the supervisor is touched, no
  Python runs in the child, exec failures come back as exceptions with their ``errno``,
  and a start costs ~0.6 ms.

Two things must hold from the first instruction that are not thread attributes:
``PR_SET_PDEATHSIG``, the kernel's promise to kill the worker when the supervisor dies
(what remains when the supervisor and its guardian are killed together), and membership of
the job's own cgroup (:mod:`numarun.supervisor.contain`). Neither needs Python in the
child: the worker is exec'd through util-linux's ``setpriv --pdeathsig KILL --``, which
sets the first and execs the program, and the supervisor itself enters the job's cgroup
for the length of a batch of spawns (:meth:`ThreadPlacement.apply`), so that each child is
born there, as a child is born in its parent's cgroup. A spawn so costs ~1 ms, against
~2 ms for a fork with Python in the child (256 workers: ~0.3 s against ~0.7 s here).
Where there is no such setpriv, ``Popen`` gets a ``preexec_fn`` after all
(:func:`~numarun.supervisor.contain.child_setup`); it is built in the parent and only
makes system calls on objects it was handed (``write`` to an open ``cgroup.procs``,
``prctl``, ``getppid``), no import and no lock, which keeps the threads hazard above to
what a libc ``fork`` has anyway.

Each worker gets its own session (``setsid``), hence its own process group: stop signals
go to the group, so helpers the worker started get them too, and a Ctrl-C on the
supervisor's terminal reaches the supervisor alone, which then stops workers in order.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from numarun.errors import (
    CommandNotExecutableError,
    CommandNotFoundError,
    NumarunError,
    WorkerPathError,
)
from numarun.mempolicy import MemoryPolicy
from numarun.supervisor.model import WorkerSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from numarun.supervisor.contain import JobCgroup


@dataclass
class Instance:
    """One running instance of a worker: its process, its pidfd and its output pipes.

    ``pidfd`` is what the supervisor selects on to learn of the exit (a pidfd here; a fake
    launcher's pipe in tests); the supervisor closes it when it has reaped the instance.
    """

    pid: int
    pidfd: int
    stdout: int | None  # read ends, non-blocking; None when output goes to a log file
    stderr: int | None
    started: float  # supervisor clock
    started_wall: float


class Placer(Protocol):
    """Puts a worker's placement in force around its spawn; ``restore`` ends a batch."""

    def apply(self, worker: WorkerSpec) -> None: ...

    def restore(self) -> None: ...


class Launcher(Protocol):
    """How the supervisor starts, signals and reaps processes: the seam tests replace.

    As honcho's manager takes a process constructor, the supervisor takes a launcher, so
    that its restart, crash-loop and stop logic can be tested on fake processes and fake
    time without forking. :class:`ProcessLauncher` is the real one.
    """

    def placer(self) -> Placer:
        """A placer for one supervisor's spawns (reads the thread's own placement)."""
        ...

    def spawn(self, worker: WorkerSpec, placer: Placer, now: float, wall: float) -> Instance:
        """Start one instance; raise a :class:`NumarunError` when it cannot start."""
        ...

    def signal_group(self, pgid: int, signum: int) -> bool:
        """Signal a process group; False when it is gone."""
        ...

    def reap(self, pid: int, *, block: bool = False) -> int | None:
        """The wait status of an ended child (once), None while it runs; raises
        ChildProcessError when it is not (or no longer) a child to reap."""
        ...


class ProcessLauncher:
    """The real launcher: :func:`spawn`, :func:`signal_group` and ``waitpid``.

    ``pdeathsig``: each worker is killed when the supervisor's thread dies (see
    :mod:`numarun.supervisor.contain`); :meth:`contain` puts workers in a job cgroup.
    """

    def __init__(self, *, pdeathsig: bool = True) -> None:
        self.pdeathsig = pdeathsig
        self.cgroup: JobCgroup | None = None
        self._setup: Callable[[], None] | None = None

    def contain(self, cgroup: JobCgroup | None) -> None:
        """Start every later worker inside ``cgroup`` (None: in the supervisor's own)."""
        self.cgroup = cgroup
        self._setup = None

    def placer(self) -> Placer:
        return ThreadPlacement(self)

    def inherited_cgroup(self) -> JobCgroup | None:
        """The cgroup the supervisor enters around its spawns so that workers are born in
        it; None when there is none, or when each child joins it itself (no setpriv)."""
        return self.cgroup if self._exec_prefix() is not None else None

    def _exec_prefix(self) -> tuple[str, ...] | None:
        """The words a worker is exec'd through (setpriv), () for none wanted; None where
        no setpriv can set PDEATHSIG (contain.pdeathsig_prefix asks once per process)."""
        from numarun.supervisor.contain import pdeathsig_prefix

        return pdeathsig_prefix() if self.pdeathsig else ()

    def spawn(self, worker: WorkerSpec, placer: Placer, now: float, wall: float) -> Instance:
        prefix = self._exec_prefix()
        if prefix is not None:
            return spawn(worker, placer, now, wall, exec_prefix=prefix)
        # No setpriv: Python between fork and exec sets PDEATHSIG and joins the cgroup.
        if self._setup is None:
            from numarun.supervisor.contain import child_setup

            fd = self.cgroup.procs_fd if self.cgroup is not None else None
            self._setup = child_setup(fd, pdeathsig=self.pdeathsig)
        return spawn(worker, placer, now, wall, preexec=self._setup)

    def signal_group(self, pgid: int, signum: int) -> bool:
        return signal_group(pgid, signum)

    def reap(self, pid: int, *, block: bool = False) -> int | None:
        got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        return None if got == 0 else status


class ThreadPlacement:
    """Sets a worker's placement on the calling thread around a spawn, then restores it.

    The supervisor's own affinity and policy are read once, so every spawn returns the
    thread to exactly what it had (which may itself be a placement, when the supervisor
    was started under ``numarun --membind ...``). With a ``launcher`` whose job cgroup
    workers are born in, the first spawn of a batch moves the supervisor into that cgroup
    and :meth:`restore` moves it back.
    """

    def __init__(self, launcher: ProcessLauncher | None = None) -> None:
        from numarun.mempolicy import get_mempolicy

        self.home_cpus = frozenset(os.sched_getaffinity(0))
        self.home_policy: MemoryPolicy = get_mempolicy()
        self.cpus = self.home_cpus
        self.policy = self.home_policy
        self._launcher = launcher
        self._entered: JobCgroup | None = None

    def apply(self, worker: WorkerSpec) -> None:
        from numarun.launch import set_affinity
        from numarun.mempolicy import apply_with_fallback

        cgroup = self._launcher.inherited_cgroup() if self._launcher is not None else None
        if cgroup is not None and self._entered is None and cgroup.enter():
            # (Not entered: workers start in numarun's cgroup, where their process group
            # still reaches them, as when a child's own join fails.)
            self._entered = cgroup
            # A cgroup with the cpuset controller resets the affinity of what moves in
            # (the kernel's cpuset_attach): set each worker's, whatever was set before.
            self.cpus = frozenset()
        policy = worker.memory if worker.memory is not None else self.home_policy
        if policy != self.policy:
            # Memory policy first, as the launcher does: it is the call most often refused.
            self.policy, _ = apply_with_fallback(policy, worker.fallback)
        cpus = worker.cpus if worker.cpus is not None else self.home_cpus
        if cpus != self.cpus:
            set_affinity(cpus)
            self.cpus = cpus

    def restore(self) -> None:
        from numarun.launch import set_affinity
        from numarun.mempolicy import set_mempolicy

        if self._entered is not None:
            if self._entered.leave():
                self._entered = None
            self.cpus = frozenset()  # as in apply: the move back may have reset it
        if self.policy != self.home_policy:
            set_mempolicy(self.home_policy)
            self.policy = self.home_policy
        if self.cpus != self.home_cpus:
            set_affinity(self.home_cpus)
            self.cpus = self.home_cpus


def _log_fd(worker: WorkerSpec, path: str) -> int:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    except OSError as err:
        raise WorkerPathError(
            f"{worker.label}: cannot open log file {path}: {err.strerror}",
            'fix logs in the job spec, or write logs = "inherit"',
        ) from None


def _open_stdin(worker: WorkerSpec) -> int:
    try:
        return os.open(worker.stdin, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise WorkerPathError(
            f"{worker.label}: cannot open stdin file {worker.stdin}: {err.strerror}",
            'create it, or set stdin = "null"',
        ) from None


def _streams(worker: WorkerSpec, to_close: list[int]) -> tuple[int, int, int, int, int | None]:
    """(stdout read end, stderr read end, child stdout, child stderr, child stdin): pipes to
    the printer, or the log file for both; ``to_close`` gets what the parent must close once
    the child has them."""
    out_r = err_r = -1
    if worker.log is None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        to_close += [out_w, err_w]
        stdout, stderr = out_w, err_w
    else:
        stdout = _log_fd(worker, worker.log)
        stderr = stdout
        to_close.append(stdout)
    stdin: int | None = subprocess.DEVNULL
    if worker.stdin == "inherit":
        stdin = None
    elif worker.stdin != "null":
        try:
            stdin = _open_stdin(worker)
        except BaseException:
            for fd in (out_r, err_r):  # the caller never got them
                if fd >= 0:
                    os.close(fd)
            raise
        to_close.append(stdin)
    return out_r, err_r, stdout, stderr, stdin


def _popen(
    worker: WorkerSpec,
    stdin: int | None,
    stdout: int,
    stderr: int,
    *,
    preexec: Callable[[], None] | None,
    exec_prefix: tuple[str, ...],
) -> int:
    """Start the child; its PID, or the one-line refusal for what stopped it."""
    try:
        proc = subprocess.Popen(
            [*exec_prefix, *worker.argv],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=worker.cwd,
            env=dict(worker.env) if worker.env is not None else None,
            start_new_session=True,
            close_fds=True,
            # Safe enough with threads: the function only makes three syscalls on
            # objects it was handed (no import, no lock, no allocation of note);
            # see numarun.supervisor.contain for why it is needed at all.
            preexec_fn=preexec,  # noqa: PLW1509
        )
    except FileNotFoundError as err:
        missing = worker.cwd if worker.cwd and not os.path.isdir(worker.cwd) else None
        if missing:
            raise WorkerPathError(
                f"{worker.label}: cwd {missing} does not exist",
                "create it or fix cwd in the job spec",
            ) from None
        raise CommandNotFoundError(
            f"{worker.label}: {worker.argv[0]}: command not found ({err.strerror})",
            "check the spelling, or give its full path",
        ) from None
    except OSError as err:
        raise CommandNotExecutableError(
            f"{worker.label}: cannot execute {worker.argv[0]}: {err.strerror}",
            "check its permissions and format",
        ) from None
    # The Popen object is dropped: the supervisor reaps by pid through the pidfd.
    # Marking it reaped stops Popen.__del__ from tracking it in subprocess._active.
    proc.returncode = 0
    return proc.pid


def _look_for_command(worker: WorkerSpec) -> None:
    from numarun.preflight import command_path

    if worker.cwd is not None and not os.path.isdir(worker.cwd):
        return  # Popen refuses it, as without a prefix
    try:
        command_path(worker)
    except NumarunError as err:
        raise type(err)(f"{worker.label}: {err.problem}", err.fix) from None


def spawn(
    worker: WorkerSpec,
    placement: Placer,
    now: float,
    wall: float,
    *,
    preexec: Callable[[], None] | None = None,
    exec_prefix: tuple[str, ...] = (),
) -> Instance:
    """Start one instance of ``worker``; raise a :class:`NumarunError` if it cannot start.

    ``preexec`` runs in the child between fork and exec (joining the job's cgroup,
    PDEATHSIG); without it the child runs no Python at all. ``exec_prefix``: a program
    the worker is exec'd through (setpriv), whose own failure to find the worker's program
    would only show as an exit; so the program is looked for here first, and refused as
    without it.

    The caller must call ``placement.restore()`` once it has started what it starts in a
    row (256 workers on one node need not switch back and forth between each).
    """
    out_r = err_r = -1
    to_close: list[int] = []
    try:
        if exec_prefix:
            _look_for_command(worker)
        out_r, err_r, stdout, stderr, stdin = _streams(worker, to_close)
        placement.apply(worker)
        pid = _popen(worker, stdin, stdout, stderr, preexec=preexec, exec_prefix=exec_prefix)
        pidfd = os.pidfd_open(pid)
    except BaseException:
        for fd in (out_r, err_r):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in to_close:
            os.close(fd)
    for fd in (out_r, err_r):
        if fd >= 0:
            os.set_blocking(fd, False)
    return Instance(
        pid=pid,
        pidfd=pidfd,
        stdout=out_r if out_r >= 0 else None,
        stderr=err_r if err_r >= 0 else None,
        started=now,
        started_wall=wall,
    )


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to process group ``pgid``; False when the group is already gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A worker that changed its own user (su, a setuid helper) is out of our reach.
        return False
    return True


def spawn_error_status(err: NumarunError) -> int:
    """The shell's status for a start that failed: 127 not found, 126 not executable."""
    return err.exit_code if err.exit_code in (126, 127) else 126
