"""The guardian: a tiny process that kills the job's workers if the supervisor dies.

``PR_SET_PDEATHSIG`` would only kill a worker itself (not what it started), only when the
*thread* that forked it exits, and needs code in the child between fork and exec (see
:mod:`numarun.supervisor.process` for why the supervisor runs none). The guardian does the
same job for the whole job: the supervisor starts it once, in its own session so that a
Ctrl-C or a signal to the supervisor's group does not reach it, and tells it through a
pipe each process group it starts (``+PGID``) and reaps (``-PGID``). The supervisor holds
the only write end (close-on-exec, so no worker inherits it): when the supervisor dies,
however it dies, the guardian reads end-of-file, sends SIGKILL to every group still
listed, removes the job's state file, and exits. On a clean exit the supervisor has
already reaped every group, so the guardian has nothing to kill.

The guardian is ``python -I -S`` running :data:`GUARDIAN_CODE` (no site, no numarun
import: ~10 ms once per job, a few MB of memory).
"""

from __future__ import annotations

import os
import subprocess
import sys

GUARDIAN_CODE = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
groups = set()
rest = b""
while True:
    try:
        data = os.read(0, 65536)
    except InterruptedError:
        continue
    if not data:
        break
    lines = (rest + data).split(b"\n")
    rest = lines.pop()
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
for path in sys.argv[1:]:
    try:
        os.unlink(path)
    except OSError:
        pass
"""


class Guardian:
    """The supervisor's end of the guardian."""

    def __init__(self, cleanup: list[str] | None = None) -> None:
        read_end, self._fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", GUARDIAN_CODE, *(cleanup or [])],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(read_end)
        self.alive = True

    def _send(self, text: str) -> None:
        if not self.alive:
            return
        try:
            os.write(self._fd, text.encode())
        except OSError:
            # Gone (killed by someone): supervision goes on without the safety net.
            self.alive = False

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def close(self) -> None:
        """End the guardian: every group it was told of must already be forgotten."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.alive = False
