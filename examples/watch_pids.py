#!/usr/bin/env python3
"""Watch processes' NUMA locality from a script, without the CLI, and export it.

    python examples/watch_pids.py PID... [--interval 10] [--count N] [--prom FILE]

Every interval: samples the nodes (memory, CPU utilisation), reads each process's locality
against its own home nodes (its policy's nodes, or its CPUs' nodes under default policy),
prints the issues numarun's rules find, and with ``--prom`` writes them as a Prometheus
textfile (atomically, for node_exporter's textfile collector) under the job name
``watch_pids``. The same library runs ``numarun watch`` and the supervisor's ``[watch]``.
"""

from __future__ import annotations

import argparse
import sys
import time

from numarun.metrics import JobMetrics, WorkerMetrics, write_textfile
from numarun.watch import Sampler, Thresholds, find_issues, process_locality


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pids", type=int, nargs="+")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--count", type=int, default=0, help="samples to take (0: forever)")
    parser.add_argument("--prom", help="write a Prometheus textfile here after each sample")
    args = parser.parse_args()

    sampler = Sampler()
    sampler.sample_nodes()  # the first reading: utilisation is measured from here
    taken = 0
    while True:
        time.sleep(args.interval if taken else 0.25)
        nodes = sampler.sample_nodes()
        found = {pid: process_locality(pid, sampler.topology) for pid in args.pids}
        localities = [loc for loc in found.values() if loc is not None]
        for loc in localities:
            ratio = "-" if loc.local_ratio is None else f"{loc.local_ratio:.0%}"
            print(f"pid {loc.pid}: {ratio} of {loc.judged_bytes >> 20} MiB on nodes "
                  f"{list(loc.home_nodes)} ({loc.home_source})")  # fmt: skip
        for issue in find_issues(nodes, localities, Thresholds()):
            print(f"  {issue.kind}: {issue.message}")
        if args.prom:
            workers = tuple(
                WorkerMetrics(worker=str(pid), up=loc is not None, locality=loc)
                for pid, loc in found.items()
            )
            write_textfile(args.prom, JobMetrics(job="watch_pids", workers=workers, nodes=nodes))
        sys.stdout.flush()
        taken += 1
        if taken == args.count:
            return 0


if __name__ == "__main__":
    sys.exit(main())
