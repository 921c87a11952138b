"""Benchmark: ``numarun placement PID --json`` against ``numastat -p PID`` on ~60,000 mappings.

Starts a Python child that maps one large private anonymous region, touches every page and
then mprotects every other page read-only, so the kernel cannot merge neighbours: one
mapping per page. Both tools then read the same child, alternately, several times; the
medians are printed with their ratio. ``cat /proc/PID/numa_maps`` is timed too: the kernel
writing the text is the floor under both.

The run fails only on a generous margin (numarun slower than ``--max-ratio`` times
numastat, default 3), since shared CI machines are noisy.

    .venv/bin/python bench/placement_bench.py [--mappings 60000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import ctypes, mmap, sys, time
n = int(sys.argv[1])
page = mmap.PAGESIZE
buf = mmap.mmap(-1, n * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
libc = ctypes.CDLL(None, use_errno=True)
base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
for i in range(n):
    buf[i * page] = 1
for i in range(0, n, 2):
    if libc.mprotect(ctypes.c_void_p(base + i * page), page, mmap.PROT_READ):
        raise SystemExit(f"mprotect: errno {ctypes.get_errno()} (vm.max_map_count?)")
print("ready", flush=True)
time.sleep(3600)
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return took, done.stdout


def in_process(pid: int, rounds: int) -> float:
    """Median seconds of the report itself (no interpreter start): read, parse, judge."""
    sys.path.insert(0, str(ROOT))
    from numarun import numastat
    from numarun.commands.placement import collect
    from numarun.topology import read_topology

    topology = read_topology("/")
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        collect(pid, topology, numastat.machine("/"))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mappings", type=int, default=60000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-ratio", type=float, default=3.0)
    args = parser.parse_args()
    if shutil.which("numastat") is None:
        print("numastat not installed (Debian: numactl); nothing to compare with")
        return 0

    max_maps = int(Path("/proc/sys/vm/max_map_count").read_text())
    mappings = min(args.mappings, max_maps - 2000)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(mappings)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the child could not build its mappings")
        pid = str(child.pid)
        lines = Path(f"/proc/{pid}/numa_maps").read_text().count("\n")
        # Bytecode is cached outside the tree even where PYTHONDONTWRITEBYTECODE is set (as in
        # some sandboxes): an installed numarun has its .pyc files; compiling every module
        # on every run is not what users see.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": tempfile.mkdtemp()}
        ours_argv = [sys.executable, "-m", "numarun", "placement", pid, "--json"]
        theirs_argv = ["numastat", "-p", pid]
        cat_argv = ["cat", f"/proc/{pid}/numa_maps"]
        timed(ours_argv, env)  # warm the page cache for the interpreter and modules
        ours, theirs, cat = [], [], []
        for _ in range(args.rounds):
            took, out = timed(ours_argv, env)
            ours.append(took)
            theirs.append(timed(theirs_argv)[0])
            cat.append(timed(cat_argv)[0])
        report = json.loads(out)["processes"][0]
        inside = in_process(int(pid), args.rounds)
    finally:
        child.kill()
        child.wait()

    o, t, c = (statistics.median(x) for x in (ours, theirs, cat))
    print(f"mappings in numa_maps:            {lines}")
    print(
        f"numarun placement found:          {report['mappings']} mappings, "
        f"{report['total_bytes'] / 2**20:.1f} MB"
    )
    print(f"cat /proc/PID/numa_maps (floor):  {c * 1000:7.1f} ms")
    print(f"numastat -p PID:                  {t * 1000:7.1f} ms")
    print(f"numarun placement PID --json:     {o * 1000:7.1f} ms")
    print(f"ratio numarun / numastat:         {o / t:7.2f}")
    print(f"  of which read + parse + judge:  {inside * 1000:7.1f} ms (in process, median)")
    if o > args.max_ratio * t:
        print(f"FAIL: more than {args.max_ratio:g}x numastat")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
