"""Benchmark: reading a topology, against lstopo reading the same snapshot.

    .venv/bin/python bench/topology_bench.py [SNAPSHOT-NAME] [--runs N]

Times, in one run on one machine: (1) numarun's in-process read of the largest shared
snapshot, (2) the whole ``numarun topology --json --root DIR`` command, (3) the whole
``lstopo-no-graphics --input DIR --of xml`` command, and prints ratios. Targets from the
topology issue: (1) faster than lstopo's whole run; (2) within 3x lstopo. Exits 1 only when
a ratio misses its target by a wide margin (2x), so noise does not fail it.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "topologies"


# The shared snapshot with the most CPUs (80) and a full modern sysfs.
LARGEST = "memorysidecaches"


# As installed by pip: byte-compiled. (Some sandboxes set PYTHONDONTWRITEBYTECODE, which
# would charge every run for compiling numarun again.)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time_command(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=ENV
        )
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", nargs="?")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"no shared snapshots at {SHARED}", file=sys.stderr)
        return 2
    lstopo = shutil.which("lstopo-no-graphics")
    if lstopo is None:
        print("lstopo-no-graphics is not installed (Debian package hwloc)", file=sys.stderr)
        return 2
    name = args.snapshot or LARGEST
    sys.path.insert(0, str(REPO))
    compileall.compile_dir(REPO / "numarun", quiet=1)
    from numarun.topology import read_topology

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(SHARED / f"{name}.tar.bz2") as tar:
            tar.extractall(tmp)
        root = str(Path(tmp) / name)
        read_topology(root)  # warm the page cache for everyone alike
        samples = []
        for _ in range(args.runs):
            start = time.perf_counter()
            read_topology(root)
            samples.append(time.perf_counter() - start)
        in_process = statistics.median(samples)
        command = _time_command(
            [str(Path(sys.executable).with_name("numarun")), "topology", "--json", "--root", root],
            args.runs,
        )
        theirs = _time_command([lstopo, "--input", root, "--of", "xml"], args.runs)
        bare = _time_command([sys.executable, "-c", "pass"], args.runs)

    print(f"snapshot: {name}, median of {args.runs} runs")
    print(f"  numarun read_topology (in process)   {in_process * 1e3:7.1f} ms")
    print(f"  numarun topology --json (command)    {command * 1e3:7.1f} ms")
    print(f"  lstopo-no-graphics --of xml          {theirs * 1e3:7.1f} ms")
    print(f"  python3 -c pass (start-up floor)     {bare * 1e3:7.1f} ms")
    print(f"  ratio in-process / lstopo            {in_process / theirs:7.2f}  (target < 1)")
    print(f"  ratio command / lstopo               {command / theirs:7.2f}  (target <= 3)")
    return 0 if in_process / theirs < 2 and command / theirs <= 6 else 1


if __name__ == "__main__":
    sys.exit(main())
