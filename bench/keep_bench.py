#!/usr/bin/env python3
"""Benchmark the supervisor's ``[watch]`` sampling: 16 workers of 1 GiB each (issue 14).

Measured, on this machine:

* **one sample**: the CPU time (user + system, ``time.process_time``: the kernel's walk of
  each worker's page tables for ``numa_maps`` is system time of the reader) of
  :meth:`numarun.supervisor.keeper.Keeper.sample` over the job's live workers, taken in this
  process with the live kernel, ``--samples`` times: the median and the slowest;
* **the supervisor at the interval**: ``numarun run`` of the job with ``[watch]`` at the
  given interval (default: the default, 10 s), its own CPU time (user + system, from
  ``/proc`` through psutil) over an idle window of ``--window`` seconds once every worker
  has filled its memory, as a percentage of one CPU; and the same job without ``[watch]``,
  for the baseline.

Each worker faults in ``--gib`` GiB of anonymous memory (every page written) and sleeps.
The job's workers share this machine's CPUs; nothing else of numarun's runs meanwhile.

    python bench/keep_bench.py                       # 16 x 1 GiB, interval 10 s, 60 s window
    python bench/keep_bench.py -n 4 --gib 0.25 --window 20 --interval 2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FILL = (
    "import sys, time\n"
    "size = int(float(sys.argv[1]) * (1 << 30))\n"
    "b = bytearray(size)\n"
    "b[::4096] = b'\\x01' * len(range(0, size, 4096))\n"
    "print('ready', flush=True)\n"
    "time.sleep(3600)\n"
)


def job_text(n: int, gib: float, interval: float | None) -> str:
    watch = f"[watch]\ninterval = {interval}\n\n" if interval is not None else ""
    argv = json.dumps([sys.executable, "-I", "-S", "-c", FILL, str(gib)])
    return (
        f'{watch}[[process]]\nname = "fill"\ncommand = {argv}\nworkers = {n}\n'
        'policy = "local"\nrestart = "never"\nstop_timeout = 5\n'
    )


def start(tmp: Path, text: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    spec = tmp / "keep.toml"
    spec.write_text(text)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp), PYTHONPATH=str(REPO), NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "numarun", "run", str(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    return proc, env


def wait_ready(proc: subprocess.Popen[str], n: int, timeout: float = 600.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < n:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"only {seen} of {n} workers ready")
        if proc.stdout.readline().rstrip().endswith("| ready"):
            seen += 1


def worker_pids(tmp: Path) -> list[int]:
    data = json.loads((tmp / "numarun" / "keep.json").read_text())
    return [w["pid"] for w in data["workers"] if w["pid"]]


def supervisor_cpu(proc: subprocess.Popen[str], window: float) -> float:
    """The supervisor's CPU over ``window`` seconds, as a percentage of one CPU."""
    p = psutil.Process(proc.pid)
    before = p.cpu_times()
    t0 = time.monotonic()
    time.sleep(window)
    after = p.cpu_times()
    spent = (after.user - before.user) + (after.system - before.system)
    return 100.0 * spent / (time.monotonic() - t0)


def sample_cost(pids: list[int], samples: int) -> list[float]:
    """CPU seconds of one keeper sample over ``pids``, ``samples`` times, in this process."""
    from numarun.mempolicy import MemoryPolicy
    from numarun.supervisor.keeper import Keeper, LiveKernel
    from numarun.supervisor.model import WorkerSpec
    from numarun.supervisor.watchpolicy import Watch
    from numarun.topology import read_topology

    topology = read_topology(devices=False)
    cpus = frozenset(topology.cpus)
    node = min(topology.nodes)
    keeper = Keeper(Watch(), LiveKernel(topology))
    running = [
        (WorkerSpec("fill", i, ("x",), node=node, cpus=cpus, memory=MemoryPolicy("local")), pid)
        for i, pid in enumerate(pids)
    ]
    costs = []
    for _ in range(samples):
        t0 = time.process_time()
        keeper.sample(time.monotonic(), running)
        costs.append(time.process_time() - t0)
    judged = sum(k.locality.judged_bytes for k in keeper.kept.values() if k.locality)
    print(f"  judged memory per sample: {judged / (1 << 30):.2f} GiB", file=sys.stderr)
    return costs


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=16, help="workers (default 16)")
    parser.add_argument("--gib", type=float, default=1.0, help="GiB each (default 1)")
    parser.add_argument("--interval", type=float, default=10.0, help="[watch] interval")
    parser.add_argument("--window", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--samples", type=int, default=20, help="timed samples")
    args = parser.parse_args()
    results: dict[str, object] = {"workers": args.n, "gib_each": args.gib}
    for watched in (True, False):
        with tempfile.TemporaryDirectory(prefix="keep-bench-") as name:
            tmp = Path(name)
            os.chmod(tmp, 0o700)
            interval = args.interval if watched else None
            proc, _env = start(tmp, job_text(args.n, args.gib, interval))
            try:
                t0 = time.monotonic()
                wait_ready(proc, args.n)
                print(f"{args.n} workers filled in {time.monotonic() - t0:.1f} s", file=sys.stderr)
                if watched:
                    costs = sample_cost(worker_pids(tmp), args.samples)
                    results["sample_ms_median"] = round(1000 * statistics.median(costs), 2)
                    results["sample_ms_max"] = round(1000 * max(costs), 2)
                    results["interval_s"] = args.interval
                    results["sample_share_of_interval_pct"] = round(
                        100 * statistics.median(costs) / args.interval, 3
                    )
                key = "supervisor_cpu_pct_watch" if watched else "supervisor_cpu_pct_plain"
                results[key] = round(supervisor_cpu(proc, args.window), 3)
            finally:
                stop(proc)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
