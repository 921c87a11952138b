"""How much time the prefix launcher adds before the command starts.

Times, in one run and interleaved round by round so that machine noise hits all alike:

* ``true`` alone (the bare command),
* ``numactl --membind=0 -- true`` (the C tool numarun replaces),
* ``python -c pass`` (the floor: Python's own start-up, with and without ``site``),
* ``numarun --policy bind --nodes 0 -- true`` run as ``python -m numarun`` and, when
  installed, through the ``numarun`` console script,
* the same with ``python -S`` and the checkout on ``PYTHONPATH``, which shows what the
  environment's ``site`` (e.g. an editable install's import hook) costs on its own.

Bytecode is cached in a temporary ``PYTHONPYCACHEPREFIX`` and warmed up first, as it is
on an installed system; ``PYTHONDONTWRITEBYTECODE`` in the caller's environment would
otherwise make every run compile numarun from source.

Usage: ``python bench/prefix_bench.py [--rounds N]``. Prints per-command medians and
minima, the time each adds over ``true``, and ratios. Not a pass/fail test; the target
(issue 2) is that numarun adds no more than 40 ms over the bare command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 40.0


def _time_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed runs per command")
    args = parser.parse_args()

    python = sys.executable
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cache = tempfile.mkdtemp(prefix="numarun-bench-pyc-")
    env["PYTHONPYCACHEPREFIX"] = cache
    bare_env = dict(env, PYTHONPATH=str(REPO))

    cases: list[tuple[str, list[str], dict[str, str]]] = [
        ("true", ["true"], env),
        ("python -c pass", [python, "-c", "pass"], env),
        ("python -S -c pass", [python, "-S", "-c", "pass"], env),
    ]
    numactl = shutil.which("numactl")
    if numactl:
        cases.append(("numactl --membind=0 -- true", [numactl, "--membind=0", "--", "true"], env))
    prefix = ["--policy", "bind", "--nodes", "0", "--", "true"]
    cases.append(("python -m numarun " + " ".join(prefix), [python, "-m", "numarun", *prefix], env))
    script = Path(python).with_name("numarun")
    if script.exists():
        cases.append(("numarun (console script)", [str(script), *prefix], env))
    cases.append(
        ("python -S -m numarun (checkout)", [python, "-S", "-m", "numarun", *prefix], bare_env)
    )
    # One MPI rank of two: plans every rank of the host (issue 8) before it execs.
    per_rank = ["--per-rank", "--rank", "1", "--ranks", "2", "--policy", "bind", "--", "true"]
    cases.append(
        ("python -m numarun --per-rank (rank 1 of 2)", [python, "-m", "numarun", *per_rank], env)
    )

    try:
        for _, argv, case_env in cases:  # warm up: page cache and bytecode cache
            for _ in range(3):
                _time_once(argv, case_env)
        samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _ in range(args.rounds):
            for name, argv, case_env in cases:
                samples[name].append(_time_once(argv, case_env))
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    median = {name: statistics.median(values) for name, values in samples.items()}
    base = median["true"]
    width = max(len(name) for name in samples)
    version = sys.version.split()[0]
    print(f"{args.rounds} rounds, interleaved; times in ms (median / min); Python {version}")
    print(f"{'command':<{width}}  {'median':>7}  {'min':>7}  {'adds':>7}")
    for name, values in samples.items():
        print(
            f"{name:<{width}}  {median[name]:7.1f}  {min(values):7.1f}  {median[name] - base:7.1f}"
        )
    numarun_name = "python -m numarun " + " ".join(prefix)
    adds = median[numarun_name] - base
    print()
    print(f"numarun adds {adds:.1f} ms over the bare command (target <= {TARGET_MS:.0f} ms)")
    floor = median["python -c pass"]
    print(f"numarun / python -c pass: {median[numarun_name] / floor:.2f}x")
    print(f"numarun - python -c pass: {median[numarun_name] - floor:.1f} ms (numarun's own work)")
    if numactl:
        ref = median["numactl --membind=0 -- true"]
        print(f"numarun / numactl: {median[numarun_name] / ref:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
