"""Benchmark: what one ``numarun watch`` / ``[watch]`` sample costs, against its peers.

Starts worker processes that each map 1 GiB and write every page (4 KiB pages: transparent
huge pages are refused with ``MADV_NOHUGEPAGE``, the dear case for the kernel's page walk;
``--thp`` asks for them instead), then times, in this process:

* ``locality(pid, home)`` of one worker: one ``/proc/PID/numa_maps`` read and
  ``numamaps.summarize`` (what the supervisor does per worker per interval);
* the same for all workers (default 16), one after the other: one sample of a job;
* ``Sampler.sample_nodes()`` and ``Sampler.balancing()``: the machine's side of a sample;

and, as peers on the same worker, ``numastat -p PID`` and ``cat /proc/PID/numa_maps`` (both
as processes, as a script would run them; the bare in-process read of numa_maps is the
floor: the kernel writing the text). Medians of ``--rounds``; CPU time (user + system,
which holds the kernel's page walk) beside wall time. The last line: one sample of every
worker plus the nodes, as a share of one CPU at a ``--interval`` (default 10 s).

Memory: 16 private GiB is more than most test machines have, so by default (``--shared``
auto) the workers map one shared 1 GiB memfd, each writing every page, so each has its own
262,144 page-table entries to walk, as private memory would; ``--private`` gives each its own
GiB where memory allows. Said in the output either way.

    .venv/bin/python bench/watch_bench.py [--workers 16] [--rounds 7] [--interval 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GiB = 1 << 30

WORKER = """
import mmap, os, sys
size, kind = int(sys.argv[1]), sys.argv[2]
if kind == "shared":
    m = mmap.mmap(int(sys.argv[3]), size, flags=mmap.MAP_SHARED)
else:
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE if kind == "thp" else mmap.MADV_NOHUGEPAGE)
m[:: mmap.PAGESIZE] = b"\\x01" * (size // mmap.PAGESIZE)
print("ready", flush=True)
sys.stdin.read()
"""


def start_workers(count: int, size: int, kind: str) -> list[subprocess.Popen[bytes]]:
    fd = -1
    shared = kind == "shared"
    if shared:
        fd = os.memfd_create("numarun-watch-bench")
        os.ftruncate(fd, size)
    procs = []
    try:
        for _ in range(count):
            argv = [sys.executable, "-I", "-S", "-c", WORKER, str(size), kind, str(fd)]
            procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          pass_fds=(fd,) if shared else ()))  # fmt: skip
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise SystemExit(f"worker {proc.pid} did not start (memory?)")
    except BaseException:
        stop(procs)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def _cpu() -> float:
    """CPU seconds (user + system) of this process and of its reaped children (the peers)."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measure(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds) of ``rounds`` calls."""
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), _cpu()
        fn()
        cpus.append(_cpu() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus)


def run_peer(argv: list[str]) -> Callable[[], object]:
    def call() -> object:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              check=True)  # fmt: skip

    return call


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--size", type=int, default=GiB, help="bytes per worker (1 GiB)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--private", action="store_true", help="each worker its own memory")
    parser.add_argument("--thp", action="store_true", help="with --private: MADV_HUGEPAGE")
    args = parser.parse_args()

    from numarun import procfs, sysfs
    from numarun.watch import Sampler, locality

    available = sysfs.proc_meminfo(sysfs.Root("/")).get("MemAvailable", 0) * 1024
    shared = not args.private
    if args.private and available < args.workers * args.size + GiB:
        print(f"--private needs {args.workers * args.size / GiB:.0f} GiB and "
              f"{available / GiB:.1f} GiB is available; using one shared memfd")  # fmt: skip
        shared = True
    kind = "shared" if shared else ("thp" if args.thp else "private")
    what = {"shared": "one shared memfd mapped by all", "thp": "private, transparent huge "
            "pages asked for", "private": "private, 4 KiB pages"}[kind]  # fmt: skip
    print(f"{args.workers} workers of {args.size / GiB:.2f} GiB each, every page written "
          f"({what}); medians of {args.rounds} rounds")  # fmt: skip
    procs = start_workers(args.workers, args.size, kind)
    try:
        pids = [p.pid for p in procs]
        sampler = Sampler()
        nodes = sorted(sampler.topology.nodes)
        first = locality(pids[0], nodes)
        assert first is not None and first.judged_bytes >= args.size * 0.99, first
        one = measure(lambda: locality(pids[0], nodes), args.rounds)
        raw = measure(lambda: procfs.numa_maps(pids[0]), args.rounds)
        every = measure(lambda: [locality(p, nodes) for p in pids], args.rounds)
        node_side = measure(lambda: (sampler.sample_nodes(), sampler.balancing()), args.rounds)
        peers = {}
        if shutil.which("numastat"):
            peers["numastat -p PID"] = measure(run_peer(["numastat", "-p", str(pids[0])]),
                                               args.rounds)  # fmt: skip
        peers["cat /proc/PID/numa_maps"] = measure(
            run_peer(["cat", f"/proc/{pids[0]}/numa_maps"]), args.rounds
        )
    finally:
        stop(procs)

    rows = [
        ("locality(), one worker", one, False),
        ("  of which the numa_maps read", raw, False),
        (f"locality(), all {args.workers} workers", every, False),
        ("sample_nodes() + balancing()", node_side, False),
        *((name, figures, True) for name, figures in peers.items()),
    ]
    print(f"{'what':<36}{'wall':>12}{'cpu':>12}{'locality() / peer':>20}")
    for name, (wall, cpu), peer in rows:
        ratio = f"{one[0] / wall:.2f} wall, {one[1] / cpu:.2f} cpu" if peer and wall and cpu else ""
        print(f"{name:<36}{ms(wall):>12}{ms(cpu):>12}  {ratio}")
    sample_cpu = every[1] + node_side[1]
    print(f"one sample of {args.workers} workers and the nodes: {sample_cpu * 1000:.1f} ms of CPU"
          f" = {sample_cpu / args.interval * 100:.3f} % of a CPU at a {args.interval:g} s "
          "interval")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
