"""``numarun run JOB --metrics FILE --metrics-listen HOST:PORT`` on this machine (issue 14).

A real job with a ``[watch]`` table samples its workers, writes the textfile after each
sample and serves the same series over HTTP; refusals come before anything starts.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from numarun.errors import UsageError
from numarun.supervisor.export import parse_listen
from tests.test_supervise_cli import Job, _env

# The worker: 24 MiB, every page written, then sleep.
CODE = "b = bytearray(24 << 20)\nb[::4096] = bytes(6144)\nprint('ready', flush=True)\n"
CODE += "import time\ntime.sleep(300)"

FILL = """
[watch]
interval = 0.2

[[process]]
name = "fill"
command = ["{python}", "-I", "-S", "-c", {code}]
workers = 1
cpus_per_worker = 1
policy = "local"
""".replace("{code}", json.dumps(CODE))


class MetricsJob(Job):
    """test_supervise_cli's job, run with extra ``numarun run`` options."""

    def __init__(self, tmp: Path, text: str, *args: str) -> None:
        self.runtime = tmp / "rt"
        self.runtime.mkdir(mode=0o700)
        self.spec = tmp / "fill.toml"
        self.spec.write_text(text)
        self.name = "fill"
        self.state = self.runtime / "numarun" / "fill.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "numarun", "run", str(self.spec), *args],
            env=_env(self.runtime),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _series(text: str) -> dict[str, float]:
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def _judged(text: str) -> float:
    series = _series(text)
    return sum(v for k, v in series.items() if k.startswith("numarun_worker_node_bytes"))


def _until(read: object, want: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = read()  # type: ignore[operator]
        except OSError:
            text = ""
        if want in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"no {want} within {timeout} s: {text!r}")


def test_metrics_file_and_endpoint_after_samples(tmp_path: Path) -> None:
    prom = tmp_path / "fill.prom"
    port = _free_port()
    spec = FILL.replace("{python}", sys.executable)
    job = MetricsJob(tmp_path, spec, "--metrics", str(prom), "--metrics-listen", f":{port}")
    try:
        job.wait_running(1)
        text = _until(prom.read_text, "numarun_worker_local_ratio{")
        # The first sample may come before the worker has written its pages.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _judged(text) < 24 << 20:
            time.sleep(0.2)
            text = prom.read_text()
        series = _series(text)
        assert series['numarun_worker_up{job="fill",worker="fill.0"}'] == 1.0
        assert series['numarun_worker_restarts_total{job="fill",worker="fill.0"}'] == 0.0
        assert series['numarun_remediations_total{job="fill",worker="fill.0"}'] == 0.0
        ratio = series['numarun_worker_local_ratio{job="fill",worker="fill.0"}']
        assert 0.0 < ratio <= 1.0
        on_nodes = {k: v for k, v in series.items() if k.startswith("numarun_worker_node_bytes")}
        assert sum(on_nodes.values()) >= 24 << 20  # the worker's bytearray, at least
        assert any(k.startswith("numarun_node_memory_free_bytes{") for k in series)
        url = f"http://127.0.0.1:{port}/metrics"
        served = _until(lambda: urllib.request.urlopen(url, timeout=5).read().decode(), "ratio{")
        assert 'numarun_worker_up{job="fill",worker="fill.0"} 1.0' in served
        assert not [k for k in _series(served) if not k.startswith("numarun_")]  # nothing else
        assert list(tmp_path.glob(".fill.prom.*")) == []  # no temporary file left behind
    finally:
        job.proc.send_signal(signal.SIGTERM)
        code, _out, err = job.finish()
    assert code == 0, err


def test_metrics_in_a_missing_directory_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    spec = FILL.replace("{python}", sys.executable)
    job = MetricsJob(tmp_path, spec, "--metrics", str(tmp_path / "no" / "fill.prom"))
    code, _out, err = job.finish()
    assert code == UsageError.exit_code
    assert err.splitlines()[-1].startswith(
        f"numarun: --metrics {tmp_path}/no/fill.prom: the directory {tmp_path}/no does not exist"
    )
    assert "ready" not in _out


@pytest.mark.parametrize(
    ("text", "want"),
    [(":9464", ("127.0.0.1", 9464)), ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9", ("::1", 9))],
)
def test_listen_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["9464", ":99999", "host:port", "::1:9"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_listen(text)
    assert caught.value.message.startswith(f"--metrics-listen {text}: ")


def test_the_plain_supervisor_never_imports_the_metrics() -> None:
    code = (
        "import sys; import numarun.commands.run, numarun.supervisor.manager, "
        "numarun.supervisor.keeper; "
        "print(sorted(m for m in sys.modules if 'prometheus' in m or m == 'numarun.metrics'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
