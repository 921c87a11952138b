"""Benchmark: plan 4,096 workers on the largest shared snapshot (target: under 100 ms).

    .venv/bin/python bench/plan_bench.py [SHARED_TOPOLOGIES_DIR]

Reads the snapshot once (not timed), then times three plans, best of 7 runs each:
``plan_slots`` (what MPI per-rank uses), a job spec group of 4,096 workers with templating
(``plan_job``), and the same with ``cpus_per_worker = 1`` and ``smt = "avoid"``.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from numarun.placement.slots import plan_slots
from numarun.plan import plan_job
from numarun.spec import parse_spec_text
from numarun.topology import Topology, read_topology

WORKERS = 4096
TARGET_MS = 100.0


def best_ms(fn: Callable[[], object], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def largest(shared: Path, into: Path) -> tuple[str, Topology]:
    best: tuple[int, str, Topology] | None = None
    for archive in sorted(shared.glob("*.tar.bz2")):
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "tar_filter"):  # Python >= 3.11.4 and backports
                tar.extractall(into, filter="tar")
            else:
                tar.extractall(into)  # trusted test data
        name = archive.name.removesuffix(".tar.bz2")
        topology = read_topology(into / name)
        size = len(topology.usable_cpus())
        if best is None or size > best[0]:
            best = (size, name, topology)
    if best is None:
        sys.exit(f"no snapshots in {shared}")
    return best[1], best[2]


def main() -> int:
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "topologies"
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    if not shared.is_dir():
        print(f"plan_bench: {shared} is absent; nothing to measure", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        name, topology = largest(shared, Path(tmp))
    usable = len(topology.usable_cpus())
    spec = parse_spec_text(
        f'[[process]]\nname = "w"\ncommand = ["app", "--port", "{{worker}}", "--cpus", '
        f'"{{cpus}}"]\nworkers = {WORKERS}\npolicy = "bind"\nenv = {{ NODE = "{{node}}" }}\n',
        "bench.toml",
    )
    single = parse_spec_text(
        f'[[process]]\nname = "w"\ncommand = ["app"]\nworkers = {WORKERS}\n'
        'smt = "avoid"\npolicy = "interleave"\n',
        "bench.toml",
    )
    figures = {
        "plan_slots": best_ms(lambda: plan_slots(topology, WORKERS, smt="allow")),
        "plan_job (templated)": best_ms(lambda: plan_job(topology, spec)),
        "plan_job (avoid, interleave)": best_ms(lambda: plan_job(topology, single)),
    }
    print(f"snapshot {name}: {len(topology.nodes)} nodes, {usable} usable CPUs")
    for label, ms in figures.items():
        verdict = "ok" if ms < TARGET_MS else "SLOW"
        print(f"{label:30s} {WORKERS} workers  {ms:7.1f} ms  ({verdict}, target {TARGET_MS:g} ms)")
    return 0 if all(ms < TARGET_MS for ms in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
