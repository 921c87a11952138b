"""``numarun watch``: what a user and a script see, on fake trees and on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from numarun import procfs
from numarun.supervisor import state
from tests.conftest import REPO
from tests.fakesysfs import FakeCounters, FakeMachine


def numarun(*args: str, runtime: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run([sys.executable, "-m", "numarun", "watch", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)  # fmt: skip


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return path


def fake_root(tmp_path: Path, *, node0_free_mb: int = 400) -> tuple[Path, FakeCounters]:
    machine = FakeMachine(nodes={0: [0, 1], 1: [2, 3]}, siblings=[[0], [1], [2], [3]])
    root = machine.write(tmp_path / "root")
    counters = FakeCounters(root)
    counters.meminfo(0, 512, node0_free_mb)
    counters.meminfo(1, 512, 400)
    counters.numastat(0, numa_hit=10, numa_miss=1)
    counters.numastat(1, numa_hit=20, numa_miss=2)
    counters.stat({0: (5, 5), 1: (5, 5), 2: (5, 5), 3: (5, 5)})
    counters.vmstat(numa_hint_faults=3, numa_hint_faults_local=2, numa_pages_migrated=1)
    return root, counters


def test_once_json_flags_a_memory_imbalance(tmp_path: Path, runtime: Path) -> None:
    root, _ = fake_root(tmp_path, node0_free_mb=112)  # node 0 78 % used, node 1 22 %
    done = numarun("--once", "--json", "--root", str(root), runtime=runtime)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [n["id"] for n in data["nodes"]] == [0, 1]
    zero = data["nodes"][0]
    assert zero["cpus"] == [0, 1]
    assert zero["memory_total_bytes"] == 512 << 20 and zero["memory_free_bytes"] == 112 << 20
    assert zero["memory_used_bytes"] == 400 << 20
    assert (zero["numa_hit"], zero["numa_miss"]) == (10, 1)
    assert zero["cpu_utilization"] is None  # the fake /proc/stat does not move
    assert data["balancing"]["numa_hint_faults"] == 3
    assert data["balancing"]["delta"]["numa_hint_faults"] == 0
    (issue,) = data["issues"]
    assert issue["kind"] == "memory-imbalance" and issue["nodes"][0] == 0
    assert issue["threshold"] == 0.3 and issue["value"] > 0.3
    assert set(issue) >= {"kind", "message", "nodes", "value", "threshold"}
    assert data["processes"] == []


def test_thresholds_are_options(tmp_path: Path, runtime: Path) -> None:
    root, _ = fake_root(tmp_path, node0_free_mb=112)
    done = numarun("--once", "--json", "--root", str(root), "--memory-imbalance", "70%",
                   runtime=runtime)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["issues"] == []


def test_given_pid_and_job_workers_are_followed(tmp_path: Path, runtime: Path) -> None:
    root, counters = fake_root(tmp_path)
    maps = "7f000000 bind:1 anon=10000 dirty=10000 N0=4000 N1=6000 kernelpagesize_kB=4\n"
    counters.process(4242, maps, cpus=[0, 1, 2, 3], mems=[0, 1])
    worker_maps = "55d0a000 default heap anon=10 dirty=10 N0=10 kernelpagesize_kB=4\n"
    counters.process(5151, worker_maps, cpus=[0, 1], mems=[0, 1])
    directory = runtime / "numarun"
    directory.mkdir(mode=0o700)
    me = os.getpid()
    job = state.JobState(
        job="web", source=None, state="running",
        supervisor=state.SupervisorState(pid=me, start_ticks=procfs.start_ticks(me),
                                         started=time.time()),
        workers=(state.WorkerState(name="web", index=0, node=0, cpus="0-1", memory="local",
                                   argv=("x",), state="running", pid=5151, started=time.time(),
                                   starts=1, last_status=None, failure=None),),
    )  # fmt: skip
    state.write_state(str(directory / "web.json"), job)
    done = numarun("--once", "--json", "--root", str(root), "4242", runtime=runtime)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    worker, given = data["processes"]
    assert (worker["job"], worker["worker"], worker["pid"]) == ("web", "web.0", 5151)
    assert worker["home_nodes"] == [0] and worker["local_ratio"] == 1.0
    assert (given["pid"], given["job"], given["home_nodes"]) == (4242, None, [1])
    assert given["home_source"] == "policy bind:1"
    assert given["node_bytes"] == {"0": 4000 * 4096, "1": 6000 * 4096}
    assert given["local_ratio"] == 0.6
    below = [i for i in data["issues"] if i["kind"] == "below-threshold"]
    assert [(i["pid"], i["nodes"]) for i in below] == [(4242, [0])]
    text = numarun("--once", "--root", str(root), "4242", runtime=runtime)
    assert "web/web.0" in text.stdout and "below-threshold: process 4242" in text.stdout


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--interval", "0"], 2, "--interval '0' is not a positive number of seconds"),
        (["--interval", "soon"], 2, "--interval 'soon' is not a positive number"),
        (["--count", "-1"], 2, "--count '-1' is not a positive whole number"),
        (["--threshold", "1.5"], 2, "--threshold '1.5' is not a fraction between 0 and 1"),
        (["--cpu-imbalance", "x%"], 2, "--cpu-imbalance 'x%' is not a fraction"),
        (["nginx"], 2, "'nginx' is not a process id"),
        (["999999999"], 9, "process 999999999 does not exist"),
    ],
)
def test_refusals_are_one_line_with_a_fix(
    args: list[str], code: int, words: str, runtime: Path
) -> None:
    done = numarun("--once", *args, runtime=runtime)
    assert done.returncode == code
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("numarun: watch: ") and words in line and " — " in line


def test_frames_are_appended_when_not_a_terminal(runtime: Path) -> None:
    done = numarun("--count", "2", "--interval", "0.1", runtime=runtime)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("numarun watch  ") == 2
    assert "\x1b[" not in done.stdout
    assert "node " in done.stdout and "issues:" in done.stdout


def test_a_closed_pipe_ends_it_silently_with_141(runtime: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(runtime)}
    proc = subprocess.Popen([sys.executable, "-m", "numarun", "watch", "--interval", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1)
    proc.stdout.close()
    assert proc.wait(timeout=30) == 141
    assert proc.stderr.read() == b""


def test_ctrl_c_ends_it_cleanly(runtime: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(runtime)}
    proc = subprocess.Popen([sys.executable, "-m", "numarun", "watch", "--interval", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()  # it is watching
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert b"Traceback" not in err and err.strip() == b""


def test_live_once_json_matches_the_kernels_node_files(runtime: Path) -> None:
    from numarun import sysfs

    done = numarun("--once", "--json", str(os.getpid()), runtime=runtime)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    fs = sysfs.Root("/")
    for node in data["nodes"]:
        meminfo = sysfs.node_meminfo(fs, node["id"]) or sysfs.proc_meminfo(fs)
        assert node["memory_total_bytes"] == meminfo["MemTotal"] * 1024
    assert data["interval_seconds"] is not None and 0.2 <= data["interval_seconds"] <= 5
    (mine,) = data["processes"]
    assert mine["pid"] == os.getpid() and mine["judged_bytes"] > 0


def test_the_library_example_prints_and_exports_a_sample(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    prom = tmp_path / "watch.prom"
    done = subprocess.run(
        [sys.executable, str(REPO / "examples/watch_pids.py"), str(os.getpid()), "--count", "1",
         "--prom", str(prom)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"pid {os.getpid()}: ")
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    (up,) = families["numarun_worker_up"].samples
    assert up.labels == {"job": "watch_pids", "worker": str(os.getpid())} and up.value == 1.0
    assert families["numarun_worker_local_ratio"].samples[0].value <= 1.0
