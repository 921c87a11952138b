"""Finding the command to run the way ``execvp`` would, before anything is changed.

Checked while planning, so that a missing or unexecutable command is refused (127, 126)
before a memory policy or an affinity is set, and before a worker is spawned.
"""

from __future__ import annotations

import os
import stat

from numarun.errors import CommandNotExecutableError, CommandNotFoundError


def find_executable(name: str, path: str | None = None) -> str:
    """Resolve ``name`` the way ``execvp`` does; refuse with exit 127 or 126 before anything.

    A name with a slash is used as it is; otherwise each ``PATH`` directory is tried in
    order and the first executable regular file wins. A file that exists but cannot be
    executed gives 126 only when nothing later on ``PATH`` can be. ``path`` is the ``PATH``
    to search (a worker's own environment's); None: this process's.
    """
    if not name:
        raise CommandNotFoundError("the command name is empty", "give a command after --")
    if "/" in name:
        candidates = [name]
    else:
        if path is None:
            path = os.environ.get("PATH", os.defpath)
        candidates = [os.path.join(d or ".", name) for d in path.split(os.pathsep)]
    denied: str | None = None
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            denied = denied or candidate
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied is not None:
        directory = os.path.isdir(denied)
        what = "a directory" if directory else "not executable"
        raise CommandNotExecutableError(
            f"{name} is {what}" if denied == name else f"{name}: {denied} is {what}",
            "name the program inside it, not the directory"
            if directory
            else "chmod +x it, or run it through its interpreter (sh FILE, python3 FILE)",
        )
    where = "" if "/" in name else " on PATH"
    raise CommandNotFoundError(
        f"{name}: command not found{where}", "check the spelling, or give its full path"
    )
