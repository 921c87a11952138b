"""Guest check for issue 14, the supervisor's side: ``[watch]`` keeps placement true
(test: test_keep_guest.py).

One job, ``numarun run JOB --metrics FILE``: one worker per node under ``local`` policy, two
CPUs each (``smt = "avoid"``: one thread per core), each faulting in :data:`FILL_MB` MiB of
anonymous memory and running a second thread; ``[watch]`` samples every
:data:`INTERVAL` s with ``remediate = "migrate"``. Then, by the kernel's own word:

1. **Drift and remediation.** ``migratepages PID 0 1`` (numactl's tool) moves worker 0's
   pages to node 1. The metrics file, read every quarter second, shows its
   ``numarun_worker_local_ratio`` fall, then come back once numarun has moved the pages
   home; ``numarun_remediations_total`` counts the move, and ``/proc/PID/numa_maps`` of
   the worker says where its pages are at the end.
2. **CPU hotplug.** ``echo 0 > /sys/devices/system/cpu/cpuN/online`` for the highest
   planned CPU of worker 0; every thread's ``Cpus_allowed_list`` is read until it changes,
   then ``echo 1`` and read until it is the planned list again. The CPU is put back online
   whatever happens (the checks after this one need it).

The results are reduced to numbers and short lists (the guest's report must stay small).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inguest import Context, check, parse_cpulist

JSONDict = dict[str, Any]

FILL_MB = 100
INTERVAL = 1.5
READY_TIMEOUT = 240.0
WATCH_TIMEOUT = 90.0  # for the fall and the return of the locality
CPU_TIMEOUT = 45.0
JOB = "numarun-guest-keep"
WORKDIR = Path("/tmp") / JOB
CPU_DIR = Path("/sys/devices/system/cpu")

# No braces: the job's argv is templated. A second thread, to see that every thread's CPUs
# change; no transparent huge pages, so that the pages counted are the pages moved.
WORKER = """\
import mmap, os, sys, threading, time
mb = int(sys.argv[1])
size = mb << 20
buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
buf.madvise(mmap.MADV_NOHUGEPAGE)
buf[:: mmap.PAGESIZE] = b"\\x01" * (size // mmap.PAGESIZE)
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
print("ready", os.getpid(), flush=True)
time.sleep(3600)
"""


def _job_toml(ctx: Context, worker: Path) -> str:
    argv = json.dumps([ctx.python, "-I", "-S", str(worker), str(FILL_MB)])
    return f"""\
[watch]
interval = {INTERVAL}
threshold = 0.9
remediate = "migrate"
migrate_rate_mbps = 400

[[process]]
name = "keep"
command = {argv}
workers = "per-node"
cpus_per_worker = 2
smt = "avoid"
policy = "local"
restart = "never"
"""


_SERIES = re.compile(r"^(numarun_\w+)\{([^}]*)\} (\S+)$")


def _metrics(path: Path) -> dict[str, dict[str, float]]:
    """{"name": {"worker=keep.0,node=1": value}} from the textfile (labels but job)."""
    out: dict[str, dict[str, float]] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        found = _SERIES.match(line)
        if not found:
            continue
        labels = ",".join(
            part.replace('"', "")
            for part in found[2].split(",")
            if part and not part.startswith("job=")
        )
        out.setdefault(found[1], {})[labels] = float(found[3])
    return out


def _ratio(path: Path, label: str) -> float | None:
    return _metrics(path).get("numarun_worker_local_ratio", {}).get(f"worker={label}")


def _remediations(path: Path, label: str) -> float | None:
    return _metrics(path).get("numarun_remediations_total", {}).get(f"worker={label}")


def _threads_cpus(pid: int) -> dict[str, str]:
    """tid -> Cpus_allowed_list of every thread of ``pid``."""
    out: dict[str, str] = {}
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[task.name] = line.split(":", 1)[1].strip()
    return out


def _pages(pid: int) -> dict[str, int]:
    """Anonymous pages per node of the process (numa_maps' anon= lines, all of them)."""
    pages: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines():
        if " anon=" not in line:
            continue
        for field in line.split():
            if m := re.fullmatch(r"N(\d+)=(\d+)", field):
                pages[m[1]] = pages.get(m[1], 0) + int(m[2])
    return pages


def _meminfo(node: int, keys: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for line in Path(f"/sys/devices/system/node/node{node}/meminfo").read_text().splitlines():
        words = line.split()
        if len(words) >= 4 and words[2].rstrip(":") in keys:
            out[words[2].rstrip(":")] = int(words[3])
    return out


def _period(path: Path, samples: int = 3, timeout: float = 60.0) -> float | None:
    """Seconds between samples as the metrics file is rewritten (numarun samples less often
    than the interval where a sample costs more than its CPU budget: under emulation)."""
    seen: list[float] = []
    last = None
    deadline = time.monotonic() + timeout
    while len(seen) <= samples and time.monotonic() < deadline:
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = None
        if stamp != last:
            last = stamp
            seen.append(time.monotonic())
        time.sleep(0.1)
    if len(seen) < 3:
        return None
    gaps = [b - a for a, b in itertools.pairwise(seen[1:])]  # the first is no write
    return round(max(gaps), 2)


def _wait(what: Callable[[], Any], until: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    value = what()
    while not until(value) and time.monotonic() < deadline:
        time.sleep(0.25)
        value = what()
    return value


def _online(cpu: int, on: bool) -> None:
    (CPU_DIR / f"cpu{cpu}" / "online").write_text("1" if on else "0")


def _ready(out: Path) -> dict[str, int]:
    ready = {}
    for line in out.read_text(errors="replace").splitlines():
        tag, sep, rest = line.partition(" | ")
        words = rest.split()
        if sep and len(words) == 2 and words[0] == "ready":
            ready[tag.split()[0]] = int(words[1])
    return ready


def _drift_part(ctx: Context, prom: Path, pid: int) -> JSONDict:
    """migratepages PID 0 1, then the metrics file until the locality is back."""
    res: JSONDict = {
        "before": _ratio(prom, "keep.0"),
        "pages_before": _pages(pid),
        "node0_kb": _meminfo(0, ("MemFree", "Inactive(file)")),
    }
    moved = ctx.run(["migratepages", str(pid), "0", "1"], timeout=120)
    res["migratepages"] = {"rc": moved["rc"], "stderr": moved["stderr"][-300:]}
    t_moved = time.monotonic()
    res["pages_moved"] = _pages(pid)
    # The fall: the first sample after the move (at most an interval away).
    low = _wait(lambda: _ratio(prom, "keep.0"), lambda r: r is not None and r < 0.5, WATCH_TIMEOUT)
    res["low"] = low
    res["low_after_s"] = round(time.monotonic() - t_moved, 2)
    # The return: remediation after the second sample below the threshold. Counted in
    # samples (rewrites of the metrics file) as well as seconds: under emulation numarun
    # samples less often than the interval, to keep within its CPU budget.
    stamps: set[int] = set()

    def look() -> tuple[float | None, float | None]:
        try:
            stamps.add(prom.stat().st_mtime_ns)
        except OSError:
            pass
        return _ratio(prom, "keep.0"), _remediations(prom, "keep.0")

    stamps.add(prom.stat().st_mtime_ns)
    back = _wait(look, lambda v: v[0] is not None and v[0] >= 0.9 and (v[1] or 0) >= 1, 180)
    res["back"], res["remediations"] = back
    res["back_samples"] = len(stamps) - 1
    res["back_after_s"] = round(time.monotonic() - t_moved, 2)
    res["pages_after"] = _pages(pid)
    res["other_remediations"] = _remediations(prom, "keep.1")
    return res


def _hotplug_part(pid: int, planned: list[int]) -> JSONDict:
    """cpuN offline for the highest planned CPU of the worker, then online again."""
    cpu = max(c for c in planned if (CPU_DIR / f"cpu{c}" / "online").exists())
    res: JSONDict = {"cpu": cpu, "planned": planned, "before": _threads_cpus(pid)}
    try:
        _online(cpu, False)
        t0 = time.monotonic()

        def replaced(threads: dict[str, str]) -> bool:
            """Every thread on one new list without the CPU, as many CPUs as planned."""
            lists = {*threads.values()}
            if len(lists) != 1:
                return False
            cpus = parse_cpulist(next(iter(lists)))
            return cpu not in cpus and len(cpus) == len(planned)

        res["offline"] = _wait(lambda: _threads_cpus(pid), replaced, CPU_TIMEOUT)
        res["offline_after_s"] = round(time.monotonic() - t0, 2)
    finally:
        _online(cpu, True)
    t1 = time.monotonic()
    want = res["before"]
    res["online"] = _wait(lambda: _threads_cpus(pid), lambda v: v == want, CPU_TIMEOUT)
    res["online_after_s"] = round(time.monotonic() - t1, 2)
    return res


@check(min_nodes=2)
def keep_job(ctx: Context) -> JSONDict:
    t0 = time.monotonic()
    WORKDIR.mkdir(parents=True, exist_ok=True)
    worker = WORKDIR / "worker.py"
    worker.write_text(WORKER)
    job = WORKDIR / f"{JOB}.toml"
    job.write_text(_job_toml(ctx, worker))
    prom = WORKDIR / "keep.prom"
    prom.unlink(missing_ok=True)
    out_path, err_path = WORKDIR / "run.out", WORKDIR / "run.err"
    result: JSONDict = {"interval": INTERVAL, "fill_mb": FILL_MB, "kernel": os.uname().release}
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                ctx.numarun_argv("run", "--no-color", str(job), "--metrics", str(prom)),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=ctx.env(), cwd=ctx.repo, start_new_session=True,
            )  # fmt: skip
        ready = _wait(lambda: _ready(out_path), lambda r: len(r) >= ctx.nodes, READY_TIMEOUT)
        result["ready"] = ready
        result["ready_s"] = round(time.monotonic() - t0, 2)
        if len(ready) < ctx.nodes:
            raise RuntimeError(f"workers not ready: {ready}")
        pid = ready["keep.0"]
        # Both workers sampled once, at home.
        _wait(
            lambda: [_ratio(prom, f"keep.{i}") for i in range(ctx.nodes)],
            lambda v: all(r is not None for r in v),
            WATCH_TIMEOUT,
        )
        result["first"] = {f"keep.{i}": _ratio(prom, f"keep.{i}") for i in range(ctx.nodes)}
        result["period"] = _period(prom)
        result["drift"] = _drift_part(ctx, prom, pid)
        planned = sorted(parse_cpulist(_threads_cpus(pid)[str(pid)]))
        result["hotplug"] = _hotplug_part(pid, planned)
        result["node_cpus"] = {
            str(n): parse_cpulist(Path(f"/sys/devices/system/node/node{n}/cpulist").read_text())
            for n in range(ctx.nodes)
        }
        result["siblings"] = {
            str(c): parse_cpulist((CPU_DIR / f"cpu{c}/topology/thread_siblings_list").read_text())
            for c in result["node_cpus"]["0"]
        }
        proc.send_signal(signal.SIGTERM)
        try:
            result["rc"] = proc.wait(60)
        except subprocess.TimeoutExpired:
            result["rc"] = None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for cpu_dir in CPU_DIR.glob("cpu[0-9]*"):
            flag = cpu_dir / "online"
            if flag.exists() and flag.read_text().strip() == "0":
                flag.write_text("1")  # never leave a CPU offline for the next checks
    notes = err_path.read_text(errors="replace").splitlines()
    keep = (
        "drift:",
        "remediation",
        "offline or outside",
        "planned CPUs are back",
        "no usable",
        "sampling every",
    )
    result["notes"] = [line[-240:] for line in notes if any(k in line for k in keep)][:12]
    result["stderr_tail"] = "" if result.get("rc") == 0 else "\n".join(notes[-15:])[-1500:]
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result
