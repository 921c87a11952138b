"""From the planner's :class:`~numarun.plan.Plan` to the supervisor's :class:`JobSpec`."""

from __future__ import annotations

import os
import signal

from numarun.errors import SpecError
from numarun.plan import Plan, ProcessPlan
from numarun.supervisor.model import JobSpec, OnFailure, RestartMode, RestartSettings, WorkerSpec


def job_name_for(spec_path: str | None) -> str:
    """A job is named after its spec file: ``/etc/numarun/redis.toml`` -> ``redis``."""
    if not spec_path:
        return "job"
    return os.path.splitext(os.path.basename(spec_path))[0] or "job"


def stop_signal(name: str) -> int:
    text = str(name).strip()
    if text.isdigit():
        try:
            return int(signal.Signals(int(text)))
        except ValueError:
            raise SpecError(
                f"stop_signal {text} is not a signal number", 'write stop_signal = "SIGTERM"'
            ) from None
    key = text.upper()
    if not key.startswith("SIG"):
        key = "SIG" + key
    try:
        return int(signal.Signals[key])
    except KeyError:
        raise SpecError(
            f"stop_signal {name!r} is not a signal name", 'write stop_signal = "SIGTERM"'
        ) from None


def restart_settings(process: ProcessPlan) -> RestartSettings:
    mode: RestartMode = process.restart  # type: ignore[assignment]  # validated by the spec
    return RestartSettings(
        restart=mode,
        backoff_initial=process.backoff.initial,
        backoff_max=process.backoff.max,
        backoff_jitter=process.backoff.jitter,
        crash_limit=process.crash_loop.limit,
        crash_window=process.crash_loop.window,
    )


def job_from_plan(plan: Plan, name: str | None = None) -> JobSpec:
    """Every worker of every process group, in plan order, as one job."""
    workers: list[WorkerSpec] = []
    for process in plan.processes:
        settings = restart_settings(process)
        signum = stop_signal(process.stop_signal)
        on_failure: OnFailure = process.on_failure  # type: ignore[assignment]
        for w in process.workers:
            workers.append(
                WorkerSpec(
                    name=w.name,
                    index=w.index,
                    argv=w.argv,
                    node=w.node,
                    cpus=frozenset(w.cpus),
                    memory=w.memory,
                    env={**os.environ, **w.env},
                    cwd=w.cwd,
                    restart=settings,
                    stop_signal=signum,
                    stop_timeout=process.stop_timeout,
                    stdin=w.stdin,
                    log=w.log,
                    on_failure=on_failure,
                )
            )
    return JobSpec(name=name or job_name_for(plan.spec), workers=tuple(workers), source=plan.spec)
