"""The guardian: a tiny process that kills the job's workers if the supervisor dies.

``PR_SET_PDEATHSIG`` only kills a worker itself (not what it started), and only when the
*thread* that forked it exits; workers have it too, for when the guardian dies with the
supervisor (see :mod:`numarun.supervisor.contain`). The guardian does the job for the
whole job: the supervisor starts it once, in its own session so that a
Ctrl-C or a signal to the supervisor's group does not reach it, and tells it through a
pipe each process group it starts (``+PGID``) and reaps (``-PGID``). The supervisor holds
the only write end (close-on-exec, so no worker inherits it): when the supervisor dies,
however it dies, the guardian reads end-of-file, sends SIGKILL to every group still
listed (and, when the job has a cgroup of its own, writes ``cgroup.kill``, which also
reaches processes that left their process group, then removes the cgroup), removes the
job's state file, and exits. On a clean exit the supervisor has
already reaped every group, so the guardian has nothing to kill.

The guardian is ``python -I -S`` running :data:`GUARDIAN_CODE` (no site, no numarun
import: ~10 ms once per job, a few MB of memory).
"""

from __future__ import annotations

import os
import subprocess
import sys

GUARDIAN_CODE = r"""
import os, signal, sys, time
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
cgroup = sys.argv[2] if sys.argv[1:2] == ["--cgroup"] else None
files = sys.argv[3:] if cgroup else sys.argv[1:]
if cgroup:
    try:
        with open(cgroup + "/cgroup.kill", "w") as f:
            f.write("1")
    except OSError:
        pass
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
if cgroup:
    for _ in range(200):
        try:
            os.rmdir(cgroup)
            break
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(0.01)
for path in files:
    try:
        os.unlink(path)
    except OSError:
        pass
"""


class Guardian:
    """The supervisor's end of the guardian."""

    def __init__(self, cleanup: list[str] | None = None, cgroup: str | None = None) -> None:
        read_end, self._fd = os.pipe()
        args = ["--cgroup", cgroup] if cgroup else []
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", GUARDIAN_CODE, *args, *(cleanup or [])],
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
