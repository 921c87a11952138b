"""The job's state file: what ``numarun status`` and ``numarun stop`` read from outside.

One JSON file per running job, ``<runtime dir>/<job>.json``, rewritten atomically (write a
temporary file, then rename) whenever a worker starts or ends, and removed when the job
ends (by the guardian when the supervisor dies). The runtime directory is
``$XDG_RUNTIME_DIR/numarun`` (per user, on tmpfs, emptied at logout), ``/run/numarun`` for
root, else ``/tmp/numarun-UID``; it is created ``0700`` and each file ``0600``, since the
file holds command lines and environment-derived paths.

The supervisor is identified by its PID *and* its start time in clock ticks since boot
(``/proc/PID/stat`` field 22), so that ``numarun stop`` never signals an unrelated
process that inherited a dead supervisor's PID.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from numarun.errors import ProcessError

FORMAT = "numarun-job-state"
VERSION = 1

_JOB_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")


def runtime_dir() -> str:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "numarun")
    if os.geteuid() == 0:
        return "/run/numarun"
    return f"/tmp/numarun-{os.geteuid()}"


def check_job_name(name: str) -> str:
    if not _JOB_NAME.match(name) or name.startswith("."):
        raise ProcessError(
            f"job name {name!r} cannot name a state file",
            "use letters, digits and . _ - @ + only (set name = ... in the job spec)",
        )
    return name


def state_path(job: str, directory: str | None = None) -> str:
    return os.path.join(directory or runtime_dir(), f"{check_job_name(job)}.json")


def _ensure_dir(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_uid != os.geteuid():
        raise ProcessError(
            f"state directory {directory} belongs to another user",
            "set XDG_RUNTIME_DIR to a directory of your own",
        )
    if st.st_mode & 0o077:
        os.chmod(directory, 0o700)


def write_state(path: str, data: dict[str, Any]) -> None:
    """Replace the state file atomically, owner-only."""
    directory = os.path.dirname(path)
    _ensure_dir(directory)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def remove_state(path: str) -> None:
    for p in (path, f"{path}.{os.getpid()}.tmp"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def read_state(path: str) -> dict[str, Any] | None:
    """A state file's content, or None if it is gone, unreadable or not numarun's."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    return data


def start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks after boot), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def supervisor_alive(data: dict[str, Any]) -> bool:
    """Whether the supervisor that wrote ``data`` is still the process with its PID."""
    sup = data.get("supervisor") or {}
    pid, ticks = sup.get("pid"), sup.get("start_ticks")
    if not isinstance(pid, int):
        return False
    return start_ticks(pid) == ticks


def list_jobs(directory: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Every live job's (path, state), by job name; stale files of dead supervisors removed."""
    directory = directory or runtime_dir()
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    jobs = []
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        data = read_state(path)
        if data is None:
            continue
        if not supervisor_alive(data):
            try:  # the supervisor died and its guardian too: nobody else will clean up
                os.unlink(path)
            except OSError:
                pass
            continue
        jobs.append((path, data))
    return jobs
