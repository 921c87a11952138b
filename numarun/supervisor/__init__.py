"""Supervision: run a job's workers placed, keep them alive, stop them cleanly.

::

    from numarun.supervisor import JobSpec, Supervisor, WorkerSpec

    job = JobSpec("demo", (WorkerSpec("web", 0, ("python3", "-m", "http.server", "8000")),))
    with Supervisor(job, state_dir=False) as sup:
        for event in sup.events():
            if event.kind == "spawned":
                sup.stop()

Modules: :mod:`.model` (specs, events), :mod:`.process` (starting one instance with its
placement), :mod:`.manager` (the loop), :mod:`.printer` (output), :mod:`.guardian`
(cleanup when the supervisor is killed), :mod:`.state` (the state file), :mod:`.clock`.
"""

from __future__ import annotations

from numarun.supervisor.clock import Clock, FakeClock, RealClock
from numarun.supervisor.manager import JobResult, Supervisor, Worker, backoff_delay
from numarun.supervisor.model import (
    Event,
    ExitStatus,
    JobSpec,
    RestartSettings,
    WorkerSpec,
)
from numarun.supervisor.printer import (
    LineSplitter,
    NullPrinter,
    PrefixPrinter,
    Printer,
    QuietPrinter,
)

__all__ = [
    "Clock",
    "Event",
    "ExitStatus",
    "FakeClock",
    "JobResult",
    "JobSpec",
    "LineSplitter",
    "NullPrinter",
    "PrefixPrinter",
    "Printer",
    "QuietPrinter",
    "RealClock",
    "RestartSettings",
    "Supervisor",
    "Worker",
    "WorkerSpec",
    "backoff_delay",
]
