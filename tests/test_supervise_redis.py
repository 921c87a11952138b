"""A real workload: ``examples/redis-per-node.toml`` under ``numarun run``.

One redis-server per node, each on port 700N: keys are written and read on every port,
each server's CPU affinity and memory policy are checked in ``/proc/PID/status`` and
``numa_maps`` against the plan, then the job is stopped and nothing of it may be left.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from numarun.cpulist import format_list
from tests.test_supervise_cli import REPO, Job, _env, alive

EXAMPLE = REPO / "examples" / "redis-per-node.toml"

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")),
    reason="redis-server and redis-cli are not installed (apt-get install redis-server)",
)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _wait_ping(port: int, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, timeout=10
        )
        if done.stdout.strip() == "PONG":
            return
        time.sleep(0.05)
    raise AssertionError(f"redis on port {port} did not answer")


def test_redis_per_node_runs_placed_serves_keys_and_leaves_nothing(tmp_path: Path) -> None:
    planned = json.loads(
        subprocess.run(
            [sys.executable, "-m", "numarun", "plan", str(EXAMPLE), "--json"],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    workers = planned["processes"][0]["workers"]
    ports = [7000 + w["index"] for w in workers]
    busy = [p for p in ports if not _port_free(p)]
    if busy:
        pytest.skip(f"ports {busy} are taken on this machine")
    job = Job(tmp_path, EXAMPLE.read_text(), name="redis-per-node")
    try:
        state = job.wait_running(len(workers))
        family = job.family()
        for plan, port, running in zip(workers, ports, state["workers"], strict=True):  # type: ignore[call-overload]
            _wait_ping(port)
            assert _cli(port, "set", f"key{port}", f"value on node {plan['node']}") == "OK"
            assert _cli(port, "get", f"key{port}") == f"value on node {plan['node']}"
            pid = running["pid"]
            proc = psutil.Process(pid)
            assert proc.name() == "redis-server"
            status = dict(
                line.split(":\t", 1)
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ":\t" in line
            )
            assert status["Cpus_allowed_list"].strip() == plan["cpu_list"]
            # Every thread redis started since has the same affinity.
            for thread in Path(f"/proc/{pid}/task").iterdir():
                tstatus = (thread / "status").read_text()
                assert f"Cpus_allowed_list:\t{plan['cpu_list']}\n" in tstatus
            want = "bind:" + format_list(plan["memory"]["nodes"])
            policies = {
                line.split()[1] for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines()
            }
            # Every mapping, the heap its first allocation made included, is under the bind.
            assert policies == {want}
            heap = [
                line
                for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines()
                if " heap" in line or " anon=" in line
            ]
            assert heap, "redis has anonymous memory"
            nodes = set(plan["memory"]["nodes"])
            for line in heap:
                for word in line.split():
                    if word.startswith("N") and "=" in word:
                        assert int(word[1 : word.index("=")]) in nodes, line
        shown = job.cli("status", "redis-per-node")
        assert shown.returncode == 0
        assert all(f" {w['pid']} " in shown.stdout for w in state["workers"])  # type: ignore[attr-defined]
        done = job.cli("stop", "redis-per-node")
        assert done.returncode == 0, done.stderr
        code, out, err = job.finish()
        assert code == 0, err
        assert "Ready to accept connections" in out
        assert alive(family) == []
        assert all(_port_free(p) for p in ports)
        assert not job.state.exists()
    finally:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


def test_the_orchestration_example_checks_every_server_and_stops(tmp_path: Path) -> None:
    if not _port_free(7000):
        pytest.skip("port 7000 is taken on this machine")
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "orchestrate.py")],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "redis.0 serves on 7000: pid " in done.stdout
    assert ", policy bind:0" in done.stdout
    assert done.stdout.strip().endswith("job ended: every worker serves: check done; exit code 0")
    assert _port_free(7000)
