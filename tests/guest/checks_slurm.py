"""Guest checks for ``numarun --per-rank`` under a real Slurm (Debian's 22.05) in the guest.

munged, slurmctld and slurmd run in the guest itself, one node described as it is
(``Sockets`` = nodes, ``CoresPerSocket``, ``ThreadsPerCore`` from the shape), and ``srun``
starts numarun ranks running :data:`PROBE`, which reports its CPUs, its policy and where its
8 MiB landed (``/proc/self/numa_maps``), the step's cgroup cpuset and Slurm's bind variables.

Two configurations, as sites run them:

* task/affinity alone (:func:`slurm_affinity`): the job's CPUs are only each task's
  affinity, and it is here that ``--cpu-bind=none`` used to read as a binding;
* task/cgroup with task/affinity (:func:`slurm_cgroup`): the step's cgroup v2 cpuset is
  the bound (``ConstrainCores=yes``).

What the guest needs for Slurm (each found the hard way): the hostname must resolve to an
address other than 127.0.0.1 (srun fails in getaddrinfo otherwise), so 127.0.1.1 goes on lo
and in /etc/hosts; slurmd wants cgroup2 at /sys/fs/cgroup with a ``system.slice`` folder,
and ``cgroup.conf`` with ``CgroupPlugin=cgroup/v2`` and ``IgnoreSystemd=yes`` (no systemd
here). The guest's root is a tmpfs overlay, so all of it is thrown away at power-off.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from inguest import Context, check

JSONDict = dict[str, Any]

MARK = "NUMARUN-SLURM "
HOST = "numarun-vm"  # numavm.py's guest hostname
RUN = Path("/run/slurm")
LOGS = Path("/var/log/slurm")
# Runs as `python -I -S -c PROBE`: stdlib only.
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
cgroup = open("/proc/self/cgroup").read().strip().rpartition("::")[2]
try:
    cpuset = open("/sys/fs/cgroup" + cgroup + "/cpuset.cpus.effective").read().strip()
except OSError:
    cpuset = None
print("NUMARUN-SLURM " + json.dumps({
    "rank": int(os.environ["SLURM_LOCALID"]),
    "cpus": status["Cpus_allowed_list"].strip(),
    "policy": best[1].split()[1] if best[1] else None,
    "pages": {k: int(v) for k, v in re.findall(r" N(\d+)=(\d+)", best[1])},
    "cgroup": cgroup,
    "cpuset": cpuset,
    "bind": os.environ.get("SLURM_CPU_BIND"),
}), flush=True)
"""

SLURM_CONF = """\
ClusterName=numarun
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType={proctrack}
TaskPlugin={task}
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd.pid
SlurmctldLogFile={logs}/slurmctld.log
SlurmdLogFile={logs}/slurmd.log
NodeName={host} CPUs={cpus} Sockets={sockets} CoresPerSocket={cores} ThreadsPerCore={threads} \
RealMemory={memory} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""

CGROUP_CONF = """\
CgroupPlugin=cgroup/v2
IgnoreSystemd=yes
ConstrainCores={constrain}
"""


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def _missing() -> str | None:
    programs = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "sinfo")
    gone = [p for p in programs if shutil.which(p, path="/usr/sbin:/usr/bin") is None]
    if gone:
        return (
            f"not installed: {', '.join(gone)} (Debian packages munge slurmctld slurmd "
            "slurm-client; tests/run installs them)"
        )
    return None


def _prepare_host() -> None:
    """Once per boot: a resolvable hostname, cgroup2 delegation, munged."""
    if Path("/run/munge/munged.pid").exists():
        return
    _sh("ip", "addr", "add", "127.0.1.1/32", "dev", "lo")
    with open("/etc/hosts", "a", encoding="utf-8") as hosts:
        hosts.write(f"127.0.1.1 {HOST}\n")
    controllers = "+cpuset +cpu +memory +pids\n"
    Path("/sys/fs/cgroup/cgroup.subtree_control").write_text(controllers)
    Path("/sys/fs/cgroup/system.slice").mkdir(exist_ok=True)
    Path("/sys/fs/cgroup/system.slice/cgroup.subtree_control").write_text(controllers)
    for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    _sh("runuser", "-u", "munge", "--", "/usr/sbin/munged")


def _start(ctx: Context, *, cgroup: bool) -> None:
    """slurmctld and slurmd, configured for task/affinity alone or with task/cgroup."""
    _prepare_host()
    for folder in (RUN, LOGS, Path("/var/spool/slurmd"), Path("/var/spool/slurmctld")):
        folder.mkdir(parents=True, exist_ok=True)
    conf = SLURM_CONF.format(
        host=HOST, run=RUN, logs=LOGS,
        proctrack="proctrack/cgroup" if cgroup else "proctrack/linuxproc",
        task="task/cgroup,task/affinity" if cgroup else "task/affinity",
        cpus=ctx.nodes * ctx.cores * ctx.threads, sockets=ctx.nodes, cores=ctx.cores,
        threads=ctx.threads, memory=ctx.nodes * ctx.mem_mb * 9 // 10,
    )  # fmt: skip
    Path("/etc/slurm/slurm.conf").write_text(conf)
    Path("/etc/slurm/cgroup.conf").write_text(
        CGROUP_CONF.format(constrain="yes" if cgroup else "no")
    )
    _sh("/usr/sbin/slurmctld")
    _sh("/usr/sbin/slurmd")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
        if state == "idle":
            return
        time.sleep(0.5)
    raise RuntimeError(f"slurmd did not come up: {_log_tail()}")


def _stop() -> None:
    """Both daemons down (and their state files gone), so the next start is clean."""
    for name in ("slurmd", "slurmctld"):
        pidfile = RUN / f"{name}.pid"
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.2)
    shutil.rmtree("/var/spool/slurmctld", ignore_errors=True)
    shutil.rmtree("/var/spool/slurmd", ignore_errors=True)


def _log_tail() -> str:
    lines: list[str] = []
    for name in ("slurmctld.log", "slurmd.log"):
        try:
            lines += (LOGS / name).read_text().splitlines()[-4:]
        except OSError:
            pass
    return " | ".join(lines)


def _numarun(ctx: Context) -> list[str]:
    """This checkout's numarun without site-packages (-S): the prefix path needs none."""
    return [ctx.python, "-S", "-m", "numarun"]


def _probe(ctx: Context) -> list[str]:
    return [ctx.python, "-I", "-S", "-c", PROBE]


def _result(run: JSONDict) -> JSONDict:
    """The ranks' reports, sorted by rank, and a slim run (the report is one line)."""
    found = [json.loads(line[len(MARK) :]) for line in run["stdout"].splitlines()
             if line.startswith(MARK)]  # fmt: skip
    slim = {"rc": run["rc"], "seconds": run["seconds"], "stderr": run["stderr"][-900:]}
    if not found:
        slim["stdout"] = run["stdout"][-300:]
        slim["logs"] = _log_tail()
    return {"ranks": sorted(found, key=lambda r: r["rank"]), "run": slim}


def _srun(ctx: Context, *srun: str) -> JSONDict:
    argv = ["srun", *srun, *_numarun(ctx), "--per-rank", "--policy", "bind", "--", *_probe(ctx)]
    return _result(ctx.run(argv, timeout=240))


def _sbatch(ctx: Context, workdir: Path) -> JSONDict:
    """examples/solver.sbatch with the probe as its solver, waited for; its output file read."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = str(ctx.repo / "examples" / "solver.sbatch")
    env = {"NUMARUN": " ".join(_numarun(ctx))}
    argv = ["sbatch", "--wait", f"--ntasks-per-node={ctx.nodes}", f"--chdir={workdir}",
            script, *_probe(ctx)]  # fmt: skip
    run = ctx.run(argv, timeout=300, env=env)
    outputs = sorted(workdir.glob("numarun-solver-*.out"))
    run["stdout"] += "".join(p.read_text() for p in outputs)
    result = _result(run)
    result["outputs"] = [p.name for p in outputs]
    return result


@check(min_nodes=4)
def slurm_affinity(ctx: Context) -> JSONDict:
    """task/affinity alone: the three srun forms of issue 15, and the sbatch example."""
    if (missing := _missing()) is not None:
        return {"missing": missing}
    t0 = time.monotonic()
    _start(ctx, cgroup=False)
    try:
        out: JSONDict = {
            "none": _srun(ctx, "-n", "4", "--cpu-bind=none"),
            "none_c2": _srun(ctx, "-n", "4", "-c", "2", "--cpu-bind=none"),
            "cores": _srun(ctx, "-n", "4", "--cpu-bind=cores"),
            "sbatch": _sbatch(ctx, Path("/tmp/numarun-sbatch")),
        }
    finally:
        _stop()
    out["seconds"] = round(time.monotonic() - t0, 2)
    return out


@check(min_nodes=4)
def slurm_cgroup(ctx: Context) -> JSONDict:
    """task/cgroup (ConstrainCores=yes) with task/affinity: the step's cpuset bounds the ranks."""
    if (missing := _missing()) is not None:
        return {"missing": missing}
    t0 = time.monotonic()
    _start(ctx, cgroup=True)
    try:
        out: JSONDict = {"none": _srun(ctx, "-n", "2", "-c", "2", "--cpu-bind=none")}
    finally:
        _stop()
    out["seconds"] = round(time.monotonic() - t0, 2)
    return out
