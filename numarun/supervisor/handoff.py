"""``numarun run`` hands its planned job to a lean supervisor: the same process, exec'd.

Reading the spec takes pydantic, the command line typer; neither is needed once the job is
planned, and CPython cannot unload a module, so a supervisor that had imported them would
carry them (some 20 MB) for as long as the job runs. So ``numarun run`` plans, then
:func:`exec_supervisor` writes the job to an anonymous file (``memfd_create``) and execs
``python -I -S`` on :func:`main`, which imports only the supervisor's own modules, reads
the job back and supervises it. The PID, the terminal, the descriptors and the
environment stay the same (the process name, ``numarun``, too); the state file, ``numarun
status`` and ``numarun stop`` see no difference. Where the exec cannot be made, the planner
supervises the job itself, as :func:`supervise` does in either process.

The job crosses as JSON: each worker's fields, its memory policy and supervision as their
own JSON, its environment as what differs from the process's
own (every worker's is the whole environment plus its own few variables), the printer's
colour, the state directory, the interleave weights the job asked for, its ``[watch]``
table and where its metrics go.
"""

from __future__ import annotations

import os
import sys

from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from numarun.supervisor.model import JobSpec, WorkerSpec

# The lean interpreter's program: the planner's module path first (``-I -S`` would leave
# out PYTHONPATH and site-packages, where numarun or what the supervisor imports may be;
# nothing is imported from it that the supervisor does not use), then main(). argv: the
# path as JSON, the job's descriptor, then the original command line, only for ps.
BOOT = "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); from numarun.supervisor.handoff import main; sys.exit(main())"  # noqa: E501


class How(Value):
    """How to supervise a planned job, besides the job itself."""

    colour: bool | None = None  # the printer's colour; None: when the output is a terminal
    state_dir: str | None = None  # where the state file goes; None: the runtime directory
    weights: dict[int, int] | None = None  # interleave weights in force while it runs
    metrics: str | None = None  # a Prometheus textfile written after every sample
    metrics_listen: str | None = None  # [HOST]:PORT served /metrics from


def supervise(job: JobSpec, how: How | None = None) -> int:
    """Start every worker of ``job``, keep them alive, stop them cleanly; 0, or the refusal.

    The weights are written first and restored on any exit; the metrics, where asked for,
    are published after every sample and when a worker goes up or down.
    """
    import contextlib

    from numarun.supervisor.manager import Supervisor
    from numarun.supervisor.printer import PrefixPrinter

    how = how or How()
    printer = PrefixPrinter(job.workers, colour=how.colour)
    supervisor = Supervisor(job, printer=printer, state_dir=how.state_dir)
    in_force: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if how.weights is not None:
        from numarun import weights as interleave

        in_force = interleave.applied_weights(how.weights)
    with contextlib.ExitStack() as stack:
        exporter = None
        if how.metrics is not None or how.metrics_listen is not None:
            from numarun.supervisor import export

            server = None
            if how.metrics_listen is not None:
                server = export.open_server(how.metrics_listen)  # refused before any start
                stack.callback(server.close)
            exporter = export.Exporter(supervisor, how.metrics, server)
        # start() checks every worker, the state directory and the job's name before the
        # first spawn; the job's interleave weights, written first, are restored on any exit.
        stack.enter_context(in_force)
        stack.enter_context(supervisor.handle_signals())
        supervisor.start()
        if exporter is None:
            result = supervisor.run()
        else:
            exporter.publish()  # at once: the workers are up, their first sample to come
            for event in supervisor.events():
                if event.kind in export.PUBLISH_ON:
                    exporter.publish()
            result = supervisor.result()
    if not result.ok:
        raise result.error()
    return 0


def exec_supervisor(job: JobSpec, how: How) -> None:
    """Become the lean supervisor of ``job``; returns only when the exec failed."""
    import json

    import numarun

    data = encode(job, how)
    fd = os.memfd_create("numarun-job", 0)  # no MFD_CLOEXEC: the new program reads it
    try:
        os.write(fd, json.dumps(data).encode())
        os.lseek(fd, 0, os.SEEK_SET)
        home = os.path.dirname(os.path.dirname(os.path.abspath(numarun.__file__)))
        path = json.dumps([home, *(p for p in sys.path if p and p != home)])
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", BOOT, path, str(fd), *sys.argv])
    except OSError:
        os.close(fd)


def main() -> int:
    """The lean supervisor: ``python -I -S -c BOOT PATH FD ...``."""
    from numarun import procfs
    from numarun.__main__ import guarded

    procfs.set_own_name("numarun")  # what it was called before the exec, for ps and pgrep
    fd = int(sys.argv[2])
    with os.fdopen(fd, "rb") as f:
        text = f.read()
    del sys.argv[1:3]
    return guarded(lambda: _supervise_decoded(text))


def _supervise_decoded(text: bytes) -> int:
    import json

    job, how = decode(json.loads(text))
    return supervise(job, how)


# -- the job as JSON ----------------------------------------------------------------------


def encode(job: JobSpec, how: How, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``job`` and how to supervise it, as JSON-ready data (see :func:`decode`)."""
    env = os.environ if environ is None else environ
    weights = how.weights
    return {
        "name": job.name,
        "source": job.source,
        "workers": [_encode_worker(w, env) for w in job.workers],
        "watch": None if job.watch is None else job.watch.to_dict(),
        "colour": how.colour,
        "state_dir": how.state_dir,
        "weights": None if weights is None else [[n, w] for n, w in weights.items()],
        "metrics": how.metrics,
        "metrics_listen": how.metrics_listen,
    }


def decode(data: dict[str, Any], environ: Mapping[str, str] | None = None) -> tuple[JobSpec, How]:
    """What :func:`encode` wrote: the job and how to supervise it."""
    from numarun.supervisor.model import JobSpec
    from numarun.supervisor.watchpolicy import Watch

    env = os.environ if environ is None else environ
    weights = data["weights"]
    watch = data["watch"]
    job = JobSpec(
        name=data["name"],
        workers=tuple(_decode_worker(w, env) for w in data["workers"]),
        source=data["source"],
        watch=None if watch is None else Watch(**watch),
    )
    how = How(
        colour=data["colour"],
        state_dir=data["state_dir"],
        weights=None if weights is None else {int(n): int(w) for n, w in weights},
        metrics=data["metrics"],
        metrics_listen=data["metrics_listen"],
    )
    return job, how


def _encode_worker(w: WorkerSpec, environ: Mapping[str, str]) -> dict[str, Any]:
    from numarun.value import encode as encode_record

    env: dict[str, Any] | None = None
    if w.env is not None:
        env = {
            "set": {k: v for k, v in w.env.items() if environ.get(k) != v},
            "unset": [k for k in environ if k not in w.env],
        }
    return {
        "name": w.name,
        "index": w.index,
        "argv": list(w.argv),
        "node": w.node,
        "cpus": None if w.cpus is None else sorted(w.cpus),
        "memory": None if w.memory is None else encode_record(w.memory),
        "fallback": w.fallback,
        "env": env,
        "cwd": w.cwd,
        "supervision": w.supervision.to_dict(),
        "stdin": w.stdin,
        "log": w.log,
        "smt": w.smt,
    }


def _decode_worker(d: dict[str, Any], environ: Mapping[str, str]) -> WorkerSpec:
    from numarun.mempolicy import MemoryPolicy
    from numarun.supervisor.model import WorkerSpec
    from numarun.supervisor.policy import Supervision
    from numarun.value import decode as decode_record

    env: dict[str, str] | None = None
    if d["env"] is not None:
        unset = set(d["env"]["unset"])
        env = {k: v for k, v in environ.items() if k not in unset} | d["env"]["set"]
    return WorkerSpec(
        name=d["name"],
        index=d["index"],
        argv=tuple(d["argv"]),
        node=d["node"],
        cpus=None if d["cpus"] is None else frozenset(d["cpus"]),
        memory=None if d["memory"] is None else decode_record(MemoryPolicy, d["memory"]),
        fallback=d["fallback"],
        env=env,
        cwd=d["cwd"],
        supervision=Supervision.from_dict(d["supervision"]),
        stdin=d["stdin"],
        log=d["log"],
        smt=d["smt"],
    )
