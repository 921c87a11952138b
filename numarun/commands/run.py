"""``numarun run FILE``, ``numarun status [JOB]``, ``numarun stop JOB``: the supervisor's CLI.

A thin layer over :class:`numarun.supervisor.Supervisor`: ``run`` plans the spec on this
machine and supervises it in the foreground until it is stopped (SIGINT, SIGTERM, SIGHUP,
or ``numarun stop``) or every worker is down; ``status`` and ``stop`` work from the state
file a running ``numarun run`` keeps in the runtime directory.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

import typer

from numarun.errors import KernelRefusedError, NumarunError, ProcessError, StopTimeoutError
from numarun.options import typer_option

if TYPE_CHECKING:
    from numarun.supervisor.state import JobState

RUN_HELP = (
    "Start every worker of a job spec placed as planned, keep them alive, stop them cleanly. "
    "Runs in the foreground; Ctrl-C (or SIGTERM, or numarun stop JOB) stops the job, "
    "a second Ctrl-C kills it at once. Exit 0 when stopped on request or every worker "
    "exited successfully, 11 when workers failed. Every worker, path and the state "
    "directory are checked before the first worker starts."
)
STATUS_HELP = "List running jobs (or one job) with each worker's PID, state and placement."
STOP_HELP = (
    "Stop a running job as Ctrl-C would, and wait until every worker is down. Run again "
    "while it is stopping, it keeps waiting; only --now kills the workers at once."
)


def run_job(
    spec_file: str,
    *,
    name: str | None = None,
    colour: bool | None = None,
    state_dir: str | None = None,
    hand_off: bool = False,
    metrics: str | None = None,
    metrics_listen: str | None = None,
) -> int:
    """Plan ``spec_file`` on this machine and supervise the job until it ends.

    With ``hand_off`` (the ``numarun run`` command), the supervising is done by a lean
    interpreter this process execs into once the job is planned, so that pydantic and typer
    do not stay in memory for as long as the job runs (see
    :mod:`numarun.supervisor.handoff`); it returns only where that exec failed.
    ``metrics`` (a textfile) and ``metrics_listen`` (``[HOST]:PORT``) are checked here,
    before anything starts, and published by the supervisor after every sample.
    """
    from numarun import preflight
    from numarun.plan import plan_job
    from numarun.spec import load_spec
    from numarun.supervisor import export, handoff
    from numarun.supervisor.fromplan import job_from_plan
    from numarun.topology import read_topology

    spec = load_spec(spec_file)
    topology = read_topology()
    preflight.check_reserved(topology, spec)
    plan = plan_job(topology, spec)
    for warning in plan.warnings:
        print(f"numarun: warning: {warning}", file=sys.stderr)
    job = job_from_plan(plan, name)
    if metrics is not None or metrics_listen is not None:
        if job.watch is None:  # metrics need samples: the [watch] defaults
            import dataclasses

            from numarun.supervisor.watchpolicy import Watch

            job = dataclasses.replace(job, watch=Watch())
        if metrics is not None:
            export.check_file(metrics)
        if metrics_listen is not None:
            export.parse_listen(metrics_listen)
    if colour is None and os.environ.get("NO_COLOR"):
        colour = False
    weights = None
    if spec.weights is not None:  # refused here (no HMAT, a node it has not) before any start
        from numarun import weights as interleave

        weights = interleave.wanted(spec.weights, topology)
    how = handoff.How(
        colour=colour,
        state_dir=state_dir,
        weights=weights,
        metrics=metrics,
        metrics_listen=metrics_listen,
    )
    if hand_off:
        handoff.exec_supervisor(job, how)
    return handoff.supervise(job, how)


# -- status ------------------------------------------------------------------------------


def _uptime(started: float | None) -> str:
    if not started:
        return "-"
    seconds = int(max(0.0, time.time() - started))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def _verdicts(pids: list[int]) -> dict[int, tuple[str, str | None]]:
    """Each live worker's placement verdict from the placement report (pass, fail or skip),
    and its note when its memory is off the node of the device it runs near."""
    out: dict[int, tuple[str, str | None]] = {}
    if not pids:
        return out
    try:
        from numarun import numastat
        from numarun.commands.placement import collect
        from numarun.topology import read_topology

        topology = read_topology()
        memory = numastat.machine()
    except Exception:  # no report for this view; the table still shows what it has
        return out
    for pid in pids:
        try:
            found = collect(pid, topology, memory)
        except Exception:  # exited meanwhile, or not ours to read
            out[pid] = ("-", None)
            continue
        out[pid] = (found.status, found.device.message if found.device is not None else None)
    return out


def _find_jobs(job: str | None, state_dir: str | None) -> list[tuple[str, JobState]]:
    from numarun.supervisor import state

    listing = state.list_jobs(state_dir)
    for warning in listing.warnings:
        print(f"numarun: warning: {warning}", file=sys.stderr)
    jobs = list(listing.jobs)
    if job is None:
        return jobs
    chosen = [(p, d) for p, d in jobs if d.job == job]
    if not chosen:
        running = ", ".join(d.job for _, d in jobs) or "none"
        raise ProcessError(
            f"no job named {job} is running (running: {running})",
            "see numarun status; a job is named after its spec file unless run with --name",
        )
    return chosen


def render_status(
    jobs: list[tuple[str, JobState]], verdicts: dict[int, tuple[str, str | None]]
) -> str:
    if not jobs:
        return "no numarun jobs are running"
    lines: list[str] = []
    for _path, data in jobs:
        sup = data.supervisor
        up = sum(1 for w in data.workers if w.state == "running")
        lines.append(
            f"job {data.job}: {up}/{len(data.workers)} running, {data.state}, "
            f"supervisor pid {sup.pid}, up {_uptime(sup.started)}"
            + (f", spec {data.source}" if data.source else "")
        )
        # The [watch] columns only for a job that samples its workers.
        watched = any(w.local_ratio is not None or w.remediations for w in data.workers)
        head = ("worker", "state", "pid", "up", "starts", "node", "cpus", "memory", "verdict")
        rows: list[tuple[str, ...]] = [head + (("local", "moves") if watched else ())]
        for w in data.workers:
            pid = w.pid
            cpus = w.cpus or "any"
            if w.cpus_now is not None:
                cpus = f"{w.cpus_now} (planned {cpus})"
            local = "-" if w.local_ratio is None else f"{w.local_ratio:.0%}"
            rows.append(
                (
                    w.label,
                    w.state,
                    str(pid) if pid else "-",
                    _uptime(w.started) if pid else "-",
                    str(w.starts),
                    str(w.node) if w.node is not None else "-",
                    cpus,
                    w.memory or "default",
                    verdicts.get(pid, ("-", None))[0] if pid else "-",
                    *(
                        (local + (" drift" if w.drifted else ""), str(w.remediations))
                        if watched
                        else ()
                    ),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        for w in data.workers:
            if w.failure:
                lines.append(f"  {w.label} failed: {w.failure}")
            if w.drifted and w.drift:
                lines.append(f"  {w.label} drifted: {w.drift}")
            note = verdicts.get(w.pid, ("-", None))[1] if w.pid else None
            if note:
                lines.append(f"  {w.label} note: {note}")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def status(job: str | None, *, as_json: bool, verdict: bool, state_dir: str | None) -> int:
    jobs = _find_jobs(job, state_dir)
    pids = [w.pid for _, d in jobs for w in d.workers if w.pid]
    verdicts = _verdicts(pids) if verdict else {}
    if as_json:
        out = []
        for _, data in jobs:
            shown = data.to_dict()
            for w in shown["workers"]:
                if w.get("pid") in verdicts:
                    w["verdict"], w["device_note"] = verdicts[w["pid"]]
            out.append(shown)
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(render_status(jobs, verdicts))
    return 0


# -- stop --------------------------------------------------------------------------------


def stop(job: str, *, now: bool, timeout: float, state_dir: str | None) -> int:
    """Ask the job's supervisor to stop (SIGTERM: gracefully, however often it is asked;
    with ``now`` its kill signal) and wait until it has ended."""
    from numarun.supervisor import state
    from numarun.supervisor.manager import KILL_SIGNAL

    ((_path, data),) = _find_jobs(job, state_dir)
    pid = data.supervisor.pid
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return 0  # it ended between the look-up and now: stopped, as asked
    try:
        if not state.supervisor_alive(data):  # the PID was reused after we read the file
            return 0
        if data.state == "stopping" and not now:
            left = [w.label for w in data.workers if w.state == "stopping"]
            print(
                f"numarun: job {job} is already stopping; waiting up to {timeout:g} s more "
                f"for {', '.join(left) or 'its workers'} to exit (numarun stop --now {job} "
                "kills them at once)",
                file=sys.stderr,
            )
        os.kill(pid, KILL_SIGNAL if now else signal.SIGTERM)
        ended = _wait_readable(pidfd, timeout)
    except ProcessLookupError:
        return 0
    except PermissionError:
        raise _not_permitted(job, pid) from None
    finally:
        os.close(pidfd)
    if not ended:
        raise StopTimeoutError(
            f"job {job} (supervisor pid {pid}) is still stopping after {timeout:g} s",
            f"wait (numarun stop {job} again waits on), or numarun stop --now {job} "
            "kills its workers at once",
        )
    print(f"numarun: job {job} stopped", file=sys.stderr)
    return 0


def _not_permitted(job: str, pid: int) -> NumarunError:
    """The kernel would not let this user signal the supervisor: another user's, unless
    numarun runs as root, where only a security module or a namespace can say no."""
    if os.geteuid() == 0:
        return KernelRefusedError(
            f"the kernel refused to signal job {job}'s supervisor (pid {pid}) although "
            "numarun runs as root",
            "check the security module's log (SELinux, AppArmor) or the container's limits",
        )
    return ProcessError(
        f"job {job}'s supervisor (pid {pid}) belongs to another user",
        "run numarun stop as the user who started the job",
    )


def _wait_readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` became readable within ``timeout`` seconds (waited in steps that
    select can hold, so that --timeout 1e12 waits instead of overflowing)."""
    import select

    deadline = time.monotonic() + (timeout if timeout > 0 else 0.0)
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], min(max(0.0, left), 3600.0))
        if ready:
            return True
        if left <= 3600.0:
            return False


def register(app: typer.Typer) -> None:
    @app.command("run", help=RUN_HELP)
    def run_command(
        spec_file: str = typer.Argument(..., metavar="FILE", help="A job spec (TOML)."),
        name: str | None = typer_option("name"),
        colour: bool | None = typer_option("colour"),
        metrics: str | None = typer_option("metrics"),
        metrics_listen: str | None = typer_option("metrics_listen"),
    ) -> None:
        raise typer.Exit(
            run_job(
                spec_file,
                name=name,
                colour=colour,
                hand_off=True,
                metrics=metrics,
                metrics_listen=metrics_listen,
            )
        )

    @app.command("status", help=STATUS_HELP)
    def status_command(
        job: str | None = typer.Argument(None, metavar="[JOB]", help="One job (default: all)."),
        as_json: bool = typer_option("json"),
        verdict: bool = typer_option("verdict"),
    ) -> None:
        raise typer.Exit(status(job, as_json=as_json, verdict=verdict, state_dir=None))

    @app.command("stop", help=STOP_HELP)
    def stop_command(
        job: str = typer.Argument(..., metavar="JOB", help="The job's name (see numarun status)."),
        now: bool = typer_option("now"),
        timeout: float = typer_option("timeout"),
    ) -> None:
        raise typer.Exit(stop(job, now=now, timeout=timeout, state_dir=None))
