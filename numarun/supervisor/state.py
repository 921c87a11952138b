"""The job's state file: what ``numarun status`` and ``numarun stop`` read from outside.

One JSON file per running job, ``<runtime dir>/<job>.json``, rewritten atomically (write a
temporary file, then rename) whenever a worker starts or ends, and removed when the job
ends (by the guardian when the supervisor dies). The runtime directory is
``$XDG_RUNTIME_DIR/numarun`` (per user, on tmpfs, emptied at logout), ``/run/numarun`` for
root, else ``/tmp/numarun-UID``; each file is ``0600``, since it holds command lines and
environment-derived paths.

Its schema is :class:`JobState`, written by the supervisor (:meth:`JobState.to_dict`) and
validated by every reader (:meth:`JobState.from_dict`): a file that is not one (corrupt,
foreign, from another version) is skipped with one warning line, never a crash of
``status`` or ``stop`` for every other job.

The directory is not trusted blindly: it is never followed when it is a symbolic link,
never chmod-ed unless numarun has just created it, and refused (before any worker starts,
and by readers) when it belongs to another user or others may write to it. In
``/tmp/numarun-UID`` another user could have made it first.

The supervisor is identified by its PID *and* its start time in clock ticks since boot
(``/proc/PID/stat`` field 22), so that ``numarun stop`` never signals an unrelated
process that inherited a dead supervisor's PID.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

from numarun.errors import JobRunningError, StateDirError, UsageError
from numarun.procfs import start_ticks  # the one reader of /proc/PID/stat
from numarun.value import Value

FORMAT = "numarun-job-state"
#: 2 added each worker's watch fields (local_ratio, drifted, drift, remediations,
#: cpus_now); version 1 files (an older numarun's running job) are still read.
VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_BYTES = 16 << 20  # a worker's entry is ~300 bytes: room for 50,000 workers
WORKER_STATES = ("pending", "running", "backoff", "stopping", "exited", "stopped", "failed")

_JOB_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")


class StateFileError(ValueError):
    """A file in the state directory that is not a state file numarun can read."""


class SupervisorState(Value):
    """The supervisor that runs the job, and its guardian."""

    pid: int
    start_ticks: int | None  # /proc/PID/stat field 22 when it was written
    started: float  # seconds since the epoch
    guardian: int | None = None
    cgroup: str | None = None  # the job's own cgroup directory, where it has one


class WorkerState(Value):
    """One worker slot as ``numarun status`` shows it."""

    name: str
    index: int
    node: int | None
    cpus: str | None  # a CPU list; None: the supervisor's own
    memory: str | None  # a policy as ``bind:0``; None: default
    argv: tuple[str, ...]
    state: str  # one of WORKER_STATES
    pid: int | None
    started: float | None
    starts: int
    last_status: str | None
    failure: str | None
    # With a [watch] table (version 2): the latest sample of its memory, and what was done.
    local_ratio: float | None = None  # share of its judged memory on its home nodes
    drifted: bool = False  # below the threshold for two samples in a row, not yet back
    drift: str | None = None  # the drift event's words, while drifted
    remediations: int = 0  # migrate_pages moves done for it
    cpus_now: str | None = None  # CPUs given in place of offline ones; None: as planned

    @property
    def label(self) -> str:
        return f"{self.name}.{self.index}"


class JobState(Value):
    """The whole state file."""

    job: str
    source: str | None  # the spec file
    state: str  # "running" or "stopping"
    supervisor: SupervisorState
    workers: tuple[WorkerState, ...]

    def to_dict(self) -> dict[str, Any]:
        sup = self.supervisor
        return {
            "format": FORMAT,
            "version": VERSION,
            "job": self.job,
            "source": self.source,
            "state": self.state,
            "supervisor": {f: getattr(sup, f) for f in SupervisorState._fields},
            "workers": [
                {f: _jsonable(getattr(w, f)) for f in WorkerState._fields} for w in self.workers
            ],
        }

    @classmethod
    def from_dict(cls, data: object) -> JobState:
        """Validate a parsed state file; :class:`StateFileError` says what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StateFileError("not a numarun state file")
        if data.get("version") not in READABLE_VERSIONS:
            raise StateFileError(
                f"state file version {data.get('version')!r}, not one of "
                f"{', '.join(map(str, READABLE_VERSIONS))} that this numarun reads (written by "
                "a newer numarun: use that one's numarun status)"
            )
        job = _field(data, "job", str)
        if _JOB_NAME.fullmatch(job) is None:
            raise StateFileError(f"job name {job!r} is not one numarun writes")
        state = _field(data, "state", str)
        if state not in ("running", "stopping"):
            raise StateFileError(f"job state {state!r}")
        sup = _field(data, "supervisor", dict)
        workers = _field(data, "workers", list)
        return cls(
            job=job,
            source=_field(data, "source", str, optional=True),
            state=state,
            supervisor=SupervisorState(
                pid=_pid(sup, "pid"),
                start_ticks=_field(sup, "start_ticks", int, optional=True),
                started=float(_field(sup, "started", (int, float))),
                guardian=_optional_pid(sup, "guardian"),
                cgroup=_field(sup, "cgroup", str, optional=True),
            ),
            workers=tuple(_worker(w) for w in workers),
        )


def _worker(data: object) -> WorkerState:
    if not isinstance(data, dict):
        raise StateFileError("a worker is not a JSON object")
    argv = _field(data, "argv", list)
    if not all(isinstance(a, str) for a in argv):
        raise StateFileError("a worker's argv is not a list of strings")
    state = _field(data, "state", str)
    if state not in WORKER_STATES:
        raise StateFileError(f"worker state {state!r}")
    started = _field(data, "started", (int, float), optional=True)
    ratio = _field(data, "local_ratio", (int, float), optional=True)
    drifted = data.get("drifted", False)
    if not isinstance(drifted, bool):
        raise StateFileError(f"drifted is {json.dumps(drifted)[:40]}")
    return WorkerState(
        name=_field(data, "name", str),
        index=_field(data, "index", int),
        node=_field(data, "node", int, optional=True),
        cpus=_field(data, "cpus", str, optional=True),
        memory=_field(data, "memory", str, optional=True),
        argv=tuple(argv),
        state=state,
        pid=_optional_pid(data, "pid"),
        started=float(started) if started is not None else None,
        starts=_field(data, "starts", int),
        last_status=_field(data, "last_status", str, optional=True),
        failure=_field(data, "failure", str, optional=True),
        local_ratio=float(ratio) if ratio is not None else None,
        drifted=drifted,
        drift=_field(data, "drift", str, optional=True),
        remediations=_field(data, "remediations", int, optional=True) or 0,
        cpus_now=_field(data, "cpus_now", str, optional=True),
    )


def _field(data: dict[str, Any], key: str, kind: Any, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    # JSON's true is Python's True, an int: no count or PID is a boolean.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise StateFileError(f"{key} is {json.dumps(value)[:40]}")
    return value


def _pid(data: dict[str, Any], key: str) -> int:
    pid: int = _field(data, key, int)
    if not 0 < pid < 1 << 22:  # PID_MAX_LIMIT
        raise StateFileError(f"{key} {pid} is not a process ID")
    return pid


def _optional_pid(data: dict[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _pid(data, key)


def _jsonable(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


# -- where it is --------------------------------------------------------------------------


def runtime_dir() -> str:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "numarun")
    if os.geteuid() == 0:
        return "/run/numarun"
    return f"/tmp/numarun-{os.geteuid()}"


def check_job_name(name: str) -> str:
    if not _JOB_NAME.fullmatch(name) or name.startswith("."):
        raise UsageError(
            f"job name {name!r} cannot name a state file",
            "use letters, digits and . _ - @ + only (numarun run --name NAME)",
        )
    return name


def state_path(job: str, directory: str | None = None) -> str:
    return os.path.join(directory or runtime_dir(), f"{check_job_name(job)}.json")


def directory_problem(directory: str) -> tuple[str, str] | None:
    """Why ``directory`` cannot hold state files (problem, fix); None when it can or is
    absent. Looks at the directory itself, never through a symbolic link."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"cannot look at state directory {directory}: {err.strerror}", _OWN_DIR
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(directory)
        return (
            f"state directory {directory} is a symbolic link (to {target}), which numarun "
            "does not follow",
            f"remove the link (numarun creates {directory} itself), or {_OWN_DIR}",
        )
    if not stat.S_ISDIR(st.st_mode):
        return f"state directory {directory} is not a directory", f"remove it, or {_OWN_DIR}"
    if st.st_uid != os.geteuid():
        return (
            f"state directory {directory} belongs to uid {st.st_uid}, not to uid "
            f"{os.geteuid()} that runs numarun",
            f"have its owner remove it, or {_OWN_DIR}",
        )
    if st.st_mode & 0o022:
        return (
            f"state directory {directory} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod 700 {directory}",
        )
    return None


_OWN_DIR = "set XDG_RUNTIME_DIR to a directory of your own"


def prepare_dir(directory: str) -> None:
    """Create the state directory ``0700`` or check the one there; before any spawn."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise StateDirError(
            f"cannot create state directory {directory}: its parent does not exist",
            _OWN_DIR,
        ) from None
    except OSError as err:
        raise StateDirError(
            f"cannot create state directory {directory}: {err.strerror}", _OWN_DIR
        ) from None
    else:
        # Ours, just made: the umask may have changed its mode; 0700 is the one it needs.
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
    problem = directory_problem(directory)
    if problem is not None:
        raise StateDirError(*problem)


def check_dir(directory: str) -> None:
    """What :func:`prepare_dir` would refuse, without creating or changing anything
    (for ``numarun plan`` and the checks before a job starts)."""
    problem = directory_problem(directory)
    if problem is not None:
        raise StateDirError(*problem)
    parent = os.path.dirname(os.path.abspath(directory))
    if not os.path.lexists(directory) and not os.path.isdir(parent):
        raise StateDirError(
            f"cannot create state directory {directory}: its parent does not exist", _OWN_DIR
        )


def refuse_running(path: str, job: str) -> None:
    """Refuse a job whose name is taken by a live supervisor (its state file at ``path``).

    A file there that is not a state file, or one of a dead supervisor, is not a running
    job: the new job replaces it."""
    try:
        existing = read_state(path)
    except StateFileError:
        return
    if existing is not None and supervisor_alive(existing):
        raise JobRunningError(
            f"a job named {job} is already running (supervisor pid {existing.supervisor.pid})",
            f"stop it with numarun stop {job}, or run this one with numarun run --name OTHER",
        )


def write_state(path: str, state: JobState) -> None:
    """Replace the state file atomically, owner-only. The directory is prepared already."""
    tmp = f"{path}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(tmp, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state.to_dict(), f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def remove_state(path: str) -> None:
    for p in (path, f"{path}.{os.getpid()}.tmp"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def read_state(path: str) -> JobState | None:
    """A state file's content; None if there is none; :class:`StateFileError` if it is not
    one numarun can read (too big, not JSON, not numarun's, or of another schema)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateFileError(err.strerror or str(err)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateFileError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        raise StateFileError(f"larger than {MAX_BYTES // 1024} KiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise StateFileError(f"not JSON ({type(err).__name__})") from None
    return JobState.from_dict(data)


def supervisor_alive(state: JobState) -> bool:
    """Whether the supervisor that wrote ``state`` is still the process with its PID."""
    sup = state.supervisor
    return sup.start_ticks is not None and start_ticks(sup.pid) == sup.start_ticks


class Listing(Value):
    """The live jobs of a state directory, by job name, and what was skipped, as warnings."""

    jobs: tuple[tuple[str, JobState], ...]  # (path, state)
    warnings: tuple[str, ...] = ()


def list_jobs(directory: str | None = None) -> Listing:
    """Every live job's (path, state); stale files of dead supervisors removed."""
    directory = directory or runtime_dir()
    problem = directory_problem(directory)
    if problem is not None:
        return Listing(jobs=(), warnings=(f"{problem[0]}: ignoring it — {problem[1]}",))
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return Listing(jobs=())
    except OSError as err:
        return Listing(jobs=(), warnings=(f"cannot list {directory}: {err.strerror}",))
    jobs: list[tuple[str, JobState]] = []
    warnings: list[str] = []
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            state = read_state(path)
        except StateFileError as err:
            warnings.append(f"skipping {path}: {err}")
            continue
        if state is None:
            continue
        if not supervisor_alive(state):
            try:  # the supervisor died and its guardian too: nobody else will clean up
                os.unlink(path)
            except OSError:
                pass
            continue
        jobs.append((path, state))
    return Listing(jobs=tuple(jobs), warnings=tuple(warnings))
