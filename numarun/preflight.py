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

:func:`topology_problems` refuses a snapshot that contradicts itself (a CPU on a node that
is not there); it belongs next to the reader in :mod:`numarun.topology`, and lives here so
that the planner refuses such a topology before placing anything on it.
"""

from __future__ import annotations

import os
import stat

from numarun import refusals
from numarun.cpulist import format_list
from numarun.errors import NumarunError, TopologyError, WorkerPathError
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
    try:
        find_executable(name, path)
    except NumarunError as err:
        return type(err)(f"{where}: {err.problem}", err.fix)
    return None


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


def topology_problems(topology: Topology) -> list[str]:
    """Where a topology contradicts itself, one line per kind; empty when it does not.

    sysfs cannot disagree with itself this way; a hand-edited or corrupted snapshot can,
    and a plan made from it would place workers on CPUs of nodes that are not there.
    """
    nodes, cpus = topology.nodes, topology.cpus
    out: list[str] = []
    on_missing = {c.id: c.node for c in cpus.values() if c.node is not None and c.node not in nodes}
    if on_missing:
        out.append(
            f"CPUs {format_list(on_missing)} are on nodes "
            f"{format_list(set(on_missing.values()))}, which it does not have"
        )
    for node in nodes.values():
        unknown = node.cpus - cpus.keys()
        if unknown:
            out.append(f"node {node.id} lists CPUs {format_list(unknown)}, which it does not have")
        elsewhere = {c for c in node.cpus & cpus.keys() if cpus[c].node not in (None, node.id)}
        if elsewhere:
            out.append(
                f"node {node.id} lists CPUs {format_list(elsewhere)}, which are on other nodes"
            )
        far = set(node.distances) - nodes.keys()
        if far:
            out.append(f"node {node.id} has distances to nodes {format_list(far)}, not there")
    unlisted = {c.id for c in cpus.values() if c.node in nodes and c.id not in nodes[c.node].cpus}
    if unlisted:
        out.append(f"CPUs {format_list(unlisted)} are on nodes that do not list them")
    allowed = topology.allowed
    for kind, ids, have in (("CPUs", allowed.cpus, cpus), ("nodes", allowed.mems, nodes)):
        extra = ids - have.keys()
        if extra:
            out.append(f"the allowed {kind} {format_list(extra)} are not in it")
    return out


def check_topology(topology: Topology) -> None:
    """Refuse a topology that contradicts itself (exit 8), naming each contradiction."""
    problems = topology_problems(topology)
    if problems:
        raise TopologyError(
            f"topology {topology.source} contradicts itself: " + "; ".join(problems),
            "save the snapshot again with numarun topology --save FILE",
        )


def duplicate_ids(data: object, where: str) -> None:
    """Refuse snapshot JSON that lists a node or a CPU twice (before it is read, since the
    topology keeps only the last of them)."""
    if not isinstance(data, dict):
        return
    for key, kind in (("nodes", "node"), ("cpus", "CPU")):
        items = data.get(key)
        if not isinstance(items, list):
            continue
        ids = [i.get("id") for i in items if isinstance(i, dict)]
        twice = {i for i in ids if ids.count(i) > 1} if len(set(ids)) < len(ids) else set()
        if twice:
            shown = ", ".join(sorted(str(i) for i in twice))
            raise TopologyError(
                f"topology {where} contradicts itself: it lists {kind} {shown} more than once",
                "save the snapshot again with numarun topology --save FILE",
            )
