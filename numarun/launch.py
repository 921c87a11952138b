"""Plan, check, apply and exec: the machinery behind ``numarun [placement] -- CMD``.

The launcher works in three strictly ordered stages, so that a refusal never leaves
anything half done and never runs the command:

1. The placement engine (:mod:`numarun.placement`: :func:`~numarun.placement.prefix.plan_prefix`
   and :func:`~numarun.placement.rank.plan_rank`) turns the request into a
   :class:`~numarun.placement.prefix.LaunchPlan`, checks everything and changes nothing.
2. :func:`apply_plan` sets the memory policy of the calling thread (the only thread of a
   prefix launch), with the requested fallback when the kernel lacks the mode, then the CPU
   affinity. The memory policy goes first: it is the call most likely to be refused (by a
   seccomp filter or an old kernel), and refusing before the affinity is changed keeps
   "nothing touched" true for the common failures.
3. :func:`exec_command` replaces this process with the command: same PID, same
   environment, and the command's own exit status. Both the memory policy and the CPU
   affinity survive ``execve``.

The topology used for the checks may come from a snapshot (``--topology``/``--root``) so
that the refusals can be tested against other machines; the system calls always act on
the live one.
"""

from __future__ import annotations

import errno
import os
import sys

from numarun.cpulist import format_list
from numarun.errors import (
    CommandNotExecutableError,
    CommandNotFoundError,
    KernelRefusedError,
    NotAllowedError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from numarun.mempolicy import MemoryPolicy
    from numarun.placement.prefix import LaunchPlan


def exec_command(executable: str, argv: Sequence[str]) -> None:
    """Replace this process with ``argv`` (run from ``executable``); returns only by raising.

    Like ``execvp(3)``, a file the kernel cannot run (``ENOEXEC``: a script without a
    ``#!`` line) is run by ``/bin/sh``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(executable, list(argv))
    except OSError as err:
        if err.errno == errno.ENOEXEC:
            _exec_or_return("/bin/sh", ["sh", executable, *argv[1:]])
        if err.errno == errno.ENOENT:
            raise CommandNotFoundError(
                f"{argv[0]}: {executable} vanished or its interpreter is missing ({err.strerror})",
                "check the #! line of the script",
            ) from None
        raise CommandNotExecutableError(
            f"{argv[0]}: cannot execute {executable}: {err.strerror}",
            "check its permissions and format (is it built for this machine?)",
        ) from None


def _exec_or_return(executable: str, argv: Sequence[str]) -> None:
    """``execv`` that returns, rather than raises, when it fails (the caller reports)."""
    try:
        os.execv(executable, list(argv))
    except OSError:
        return


# -- applying -----------------------------------------------------------------------------


def apply_plan(plan: LaunchPlan, *, warn: bool = True) -> MemoryPolicy | None:
    """Set the memory policy, then the CPU affinity, of the calling thread; then the
    plan's environment variables (the device the command runs near, its GPU).

    Returns the memory policy in force (the fallback's, when it was used, which is then
    reported on stderr unless ``warn`` is false).
    """
    applied: MemoryPolicy | None = None
    if plan.policy is not None:
        from numarun.mempolicy import apply_with_fallback

        applied, reason = apply_with_fallback(plan.policy, plan.fallback)
        if reason is not None and warn:
            print(
                f"numarun: {reason.problem}; using {applied} instead (--fallback)",
                file=sys.stderr,
            )
    if plan.cpus is not None:
        set_affinity(plan.cpus)
    for name, value in plan.env.items():  # execv passes os.environ on to the command
        os.environ[name] = value
    return applied


def set_affinity(cpus: frozenset[int]) -> None:
    """``sched_setaffinity`` on this process, errors translated."""
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as err:
        if err.errno == errno.EINVAL:  # no CPU of the set is both online and allowed
            raise NotAllowedError(
                f"the kernel refused CPU affinity {format_list(cpus)} (EINVAL): none of those "
                "CPUs is online and allowed by this process's cpuset",
                "check numarun --show and the cgroup's cpuset.cpus",
            ) from None
        if err.errno == errno.EPERM:
            raise KernelRefusedError(
                f"the kernel refused sched_setaffinity (EPERM) for CPUs {format_list(cpus)}: "
                "a seccomp filter or security module blocks it",
                "allow sched_setaffinity, or leave out the CPU options",
            ) from None
        raise KernelRefusedError(
            f"sched_setaffinity failed: {err.strerror} (errno {err.errno})"
        ) from None
