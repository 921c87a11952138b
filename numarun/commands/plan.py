"""``numarun plan FILE`` and ``numarun policies``: preview a job's placement; list presets.

``plan`` prints, per process group, a table of its workers (node, CPUs with the count of
physical cores, memory policy, expanded command) and then the warnings; ``--json`` prints
the plan as one object whose shape scripts rely on (see numarun-job(5), "PLAN JSON").
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import TYPE_CHECKING

import typer

from numarun.cpulist import format_list
from numarun.errors import NumarunError
from numarun.options import typer_option
from numarun.plan import Plan, PlanWeights, ProcessPlan, WorkerPlan

if TYPE_CHECKING:
    from numarun.spec import JobSpec

PLAN_HELP = (
    "Show where every worker of a job spec would run: CPUs, node, memory policy, command. "
    "Changes nothing."
)
POLICIES_HELP = "List the policy presets on the search path, with where each came from."


def checked_plan(spec: JobSpec, snapshot: str | None) -> Plan:
    """The plan, with what ``numarun run`` would refuse: on this machine (no snapshot) a
    worker that cannot start is the same refusal as ``run``'s; for another machine's
    snapshot this host's paths and commands prove nothing there, so they are warnings
    that say so. A taken job name or an unusable state directory is always a warning:
    ``plan`` of a running job is how one looks at it."""
    from numarun import preflight
    from numarun.plan import plan_job, plan_weights
    from numarun.supervisor.fromplan import job_from_plan
    from numarun.topology import load_topology

    topology = load_topology(snapshot)
    preflight.check_reserved(topology, spec)
    plan = plan_job(topology, spec)
    job = job_from_plan(plan)
    problems = preflight.worker_problems(job.workers, job.source)
    warnings = list(plan.warnings)
    weights, refused = plan_weights(topology, spec.weights, plan.processes)
    warnings += refused
    if snapshot is None and weights is not None and weights.job is not None:
        warnings += _weights_writable(sorted(weights.job))
    if snapshot is None:
        if problems:
            raise problems[0]
        try:
            preflight.check_state(job)
        except NumarunError as err:
            warnings.append(f"numarun run would refuse: {err.message}")
    else:
        lead = "checked on this host, not the snapshot's: numarun run would refuse: "
        warnings += preflight.summarise(problems, lead)
    return Plan(
        processes=plan.processes,
        warnings=tuple(warnings),
        topology=plan.topology,
        spec=plan.spec,
        weights=weights,
        watch=plan.watch,
    )


def _weights_writable(nodes: list[int]) -> list[str]:
    """``numarun run`` writes the job's weights as root only: say so before it refuses."""
    from numarun import refusals, weights

    if weights.writable(nodes):
        return []
    return [f"numarun run would refuse: {refusals.weights_need_root().message}"]


def render_plan(plan: Plan) -> str:
    """The plan as tables for people: the weights, one per process group, the warnings."""
    out: list[str] = []
    if plan.weights is not None:
        out.extend(_weights_table(plan.weights))
        out.append("")
    for process in plan.processes:
        out.extend(_table(process, plan))
        out.append("")
    if plan.watch is not None:
        out.extend((f"watch: {plan.watch.describe()}", ""))
    if plan.warnings:
        out.extend(f"warning: {w}" for w in plan.warnings)
    else:
        out.pop()  # no blank line at the very end
    return "\n".join(out)


def _weights_table(weights: PlanWeights) -> list[str]:
    """Per node, the weights in force and (with the job's ``weights``) those it writes."""
    auto = " (the kernel's auto mode)" if weights.auto else ""
    if not weights.in_force:
        return ["weighted interleave: none on this kernel (Linux 6.9+)"]
    if weights.asked is None:
        head = f"weighted interleave weights in force{auto}; the job sets none"
    elif weights.job is None:
        head = f"weighted interleave weights in force{auto}; the job's cannot be set here"
    else:
        head = (
            f"weighted interleave weights: the job writes {weights.asked!r} while it runs "
            f"(root) and restores those in force{auto}"
        )
    rows = [("node", "in force", *(("job",) if weights.job is not None else ()))]
    for node, now in sorted(weights.in_force.items()):
        job = () if weights.job is None else (str(weights.job.get(node, "-")),)
        rows.append((str(node), str(now), *job))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    cells = (" ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return [head, *("  " + line.rstrip() for line in cells)]


def _memory(worker: WorkerPlan, plan: Plan) -> str:
    """``bind 0``, ``weighted-interleave 0,2 (0: 71%, 2: 29%)``: the expected shares too."""
    memory = worker.memory
    text = memory.mode + (f" {format_list(memory.nodes)}" if memory.nodes else "")
    shares = plan.shares_of(worker)
    if shares:
        text += " (" + ", ".join(f"{n}: {share:.0%}" for n, share in shares.items()) + ")"
    return text


def _table(process: ProcessPlan, plan: Plan) -> list[str]:
    policy = process.policy + (
        f" (preset, mode {process.workers[0].memory.mode})"
        if process.preset and process.workers
        else ""
    )
    count = len(process.workers)
    head = (
        f"process {process.name}: {count} worker{'s' if count != 1 else ''}, "
        f"policy {policy}, smt {process.smt}"
    )
    # A device column only where workers are placed near one (per-gpu, near = ...).
    near = any(w.device is not None for w in process.workers)
    rows = [("worker", "node", *(("device",) if near else ()), "cpus", "memory", "command")]
    for w in process.workers:
        memory = _memory(w, plan)
        cpus = (
            f"{format_list(w.cpus)} ({len(w.cpus)} on {w.cores} core{'s' if w.cores != 1 else ''})"
        )
        node = str(w.node) if len(w.nodes) <= 1 else f"{w.node} ({format_list(w.nodes)})"
        device = (w.device or "-",) if near else ()
        rows.append((str(w.index), node, *device, cpus, memory, shlex.join(w.argv)))
    last = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(last)]
    lines = [head]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(last)]
        lines.append("  " + "  ".join([*cells, row[last]]).rstrip())
    return lines


def render_policies() -> str:
    from numarun import presets

    listed = presets.list_presets()
    if not listed:
        return "no policy presets found"
    rows = [("name", "mode", "from", "description")]
    for preset, _shadowed in listed:
        rows.append(
            (preset.name, preset.mode, f"{preset.source}: {preset.path}", preset.description)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join([*(r[i].ljust(widths[i]) for i in range(3)), r[3]]).rstrip() for r in rows]
    for preset, shadowed in listed:
        for path in shadowed:
            lines.append(f"note: {path} is shadowed by {preset.path}")
    lines.append("search path: " + ", ".join(d for d, _ in presets.search_path()))
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("plan", help=PLAN_HELP)
    def plan_command(
        spec_file: str = typer.Argument(..., metavar="FILE", help="A job spec (TOML)."),
        topology: str | None = typer_option("topology"),
        as_json: bool = typer_option("json"),
    ) -> None:
        from numarun.spec import load_spec

        spec = load_spec(spec_file)  # before the topology: a bad file is the likelier error
        plan = checked_plan(spec, topology)
        if as_json:
            json.dump(plan.to_dict(), sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            print(render_plan(plan))

    @app.command("policies", help=POLICIES_HELP)
    def policies_command(
        as_json: bool = typer_option("json"),
    ) -> None:
        if as_json:
            from numarun import presets

            data = [
                {
                    "name": p.name,
                    "mode": p.mode,
                    "source": p.source,
                    "path": p.path,
                    "description": p.description,
                    "reason": p.reason,
                    "defaults": p.defaults(),
                    "shadows": shadowed,
                }
                for p, shadowed in presets.list_presets()
            ]
            json.dump(data, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            print(render_policies())
