"""``numarun run``, ``status`` and ``stop`` as an operator uses them, and what they leave.

Each test runs ``python -m numarun run`` as a separate process with its own runtime
directory (``XDG_RUNTIME_DIR``), then checks with psutil that no process of the job is
left: after SIGTERM, after SIGINT twice, after ``numarun stop``, and after SIGKILL of the
supervisor itself (the guardian's case).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent

# Each worker starts two grandchildren that would outlive it if nothing killed them.
FAMILY = """
[[process]]
name = "fam"
shell = true
command = "sleep 300 & sleep 301 & echo ready {worker}; wait"
workers = 2
restart = "always"
stop_timeout = 2
"""


def _env(runtime: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = str(REPO)
    return env


class Job:
    def __init__(self, tmp: Path, text: str, name: str = "job") -> None:
        self.runtime = tmp / "rt"
        self.runtime.mkdir(mode=0o700)
        self.spec = tmp / f"{name}.toml"
        self.spec.write_text(text)
        self.name = name
        self.state = self.runtime / "numarun" / f"{name}.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "numarun", "run", str(self.spec)],
            env=_env(self.runtime),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "numarun", *args],
            env=_env(self.runtime),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def wait_running(self, workers: int, timeout: float = 20.0) -> dict[str, object]:
        """Until the state file lists ``workers`` running workers whose output has begun."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                _out, err = self.proc.communicate()
                raise AssertionError(f"numarun run ended early ({self.proc.returncode}): {err}")
            try:
                data = json.loads(self.state.read_text())
            except (OSError, ValueError):
                data = None
            if data and sum(1 for w in data["workers"] if w["state"] == "running") == workers:
                return data  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError("the job did not come up")

    def family(self) -> list[psutil.Process]:
        """Every process below the supervisor (workers, grandchildren, the guardian)."""
        return psutil.Process(self.proc.pid).children(recursive=True)

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


@pytest.fixture
def cleanup() -> Iterator[list[Job]]:
    jobs: list[Job] = []
    yield jobs
    for job in jobs:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


def alive(procs: list[psutil.Process], wait: float = 5.0) -> list[psutil.Process]:
    """Those of ``procs`` still running (zombies awaiting init count as gone)."""
    deadline = time.monotonic() + wait
    while True:
        left = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except psutil.NoSuchProcess:
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _wait_family(job: Job, count: int) -> list[psutil.Process]:
    # 2 workers x (sh + 2 sleeps) + the guardian
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        family = job.family()
        if len([p for p in family if p.name() == "sleep"]) == count:
            return family
        time.sleep(0.05)
    raise AssertionError(f"expected {count} sleeps, found {[p.name() for p in job.family()]}")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "stop"])
def test_stopping_the_job_leaves_no_process_of_it(
    tmp_path: Path, cleanup: list[Job], how: str
) -> None:
    job = Job(tmp_path, FAMILY)
    cleanup.append(job)
    job.wait_running(2)
    family = _wait_family(job, 4)
    assert len(family) == 7  # 2 shells, 4 sleeps, the guardian
    if how == "stop":
        done = job.cli("stop", "job")
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == "numarun: job job stopped"
    else:
        job.proc.send_signal(getattr(signal, how))
    code, out, err = job.finish()
    assert code == 0, err
    assert alive(family) == []
    assert not job.state.exists()
    assert "ready 0" in out and "ready 1" in out
    assert f"stopping the job ({'SIGTERM' if how == 'stop' else how})" in err


def test_sigkill_to_the_supervisor_leaves_no_process_of_the_job(
    tmp_path: Path, cleanup: list[Job]
) -> None:
    job = Job(tmp_path, FAMILY)
    cleanup.append(job)
    job.wait_running(2)
    family = _wait_family(job, 4)
    job.proc.kill()
    job.proc.wait()
    # The guardian saw the supervisor's end of its pipe close: it kills every worker's
    # process group (grandchildren included), removes the state file, and exits itself.
    assert alive(family) == []
    deadline = time.monotonic() + 5
    while job.state.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not job.state.exists()


def test_a_second_ctrl_c_kills_at_once(tmp_path: Path, cleanup: list[Job]) -> None:
    stubborn = """
[[process]]
name = "stubborn"
shell = true
command = "trap '' TERM; echo ready; sleep 300 & wait; wait"
workers = 1
stop_timeout = 120
"""
    job = Job(tmp_path, stubborn, name="stubborn")
    cleanup.append(job)
    job.wait_running(1)
    family = _wait_family(job, 1)
    time.sleep(0.2)  # let the shell set its trap
    job.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert job.proc.poll() is None  # still waiting out the 120 s stop_timeout
    t0 = time.monotonic()
    job.proc.send_signal(signal.SIGINT)
    code, _out, err = job.finish(timeout=10)
    assert time.monotonic() - t0 < 5
    assert code == 0, err
    assert "SIGINT again: killing every worker now" in err
    assert alive(family) == []


def test_failed_workers_end_the_run_with_11_and_a_one_line_summary(
    tmp_path: Path, cleanup: list[Job]
) -> None:
    spec = """
[[process]]
name = "dying"
command = ["sh", "-c", "echo about to fail; exit 7"]
workers = 1
restart = "on-failure"
backoff = { initial = 0.01, max = 0.05, jitter = 0 }
crash_loop = { limit = 3, window = 60 }
"""
    job = Job(tmp_path, spec, name="dying")
    cleanup.append(job)
    code, out, err = job.finish()
    assert code == 11
    assert out.count("about to fail") == 3
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "numarun: 1 worker failed: dying.0 exit status 7, crash loop: 3 exits within 60 s"
    )
    assert " — " in last
    assert "Traceback" not in err
    assert "dying.0: last output: about to fail" in err


def test_a_missing_command_is_refused_with_127_before_anything_starts(
    tmp_path: Path, cleanup: list[Job]
) -> None:
    spec = """
[[process]]
name = "nope"
command = ["/no/such/program"]
workers = 1
"""
    job = Job(tmp_path, spec, name="nope")
    cleanup.append(job)
    code, _out, err = job.finish()
    assert code == 127
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"numarun: {job.spec}: nope.0: /no/such/program: command not found")


def test_status_lists_workers_with_placement_and_verdict(
    tmp_path: Path, cleanup: list[Job]
) -> None:
    spec = """
[[process]]
name = "svc"
command = ["sleep", "300"]
workers = 2
policy = "bind"
"""
    job = Job(tmp_path, spec, name="svc")
    cleanup.append(job)
    data = job.wait_running(2)
    pids = [w["pid"] for w in data["workers"]]  # type: ignore[attr-defined]
    shown = job.cli("status")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"job svc: 2/2 running, running, supervisor pid {job.proc.pid}")
    header = lines[1].split()
    assert header == ["worker", "state", "pid", "up", "starts", "node", "cpus", "memory", "verdict"]
    for i, pid in enumerate(pids):
        row = lines[2 + i].split()
        assert row[0] == f"svc.{i}" and row[1] == "running" and row[2] == str(pid)
        assert row[5] == "0" and row[7] == "bind:0"
        assert row[8] in ("pass", "skip")
        cpus = psutil.Process(pid).cpu_affinity()
        from numarun.cpulist import format_list

        assert row[6] == format_list(cpus)
    as_json = json.loads(job.cli("status", "svc", "--json").stdout)
    assert [w["pid"] for w in as_json[0]["workers"]] == pids
    missing = job.cli("status", "other")
    assert missing.returncode == 9
    assert missing.stderr.startswith("numarun: no job named other is running (running: svc)")
    job.proc.send_signal(signal.SIGTERM)
    assert job.finish()[0] == 0
    assert job.cli("status").stdout.strip() == "no numarun jobs are running"
    assert job.cli("stop", "svc").returncode == 9


def test_status_notes_a_workers_memory_off_its_devices_node(
    tmp_path: Path, cleanup: list[Job]
) -> None:
    # What numarun tells a worker near a device, given by hand: a GPU on a node this machine
    # lacks, so every page is elsewhere (a note; the verdict stays the memory policy's).
    spec = """
[[process]]
name = "feed"
shell = true
command = "python3 -c 'b = bytearray(8 << 20); print(1, flush=True); import time; time.sleep(300)'"
env = { NUMARUN_DEVICE = "gpu 5 (0000:ca:00.0)", NUMARUN_DEVICE_NODE = "7" }
"""
    job = Job(tmp_path, spec, name="feed")
    cleanup.append(job)
    job.wait_running(1)  # its output has begun: the 8 MiB are touched
    lines = job.cli("status").stdout.splitlines()
    assert lines[2].split()[-1] in ("pass", "skip")
    assert lines[3].startswith("  feed.0 note: 100% of the memory is not on node 7 of gpu 5")
    (shown,) = json.loads(job.cli("status", "--json").stdout)
    assert shown["workers"][0]["device_note"].startswith("100% of the memory is not on node 7")
    assert (
        "device_note"
        not in json.loads(job.cli("status", "--json", "--no-verdict").stdout)[0]["workers"][0]
    )


# A database that takes two seconds to flush after SIGTERM, then exits cleanly.
FLUSHING = """
[[process]]
name = "db"
shell = true
command = "trap 'sleep 2; echo flushed; exit 0' TERM; echo ready; while :; do sleep 0.1; done"
workers = 1
stop_timeout = 120
"""


def test_stop_again_keeps_waiting_for_a_flushing_worker_and_never_kills_it(
    tmp_path: Path, cleanup: list[Job]
) -> None:
    job = Job(tmp_path, FLUSHING, name="db")
    cleanup.append(job)
    job.wait_running(1)
    time.sleep(0.3)  # let the shell set its trap
    first = job.cli("stop", "--timeout", "0.5", "db")
    assert first.returncode == 15  # still stopping: not "workers failed" (11)
    assert "still stopping after 0.5 s" in first.stderr
    second = job.cli("stop", "db")  # what an operator types next
    assert second.returncode == 0, second.stderr
    assert "numarun: job db is already stopping; waiting up to 60 s more for db.0" in second.stderr
    assert second.stderr.strip().splitlines()[-1] == "numarun: job db stopped"
    code, out, err = job.finish()
    assert code == 0, err
    assert "flushed" in out  # it finished its flush: nothing killed it
    assert "SIGKILL" not in err and "killing" not in err
    assert "SIGTERM again: still stopping, waiting for db.0 to exit" in err


def test_stop_now_kills_a_stubborn_job_at_once(tmp_path: Path, cleanup: list[Job]) -> None:
    job = Job(tmp_path, FLUSHING.replace("sleep 2", "sleep 300"), name="db")
    cleanup.append(job)
    job.wait_running(1)
    time.sleep(0.3)  # let the shell set its trap
    family = job.family()
    t0 = time.monotonic()
    done = job.cli("stop", "--now", "db")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 10
    code, _out, err = job.finish()
    assert code == 0 and "SIGQUIT: killing every worker now" in err
    assert alive(family) == []
