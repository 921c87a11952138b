"""``numarun placement``, ``numastat`` and ``migrate`` on live processes of this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from numarun import procfs

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20

# A child that allocates and touches memory, then waits to be looked at.
CHILD = """
import mmap, sys, time
size = int(sys.argv[1]) << 20
buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for offset in range(0, size, mmap.PAGESIZE):
    buf[offset] = 1
print("ready", flush=True)
time.sleep(120)
"""


def numarun(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    python = sys.executable if user is None else "/usr/bin/python3"
    return subprocess.run(
        [python, "-m", "numarun", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=120,
        user=user,
        check=False,
    )


@pytest.fixture
def child() -> Iterator[tuple[int, str]]:
    marker = f"numarun-test-{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "64", marker], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    try:
        yield proc.pid, marker
    finally:
        proc.kill()
        proc.wait()


def test_json_report_of_a_live_child(child: tuple[int, str]) -> None:
    pid, _ = child
    done = numarun("placement", str(pid), "--json", "--check")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    (proc,) = data["processes"]
    assert proc["pid"] == pid and proc["ok"] is True and proc["status"] == "pass"
    assert proc["kinds"]["anon"]["0"] >= 64 * MB
    assert proc["nodes"]["0"]["judged_share"] == 100.0
    assert proc["verdicts"][0]["policy"] == "default"
    assert proc["threads"] and all(t["node"] == 0 for t in proc["threads"])
    assert proc["cpus_allowed"] == _status(pid, "Cpus_allowed_list")


def _status(pid: int, key: str) -> str:
    return procfs.status(pid)[key]


@pytest.mark.skipif(shutil.which("numastat") is None, reason="numastat (numactl) not installed")
def test_totals_match_numastat(child: tuple[int, str]) -> None:
    pid, _ = child
    ours = json.loads(numarun("placement", str(pid), "--json").stdout)["processes"][0]
    theirs = subprocess.run(
        ["numastat", "-p", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    total_row = [line for line in theirs.splitlines() if line.startswith("Total")][-1]
    numbers = [float(x) for x in re.findall(r"[\d.]+", total_row)]
    # numastat: Node 0 ... Total, in MB with two decimals
    assert abs(numbers[-1] - ours["total_bytes"] / MB) < 0.1
    assert abs(numbers[0] - ours["nodes"]["0"]["bytes"] / MB) < 0.1


def test_table_by_name_pattern(child: tuple[int, str]) -> None:
    pid, marker = child
    done = numarun("placement", marker)
    assert done.returncode == 0, done.stderr
    assert f"PID {pid} (python" in done.stdout
    assert "PASS  default" in done.stdout
    assert "node 0" in done.stdout and "100.0%" in done.stdout


def test_no_match_is_one_line_exit_9() -> None:
    done = numarun("placement", f"no-such-process-{uuid.uuid4().hex}")
    assert done.returncode == 9
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("numarun: no process matches")


def test_gone_process_is_one_line_exit_9() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    done = numarun("placement", str(proc.pid))
    assert done.returncode == 9
    assert (
        done.stderr
        == f"numarun: process {proc.pid} does not exist (it may have exited) — check the PID\n"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run numarun as another user")
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3")
def test_other_users_process_is_one_line_exit_9() -> None:
    # numarun runs as nobody and looks at this (root's) test process.
    done = numarun("placement", str(os.getpid()), user=65534)
    assert done.returncode == 9, done.stderr
    assert done.stderr.startswith(f"numarun: process {os.getpid()} belongs to another user")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_check_fails_with_exit_10(
    child: tuple[int, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # One node cannot misplace anything, so feed the command a numa_maps of a bound process
    # with pages off its node.
    from numarun import numamaps
    from numarun.__main__ import main

    pid, _ = child
    text = b"7f00 bind:1 anon=300 dirty=300 N0=100 N1=200 kernelpagesize_kB=4\n"
    fake = tmp_path / "numa_maps"
    fake.write_bytes(text)

    def numa_maps_chunks(pid: int, proc_root: str = "/proc", ahead: bool = False) -> object:
        return procfs.NumaMapsReader(pid, os.open(fake, os.O_RDONLY), None)

    monkeypatch.setattr(procfs, "numa_maps_chunks", numa_maps_chunks)
    assert numamaps.summarize(text).total_bytes == 300 * 4096
    assert main(["placement", str(pid), "--check"]) == 10
    out, err = capsys.readouterr()
    assert "FAIL  bind:1: 400 kB of 1.2 MB on node 0, outside bind to node 1" in out
    assert err.startswith(f"numarun: placement check failed for PID {pid}")
    assert err.count("\n") == 1
    # Without --check the same report exits 0.
    assert main(["placement", str(pid)]) == 0


def test_watch_reports_repeatedly(child: tuple[int, str]) -> None:
    pid, _ = child
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "numarun", "placement", str(pid), "--json", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    proc.kill()
    proc.wait()
    rounds = [json.loads(line) for line in lines]
    assert rounds[0]["time"] < rounds[1]["time"]
    assert all(r["processes"][0]["pid"] == pid for r in rounds)


def test_numastat_machine_view() -> None:
    done = numarun("numastat", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    meminfo = Path("/sys/devices/system/node/node0/meminfo").read_text()
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    assert data["nodes"]["0"]["meminfo_kb"]["MemTotal"] == total_kb
    assert set(data["nodes"]["0"]["counters_pages"]) >= {"numa_hit", "local_node", "other_node"}
    table = numarun("numastat")
    assert table.returncode == 0 and "numa_hit" in table.stdout and "MemFree" in table.stdout


def test_migrate_on_one_node(child: tuple[int, str]) -> None:
    pid, _ = child
    done = numarun("migrate", str(pid), "--to", "0")
    assert done.returncode == 0, done.stderr
    assert "nothing to move" in done.stdout
    bad = numarun("migrate", str(pid), "--to", "7")
    assert bad.returncode == 4 and bad.stderr.count("\n") == 1


def test_placement_is_reachable_without_typer(child: tuple[int, str]) -> None:
    pid, _ = child
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "numarun",
            "placement",
            str(pid),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert not re.search(r"\| +(typer|click|pydantic)$", done.stderr, re.M)


def test_thread_cpus_and_allowed_sets() -> None:
    tids = procfs.thread_cpus(os.getpid())
    assert os.getpid() in tids
    assert all(cpu in range(os.cpu_count() or 1) for cpu in tids.values())
    cpus, mems = procfs.allowed(os.getpid())
    assert cpus == frozenset(os.sched_getaffinity(0))
    assert 0 in mems


def test_a_refusal_after_the_read_ahead_leaves_no_copier(
    child: tuple[int, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # numa_maps is being copied (dd) from before the topology is read; a topology that
    # cannot be read is refused with the copier gone, not left blocked on its pipe.
    import psutil

    from numarun.__main__ import main

    pid, _ = child
    before = [c.pid for c in psutil.Process().children()]
    assert main(["placement", str(pid), "--root", "/nonexistent"]) == 8
    assert capsys.readouterr().err.startswith("numarun: no CPUs under /nonexistent/sys")
    assert [c.pid for c in psutil.Process().children()] == before
