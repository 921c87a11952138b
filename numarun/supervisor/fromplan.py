"""From the planner's :class:`~numarun.plan.Plan` to the supervisor's :class:`JobSpec`."""

from __future__ import annotations

import os

from numarun.plan import Plan
from numarun.supervisor.model import JobSpec, WorkerSpec


def job_name_for(spec_path: str | None) -> str:
    """A job is named after its spec file: ``/etc/numarun/redis.toml`` -> ``redis``."""
    if not spec_path:
        return "job"
    return os.path.splitext(os.path.basename(spec_path))[0] or "job"


def job_from_plan(plan: Plan, name: str | None = None) -> JobSpec:
    """Every worker of every process group, in plan order, as one job."""
    workers: list[WorkerSpec] = []
    for process in plan.processes:
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
                    supervision=process.supervision,
                    stdin=w.stdin,
                    log=w.log,
                    smt=process.smt,
                )
            )
    return JobSpec(
        name=name or job_name_for(plan.spec),
        workers=tuple(workers),
        source=plan.spec,
        watch=plan.watch,
    )
