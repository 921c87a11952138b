"""Prometheus metrics of a supervised job: the text exposition format, a textfile, /metrics.

The names and labels are fixed, so dashboards can rely on them (issue 14); nothing of
node_exporter's own host series is repeated:

========================================  ===========================  ===================
name                                      labels                       value
========================================  ===========================  ===================
``numarun_worker_up``                     job, worker                  1 running, 0 not
``numarun_worker_restarts_total``         job, worker                  restarts (counter)
``numarun_worker_local_ratio``            job, worker                  judged share at home
``numarun_worker_node_bytes``             job, worker, node            judged bytes on node
``numarun_worker_verdict``                job, worker                  1 pass, 0 fail
``numarun_remediations_total``            job, worker                  migrations (counter)
``numarun_node_memory_free_bytes``        job, node                    free memory
``numarun_node_cpu_utilization``          job, node                    busy share, 0-1
========================================  ===========================  ===================

A series with nothing to say is left out rather than faked: no locality sample yet (no
``local_ratio`` or ``node_bytes``), no verdict, no utilisation on the first sample.

The format and the HTTP server are the Prometheus project's own ``prometheus_client``,
imported only when metrics are asked for (:func:`render`, :func:`write_textfile`,
:class:`MetricsServer`): the plain supervisor, the prefix launcher and ``topology`` never
pay for it. Each call renders from a private registry holding only numarun's collector, so
none of the client's default process or platform series appear.
"""

from __future__ import annotations

import os
import threading

from numarun.errors import NumarunError
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from numarun.watch.locality import Locality
    from numarun.watch.sample import NodeSample

NAMES: tuple[str, ...] = (
    "numarun_worker_up",
    "numarun_worker_restarts_total",
    "numarun_worker_local_ratio",
    "numarun_worker_node_bytes",
    "numarun_worker_verdict",
    "numarun_remediations_total",
    "numarun_node_memory_free_bytes",
    "numarun_node_cpu_utilization",
)


class WorkerMetrics(Value):
    """What one worker's series say."""

    worker: str  # the label: "web.0"
    up: bool
    restarts: int = 0
    locality: Locality | None = None
    verdict: str | None = None  # "pass" | "fail" | None (not judged)
    remediations: int = 0  # migrations done for it


class JobMetrics(Value):
    """One job's metrics at one sample."""

    job: str
    workers: tuple[WorkerMetrics, ...] = ()
    nodes: tuple[NodeSample, ...] = ()


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:  # pragma: no cover - a dependency; absent only in a broken install
        raise NumarunError(
            "metrics need the prometheus_client package, which is not installed",
            "pip install prometheus_client (a dependency of numarun)",
        ) from None
    return prometheus_client


def _families(metrics: JobMetrics) -> Iterator[Any]:
    """The metric families of ``metrics``, as prometheus_client's collectors yield them."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    job = metrics.job
    wl = ["job", "worker"]
    up = GaugeMetricFamily("numarun_worker_up", "1 while the worker runs, 0 if not", labels=wl)
    restarts = CounterMetricFamily(
        "numarun_worker_restarts", "Restarts of the worker since the job started", labels=wl
    )
    ratio = GaugeMetricFamily(
        "numarun_worker_local_ratio",
        "Share of the worker's judged memory (anon, heap, stack, shm, huge) on its policy's nodes",
        labels=wl,
    )
    node_bytes = GaugeMetricFamily(
        "numarun_worker_node_bytes",
        "The worker's judged memory on each node, in bytes",
        labels=[*wl, "node"],
    )
    verdict = GaugeMetricFamily(
        "numarun_worker_verdict", "Placement verdict: 1 pass, 0 fail", labels=wl
    )
    remediations = CounterMetricFamily(
        "numarun_remediations", "Page migrations done to bring the worker's memory home",
        labels=wl,
    )  # fmt: skip
    for w in metrics.workers:
        labels = [job, w.worker]
        up.add_metric(labels, 1.0 if w.up else 0.0)
        restarts.add_metric(labels, float(w.restarts))
        remediations.add_metric(labels, float(w.remediations))
        if w.verdict in ("pass", "fail"):
            verdict.add_metric(labels, 1.0 if w.verdict == "pass" else 0.0)
        if w.locality is not None:
            if w.locality.local_ratio is not None:
                ratio.add_metric(labels, w.locality.local_ratio)
            for node, size in sorted(w.locality.node_bytes.items()):
                node_bytes.add_metric([*labels, str(node)], float(size))
    free = GaugeMetricFamily(
        "numarun_node_memory_free_bytes", "Free memory of the node, in bytes",
        labels=["job", "node"],
    )  # fmt: skip
    busy = GaugeMetricFamily(
        "numarun_node_cpu_utilization",
        "Busy share of the node's CPUs since the previous sample (0-1)",
        labels=["job", "node"],
    )
    for n in metrics.nodes:
        free.add_metric([job, str(n.id)], float(n.memory_free_bytes))
        if n.cpu_utilization is not None:
            busy.add_metric([job, str(n.id)], n.cpu_utilization)
    yield from (up, restarts, ratio, node_bytes, verdict, remediations, free, busy)


class _Collector:
    """A prometheus_client collector that yields the latest :class:`JobMetrics`."""

    def __init__(self, metrics: JobMetrics | None = None) -> None:
        self._lock = threading.Lock()
        self._metrics = metrics

    def update(self, metrics: JobMetrics) -> None:
        with self._lock:
            self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        with self._lock:
            metrics = self._metrics
        if metrics is not None:
            yield from _families(metrics)


def _registry(collector: _Collector) -> Any:
    client = _client()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(metrics: JobMetrics) -> bytes:
    """``metrics`` in the Prometheus text exposition format (version 0.0.4)."""
    data: bytes = _client().generate_latest(_registry(_Collector(metrics)))
    return data


def write_textfile(path: str, metrics: JobMetrics) -> None:
    """Write ``metrics`` to ``path`` atomically, as node_exporter's textfile collector wants.

    The text goes to a hidden temporary file in the same directory (the collector reads
    only ``*.prom``), is flushed to disk, made readable (0644: the collector often runs as
    another user) and renamed over ``path``: a reader sees the old file or the new one,
    never a part. Raises :class:`OSError` as the filesystem gives it.
    """
    import tempfile

    data = render(metrics)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


class MetricsServer:
    """Serves ``/metrics`` over HTTP on a daemon thread; :meth:`update` sets what it says.

    ``port`` 0 takes a free port (read :attr:`port`). Which address to listen on is the
    caller's choice: numarun's command line defaults to 127.0.0.1.
    """

    def __init__(self, host: str, port: int) -> None:
        client = _client()
        self._collector = _Collector()
        self._server, self._thread = client.start_http_server(
            port, addr=host, registry=_registry(self._collector)
        )
        self.host = host
        self.port: int = self._server.server_port

    def update(self, metrics: JobMetrics) -> None:
        self._collector.update(metrics)

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
