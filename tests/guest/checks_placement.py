"""Guest check for issue 6: ``numarun placement``, ``numastat`` and ``migrate`` on live
processes whose pages sit on known nodes (tests: test_placement_guest.py).

Each phase starts long-lived "holders" under a numarun launcher line: a python that maps
256 MiB of private anonymous memory, writes every page, prints ``ready PID`` and sleeps until
its stdin closes. numarun (and Debian's ``numastat -p``) is then asked where the pages are
while the holder waits. Every holder is killed in a ``finally``.

One check, in phases, because python starts are the cost under TCG (~2-3 s each, ~15 s
through typer) and a node has only ~370 MiB free: the ``--membind 1`` and ``--membind 0``
holders start side by side; the first is gone before ``migrate`` moves the second's pages
to node 1, and the interleaved holder starts after both are gone. ``numarun numastat
--json`` runs in the background meanwhile.

The guest's whole report must stay small (its results line is cut off past 32 KiB), so
numarun's JSON is reduced here to what the tests read.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inguest import Context, check

JSONDict = dict[str, Any]

HOLD_MB = 256
PAGE = os.sysconf("SC_PAGE_SIZE")
NODE_SYSFS = Path("/sys/devices/system/node")

# The holder: -I -S keep its start cheap (every file python reads is a 9p round trip).
HOLDER = f"""\
import mmap, os, sys
size = {HOLD_MB} << 20
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m[::mmap.PAGESIZE] = b"\\x01" * (size // mmap.PAGESIZE)
print("ready", os.getpid(), flush=True)
sys.stdin.read()
"""


class Holder:
    """One holder process; ``pid`` is its own (numarun execs, so it is also Popen's)."""

    def __init__(self, ctx: Context, launcher: Sequence[str]) -> None:
        self.launcher = list(launcher)
        self.argv = [*ctx.numarun_argv(*launcher, "--"), ctx.python, "-I", "-S", "-c", HOLDER]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=ctx.env(), cwd=ctx.repo, bufsize=0,
        )  # fmt: skip
        self.pid: int | None = None
        self.ready_seconds: float | None = None
        self._out = b""

    def wait_ready(self, timeout: float = 120.0) -> int:
        """The holder's PID once it has touched its memory; raises if it never does."""
        assert self.proc.stdout is not None
        deadline = self.started + timeout
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError(f"holder {self.launcher} not ready in {timeout}s")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                self.proc.wait(10)
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(
                    f"holder {self.launcher} exited {self.proc.returncode} before it was "
                    f"ready: {err[-2000:]}"
                )
            self._out += chunk
        line = self._out.split(b"\n", 1)[0].decode()
        if not (m := re.fullmatch(r"ready (\d+)", line)):
            raise RuntimeError(f"holder {self.launcher} said {line!r}")
        self.pid = int(m[1])
        self.ready_seconds = round(time.monotonic() - self.started, 2)
        return self.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()

    def info(self) -> JSONDict:
        return {
            "pid": self.pid,
            "popen_pid": self.proc.pid,
            "ready_seconds": self.ready_seconds,
        }


@contextmanager
def holders(ctx: Context, *launchers: Sequence[str]) -> Iterator[list[Holder]]:
    """Start one holder per launcher line side by side, wait until all are ready, and kill
    them all on the way out, whatever happened."""
    started: list[Holder] = []
    try:
        for launcher in launchers:
            started.append(Holder(ctx, launcher))
        for holder in started:
            holder.wait_ready()
        yield started
    finally:
        for holder in started:
            holder.kill()


# -- running numarun and numastat, results kept small ------------------------------------------


def _brief(run: JSONDict, stdout: bool = False) -> JSONDict:
    """A run without its long argv (the interpreter's path) and, unless asked, stdout."""
    argv = run.pop("argv")
    run["args"] = argv[3:] if argv[1:3] == ["-m", "numarun"] else argv
    run["stderr"] = run["stderr"][-1500:]
    if not run["stderr"]:
        del run["stderr"]
    if not stdout:
        run.pop("stdout")
    return run


def _numarun_json(ctx: Context, *args: str) -> JSONDict:
    """``numarun ARGS``: {"data": its JSON output, reduced (None if not JSON), "run": ...}."""
    run = ctx.numarun(*args)
    try:
        data = json.loads(run["stdout"])
    except ValueError:
        run["stdout"] = run["stdout"][-1500:]
        return {"data": None, "run": _brief(run, stdout=True)}
    return {"data": data, "run": _brief(run)}


def _process(report: JSONDict) -> JSONDict:
    """What the tests read of one process of ``placement --json`` (or migrate's reports)."""
    return {
        "pid": report["pid"],
        "status": report["status"],
        "ok": report["ok"],
        "judged_bytes": report["judged_bytes"],
        "nodes": {n: [v["bytes"], v["judged_bytes"]] for n, v in report["nodes"].items()},
        "anon": report["kinds"].get("anon", {}),
        "verdicts": [
            {k: v[k] for k in ("policy", "status", "expected_nodes", "judged_bytes", "message")}
            for v in report["verdicts"]
        ],
    }


def _placement_json(ctx: Context, pid: int) -> JSONDict:
    got = _numarun_json(ctx, "placement", str(pid), "--json", "--check")
    if got["data"] is not None:
        got["data"] = [_process(p) for p in got["data"]["processes"]]
    return got


def _placement_text(ctx: Context, pid: int) -> JSONDict:
    run = _brief(ctx.numarun("placement", str(pid), "--check"), stdout=True)
    run["stdout"] = "\n".join(
        line for line in run["stdout"].splitlines() if line.lstrip().startswith(("PASS", "FAIL"))
    )
    return run


def parse_numastat_p(text: str) -> JSONDict:
    """Debian ``numastat -p PID``: {"nodes": [0, 1], "total_mb": [per node..., sum]}."""
    nodes: list[int] = []
    total: list[float] = []
    for line in text.splitlines():
        if line.split()[:1] == ["Node"] and not nodes:
            nodes = [int(n) for n in re.findall(r"Node (\d+)", line)]
        elif line.startswith("Total"):
            total = [float(w) for w in line.split()[1:]]
    return {"nodes": nodes, "total_mb": total}


def _numastat_p(ctx: Context, pid: int) -> JSONDict:
    run = ctx.run(["numastat", "-p", str(pid)])
    parsed = parse_numastat_p(run["stdout"])
    return parsed | {"run": _brief(run, stdout=not parsed["total_mb"])}


def kernel_numa_hit() -> dict[str, int]:
    """numa_hit per node from the kernel's nodeN/numastat, read directly. It counts
    allocations: one per page, or one per transparent huge page."""
    hits: dict[str, int] = {}
    for node_dir in sorted(NODE_SYSFS.glob("node[0-9]*")):
        rows = dict(line.split() for line in (node_dir / "numastat").read_text().splitlines())
        hits[node_dir.name[4:]] = int(rows["numa_hit"])
    return hits


def _thp() -> JSONDict:
    """THP mode and huge page size: one allocation (one numa_hit) may cover a huge page."""
    base = Path("/sys/kernel/mm/transparent_hugepage")
    try:
        mode = re.search(r"\[(\w+)\]", (base / "enabled").read_text())
        size = int((base / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return {"enabled": None, "hpage_pmd_size": None}
    return {"enabled": mode[1] if mode else None, "hpage_pmd_size": size}


# --------------------------------------------------------------------------------------------


@check(min_nodes=2)
def placement_live(ctx: Context) -> JSONDict:
    """Issue 6's guest proof, in phases (see the module docstring):

    1. ``--membind 1`` holder: ``placement PID --json --check``, ``numastat -p PID``;
    2. ``--membind 0`` holder: ``placement PID --check``, ``migrate PID --from 0 --to 1
       --json``, ``placement PID --check`` again (now failing);
    3. ``--interleave`` over every node: ``placement PID --json --check``, ``numastat -p``;
    and ``numarun numastat --json`` after phase 1's holders touched their memory, with the
    kernel's own counters read before and after everything."""
    result: JSONDict = {
        "page_size": PAGE,
        "hold_mb": HOLD_MB,
        "thp": _thp(),
        "kernel_numa_hit_before": kernel_numa_hit(),
    }
    numastat: subprocess.Popen[str] | None = None
    numastat_started = 0.0
    try:
        with holders(ctx, ["--membind", "1"], ["--membind", "0"]) as (bound1, bound0):
            # Both have touched their memory: the machine view, in the background.
            numastat_started = time.monotonic()
            numastat = subprocess.Popen(
                ctx.numarun_argv("numastat", "--json"), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, env=ctx.env(), cwd=ctx.repo,
            )  # fmt: skip
            assert bound1.pid is not None and bound0.pid is not None
            result["membind"] = {
                "node": 1,
                "holder": bound1.info(),
                "placement": _placement_json(ctx, bound1.pid),
                "numastat_p": _numastat_p(ctx, bound1.pid),
            }
            bound1.kill()  # room on node 1 for what migrate moves there
            before = _placement_text(ctx, bound0.pid)
            pid = str(bound0.pid)
            migrate = _numarun_json(ctx, "migrate", pid, "--from", "0", "--to", "1", "--json")
            if (data := migrate["data"]) is not None:
                keep = ("pid", "from_nodes", "to_nodes", "pages_not_moved", "seconds")
                migrate["data"] = {k: data[k] for k in keep} | {
                    "before": _process(data["before"]),
                    "after": _process(data["after"]),
                }
            result["migrate"] = {
                "holder": bound0.info(),
                "placement_before": before,
                "migrate": migrate,
            }
            result["migrate"]["placement_after"] = _placement_text(ctx, bound0.pid)
        spec = f"0-{ctx.nodes - 1}"
        with holders(ctx, ["--interleave", spec]) as (spread,):
            assert spread.pid is not None
            result["interleave"] = {
                "nodes": list(range(ctx.nodes)),
                "holder": spread.info(),
                "placement": _placement_json(ctx, spread.pid),
                "numastat_p": _numastat_p(ctx, spread.pid),
            }
        out, err = numastat.communicate(timeout=120)
        seconds = round(time.monotonic() - numastat_started, 2)
        run = {"argv": ctx.numarun_argv("numastat", "--json"), "rc": numastat.returncode}
        try:
            machine = json.loads(out)
        except ValueError:
            machine = None
        result["numastat"] = {
            "data": None
            if machine is None
            else {
                n: {
                    "counters": sorted(v["counters_pages"]),
                    "numa_hit": v["counters_pages"].get("numa_hit"),
                    "mem_total_kb": v["meminfo_kb"].get("MemTotal"),
                }
                for n, v in machine["nodes"].items()
            },
            "run": _brief(
                run | {"stdout": out[-1500:], "stderr": err, "seconds": seconds},
                stdout=machine is None,
            ),
        }
        result["kernel_numa_hit_after"] = kernel_numa_hit()
    finally:
        if numastat is not None and numastat.poll() is None:
            numastat.kill()
            numastat.wait(10)
    return result
