"""numarun.metrics: the exposition text read back with prometheus_client's own parser, the
textfile written atomically, and /metrics served over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from numarun import metrics
from numarun.metrics import JobMetrics, MetricsServer, WorkerMetrics, render, write_textfile
from numarun.watch import Locality, NodeSample
from tests.conftest import REPO

GiB = 1 << 30


def sample() -> JobMetrics:
    home = Locality(pid=10, home_nodes=(0,), node_bytes={0: 3 * GiB, 1: GiB},
                    judged_bytes=4 * GiB, home_bytes=3 * GiB, local_ratio=0.75)  # fmt: skip
    nodes = (
        NodeSample(id=0, cpus=(0, 1), cpu_utilization=0.5, memory_total_bytes=8 * GiB,
                   memory_free_bytes=2 * GiB, memory_used_bytes=6 * GiB, numa_hit=1),
        NodeSample(id=1, cpus=(2, 3), cpu_utilization=None, memory_total_bytes=8 * GiB,
                   memory_free_bytes=7 * GiB, memory_used_bytes=GiB),
    )  # fmt: skip
    workers = (
        WorkerMetrics(worker="web.0", up=True, restarts=2, locality=home, verdict="fail",
                      remediations=3),
        WorkerMetrics(worker="web.1", up=False, restarts=0, locality=None, verdict=None),
    )  # fmt: skip
    return JobMetrics(job="web", workers=workers, nodes=nodes)


def series(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_render_has_exactly_the_fixed_names_and_labels() -> None:
    found = series(render(sample()))
    assert {name for name, _ in found} == set(metrics.NAMES)
    w0, w1 = {"job": "web", "worker": "web.0"}, {"job": "web", "worker": "web.1"}
    assert found[key("numarun_worker_up", **w0)] == 1.0
    assert found[key("numarun_worker_up", **w1)] == 0.0
    assert found[key("numarun_worker_restarts_total", **w0)] == 2.0
    assert found[key("numarun_worker_local_ratio", **w0)] == 0.75
    assert found[key("numarun_worker_node_bytes", node="0", **w0)] == 3 * GiB
    assert found[key("numarun_worker_node_bytes", node="1", **w0)] == GiB
    assert found[key("numarun_worker_verdict", **w0)] == 0.0
    assert found[key("numarun_remediations_total", **w0)] == 3.0
    assert found[key("numarun_node_memory_free_bytes", job="web", node="1")] == 7 * GiB
    assert found[key("numarun_node_cpu_utilization", job="web", node="0")] == 0.5


def test_what_is_unknown_is_left_out_not_faked() -> None:
    found = series(render(sample()))
    w1 = {"job": "web", "worker": "web.1"}
    assert key("numarun_worker_local_ratio", **w1) not in found
    assert key("numarun_worker_verdict", **w1) not in found
    assert not any(n == "numarun_worker_node_bytes" and ("worker", "web.1") in ls
                   for n, ls in found)  # fmt: skip
    assert key("numarun_node_cpu_utilization", job="web", node="1") not in found


def test_counters_are_typed_as_counters_and_nothing_else_is_exported() -> None:
    text = render(sample()).decode()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["numarun_worker_restarts"] == "counter"
    assert families["numarun_remediations"] == "counter"
    assert families["numarun_worker_up"] == "gauge"
    assert "process_" not in text and "python_" not in text  # none of the client's own
    assert "_created" not in text


def test_a_passing_verdict_is_one() -> None:
    job = sample()
    passing = job.replace(workers=(job.workers[0].replace(verdict="pass"),))
    found = series(render(passing))
    assert found[key("numarun_worker_verdict", job="web", worker="web.0")] == 1.0


def test_write_textfile_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "numarun.prom"
    write_textfile(str(path), sample())
    assert path.read_bytes() == render(sample())
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["numarun.prom"]  # no temporary left


def test_write_textfile_never_shows_a_partial_file(tmp_path: Path) -> None:
    """A reader polling the path while it is rewritten sees whole files only."""
    path = tmp_path / "numarun.prom"
    big = sample().replace(workers=tuple(
        WorkerMetrics(worker=f"w.{i}", up=True, restarts=i) for i in range(2000)))  # fmt: skip
    small = sample()
    wholes = {render(big), render(small)}
    write_textfile(str(path), small)
    seen: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(path.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(40):
            write_textfile(str(path), big if i % 2 else small)
    finally:
        done.set()
        reader.join()
    assert seen and all(text in wholes for text in seen)
    # the write goes through a rename: the inode changes every time
    before = os.stat(path).st_ino
    write_textfile(str(path), small)
    assert os.stat(path).st_ino != before


def test_write_textfile_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "numarun.prom"
    write_textfile(str(path), sample())
    (tmp_path / "blocked").mkdir()
    with pytest.raises(OSError):
        write_textfile(str(tmp_path / "blocked"), sample())  # a directory is in the way
    assert path.read_bytes() == render(sample())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "numarun.prom"]


def test_server_serves_the_latest_update() -> None:
    server = MetricsServer("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200
            assert series(reply.read()) == {}  # nothing sampled yet
        server.update(sample())
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert series(reply.read()) == series(render(sample()))
    finally:
        server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_importing_numarun_metrics_or_watch_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, numarun.metrics, numarun.watch, numarun.cli\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, check=True)  # fmt: skip
    assert done.stdout.strip() == "False"
