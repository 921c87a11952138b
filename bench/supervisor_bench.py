#!/usr/bin/env python3
"""Benchmark ``numarun run`` against supervisord: 256 trivial workers.

Measured for each, in the same run, on the same machine, alternating:

* **start**: from launching the supervisor's command line until every one of the N
  ``sleep`` workers has been exec'd (seen as a child process named ``sleep``): the same
  criterion for both, independent of what each calls "running";
* **idle CPU**: the supervisor's own CPU time (user + system) over an idle window once
  everything runs, as a percentage of one CPU;
* **memory**: the supervisor's resident set (numarun: the supervisor plus its guardian).

supervisord is installed from PyPI into the benchmark's own virtual environment
(``--venv``, default ``/tmp/bench-venv``), never into numarun's dependencies. Its config is
the usual one for N copies: ``numprocs = N``, ``startsecs = 0`` (so that it does not hold
processes in STARTING for a second, which would only flatter numarun), output captured to
its log files as it does by default; numarun captures output through pipes as it does by
default. Both send their own output to /dev/null.

    python bench/supervisor_bench.py                 # 256 workers, 3 rounds
    python bench/supervisor_bench.py -n 512 --rounds 5 --idle 20
    python bench/supervisor_bench.py --soak 20000    # long restart soak of the supervisor
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def ensure_supervisord(venv: Path) -> Path:
    exe = venv / "bin" / "supervisord"
    if exe.exists():
        return exe
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "supervisor"], check=True, timeout=600
    )
    return exe


def numarun_command(tmp: Path, n: int) -> tuple[list[str], dict[str, str]]:
    spec = tmp / "bench.toml"
    spec.write_text(
        f'[[process]]\nname = "s"\ncommand = ["sleep", "3600"]\nworkers = {n}\nstop_timeout = 5\n'
    )
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp), PYTHONPATH=str(REPO), NO_COLOR="1")
    # As a user runs it (bench/run.py): the environment's console script, bytecode cached
    # (a sandbox's PYTHONDONTWRITEBYTECODE would have every run compile numarun anew).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    script = Path(sys.executable).with_name("numarun")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "numarun"]
    return [*command, "run", str(spec)], env


def supervisord_command(tmp: Path, n: int, exe: Path) -> tuple[list[str], dict[str, str]]:
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    conf = tmp / "supervisord.conf"
    conf.write_text(
        "[supervisord]\n"
        "nodaemon = true\n"
        f"logfile = {tmp}/supervisord.log\n"
        f"pidfile = {tmp}/supervisord.pid\n"
        f"childlogdir = {logs}\n"
        "minfds = 8192\n"
        "[program:s]\n"
        "command = sleep 3600\n"
        f"numprocs = {n}\n"
        "process_name = %(program_name)s_%(process_num)03d\n"
        "autostart = true\n"
        "startsecs = 0\n"
        "stopwaitsecs = 5\n"
    )
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as for numarun: bytecode cached
    return [str(exe), "-c", str(conf)], env


def count_sleeps(parent: int, seen: set[int]) -> int:
    """How many of ``parent``'s children have exec'd ``sleep``, ``seen`` holding those found
    before: the kernel's list of children and the ``comm`` of new ones only, so that polling
    every 5 ms does not itself load the machine (psutil's children() reads every process's
    stat file, ~300 of them here, which slowed both supervisors' starts)."""
    children: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{parent}/task"):
            with open(f"/proc/{parent}/task/{tid}/children") as f:
                children.update(int(pid) for pid in f.read().split())
    except OSError:
        return len(seen)
    for pid in children - seen:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "sleep":
                    seen.add(pid)  # a sleep worker stays one
        except OSError:
            continue
    seen &= children
    return len(seen)


def measure(cmd: list[str], env: dict[str, str], n: int, idle: float) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        sup = psutil.Process(proc.pid)
        deadline = t0 + 120
        sleeping: set[int] = set()
        while count_sleeps(proc.pid, sleeping) < n:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{cmd} did not start {n} workers in 120 s")
            time.sleep(0.005)
        start = time.perf_counter() - t0
        time.sleep(1.0)  # let start-up work (log files, state file) settle
        helpers = [c for c in sup.children() if c.name() != "sleep"]
        cpu0 = sum(sup.cpu_times()[:2])
        w0 = time.perf_counter()
        time.sleep(idle)
        cpu = sum(sup.cpu_times()[:2]) - cpu0
        window = time.perf_counter() - w0
        rss = sup.memory_info().rss + sum(h.memory_info().rss for h in helpers)
        return {
            "start_s": start,
            "idle_cpu_pct": 100.0 * cpu / window,
            "idle_cpu_s": cpu,
            "rss_mb": rss / 2**20,
            "helpers": len(helpers),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def leftovers() -> int:
    return sum(
        1
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "sleep" and p.info["cmdline"] == ["sleep", "3600"]
    )


def compare(n: int, rounds: int, idle: float, venv: Path) -> dict[str, object]:
    exe = ensure_supervisord(venv)
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout
    results: dict[str, list[dict[str, float]]] = {"numarun": [], "supervisord": []}
    for r in range(rounds):
        for name in ("numarun", "supervisord") if r % 2 == 0 else ("supervisord", "numarun"):
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as d:
                tmp = Path(d)
                os.chmod(tmp, 0o700)
                cmd, env = (
                    numarun_command(tmp, n)
                    if name == "numarun"
                    else supervisord_command(tmp, n, exe)
                )
                m = measure(cmd, env, n, idle)
                results[name].append(m)
                print(
                    f"round {r + 1} {name:11} all {n} running in {m['start_s']:.3f} s, "
                    f"idle CPU {m['idle_cpu_pct']:.3f} % ({m['idle_cpu_s']:.3f} s in {idle:g} s), "
                    f"RSS {m['rss_mb']:.1f} MB",
                    flush=True,
                )
                deadline = time.monotonic() + 30
                while leftovers() and time.monotonic() < deadline:
                    time.sleep(0.1)
    med = {
        name: {k: statistics.median(m[k] for m in runs) for k in runs[0]}
        for name, runs in results.items()
    }
    a, b = med["numarun"], med["supervisord"]
    summary = {
        "workers": n,
        "rounds": rounds,
        "machine": f"{os.cpu_count()} CPUs, {os.uname().release}",
        "supervisord": version.strip(),
        "median": med,
        "start_ratio": a["start_s"] / b["start_s"],
        "idle_cpu_ratio": (a["idle_cpu_s"] / b["idle_cpu_s"]) if b["idle_cpu_s"] else None,
        "rss_ratio": a["rss_mb"] / b["rss_mb"],
        "leftover_sleeps": leftovers(),
    }
    print()
    print(f"median of {rounds} rounds, {n} workers ({summary['machine']}):")
    print(
        f"  start to all running: numarun {a['start_s']:.3f} s, supervisord "
        f"{b['start_s']:.3f} s, ratio {summary['start_ratio']:.2f} (target about 0.2)"
    )
    print(f"  idle CPU: numarun {a['idle_cpu_pct']:.3f} %, supervisord {b['idle_cpu_pct']:.3f} %")
    print(
        f"  memory (RSS): numarun {a['rss_mb']:.1f} MB, supervisord {b['rss_mb']:.1f} MB, "
        f"ratio {summary['rss_ratio']:.2f}"
    )
    return summary


def long_soak(restarts: int) -> dict[str, float]:
    sys.path.insert(0, str(REPO))
    from tests.test_supervise_soak import soak

    m = soak(restarts, 200)
    print(
        f"soak: {restarts} restarts in {m['seconds']:.1f} s "
        f"({restarts / m['seconds']:.0f}/s); fds {m['fds_before']} -> {m['fds_after']}, "
        f"zombies {m['zombies_before']} -> {m['zombies_after']}, "
        f"RSS {m['rss_kb_before']} -> {m['rss_kb_after']} kB"
    )
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--workers", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=float, default=10.0, help="idle window in seconds")
    ap.add_argument("--venv", type=Path, default=Path("/tmp/bench-venv"))
    ap.add_argument("--soak", type=int, metavar="N", help="also soak N restarts")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if shutil.which("sleep") is None:
        print("bench: no sleep(1) on PATH", file=sys.stderr)
        return 1
    out: dict[str, object] = {"compare": compare(args.workers, args.rounds, args.idle, args.venv)}
    if args.soak:
        out["soak"] = long_soak(args.soak)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
