"""Guest checks for tiered memory (issue 13) in the tier2n guest, by the kernel's own word.

tier2n (numavm.TIER2N) is Linux 6.12 with ACPI HMAT: CPU nodes 0 and 1, CPU-less nodes 2
(near 0) and 3 (near 1), DRAM 20 GB/s and CXL 8 GB/s from their own initiator. Each case
runs :data:`PROBE` under numarun: it faults in anonymous memory and reports its CPUs
(``/proc/self/status``), where those pages are and under which policy
(``/proc/self/numa_maps``) and the weights in force (sysfs), and with ``hold`` waits on its
stdin so that ``numarun placement`` can judge it alive. The 6.1 guest (2n2c2t) proves the
"kernel too old" refusals. Tests: test_tiers_guest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inguest import Context, check, parse_cpulist

JSONDict = dict[str, Any]

MARK = "NUMARUN-TIER "
# python -I -S probe.py MB hold|exit [ARG...]: stdlib only, nothing from the environment.
PROBE = r"""
import json, os, re, sys
mb, hold = int(sys.argv[1]), sys.argv[2] == "hold"
size = mb << 20
buf = bytearray(size)
buf[::4096] = b"\1" * (size // 4096)
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
best = (0, "")
for line in open("/proc/self/numa_maps"):
    m = re.search(r" anon=(\d+)", line)
    if m and int(m[1]) > best[0]:
        best = (int(m[1]), line)
# numa_maps names two policies with a space: "weighted interleave:0,2", "prefer (many):0,2"
POLICY = r"\S+ (weighted interleave\S*|prefer \(many\)\S*|\S+)"
wi = "/sys/kernel/mm/mempolicy/weighted_interleave"
weights = None
if os.path.isdir(wi):
    weights = {n[4:]: int(open(wi + "/" + n).read()) for n in os.listdir(wi) if n[:4] == "node"}
env = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "ROCR_VISIBLE_DEVICES", "PROBE_GPU",
       "NUMARUN_DEVICE", "NUMARUN_DEVICE_NODE")
print("NUMARUN-TIER " + json.dumps({
    "pid": os.getpid(),
    "args": sys.argv[3:],
    "cpus": status["Cpus_allowed_list"].strip(),
    "mems": status["Mems_allowed_list"].strip(),
    "policy": m[1] if (m := re.match(POLICY, best[1])) else None,
    "pages": {k: int(v) for k, v in re.findall(r" N(\d+)=(\d+)", best[1])},
    "weights": weights,
    "env": {k: os.environ[k] for k in env if k in os.environ},
}), flush=True)
if hold:
    sys.stdin.read()
"""

WEIGHTS = Path("/sys/kernel/mm/mempolicy/weighted_interleave")
WORKDIR = Path("/tmp/numarun-guest-tiers")


def numarun_fast(ctx: Context, *args: str) -> list[str]:
    """numarun's prefix form without site-packages (-S): it needs none, and the venv's site
    scan costs a few hundred ms a start under TCG. Subcommands (weights, plan, run,
    placement) need typer: ctx.numarun_argv."""
    return [ctx.python, "-S", "-m", "numarun", *args]


def probe_argv(ctx: Context, mb: int, *args: str, hold: bool = False) -> list[str]:
    """The probe as a command: from a file, so that plans and argv stay short."""
    path = WORKDIR / "probe.py"
    if not path.exists():
        WORKDIR.mkdir(parents=True, exist_ok=True)
        path.write_text(PROBE)
    return [ctx.python, "-I", "-S", str(path), str(mb), "hold" if hold else "exit", *args]


def reports(stdout: str) -> list[JSONDict]:
    """The probes' reports in ``stdout`` (numarun run prefixes each line with its worker)."""
    found = []
    for line in stdout.splitlines():
        _, mark, rest = line.partition(MARK)
        if mark:
            found.append(json.loads(rest))
    return found


def slim(run: JSONDict, keep: int = 700) -> JSONDict:
    """A run without its argv (the probe's source) and with short output: the whole guest
    report travels as one line."""
    return {
        "rc": run["rc"],
        "stderr": run["stderr"][-keep:],
        "stdout": run["stdout"][-keep:],
        "seconds": run["seconds"],
    }


def kernel_weights() -> dict[str, int] | None:
    """The weighted-interleave weights as the kernel has them (None before Linux 6.9)."""
    if not WEIGHTS.is_dir():
        return None
    return {
        p.name[4:]: int(p.read_text())
        for p in sorted(WEIGHTS.iterdir())
        if p.name.startswith("node")
    }


def json_run(ctx: Context, *args: str) -> JSONDict:
    """``numarun ARGS`` whose stdout is JSON: {"data": parsed or None, "run": slim run}."""
    run = ctx.run(ctx.numarun_argv(*args), timeout=180)
    try:
        data = json.loads(run["stdout"])
    except ValueError:
        data = None
    return {"data": data, "run": slim(run, 1500 if data is None else 300)}


class Holder:
    """A probe started under ``prefix`` that keeps its pages until :meth:`release`."""

    def __init__(self, ctx: Context, prefix: Sequence[str], mb: int) -> None:
        self.proc = subprocess.Popen(
            [*prefix, *probe_argv(ctx, mb, hold=True)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=ctx.env(), cwd=ctx.repo,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the report, once its pages are in
        found = reports(line)
        self.report: JSONDict | None = found[0] if found else None

    def release(self) -> JSONDict:
        """Let it exit; its report and the tail of its stderr."""
        try:
            _, err = self.proc.communicate("", timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return {"report": self.report, "rc": self.proc.returncode, "stderr": err[-700:]}


# --------------------------------------------------------------------------------------------
# What the kernel says (no numarun): the machine we asked for, and numarun's comparison base.


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


@check(shapes=("tier2n",))
def tier_sysfs(ctx: Context) -> JSONDict:
    """Tiers, HMAT access0 figures, weights, demotion, distances and PCI devices, from sysfs."""
    tiers = {
        p.name.removeprefix("memory_tier"): parse_cpulist(_read(p / "nodelist") or "")
        for p in sorted(Path("/sys/devices/virtual/memory_tiering").glob("memory_tier*"))
    }
    nodes: dict[str, JSONDict] = {}
    for d in sorted(Path("/sys/devices/system/node").glob("node[0-9]*")):
        ini = d / "access0" / "initiators"
        nodes[d.name[4:]] = {
            "cpus": parse_cpulist(_read(d / "cpulist") or ""),
            "distance": [int(v) for v in (_read(d / "distance") or "").split()],
            "initiators": sorted(int(p.name[4:]) for p in ini.glob("node[0-9]*")),
            "access": {
                name: int(_read(ini / name) or -1)
                for name in ("read_bandwidth", "write_bandwidth", "read_latency", "write_latency")
                if (ini / name).exists()
            },
        }
    devices = {}
    for d in sorted(Path("/sys/bus/pci/devices").iterdir()):
        devices[d.name] = {"class": _read(d / "class"), "node": int(_read(d / "numa_node") or -1)}
    names = {}
    for cls in ("net", "block"):
        for d in sorted(Path("/sys/class", cls).iterdir()):
            if (d / "device").exists():
                names[d.name] = str((d / "device").resolve())
    return {
        "kernel": os.uname().release,
        "tiers": tiers,
        "nodes": nodes,
        "weights": kernel_weights(),
        "weights_auto": _read(WEIGHTS / "auto"),
        "demotion_enabled": _read(Path("/sys/kernel/mm/numa/demotion_enabled")),
        "numa_balancing": _read(Path("/proc/sys/kernel/numa_balancing")),
        "devices": devices,
        "device_paths": names,
    }


# --------------------------------------------------------------------------------------------
# numarun topology


@check(shapes=("tier2n",))
def tier_topology(ctx: Context) -> JSONDict:
    """`numarun topology --json` (the fields of issues 13 and 17) and the drawing."""
    got = json_run(ctx, "topology", "--json")
    data = got["data"] or {}
    keep = ("id", "cpus", "tier", "access")
    drawing = ctx.run(ctx.numarun_argv("topology", "--no-color"), timeout=180)
    return {
        "nodes": [{k: n.get(k) for k in keep} for n in data.get("nodes", [])],
        "weighted_interleave": data.get("weighted_interleave"),
        "demotion_enabled": data.get("demotion_enabled"),
        "identity": data.get("identity"),
        "devices": data.get("devices"),
        "run": got["run"],
        "drawing": slim(drawing, 4000),
    }


# --------------------------------------------------------------------------------------------
# numarun weights, weighted interleave and its verdict


def _weighted(ctx: Context) -> list[str]:
    return numarun_fast(ctx, "--policy", "weighted-interleave", "--nodes", "0,2", "--")


@check(shapes=("tier2n",))
def tier_weights(ctx: Context) -> JSONDict:
    """Pages under weighted interleave over 0,2 with the boot's 1:1 weights (held), then
    `numarun weights --set bandwidth`, pages under the same policy with 5:2, numarun
    placement judging both live, and `numarun weights --reset`."""
    result: JSONDict = {"mb": TOUCH_MB, "boot_weights": kernel_weights()}
    even = Holder(ctx, _weighted(ctx), TOUCH_MB)
    holders = [even]
    try:
        result["set"] = json_run(ctx, "weights", "--set", "bandwidth", "--json")
        result["after_set"] = kernel_weights()
        result["shown"] = json_run(ctx, "weights", "--json")
        weighted = Holder(ctx, _weighted(ctx), TOUCH_MB)
        holders.append(weighted)
        pids = [str(h.proc.pid) for h in holders]
        verdict = ctx.run(ctx.numarun_argv("placement", "--json", "--check", *pids), timeout=180)
        try:
            procs = json.loads(verdict["stdout"])["processes"]
        except (ValueError, KeyError):
            procs = None
        result["placement"] = {
            "rc": verdict["rc"],
            "stderr": verdict["stderr"][-700:],
            "processes": [
                {k: p.get(k) for k in ("pid", "status", "ok", "verdicts")} for p in procs or []
            ],
        }
        if procs is None:
            result["placement"]["stdout"] = verdict["stdout"][-1500:]
    finally:
        result["even"], *rest = [h.release() for h in holders]
        result["weighted"] = rest[0] if rest else None
        # Whatever happened above: the weights are global, and tier_job starts from 1:1.
        result["reset"] = json_run(ctx, "weights", "--reset", "--json")
        result["after_reset"] = kernel_weights()
    return result


TOUCH_MB = 96  # 24576 pages: a 5:2 split is exact to a page or two


# --------------------------------------------------------------------------------------------
# A job: weights = "bandwidth", per-node workers paired with their own CXL node


def _job(ctx: Context, weights: bool = True) -> str:
    probe = json.dumps(probe_argv(ctx, JOB_MB))
    head = 'weights = "bandwidth"\n\n' if weights else ""
    return head + "".join(
        f"""[[process]]
name = "{name}"
command = {probe}
workers = "per-node"
policy = "{policy}"
memory_nodes = "local+cpuless"
restart = "never"

"""
        for name, policy in (("wi", "weighted-interleave"), ("pm", "preferred-many"))
    )


JOB_MB = 64


def _plan_workers(data: Any) -> list[JSONDict]:
    return [
        {
            "process": p["name"],
            "index": w["index"],
            "node": w["node"],
            "cpus": w.get("cpu_list"),
            "memory": w.get("memory"),
            "shares": w.get("shares"),
        }
        for p in (data or {}).get("processes", [])
        for w in p.get("workers", [])
    ]


@check(shapes=("tier2n",))
def tier_job(ctx: Context) -> JSONDict:
    """`numarun plan` and `numarun run` of a job with weights = "bandwidth" and two per-node
    groups over memory_nodes = "local+cpuless": weighted-interleave and preferred-many."""
    WORKDIR.mkdir(parents=True, exist_ok=True)
    spec = WORKDIR / "pairs.toml"
    spec.write_text(_job(ctx))
    before = kernel_weights()
    plan = json_run(ctx, "plan", "--json", str(spec))
    run = ctx.run(ctx.numarun_argv("run", "--no-color", str(spec)), timeout=300)
    return {
        "mb": JOB_MB,
        "before": before,
        "plan": {
            "workers": _plan_workers(plan["data"]),
            "weights": (plan["data"] or {}).get("weights"),
            "run": plan["run"],
        },
        "workers": reports(run["stdout"]),
        "run": slim(run, 1500),
        "after": kernel_weights(),
    }


# --------------------------------------------------------------------------------------------
# The prefix form's --nodes local+cpuless


@check(shapes=("tier2n",))
def tier_prefix_pairs(ctx: Context) -> JSONDict:
    """`--nodes local+cpuless -N 1` under interleave, `-N 0` under preferred-many."""
    out: JSONDict = {"mb": JOB_MB}
    for name, policy, node in (("interleave", "interleave", 1), ("preferred", "preferred-many", 0)):
        prefix = numarun_fast(ctx, "--policy", policy, "--nodes", "local+cpuless", "-N", str(node))
        run = ctx.run([*prefix, "--", *probe_argv(ctx, JOB_MB)], timeout=120)
        found = reports(run["stdout"])
        out[name] = {"node": node, "report": found[0] if found else None, "run": slim(run)}
    return out


# --------------------------------------------------------------------------------------------
# numarun probe: the bandwidth matrix (figures meaningless under TCG; where is not)


@check(shapes=("tier2n",))
def tier_probe(ctx: Context) -> JSONDict:
    """`numarun probe --json` over every CPU node and memory node, then `numarun weights
    --set measured` (the probe's figures as weights) and `--reset`."""
    probe = json_run(ctx, "probe", "--json", "--size", "8M")
    measured = json_run(ctx, "weights", "--set", "measured", "--json")
    after = kernel_weights()
    reset = json_run(ctx, "weights", "--reset", "--json")
    return {
        "cells": (probe["data"] or {}).get("cells"),
        "run": probe["run"],
        "measured": measured,
        "after_measured": after,
        "reset": reset,
        "after_reset": kernel_weights(),
    }


# --------------------------------------------------------------------------------------------
# Demotion: bound pages that reclaim moved to a lower tier


DEMOTION = Path("/sys/kernel/mm/numa/demotion_enabled")
DEMOTE_MB = 544  # more than node 0's 502 MiB: reclaim must demote some of it to node 2


def _vmstat_demoted() -> int:
    with open("/proc/vmstat") as f:
        return sum(int(v) for k, v in (line.split() for line in f) if k.startswith("pgdemote_"))


def _placement(ctx: Context, pid: int) -> JSONDict:
    run = ctx.run(ctx.numarun_argv("placement", "--json", "--check", str(pid)), timeout=180)
    try:
        proc = json.loads(run["stdout"])["processes"][0]
    except (ValueError, KeyError, IndexError):
        return {"rc": run["rc"], "stderr": run["stderr"][-700:], "stdout": run["stdout"][-1500:]}
    keep = ("status", "verdicts")
    return {"rc": run["rc"], "stderr": run["stderr"][-700:]} | {k: proc.get(k) for k in keep}


@check(shapes=("tier2n",))
def tier_demotion(ctx: Context) -> JSONDict:
    """With demotion_enabled, a process bound to node 0 that asks for more than node 0 holds
    has some pages demoted to node 2 by reclaim (the kernel's pgdemote counters); numarun
    placement names that demotion while it is enabled and fails the pages once it is not."""
    result: JSONDict = {"mb": DEMOTE_MB, "demoted_before": _vmstat_demoted()}
    DEMOTION.write_text("true\n")
    holder = None
    try:
        holder = Holder(ctx, numarun_fast(ctx, "--policy", "bind", "--nodes", "0", "--"), DEMOTE_MB)
        result["demoted_after"] = _vmstat_demoted()
        result["enabled"] = _placement(ctx, holder.proc.pid)
        DEMOTION.write_text("false\n")
        result["disabled"] = _placement(ctx, holder.proc.pid)
    finally:
        DEMOTION.write_text("false\n")
        result["holder"] = holder.release() if holder else None
    return result


# --------------------------------------------------------------------------------------------
# The 6.1 guest: no weighted interleave, refused in one line


@check(shapes=("2n2c2t",))
def tier_too_old(ctx: Context) -> JSONDict:
    """`numarun weights --set 0=5,1=2` and a job with weights = "bandwidth" on Linux 6.1."""
    WORKDIR.mkdir(parents=True, exist_ok=True)
    spec = WORKDIR / "weights.toml"
    marker = "numarun-guest-worker-ran"
    spec.write_text(
        'weights = "bandwidth"\n\n[[process]]\nname = "w"\n'
        f'command = ["echo", "{marker}"]\nworkers = "per-node"\nrestart = "never"\n'
    )
    weights = ctx.run(ctx.numarun_argv("weights", "--set", "0=5,1=2"))
    job = ctx.run(ctx.numarun_argv("run", "--no-color", str(spec)), timeout=180)
    return {
        "kernel": os.uname().release,
        "has_weights": WEIGHTS.exists(),
        "weights": slim(weights),
        "job": slim(job) | {"ran": marker in job["stdout"]},
    }
