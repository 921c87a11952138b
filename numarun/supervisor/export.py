"""A supervised job's metrics, published after every sample: the Prometheus textfile, the
``/metrics`` server, or both (``numarun run --metrics FILE``, ``--metrics-listen HOST:PORT``).

Here rather than in the CLI because the lean supervisor (:mod:`numarun.supervisor.handoff`)
publishes them, and it imports nothing of the command line. :mod:`numarun.metrics` (and with
it prometheus_client) is imported only when metrics are asked for.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from numarun.metrics import JobMetrics, MetricsServer
    from numarun.supervisor.manager import Supervisor

# After a sample, and when a worker goes up or down between samples.
PUBLISH_ON = frozenset({"sampled", "spawned", "exited"})


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (127.0.0.1) or ``[::1]:PORT`` as (host, port)."""
    from numarun import refusals

    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise refusals.metrics_listen(text, "not [HOST]:PORT with a port 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise refusals.metrics_listen(text, "an IPv6 address goes in brackets, [::1]:PORT")
    return host or "127.0.0.1", int(port)


def open_server(text: str) -> MetricsServer:
    from numarun import refusals
    from numarun.metrics import MetricsServer

    host, port = parse_listen(text)
    try:
        return MetricsServer(host, port)
    except OSError as err:
        raise refusals.metrics_listen(text, f"cannot listen there: {err.strerror or err}") from None


def check_file(path: str) -> None:
    """Refuse, before anything starts, a metrics file that could never be written."""
    from numarun import refusals

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise refusals.metrics_file(path, f"the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise refusals.metrics_file(path, f"the directory {directory} is not writable")
    if os.path.isdir(path):
        raise refusals.metrics_file(path, "is a directory")


class Exporter:
    """Publishes the supervisor's latest sample: the textfile, the HTTP server, or both."""

    def __init__(self, supervisor: Supervisor, path: str | None, server: MetricsServer | None):
        self.supervisor = supervisor
        self.path = path
        self.server = server
        self._failed = False

    def publish(self) -> None:
        from numarun.metrics import write_textfile

        metrics = job_metrics(self.supervisor)
        if self.server is not None:
            self.server.update(metrics)
        if self.path is None:
            return
        try:
            write_textfile(self.path, metrics)
        except OSError as err:
            # A full disk must not end the supervision of running workers; said once.
            if not self._failed:
                self.supervisor.printer.note(
                    None, f"cannot write the metrics file {self.path}: {err.strerror or err}"
                )
            self._failed = True
        else:
            self._failed = False


def job_metrics(supervisor: Supervisor) -> JobMetrics:
    """The job's metrics now: each worker's state and latest sample, each node's."""
    from numarun.metrics import JobMetrics, WorkerMetrics

    keeper = supervisor.keeper
    workers = []
    for w in supervisor.workers:
        kept = keeper.slot(w.spec) if keeper is not None else None
        current = kept is not None and w.pid is not None and kept.pid == w.pid
        found = kept.locality if kept is not None and current else None
        ratio = found.local_ratio if found is not None else None
        verdict = None
        if ratio is not None and keeper is not None:
            verdict = "pass" if ratio >= keeper.watch.threshold else "fail"
        workers.append(
            WorkerMetrics(
                worker=w.spec.label,
                up=w.state == "running",
                restarts=max(0, w.starts - 1),
                locality=found,
                verdict=verdict,
                remediations=kept.remediations if kept is not None else 0,
            )
        )
    nodes = keeper.nodes if keeper is not None else ()
    return JobMetrics(job=supervisor.job.name, workers=tuple(workers), nodes=nodes)
