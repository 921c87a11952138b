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
colour, the state directory and the interleave weights the job asked for.
"""

from __future__ import annotations

import os
import sys

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


def supervise(
    job: JobSpec,
    *,
    colour: bool | None = None,
    state_dir: str | None = None,
    weights: Mapping[int, int] | None = None,
) -> int:
    """Start every worker of ``job``, keep them alive, stop them cleanly; 0, or the refusal.

    ``weights`` (node -> weight) are written first and restored on any exit.
    """
    import contextlib

    from numarun.supervisor.manager import Supervisor
    from numarun.supervisor.printer import PrefixPrinter

    printer = PrefixPrinter(job.workers, colour=colour)
    supervisor = Supervisor(job, printer=printer, state_dir=state_dir)
    in_force: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if weights is not None:
        from numarun import weights as interleave

        in_force = interleave.applied_weights(weights)
    # start() checks every worker, the state directory and the job's name before the
    # first spawn; the job's interleave weights, written first, are restored on any exit.
    with in_force, supervisor.handle_signals():
        supervisor.start()
        result = supervisor.run()
    if not result.ok:
        raise result.error()
    return 0


def exec_supervisor(
    job: JobSpec,
    *,
    colour: bool | None = None,
    state_dir: str | None = None,
    weights: Mapping[int, int] | None = None,
) -> None:
    """Become the lean supervisor of ``job``; returns only when the exec failed."""
    import json

    import numarun

    data = encode(job, colour=colour, state_dir=state_dir, weights=weights)
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

    job, colour, state_dir, weights = decode(json.loads(text))
    return supervise(job, colour=colour, state_dir=state_dir, weights=weights)


# -- the job as JSON ----------------------------------------------------------------------


def encode(
    job: JobSpec,
    *,
    colour: bool | None,
    state_dir: str | None,
    weights: Mapping[int, int] | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``job`` and how to supervise it, as JSON-ready data (see :func:`decode`)."""
    env = os.environ if environ is None else environ
    return {
        "name": job.name,
        "source": job.source,
        "workers": [_encode_worker(w, env) for w in job.workers],
        "colour": colour,
        "state_dir": state_dir,
        "weights": None if weights is None else [[n, w] for n, w in weights.items()],
    }


def decode(
    data: dict[str, Any], environ: Mapping[str, str] | None = None
) -> tuple[JobSpec, bool | None, str | None, dict[int, int] | None]:
    """What :func:`encode` wrote: the job, the colour, the state directory, the weights."""
    from numarun.supervisor.model import JobSpec

    env = os.environ if environ is None else environ
    weights = data["weights"]
    return (
        JobSpec(
            name=data["name"],
            workers=tuple(_decode_worker(w, env) for w in data["workers"]),
            source=data["source"],
        ),
        data["colour"],
        data["state_dir"],
        None if weights is None else {int(n): int(w) for n, w in weights},
    )


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
    )
