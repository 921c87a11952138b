"""What the supervisor is given and what it reports: worker specs, exit statuses, events.

These are the supervisor's own small value types. The job planner (:mod:`numarun.plan`)
produces richer plans; :func:`numarun.supervisor.fromplan.job_from_plan` turns one into a
:class:`JobSpec`, so that the supervisor can also be driven directly from Python (tests,
``examples/orchestrate.py``) without a TOML file.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from numarun.cpulist import format_list
from numarun.mempolicy import MemoryPolicy
from numarun.supervisor.policy import Supervision
from numarun.supervisor.watchpolicy import Watch


@dataclass(frozen=True)
class WorkerSpec:
    """One worker slot: the program, its placement and how it is supervised.

    ``supervision`` is its process group's :class:`~numarun.supervisor.policy.Supervision`.
    ``cpus`` None and ``memory`` None leave the supervisor's own affinity and policy in
    force. ``log`` is a file both output streams are appended to; None sends them, line by
    line and prefixed, to the supervisor's printer. ``env`` None inherits the supervisor's.
    """

    name: str
    index: int
    argv: tuple[str, ...]
    node: int | None = None
    cpus: frozenset[int] | None = None
    memory: MemoryPolicy | None = None
    fallback: str | None = None
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    supervision: Supervision = field(default_factory=Supervision)  # restarts, stopping
    stdin: str = "null"  # "null", "inherit" (the supervisor's own) or a file to read
    log: str | None = None
    smt: str = "allow"  # its group's SMT rule, for CPUs given in place of offline ones

    @property
    def label(self) -> str:
        """``name.index``: how messages and the status table name the worker."""
        return f"{self.name}.{self.index}"

    def placement_text(self) -> str:
        """``node 0, CPUs 0-3, bind:0``: for messages and ``numarun status``."""
        parts = []
        if self.node is not None:
            parts.append(f"node {self.node}")
        parts.append(f"CPUs {format_list(self.cpus)}" if self.cpus is not None else "CPUs any")
        parts.append(str(self.memory) if self.memory is not None else "default")
        return ", ".join(parts)


@dataclass(frozen=True)
class JobSpec:
    """A job: its name (for the state file, ``status`` and ``stop``) and its worker slots."""

    name: str
    workers: tuple[WorkerSpec, ...]
    source: str | None = None  # the spec file it came from, for ``numarun status``
    watch: Watch | None = None  # sample placement every interval (None: never sample)


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: an exit code, or the signal that killed it."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_wait(cls, status: int) -> ExitStatus:
        import os

        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status))
        return cls(code=os.WEXITSTATUS(status))

    @property
    def success(self) -> bool:
        return self.code == 0

    @property
    def shell_code(self) -> int:
        """The status as a shell reports it: the code, or 128 + the signal number."""
        return self.code if self.code is not None else 128 + (self.signal or 0)

    def __str__(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exit status {self.code}"


EventKind = Literal[
    "spawned",  # an instance started (pid set)
    "spawn-failed",  # the program could not be executed (status 126/127)
    "exited",  # an instance ended (status set); followed by one of the next three
    "restarting",  # it will be started again after ``delay`` seconds
    "failed",  # it will not be started again, and that is a failure (message says why)
    "done",  # it will not be started again: it exited successfully, or was stopped
    "stopping",  # its stop signal was sent
    "killed",  # it outlived stop_timeout and was sent SIGKILL
    "job-stopping",  # the whole job is stopping (message says why)
    "job-done",  # every worker is down; the supervisor's loop ends
    "output",  # a line the worker wrote (message; stream); only with output_events=True
    # With a [watch] table (numarun.supervisor.keeper):
    "sampled",  # the job's placement was sampled (job event; metrics are written on it)
    "drift",  # below the threshold for two samples in a row (message: how far)
    "recovered",  # back at or above the threshold
    "remediated",  # pages moved back with migrate_pages (message: sizes)
    "remediation-skipped",  # not moved: the home nodes lack the free memory
    "remediation-failed",  # migrate_pages refused (message: why)
    "cpus-moved",  # planned CPUs went offline or left the cpuset: others given
    "cpus-restored",  # the planned CPUs are back
    "no-cpus",  # its node has no usable CPU left
    "sampling-slowed",  # samples cost more than the CPU budget: they come less often
]


@dataclass(frozen=True)
class Event:
    """Something that happened to a worker or the job, in the order it happened."""

    kind: EventKind
    time: float  # the supervisor's clock (monotonic seconds)
    worker: WorkerSpec | None = None
    pid: int | None = None
    status: ExitStatus | None = None
    delay: float | None = None
    message: str = ""
    stream: str | None = None  # "stdout" or "stderr", for output events

    def __str__(self) -> str:
        who = self.worker.label if self.worker is not None else "job"
        text = f"{who}: {self.kind}"
        if self.pid is not None:
            text += f" pid {self.pid}"
        if self.status is not None:
            text += f" ({self.status})"
        if self.delay is not None:
            text += f" in {self.delay:.2f} s"
        if self.message:
            text += f": {self.message}"
        return text
