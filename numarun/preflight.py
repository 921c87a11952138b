"""Checks before anything starts: every worker of every group, the topology, the state dir.

``numarun run`` used to find a second group's missing ``cwd`` only when it spawned that
group, after the first group's workers were up (and then killed them). Everything a start
needs that can be checked without starting is checked here first, for every worker:

* ``cwd`` is a directory that can be entered;
* the command is found and executable, looked up as ``execvp`` would in the child: with
  the worker's own ``PATH`` and, for a relative name, from its ``cwd``;
* the ``stdin`` file can be read;
* the log file can be appended to, or created (numarun creates missing directories of it);
* ``reserve_cpus`` names CPUs the topology has;
* the state directory can be used, and no live job has the name.

``numarun plan`` runs the same checks (see :func:`plan_problems`), so that it tells what
``run`` would refuse. A path problem ends with :class:`~numarun.errors.WorkerPathError`
(12), a command with 127 or 126 as a shell would; the one line names the spec file and the
worker (``web.1``).

A snapshot that contradicts itself (a CPU on a node that is not there) is refused where it is
read, by :func:`numarun.topology.contradictions`, before anything is planned on it.
"""

from __future__ import annotations

import os
import stat

from numarun import refusals
from numarun.errors import NumarunError, WorkerPathError
from numarun.executable import find_executable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from numarun.spec import JobSpec as SpecFile
    from numarun.supervisor.model import JobSpec, WorkerSpec
    from numarun.topology import Topology

#: Past this many problems of one job, one line says how many more there are.
MAX_LINES = 5


# --- workers -------------------------------------------------------------------------------


def check_workers(workers: Sequence[WorkerSpec], source: str | None = None) -> None:
    """Refuse with the first problem of any worker, before any is started."""
    for worker in workers:
        problem = worker_problem(worker, source)
        if problem is not None:
            raise problem


def worker_problems(workers: Sequence[WorkerSpec], source: str | None = None) -> list[NumarunError]:
    """Each worker's first problem, in worker order (none: an empty list)."""
    found = (worker_problem(w, source) for w in workers)
    return [p for p in found if p is not None]


def worker_problem(worker: WorkerSpec, source: str | None = None) -> NumarunError | None:
    """The first thing that would stop ``worker`` from starting, or None."""
    where = f"{source}: {worker.label}" if source else worker.label
    for check in (_cwd, _command, _stdin, _log):
        problem = check(worker, where)
        if problem is not None:
            return problem
    return None


def _cwd(worker: WorkerSpec, where: str) -> NumarunError | None:
    cwd = worker.cwd
    if cwd is None:
        return None
    fix = f"create it, or fix cwd in [[process]] {worker.name}"
    try:
        st = os.stat(cwd)
    except FileNotFoundError:
        return WorkerPathError(f"{where}: cwd {cwd} does not exist", fix)
    except OSError as err:
        return WorkerPathError(f"{where}: cannot use cwd {cwd}: {err.strerror}", fix)
    if not stat.S_ISDIR(st.st_mode):
        return WorkerPathError(f"{where}: cwd {cwd} is not a directory", fix)
    if not os.access(cwd, os.X_OK):
        return WorkerPathError(
            f"{where}: cwd {cwd} cannot be entered (no search permission)",
            f"chmod +x {cwd}, or choose another cwd",
        )
    return None


def _command(worker: WorkerSpec, where: str) -> NumarunError | None:
    try:
        command_path(worker)
    except NumarunError as err:
        return type(err)(f"{where}: {err.problem}", err.fix)
    return None


def command_path(worker: WorkerSpec) -> str:
    """Where the exec of ``worker`` will find its program: on its own ``PATH``, after its
    chdir. Raises :func:`~numarun.executable.find_executable`'s refusals (127, 126)."""
    name = worker.argv[0] if worker.argv else ""
    env = worker.env if worker.env is not None else os.environ
    path = env.get("PATH", os.defpath)
    cwd = worker.cwd
    if cwd is not None:
        # The child looks the name up after its chdir: relative names and relative PATH
        # entries are relative to the worker's cwd, not numarun's.
        if "/" in name and not os.path.isabs(name):
            name = os.path.join(cwd, name)
        path = os.pathsep.join(
            d if os.path.isabs(d) else os.path.join(cwd, d or ".") for d in path.split(os.pathsep)
        )
    return find_executable(name, path)


def _stdin(worker: WorkerSpec, where: str) -> NumarunError | None:
    path = worker.stdin
    if path in ("null", "inherit"):
        return None
    fix = 'create it, or set stdin = "null"'
    try:
        st = os.stat(path)
    except OSError as err:
        return WorkerPathError(f"{where}: cannot open stdin file {path}: {err.strerror}", fix)
    if stat.S_ISDIR(st.st_mode):
        return WorkerPathError(f"{where}: stdin file {path} is a directory", fix)
    if not os.access(path, os.R_OK):
        return WorkerPathError(
            f"{where}: stdin file {path} cannot be read (permission denied)",
            f'make it readable by uid {os.geteuid()}, or set stdin = "null"',
        )
    return None


def _log(worker: WorkerSpec, where: str) -> NumarunError | None:
    path = worker.log
    if path is None:
        return None
    fix = 'fix logs in the job spec, or write logs = "inherit"'
    if os.path.isdir(path):
        return WorkerPathError(f"{where}: log file {path} is a directory", fix)
    if os.path.lexists(path):
        if not os.access(path, os.W_OK):
            return WorkerPathError(f"{where}: cannot append to log file {path}", fix)
        return None
    # Missing directories of the log file are created at start: the nearest one that
    # exists must let numarun create in it.
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return WorkerPathError(
            f"{where}: cannot create log file {path}: {ancestor} is not a directory", fix
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return WorkerPathError(
            f"{where}: cannot create log file {path}: {ancestor} is not writable", fix
        )
    return None


# --- the job as a whole ----------------------------------------------------------------------


def check_state(job: JobSpec, state_dir: str | None = None) -> None:
    """The state directory can be used and no live job has this job's name: what
    ``numarun run`` would refuse, found without creating or changing anything."""
    from numarun.supervisor import state

    path = state.state_path(job.name, state_dir)
    state.check_dir(os.path.dirname(path))
    state.refuse_running(path, job.name)


def check_reserved(topology: Topology, spec: SpecFile) -> None:
    """Refuse ``reserve_cpus`` that name CPUs the topology does not have (exit 4)."""
    for index, group in enumerate(spec.processes):
        unknown = group.reserve_cpus - topology.cpus.keys()
        if unknown:
            raise refusals.unknown(spec.where(index, "reserve_cpus"), "CPU", unknown, topology.cpus)


def summarise(problems: Iterable[NumarunError], lead: str = "") -> list[str]:
    """Problems as warning lines, at most :data:`MAX_LINES`, then one line for the rest."""
    lines = [f"{lead}{p.message}" for p in problems]
    if len(lines) <= MAX_LINES:
        return lines
    return [*lines[:MAX_LINES], f"{lead}and {len(lines) - MAX_LINES} more workers like these"]


# --- the topology ----------------------------------------------------------------------------
