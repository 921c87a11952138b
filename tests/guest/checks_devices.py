"""Guest checks for device-local placement (issue 17) in the tier2n guest.

tier2n (numavm.TIER2N) puts a display device (class 0x03, numarun's "GPU") on each CPU
node through PCI expander bridges, gpu 0 at 0000:21:01.0 on node 0 and gpu 1 at
0000:41:01.0 on node 1; on node 1 a virtio NIC (eth0, no backend) and a virtio disk (vda);
on CPU-less node 2 a virtio-rng (0000:61:01.0). The checks give eth0 an address (for
``ip:``) and vda a file system (for ``file:``), launch commands near each device and run a
``per-gpu`` job; the commands report what the kernel says about them (``/proc/PID/status``,
``numactl --show``). Tests: test_devices_guest.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from checks_tiers import WORKDIR, Holder, json_run, numarun_fast, probe_argv, reports, slim
from inguest import Context, check

JSONDict = dict[str, Any]

ADDRESS = "192.0.2.7"  # TEST-NET-1 on eth0: a local address for ip:, reaching nothing
MOUNT = Path("/mnt/numarun-vda")
# The launched command: the kernel's CPU list for it, then numactl's view of its policy.
SHOW = ["sh", "-c", "grep ^Cpus_allowed_list: /proc/$$/status; exec numactl --show"]


def _prepare(ctx: Context) -> JSONDict:
    """eth0 up with ADDRESS; an ext4 file system on vda, mounted at MOUNT, holding a file."""
    steps = [
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "addr", "add", f"{ADDRESS}/24", "dev", "eth0"],
        ["mkfs.ext4", "-q", "-F", "/dev/vda"],
        ["mkdir", "-p", str(MOUNT)],
        ["mount", "/dev/vda", str(MOUNT)],
        ["sh", "-c", f"echo data > {MOUNT}/data"],
    ]
    done = {}
    for argv in steps:
        run = ctx.run(argv, timeout=60)
        done[" ".join(argv[:3])] = {"rc": run["rc"], "stderr": run["stderr"][-300:]}
    return done


def _show(stdout: str) -> JSONDict:
    """Cpus_allowed_list and numactl --show's fields, by name."""
    fields: JSONDict = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


SPECS = (
    ("-N", "gpu:0"),
    ("-N", "gpu:1"),
    ("-N", "pci:0000:21:01.0"),
    ("-N", "pci:41:02.0"),  # numactl's spelling without the domain
    ("-N", "netdev:eth0"),
    ("-N", "block:vda"),
    ("-N", f"ip:{ADDRESS}"),
    ("-N", f"file:{MOUNT}/data"),
    ("--policy bind --nodes", "netdev:eth0"),  # CPUs and memory both from the NIC's node
    ("-N", "pci:0000:61:01.0"),  # the virtio-rng on CPU-less node 2: the nearest with CPUs
    ("-N", "pci:0000:00:02.0"),  # the 9p device: numa_node -1, unknown
)


@check(shapes=("tier2n",))
def devices_specs(ctx: Context) -> JSONDict:
    """Each device spec: the command it launched (its CPUs, numactl --show) and --explain."""
    result: JSONDict = {"prepare": _prepare(ctx), "specs": []}
    for option, spec in SPECS:
        opts = [*option.split(), spec]
        launched = ctx.run(numarun_fast(ctx, *opts, "--", *SHOW), timeout=120)
        explain = ctx.run(numarun_fast(ctx, "--explain", *opts, "--", "true"), timeout=120)
        result["specs"].append(
            {
                "options": opts,
                "fields": _show(launched["stdout"]),
                "launched": slim(launched, 400),
                "explain": slim(explain, 1200),
            }
        )
    ctx.run(["umount", str(MOUNT)])
    return result


def _per_gpu_job(ctx: Context) -> str:
    gpu = json.dumps(probe_argv(ctx, 8, "--gpu", "{gpu}"))
    near = json.dumps(probe_argv(ctx, 8, "near"))
    return f"""[[process]]
name = "trainer"
command = {gpu}
workers = "per-gpu"
policy = "bind"
restart = "never"
env = {{ PROBE_GPU = "gpu{{gpu}}" }}

[[process]]
name = "nic"
command = {near}
workers = 1
near = "netdev:eth0"
policy = "bind"
restart = "never"
"""


@check(shapes=("tier2n",))
def devices_per_gpu_job(ctx: Context) -> JSONDict:
    """`numarun plan` and `numarun run` of a per-gpu group and a group near eth0."""
    WORKDIR.mkdir(parents=True, exist_ok=True)
    spec = WORKDIR / "per-gpu.toml"
    spec.write_text(_per_gpu_job(ctx))
    plan = json_run(ctx, "plan", "--json", str(spec))
    workers = [
        {
            "process": p["name"],
            "index": w["index"],
            "node": w["node"],
            "gpu": w.get("gpu"),
            "device": w.get("device"),
            "cpus": w.get("cpu_list"),
        }
        for p in (plan["data"] or {}).get("processes", [])
        for w in p.get("workers", [])
    ]
    text = ctx.run(ctx.numarun_argv("plan", str(spec)), timeout=120)
    run = ctx.run(ctx.numarun_argv("run", "--no-color", str(spec)), timeout=300)
    return {
        "plan": {"workers": workers, "run": plan["run"], "text": slim(text, 2000)},
        "workers": reports(run["stdout"]),
        "run": slim(run, 1500),
    }


@check(shapes=("tier2n",))
def devices_note(ctx: Context) -> JSONDict:
    """numarun placement of two processes near gpu 1 (node 1): one with its memory bound to
    node 0 (a note: copies to the device cross nodes), one bound to node 1 (none)."""
    away = Holder(ctx, numarun_fast(ctx, "-N", "gpu:1", "-m", "0", "--"), 16)
    near = Holder(ctx, numarun_fast(ctx, "--policy", "bind", "--nodes", "gpu:1", "--"), 16)
    try:
        pids = [str(away.proc.pid), str(near.proc.pid)]
        run = ctx.run(ctx.numarun_argv("placement", "--json", "--check", *pids), timeout=180)
        text = ctx.run(ctx.numarun_argv("placement", pids[0]), timeout=180)
    finally:
        result = {"away": away.release(), "near": near.release()}
    try:
        procs = json.loads(run["stdout"])["processes"]
    except (ValueError, KeyError):
        procs = None
    result["placement"] = {
        "rc": run["rc"],
        "stderr": run["stderr"][-700:],
        "processes": [{k: p.get(k) for k in ("pid", "status", "device")} for p in procs or []],
    }
    result["text"] = slim(text, 2500)
    return result


@check(shapes=("tier2n",))
def devices_per_gpu_ranks(ctx: Context) -> JSONDict:
    """Two local ranks (Open MPI's variables) under `numarun --per-gpu --policy bind`."""
    t0 = time.monotonic()
    procs = []
    for rank in range(2):
        env = ctx.env({"OMPI_COMM_WORLD_LOCAL_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})
        argv = numarun_fast(ctx, "--per-gpu", "--policy", "bind", "--")
        procs.append(
            subprocess.Popen(
                [*argv, *probe_argv(ctx, 8, "rank", str(rank))],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ctx.repo,
            )
        )
    ranks = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        found = reports(out)
        ranks.append({"report": found[0] if found else None, "rc": proc.returncode,
                      "stderr": err[-700:]})  # fmt: skip
    return {"ranks": ranks, "seconds": round(time.monotonic() - t0, 2)}
