#!/usr/bin/env python3
"""Drive numarun's supervisor from a script: start a job, wait until it serves, check, stop.

    python examples/orchestrate.py                       # the redis-per-node example
    python examples/orchestrate.py my-job.toml --port-base 8000 --keep

Plans the job spec on this machine, starts every worker placed as planned, waits until
each worker answers on its TCP port (``port-base + worker index``), prints where each
one runs as the kernel reports it, then stops the job (or, with ``--keep``, supervises
it until Ctrl-C). The same ``Supervisor`` runs ``numarun run``; the events it yields are
what a deployment script reacts to.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from numarun.plan import plan_job
from numarun.spec import load_spec
from numarun.supervisor import PrefixPrinter, Supervisor
from numarun.supervisor.fromplan import job_from_plan
from numarun.topology import read_topology


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def kernel_view(pid: int) -> str:
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    first_map = Path(f"/proc/{pid}/numa_maps").read_text().split("\n", 1)[0].split()
    return f"CPUs {status['Cpus_allowed_list']}, policy {first_map[1]}"


def main() -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="?", default=str(here / "redis-per-node.toml"))
    ap.add_argument("--port-base", type=int, default=7000)
    ap.add_argument("--keep", action="store_true", help="keep supervising after the check")
    args = ap.parse_args()

    job = job_from_plan(plan_job(read_topology(), load_spec(args.spec)), name="orchestrate")
    supervisor = Supervisor(
        job, printer=PrefixPrinter(job.workers), state_dir=False, output_events=True
    )
    waiting = {w.label: args.port_base + w.index for w in job.workers}

    with supervisor.handle_signals():  # Ctrl-C stops the job; twice kills it
        supervisor.start()
        for event in supervisor.events():
            if event.kind == "failed":
                print(f"{event.worker.label if event.worker else 'job'} failed", file=sys.stderr)
            # Every event (output lines included, with output_events) is a chance to look
            # at the ports still waited for: servers print a line once they listen.
            for label, port in list(waiting.items()):
                if answers(port):
                    del waiting[label]
                    worker = next(w for w in supervisor.workers if w.spec.label == label)
                    assert worker.pid is not None
                    print(f"{label} serves on {port}: pid {worker.pid}, {kernel_view(worker.pid)}")
            if not waiting and not supervisor.stopping and not args.keep:
                supervisor.stop("every worker serves: check done")
    result = supervisor.result()
    print(f"job ended: {result.reason}; exit code {result.exit_code}")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
