"""Keeping a job's processes from outliving numarun: a cgroup of its own, and PDEATHSIG.

Two lines of defence, for two ways of dying:

* **The supervisor alone is killed** (SIGKILL, a crash): its guardian sees its pipe close
  and kills the job (:mod:`numarun.supervisor.guardian`).
* **The supervisor and the guardian are killed together** (``kill -9`` of both, a
  supervisor's whole cgroup OOM-killed): nothing of numarun is left to act, so the kernel
  must. Each worker is started with ``PR_SET_PDEATHSIG`` = SIGKILL: it dies with the
  supervisor's thread that started it. util-linux's ``setpriv --pdeathsig`` sets it where
  there is one (:func:`pdeathsig_prefix`), :func:`child_setup` where there is not.

Where numarun may create a cgroup (cgroup v2 mounted, and numarun's own cgroup writable:
root, or a subtree delegated to the user), each job also runs in a cgroup of its own,
``<numarun's cgroup>/numarun-JOB-PID``, in which every worker is born: the supervisor
enters it for each batch of starts and returns to its own cgroup after
(:class:`JobCgroup`), or, where the worker is not exec'd through setpriv, the worker joins
it between fork and exec (:func:`child_setup`). The supervisor ends the job with
``cgroup.kill``, and so does the guardian: that reaches every process of the job, also
those that left their worker's process group (``setsid``, a daemon's double fork), which
``killpg`` cannot. As it lies under numarun's
own cgroup, a service manager that kills numarun's cgroup (systemd on stop, systemd-oomd,
``memory.oom.group``) kills the job's with it. ``NUMARUN_CGROUP=0`` turns the cgroup off
(the process-group and PDEATHSIG defences remain).

What remains: after supervisor and guardian are killed together, a process that a worker
started and that is not itself a worker (a grandchild) is not killed by PDEATHSIG, which
reaches only the direct child. With a cgroup it stays in the job's cgroup, where
``echo 1 > .../cgroup.kill`` ends it, and the next ``numarun run`` of the same job ends it
before starting (:func:`reap_orphans`); without one it is an orphan like any other.

PDEATHSIG fires when the *thread* that forked the worker exits, not the process: the
supervisor starts and restarts workers from the one thread that runs it (its documented
rule), which lives as long as the workers do.
"""

from __future__ import annotations

import os
import signal
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: Set to 0 to run jobs without a cgroup of their own.
ENV = "NUMARUN_CGROUP"
PR_SET_PDEATHSIG = 1


class JobCgroup:
    """A job's own cgroup v2 directory, and the descriptor its workers join it through."""

    def __init__(self, path: str, home: str | None = None) -> None:
        self.path = path
        # Opened here so that the child, between fork and exec, only writes "0" (itself)
        # to a descriptor it already has: no path lookup, no allocation to speak of.
        self.procs_fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        # numarun's own cgroup, where the supervisor returns after a batch (leave).
        self.home_fd = (
            os.open(os.path.join(home, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
            if home is not None
            else -1
        )
        # Whether this process is inside (between enter and leave): the job's cgroup is
        # then not killed from here, which would kill the supervisor with its workers.
        self.inside = False

    def enter(self) -> bool:
        """Move this process into the job's cgroup, so that what it spawns starts there (a
        child is born in its parent's cgroup); False when the kernel refuses, or when
        there would be no way back."""
        if self.home_fd < 0 or not _move_here(self.procs_fd):
            return False
        self.inside = True
        return True

    def leave(self) -> bool:
        """Move this process back to numarun's own cgroup; False when the kernel refuses
        (a controller enabled under numarun's cgroup meanwhile: EBUSY), which leaves it
        inside for good."""
        if not _move_here(self.home_fd):
            return False
        self.inside = False
        return True

    @classmethod
    def create(cls, job: str) -> JobCgroup | None:
        """The job's cgroup, or None where numarun may not create one (or ``ENV`` = 0)."""
        if os.environ.get(ENV, "1").strip() == "0":
            return None
        home = own_cgroup_dir()
        if home is None or not os.access(os.path.join(home, "cgroup.procs"), os.W_OK):
            return None
        reap_orphans(home, job)
        path = os.path.join(home, f"numarun-{job}-{os.getpid()}")
        try:
            os.mkdir(path, 0o755)
        except OSError:
            return None  # not ours to write after all (read-only, delegation rules)
        if not os.path.exists(os.path.join(path, "cgroup.kill")):  # Linux < 5.14
            os.rmdir(path)
            return None
        try:
            return cls(path, home)
        except OSError:
            os.rmdir(path)
            return None

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, whichever process group it is in (not
        while this process is inside: its process groups still reach the workers)."""
        if not self.inside:
            kill_cgroup(self.path)

    def close(self, wait: float = 2.0) -> None:
        """Kill what is left, wait up to ``wait`` seconds for it to go, remove the cgroup."""
        for fd in (self.procs_fd, self.home_fd):
            if fd >= 0:
                os.close(fd)
        self.procs_fd = self.home_fd = -1
        if not self.inside:  # else it cannot be removed, nor killed from here
            remove_cgroup(self.path, wait)


def _move_here(procs_fd: int) -> bool:
    """Move this whole process into the cgroup whose ``cgroup.procs`` is ``procs_fd``."""
    try:
        os.write(procs_fd, b"0")
    except OSError:
        return False
    return True


def kill_cgroup(path: str) -> None:
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        pass  # gone already


def remove_cgroup(path: str, wait: float = 2.0) -> bool:
    """Kill and remove a job cgroup; False when it still held processes after ``wait``."""
    kill_cgroup(path)
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)  # killed processes leave the cgroup within milliseconds


def reap_orphans(home: str, job: str) -> None:
    """End what a killed run of ``job`` left in its cgroup: one of a supervisor that no
    longer runs (its PID is in the name)."""
    from numarun.procfs import start_ticks

    prefix = f"numarun-{job}-"
    try:
        names = os.listdir(home)
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :]
        if not name.startswith(prefix) or not pid.isdigit() or not pid.isascii():
            continue
        if int(pid) != os.getpid() and start_ticks(int(pid)) is None:
            remove_cgroup(os.path.join(home, name))


def own_cgroup_dir() -> str | None:
    """This process's cgroup v2 directory (``0::/path`` under a cgroup2 mount), or None.

    Read through numarun.sysfs, the one reader of /proc/self/cgroup and /proc/mounts (the
    same lookup the topology makes for the cpuset).
    """
    from numarun import sysfs
    from numarun.errors import TopologyError

    fs = sysfs.Root("/")
    try:
        own = next((p for h, ctl, p in sysfs.proc_cgroups(fs) if h == "0" and not ctl), None)
        mounts = sysfs.proc_mounts(fs)
    except TopologyError:
        return None
    if own is None:
        return None
    for _dev, point, fstype, _opts in mounts:
        if fstype == "cgroup2":
            return os.path.join(point, own.lstrip("/")).rstrip("/")
    return None


# util-linux's setpriv sets PR_SET_PDEATHSIG (--pdeathsig, since 2.33) and execs the
# worker: with it the worker starts by vfork, with no Python between fork and exec, at
# ~0.9 ms a spawn against ~2.1 ms for a fork of the supervisor (bench/supervisor_bench.py).
_SETPRIV = ("/usr/bin/setpriv", "/bin/setpriv")
_pdeathsig_prefix: list[tuple[str, ...] | None] = []


def pdeathsig_prefix() -> tuple[str, ...] | None:
    """The words that start a worker with PDEATHSIG = SIGKILL set by ``setpriv``, or None
    where there is no setpriv that knows ``--pdeathsig`` (run once to see, then kept).

    Unlike :func:`child_setup`, setpriv cannot see whether the supervisor died between the
    fork and its prctl (a window of well under a millisecond); the guardian covers the
    supervisor dying alone, as it does either way.
    """
    if not _pdeathsig_prefix:
        import subprocess

        found: tuple[str, ...] | None = None
        for path in _SETPRIV:
            words = (path, "--pdeathsig", "KILL", "--")
            try:
                done = subprocess.run(
                    [*words, path, "--version"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            except OSError:
                continue
            if done.returncode == 0:
                found = words
                break
        _pdeathsig_prefix.append(found)
    return _pdeathsig_prefix[0]


def child_setup(procs_fd: int | None, *, pdeathsig: bool = True) -> Callable[[], None]:
    """The function the child runs between fork and exec: join the job's cgroup, then
    ask for SIGKILL when the supervisor dies. Built in the parent, so that the child only
    calls what is already loaded."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def setup() -> None:
        if procs_fd is not None:
            # Moving into a cgroup whose cpuset controller is on resets the task's affinity
            # to the cgroup's CPUs (the kernel's cpuset_attach): put the worker's back.
            cpus = os.sched_getaffinity(0)
            try:
                os.write(procs_fd, b"0")
            except OSError:
                pass  # left in numarun's cgroup: the process group still reaches it
            else:
                os.sched_setaffinity(0, cpus)
        if not pdeathsig:
            return
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), kill)

    return setup
