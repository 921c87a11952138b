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

The guardian is ``/bin/sh`` running :data:`GUARDIAN_SH` (about 2 MB of memory; a Python
interpreter, even ``python -I -S``, is some 9 MB, as much again as the rest of the job's
overhead). It keeps the groups as a space-separated list, ignores lines that are not
``+N`` or ``-N``, and uses only the shell's builtins until the end (``kill`` among them),
then ``rmdir``, ``sleep`` and ``rm`` for the clean-up.
"""

from __future__ import annotations

import os
import subprocess

SHELL = "/bin/sh"

# argv: $0 (its name in ps), then optionally --cgroup DIR, then the files to remove.
GUARDIAN_SH = r"""
trap '' INT HUP
PATH=/usr/bin:/bin:/usr/sbin:/sbin
cgroup=
if [ "${1-}" = --cgroup ]; then cgroup=$2; shift 2; fi
groups=" "
while IFS= read -r line; do
  g=${line#?}
  case $g in ''|*[!0-9]*) continue ;; esac
  case $line in
    +*) case $groups in *" $g "*) ;; *) groups="$groups$g " ;; esac ;;
    -*) case $groups in *" $g "*) groups="${groups%%" $g "*} ${groups#*" $g "}" ;; esac ;;
  esac
done
if [ -n "$cgroup" ]; then { echo 1 >"$cgroup/cgroup.kill"; } 2>/dev/null; fi
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
if [ -n "$cgroup" ]; then
  n=0
  while [ "$n" -lt 200 ] && [ -e "$cgroup" ]; do
    rmdir -- "$cgroup" 2>/dev/null && break
    sleep 0.01
    n=$((n + 1))
  done
fi
for path; do rm -f -- "$path" 2>/dev/null; done
"""


class Guardian:
    """The supervisor's end of the guardian."""

    def __init__(self, cleanup: list[str] | None = None, cgroup: str | None = None) -> None:
        read_end, self._fd = os.pipe()
        args = ["--cgroup", cgroup] if cgroup else []
        try:
            self.proc = subprocess.Popen(
                [SHELL, "-c", GUARDIAN_SH, "numarun-guardian", *args, *(cleanup or [])],
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
