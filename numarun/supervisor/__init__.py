"""Supervision: run a job's workers placed, keep them alive, stop them cleanly.

::

    from numarun.supervisor import JobSpec, Supervisor, WorkerSpec

    job = JobSpec("demo", (WorkerSpec("web", 0, ("python3", "-m", "http.server", "8000")),))
    with Supervisor(job, state_dir=False) as sup:
        for event in sup.events():
            if event.kind == "spawned":
                sup.stop()

Modules: :mod:`.policy` (the restart policy), :mod:`.model` (specs, events),
:mod:`.process` (starting one instance with its placement), :mod:`.manager` (the loop),
:mod:`.printer` (output), :mod:`.guardian` (cleanup when the supervisor is killed),
:mod:`.state` (the state file), :mod:`.clock`.
"""

from __future__ import annotations

from numarun import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from numarun.supervisor.clock import Clock, FakeClock, RealClock
    from numarun.supervisor.manager import JobResult, Supervisor, Worker
    from numarun.supervisor.model import Event, ExitStatus, JobSpec, WorkerSpec
    from numarun.supervisor.policy import Backoff, CrashLoop, Supervision
    from numarun.supervisor.printer import (
        LineSplitter,
        NullPrinter,
        PrefixPrinter,
        Printer,
        QuietPrinter,
    )

# Imported on first use: the job spec needs only .policy, and must not pay for the loop.
_EXPORTS = {
    "Clock": "clock",
    "FakeClock": "clock",
    "RealClock": "clock",
    "JobResult": "manager",
    "Supervisor": "manager",
    "Worker": "manager",
    "Event": "model",
    "ExitStatus": "model",
    "JobSpec": "model",
    "WorkerSpec": "model",
    "Backoff": "policy",
    "CrashLoop": "policy",
    "Supervision": "policy",
    "LineSplitter": "printer",
    "NullPrinter": "printer",
    "PrefixPrinter": "printer",
    "Printer": "printer",
    "QuietPrinter": "printer",
}

__all__ = [
    "Backoff",
    "Clock",
    "CrashLoop",
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
    "Supervision",
    "Supervisor",
    "Worker",
    "WorkerSpec",
]


__getattr__ = lazy_exports(__name__, {k: f"{__name__}.{v}" for k, v in _EXPORTS.items()})
