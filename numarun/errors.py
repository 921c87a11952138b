"""The errors numarun raises, each with the exit code its command ends with.

Every refusal is one line that names the problem and, after " — ", the fix. The CLI
prints ``numarun: <message>`` on stderr and exits with the error's code; no traceback.
Library callers catch :class:`NumarunError` (or a subclass) and read ``exit_code``.

Exit codes are distinct per kind of problem so that scripts can tell them apart:

====  =====================  ===============================================================
code  class                  meaning
====  =====================  ===============================================================
2     UsageError             bad command-line syntax or option values
3     SpecError              a job spec or preset file is malformed or invalid
4     UnknownResourceError   a node or CPU that does not exist on this machine
5     NotAllowedError        a node or CPU that the cpuset/cgroup does not allow
6     UnsuitableError        exists and is allowed but cannot serve (offline CPU,
                             memory-less node for bind, empty resulting CPU set)
7     KernelRefusedError     the kernel refused a syscall (seccomp, EPERM, mode too new)
8     TopologyError          sysfs or a snapshot cannot be read or is malformed
9     ProcessError           a process is gone or belongs to another user
10    CheckFailedError       ``--check`` found placement that does not match its policy
11    SupervisorError        a supervised job failed (workers crashed beyond their limit)
12    WorkerPathError        a worker's cwd, log file or stdin file cannot be used
13    StateDirError          numarun's state directory cannot be trusted or created
14    JobRunningError        a job of that name is already running
15    StopTimeoutError       ``numarun stop`` waited its --timeout and the job still runs
126   (exec)                 the command exists but cannot be executed
127   (exec)                 the command was not found
====  =====================  ===============================================================
"""

from __future__ import annotations


class NumarunError(Exception):
    """Base of every error numarun reports to a user."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem} — {self.fix}" if self.fix else self.problem


class WriteError(NumarunError):
    """stdout could not be written (coreutils' ``write error``: a closed stdout, a full disk)."""

    exit_code = 1


class UsageError(NumarunError):
    exit_code = 2


class SpecError(NumarunError):
    exit_code = 3


class UnknownResourceError(NumarunError):
    exit_code = 4


class NotAllowedError(NumarunError):
    exit_code = 5


class UnsuitableError(NumarunError):
    exit_code = 6


class KernelRefusedError(NumarunError):
    exit_code = 7


class TopologyError(NumarunError):
    exit_code = 8


class ProcessError(NumarunError):
    exit_code = 9


class CheckFailedError(NumarunError):
    exit_code = 10


class SupervisorError(NumarunError):
    exit_code = 11


class WorkerPathError(NumarunError):
    """A path a worker needs before its command runs: ``cwd``, ``logs``, ``stdin``.

    Not 127: the shell's "not found" is about the command, and a script that retries on a
    missing program must not take a missing directory for one."""

    exit_code = 12


class StateDirError(NumarunError):
    exit_code = 13


class JobRunningError(NumarunError):
    exit_code = 14


class StopTimeoutError(NumarunError):
    """The job was asked to stop and is still stopping: neither failed nor gone."""

    exit_code = 15


class CommandNotExecutableError(NumarunError):
    exit_code = 126


class CommandNotFoundError(NumarunError):
    exit_code = 127
