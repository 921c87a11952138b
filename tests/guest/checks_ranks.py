"""Guest checks for ``numarun --per-rank`` under Open MPI and Slurm, and for cgroup cpusets.

Every rank runs :data:`PROBE` as its command (after numarun exec'd into it): it faults in
8 MiB of anonymous memory and reports, from the kernel's own files, its CPUs
(``/proc/self/status``) and where those pages are and under which policy
(``/proc/self/numa_maps``). The tests (test_ranks_guest.py) compare them with the shape.

Guest time matters (each python start costs 2-3 s under TCG), so each case is one launch
of all its ranks in parallel, and the cgroup case runs its commands two at a time.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inguest import Context, check

JSONDict = dict[str, Any]

MARK = "NUMARUN-RANK "
# Runs as `python -I -S -c PROBE`: stdlib only, nothing read from the environment.
PROBE = r"""
import json, os, re
size = 8 << 20
buf = bytearray(size)
buf[::4096] = b"\1" * (size // 4096)
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
best = (0, "")
for line in open("/proc/self/numa_maps"):
    m = re.search(r" anon=(\d+)", line)
    if m and int(m[1]) > best[0]:
        best = (int(m[1]), line)
names = ("OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "NUMARUN_CHECK_RANK")
rank = next((os.environ[n] for n in names if n in os.environ), None)
print("NUMARUN-RANK " + json.dumps({
    "rank": int(rank) if rank is not None else None,
    "cpus": status["Cpus_allowed_list"].strip(),
    "mems": status["Mems_allowed_list"].strip(),
    "policy": best[1].split()[1] if best[1] else None,
    "pages": {k: int(v) for k, v in re.findall(r" N(\d+)=(\d+)", best[1])},
}), flush=True)
"""

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


def _numarun(ctx: Context, *args: str) -> list[str]:
    """numarun from the checkout without site-packages (-S): the prefix path needs none, and
    the venv's site scan costs a few hundred ms per rank under TCG."""
    return [ctx.python, "-S", "-m", "numarun", *args]


def _probe(ctx: Context) -> list[str]:
    return [ctx.python, "-I", "-S", "-c", PROBE]


def _ranks(stdout: str) -> list[JSONDict]:
    found = [json.loads(line[len(MARK) :]) for line in stdout.splitlines() if line.startswith(MARK)]
    return sorted(found, key=lambda r: (r["rank"] is None, r["rank"] or 0))


def _result(run: JSONDict) -> JSONDict:
    """The ranks' reports and a slim run: the whole guest report travels as one line, so
    no argv (it holds the probe) and only the tail of stderr (stdout when nothing parsed)."""
    ranks = _ranks(run["stdout"])
    slim = {"rc": run["rc"], "seconds": run["seconds"], "stderr": run["stderr"][-700:]}
    if not ranks:
        slim["stdout"] = run["stdout"][-300:]
    return {"ranks": ranks, "run": slim}


def _mpirun(ctx: Context, np: int, *binding: str, options: Sequence[str] = ()) -> JSONDict:
    argv = [*MPIRUN, *binding, "-np", str(np)]
    argv += _numarun(ctx, "--per-rank", "--policy", "bind", *options, "--", *_probe(ctx))
    return _result(ctx.run(argv, timeout=180))


def _parallel(ctx: Context, jobs: Sequence[tuple[Sequence[str], dict[str, str]]]) -> list[JSONDict]:
    """Run every (argv, extra env) at once, as a launcher starts ranks; a run dict each."""
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ctx.env(extra),
            cwd=ctx.repo,
        )
        for argv, extra in jobs
    ]
    runs = []
    for (argv, _), proc in zip(jobs, procs, strict=True):
        out, err = proc.communicate(timeout=180)
        runs.append(
            {"argv": list(argv), "rc": proc.returncode, "stdout": out, "stderr": err,
             "seconds": round(time.monotonic() - t0, 2)}
        )  # fmt: skip
    return runs


def _combined(runs: list[JSONDict]) -> JSONDict:
    """Parallel runs as one, the way mpirun reports its ranks."""
    return {
        "argv": runs[0]["argv"],
        "rc": max(r["rc"] for r in runs),
        "stdout": "".join(r["stdout"] for r in runs),
        "stderr": "".join(r["stderr"] for r in runs),
        "seconds": max(r["seconds"] for r in runs),
    }


@check(min_nodes=4)
def ranks_mpirun_np4(ctx: Context) -> JSONDict:
    """mpirun --bind-to none -np 4: numarun places rank i on node i."""
    return _mpirun(ctx, 4, "--bind-to", "none")


@check(min_nodes=4)
def ranks_mpirun_np8(ctx: Context) -> JSONDict:
    """Eight ranks on four nodes: two per node, each on its own CPU."""
    return _mpirun(ctx, 8, "--bind-to", "none")


@check(min_nodes=4)
def ranks_mpirun_np3(ctx: Context) -> JSONDict:
    """Three ranks on four nodes: no two share a core."""
    return _mpirun(ctx, 3, "--bind-to", "none")


@check(min_nodes=4)
def ranks_mpirun_bound(ctx: Context) -> JSONDict:
    """mpirun's default binding (to a core each, for two ranks): numarun stays within each
    rank's CPUs and says so."""
    return _mpirun(ctx, 2)


@check(min_nodes=4)
def ranks_slurm_by_hand(ctx: Context) -> JSONDict:
    """Local ranks 1 and 3 of four given Slurm's variables by hand, as srun sets them on the
    second node of a two-node step with four tasks on each (every rank plans the same slots,
    so two of the four show the mapping; the others would cost guest time)."""
    argv = [*_numarun(ctx, "--per-rank", "--policy", "bind", "--"), *_probe(ctx)]
    slurm = {"SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_NODEID": "1", "SLURM_NTASKS": "8"}
    jobs = [(argv, slurm | {"SLURM_LOCALID": str(i)}) for i in (1, 3)]
    return _result(_combined(_parallel(ctx, jobs)))


# --------------------------------------------------------------------------------------------
# cgroup v2 cpuset: what Kubernetes' static CPU manager, Slurm's task/cgroup and systemd's
# AllowedCPUs= give a process. Made the way test_numarun.py's numarun_outside_cpuset does.

CGROUP = Path("/sys/fs/cgroup/numarun-ranks-check")


@check(min_nodes=4)
def ranks_cgroup(ctx: Context) -> JSONDict:
    """In a cgroup allowing nodes 1-2 (their CPUs and memory): `numarun plan`, the plain
    prefix bind and --per-rank stay inside it; node 3 is refused naming the cgroup."""
    inside = [1, 2]
    cpus = [c for n in inside for c in ctx.node_cpus(n)]
    Path("/sys/fs/cgroup/cgroup.subtree_control").write_text("+cpuset\n")
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "cpuset.cpus").write_text(",".join(map(str, cpus)) + "\n")
    (CGROUP / "cpuset.mems").write_text(",".join(map(str, inside)) + "\n")
    # Each command joins the cgroup itself, then execs: nothing else moves.
    join = ["sh", "-c", f'echo $$ > {CGROUP}/cgroup.procs && exec "$@"', "sh"]
    outside = ctx.nodes - 1
    example = str(ctx.repo / "examples" / "redis-per-node.toml")
    probe = _probe(ctx)
    per_rank = [*_numarun(ctx, "--per-rank", "--policy", "bind", "--"), *probe]
    jobs = {
        "plan": ([*join, *ctx.numarun_argv("plan", example, "--json")], {}),
        "prefix_bind": ([*join, *_numarun(ctx, "--policy", "bind", "--"), *probe], {}),
        "rank0": ([*join, *per_rank], {"NUMARUN_CHECK_RANK": "0", "MPI_LOCALRANKID": "0",
                                       "MPI_LOCALNRANKS": "2"}),
        "rank1": ([*join, *per_rank], {"NUMARUN_CHECK_RANK": "1", "MPI_LOCALRANKID": "1",
                                       "MPI_LOCALNRANKS": "2"}),
        "rank_outside": ([*join, *_numarun(ctx, "--rank", "0", "--ranks", "1", "--policy",
                                                   "bind", "--nodes", str(outside), "--",
                                                   "true")], {}),
    }  # fmt: skip
    out: JSONDict = {"cpus": cpus, "nodes": inside, "outside": outside}
    t0 = time.monotonic()
    # The slow typer command beside the quick refusal, then the three placements: the
    # guest's eight CPUs are emulated on two host cores, so more at once gains nothing.
    for group in (("plan", "rank_outside"), ("prefix_bind", "rank0", "rank1")):
        for name, run in zip(group, _parallel(ctx, [jobs[n] for n in group]), strict=True):
            if name == "plan":
                out["plan_workers"] = _plan_workers(run["stdout"])
            out[name] = _result(run)
    out["seconds"] = round(time.monotonic() - t0, 2)
    return out


def _plan_workers(stdout: str) -> list[JSONDict]:
    """The workers of `numarun plan --json`: node, CPUs, memory."""
    try:
        data = json.loads(stdout)
    except ValueError:
        return []
    return [
        {"node": w["node"], "cpus": w["cpus"], "memory": w["memory"]}
        for p in data["processes"]
        for w in p["workers"]
    ]
