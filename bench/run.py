"""Every row of the performance table against its peer, measured in one run.

    .venv/bin/python bench/run.py [--rounds 21] [--only topology,placement,supervisor,prefix]

Rows (the performance issue's table; medians of interleaved runs, so that the noise of a
shared machine hits both sides alike):

* ``numarun topology --topology SNAP --json`` on the 80-CPU 4-node shared snapshot, against
  ``lstopo-no-graphics --input SNAP --of xml``: ratio <= 2.0;
* ``numarun placement PID --json`` on a process with ~60,000 mappings, against
  ``numastat -p PID``: ratio <= 1.25 (``cat /proc/PID/numa_maps``, the kernel's floor, shown);
* ``numarun run`` with 256 ``sleep`` workers, against supervisord 4.3 with ``numprocs =
  256`` (installed into a throw-away venv, ``--venv``; a peer, not a dependency): the
  supervisor's and guardian's RSS <= supervisord's, start to all running <= 1/5 of
  supervisord's (0.25 allowed for noise), idle CPU 0;
* prefix ``numarun -m 0 -- true``, against ``python -S -c pass`` and against the same
  command at ``--baseline`` (a commit, checked out with ``git archive``): not worse than the
  baseline (within 0.5 ms).

The numarun commands run as a user runs them: the venv's ``numarun`` console script, with
bytecode cached (``PYTHONDONTWRITEBYTECODE`` dropped). Timing is never a test: this
prints a table and exits 0 whatever it finds (1 only when a peer could not be run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED = REPO.parent / "shared" / "topologies"
SNAPSHOT = "memorysidecaches"  # the shared snapshot with the most CPUs (80), 4 nodes
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
NUMARUN = str(Path(sys.executable).with_name("numarun"))

Row = tuple[str, float, str, float, str, Callable[[float], bool], str, float | None]
# (what, ours, peer, theirs, unit, meets(ratio), target text, CPU-time ratio)


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms: user + system) of one run of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({code}): {err.decode()}")
    return took * 1000.0, (usage.ru_utime + usage.ru_stime) * 1000.0


def interleaved(
    cases: dict[str, tuple[list[str], dict[str, str]]], rounds: int
) -> dict[str, tuple[float, float]]:
    """Median (wall ms, CPU ms) of each command, run round-robin (the order reversed every
    other round). The CPU time is shown too: on a shared machine other work stretches the
    wall clock of both sides, their CPU time much less."""
    names = list(cases)
    for name in names:  # warm the page cache and the bytecode cache
        for _ in range(3):
            _once(*cases[name])
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            samples[name].append(_once(*cases[name]))
    return {
        name: (statistics.median(w for w, _ in got), statistics.median(c for _, c in got))
        for name, got in samples.items()
    }


def _cpu(ms: dict[str, tuple[float, float]], ours: str, theirs: str) -> float:
    return ms[ours][1] / ms[theirs][1]


def topology_rows(rounds: int) -> list[Row]:
    lstopo = shutil.which("lstopo-no-graphics")
    if lstopo is None or not SHARED.is_dir():
        raise SystemExit("topology: needs lstopo-no-graphics (Debian hwloc) and ../shared")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(SHARED / f"{SNAPSHOT}.tar.bz2") as tar:
            tar.extractall(tmp)  # trusted test data
        snap = str(Path(tmp) / SNAPSHOT)
        ms = interleaved(
            {
                "numarun": ([NUMARUN, "topology", "--topology", snap, "--json"], ENV),
                "lstopo": ([lstopo, "--input", snap, "--of", "xml"], ENV),
            },
            rounds,
        )
    return [
        (
            "numarun topology --topology SNAP --json (80 CPUs)",
            ms["numarun"][0],
            "lstopo-no-graphics --input SNAP --of xml",
            ms["lstopo"][0],
            "ms",
            lambda r: r <= 2.0,
            "<= 2.0",
            _cpu(ms, "numarun", "lstopo"),
        )
    ]


def placement_rows(rounds: int, mappings: int) -> list[Row]:
    sys.path.insert(0, str(BENCH))
    from placement_bench import CHILD

    if shutil.which("numastat") is None:
        raise SystemExit("placement: numastat is not installed (Debian numactl)")
    most = int(Path("/proc/sys/vm/max_map_count").read_text()) - 2000
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(min(mappings, most))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("placement: the child could not build its mappings")
        pid = str(child.pid)
        lines = Path(f"/proc/{pid}/numa_maps").read_text().count("\n")
        ms = interleaved(
            {
                "numarun": ([NUMARUN, "placement", pid, "--json"], ENV),
                "numastat": (["numastat", "-p", pid], ENV),
                "cat": (["cat", f"/proc/{pid}/numa_maps"], ENV),
            },
            rounds,
        )
    finally:
        child.kill()
        child.wait()
    return [
        (
            f"numarun placement PID --json ({lines} mappings)",
            ms["numarun"][0],
            "numastat -p PID",
            ms["numastat"][0],
            "ms",
            lambda r: r <= 1.25,
            "<= 1.25",
            _cpu(ms, "numarun", "numastat"),
        ),
        (
            "  (floor: the kernel writing numa_maps)",
            ms["cat"][0],
            "numastat -p PID",
            ms["numastat"][0],
            "ms",
            lambda r: True,
            "-",
            _cpu(ms, "cat", "numastat"),
        ),
    ]


def supervisor_rows(rounds: int, workers: int, idle: float, venv: Path) -> list[Row]:
    sys.path.insert(0, str(BENCH))
    from supervisor_bench import compare

    summary = compare(workers, rounds, idle, venv)
    med = summary["median"]
    assert isinstance(med, dict)
    ours, theirs = med["numarun"], med["supervisord"]
    return [
        (
            f"numarun run, {workers} sleep workers: supervisor + guardian RSS",
            ours["rss_mb"],
            f"supervisord, numprocs = {workers}",
            theirs["rss_mb"],
            "MB",
            lambda r: r <= 1.0,
            "<= 1.0",
            None,
        ),
        (
            f"  start to all {workers} running",
            ours["start_s"] * 1000,
            "supervisord",
            theirs["start_s"] * 1000,
            "ms",
            lambda r: r <= 0.25,
            "~0.2",
            None,
        ),
        (
            f"  idle CPU over {idle:g} s (% of a CPU)",
            ours["idle_cpu_pct"],
            "supervisord",
            theirs["idle_cpu_pct"],
            "%",
            lambda r: ours["idle_cpu_s"] == 0.0,
            "numarun 0",
            None,
        ),
    ]


def _baseline_tree(commit: str, into: Path) -> Path:
    """The package as it was at ``commit``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "numarun", "policies"],
        capture_output=True,
        check=True,
    ).stdout
    tree = into / "baseline"
    tree.mkdir()
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    policies = tree / "policies"
    if policies.is_dir():  # installed as numarun.policies
        shutil.move(str(policies), str(tree / "numarun" / "policies"))
    return tree


def prefix_rows(rounds: int, baseline: str | None) -> list[Row]:
    prefix = ["-m", "0", "--", "true"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = dict(ENV, PYTHONPYCACHEPREFIX=str(Path(tmp) / "pyc"))
        cases = {
            "numarun": ([NUMARUN, *prefix], cache),
            "python -S": ([sys.executable, "-S", "-c", "pass"], cache),
        }
        if baseline:
            # Both from a tree on PYTHONPATH, so that only the code differs.
            old = _baseline_tree(baseline, Path(tmp))
            cases["here"] = (
                [sys.executable, "-m", "numarun", *prefix],
                dict(cache, PYTHONPATH=str(REPO)),
            )
            cases["baseline"] = (
                [sys.executable, "-m", "numarun", *prefix],
                dict(cache, PYTHONPATH=str(old)),
            )
        ms = interleaved(cases, rounds)
    rows: list[Row] = [
        (
            "prefix numarun -m 0 -- true",
            ms["numarun"][0],
            "python -S -c pass",
            ms["python -S"][0],
            "ms",
            lambda r: True,
            "-",
            _cpu(ms, "numarun", "python -S"),
        )
    ]
    if baseline:
        slack = 1.0 + 0.5 / ms["baseline"][0]
        rows.append(
            (
                "  python -m numarun -m 0 -- true (this tree)",
                ms["here"][0],
                f"the same at {baseline}",
                ms["baseline"][0],
                "ms",
                lambda r: r <= slack,
                "not worse",
                _cpu(ms, "here", "baseline"),
            )
        )
    return rows


def _verdict(meets: Callable[[float], bool], ratio: float) -> str:
    return "met" if meets(ratio) else "MISSED"


def table(rows: list[Row]) -> str:
    head = ("what", "numarun", "peer", "peer", "ratio", "target", "", "CPU-time ratio")
    body = [
        (
            what,
            f"{ours:.1f} {unit}",
            peer,
            f"{theirs:.1f} {unit}",
            f"{ours / theirs:.2f}" if theirs else "-",
            target,
            _verdict(meets, ours / theirs if theirs else 0.0) if target != "-" else "",
            f"{cpu:.2f}" if cpu is not None else "",
        )
        for what, ours, peer, theirs, unit, meets, target, cpu in rows
    ]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in (head, *body))
    return "\n".join(line.rstrip() for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="timed runs of each command")
    parser.add_argument("--only", default="topology,placement,supervisor,prefix")
    parser.add_argument("--mappings", type=int, default=60000)
    parser.add_argument("--workers", type=int, default=256)
    parser.add_argument("--supervisor-rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="idle window, seconds")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/bench-venv"))
    parser.add_argument("--baseline", default="c1b6871", help="commit for the prefix row")
    args = parser.parse_args()
    if not Path(NUMARUN).exists():
        print(f"no console script at {NUMARUN}: run with the venv's python", file=sys.stderr)
        return 1
    rows: list[Row] = []
    for part in args.only.split(","):
        if part == "topology":
            rows += topology_rows(args.rounds)
        elif part == "placement":
            rows += placement_rows(args.rounds, args.mappings)
        elif part == "supervisor":
            rows += supervisor_rows(args.supervisor_rounds, args.workers, args.idle, args.venv)
        elif part == "prefix":
            rows += prefix_rows(args.rounds, args.baseline or None)
        else:
            parser.error(f"unknown part {part!r}")
    print()
    print(
        f"{os.cpu_count()} CPUs, {os.uname().release}, Python {sys.version.split()[0]}; "
        f"medians of {args.rounds} interleaved runs ({args.supervisor_rounds} for the supervisor)"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
