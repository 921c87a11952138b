"""Which processes a command-line argument names, and whether each is still a process.

``numarun placement redis`` and ``numarun migrate redis --to 1`` take a PID or a name, as
``numastat -p`` does: a name is part of a process's command name or command line. A name
never matches numarun itself or any of its ancestors: the shell, ``sudo``, ``ssh`` or the
script that started numarun carry the name in their own command lines (``sh -c "numarun
migrate redis --to 1"``), and moving their memory instead is the worst possible answer.

psutil walks the process table and the ancestry here (it is a declared dependency, and
only imported when a name is given, so a PID costs nothing); :mod:`numarun.procfs` stays
the place for plain reads of one process's files.
"""

from __future__ import annotations

from numarun.errors import ProcessError, UsageError

# /proc/PID/status "State:" letters of a process that has exited: zombie and dead.
_EXITED_STATES = ("Z", "X")


def is_pid(target: str) -> bool:
    """All ASCII digits: a PID (``int`` alone would take ``"٣"`` as 3)."""
    return target.isascii() and target.isdigit()


def ourselves() -> frozenset[int]:
    """This process and every ancestor up to init: never a match for a name."""
    import psutil

    try:
        me = psutil.Process()
        return frozenset({me.pid, *(p.pid for p in me.parents())})
    except psutil.Error:  # an ancestor exited while being walked: those found so far
        import os

        return frozenset({os.getpid(), os.getppid()})


def matching(name: str) -> list[int]:
    """PIDs whose command name or command line contains ``name``, ascending; never ours."""
    import psutil

    skip = ourselves()
    found: list[int] = []
    for proc in psutil.process_iter(["name", "cmdline"], ad_value=None):
        if proc.pid in skip:
            continue
        command = proc.info["name"] or ""
        line = " ".join(proc.info["cmdline"] or ())
        if name in command or name in line:
            found.append(proc.pid)
    return sorted(found)


def find(target: str) -> list[int]:
    """The PIDs ``target`` names: itself when a PID, else :func:`matching` processes.

    A PID is taken as given, whether or not it exists (the caller reports a gone one); a
    name that matches nothing is refused here (:class:`~numarun.errors.ProcessError`).
    """
    if is_pid(target):
        return [int(target)]
    if not target.strip():
        raise UsageError("an empty process name matches every process", "give a PID or a name")
    pids = matching(target)
    if not pids:
        raise ProcessError(
            f"no process matches {target!r} (numarun and the processes that started it "
            "are never matched)",
            "give a PID, or part of a command name or command line (see ps -ef)",
        )
    return pids


def exited(pid: int, proc_root: str = "/proc") -> str | None:
    """Why ``pid`` is no longer a running process (``"gone"``, ``"a zombie"``), or None."""
    from numarun import procfs

    try:
        state = procfs.status(pid, proc_root).get("State", "")
    except ProcessError:
        return "gone" if not procfs.exists(pid, proc_root) else None  # unreadable: not ours
    return "a zombie" if state[:1] in _EXITED_STATES else None
