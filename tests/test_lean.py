"""What each long-lived or often-run process keeps out: the wins of the performance issue,
held without timing anything.

* ``numarun run``'s supervisor, once the job is planned, is a fresh ``python -I -S`` that
  imports only the supervisor (no pydantic, typer, click, psutil), under the same PID and
  the name ``numarun``; its guardian is ``/bin/sh``, not a second interpreter;
* the commands measured against lstopo and numastat (``topology``, ``placement``) import
  neither typer nor pydantic nor ``json`` (the writer is numarun's own) nor ``re``, and the
  ``numarun`` command itself imports no ``re`` before numarun starts;
* the job crosses the exec intact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, need_shared
from tests.test_supervise_cli import Job, cleanup  # noqa: F401 - the fixture

# As bin/numarun runs it (python -m would add runpy's own imports: collections, ...).
AS_SCRIPT = ["-c", "import sys; from numarun.__main__ import main; sys.exit(main())"]
HEAVY = ("pydantic", "pydantic_core", "typer", "click", "rich", "psutil", "numarun.cli")
SCRIPT = Path(sys.executable).with_name("numarun")


def _imported(argv: list[str], *, python: tuple[str, ...] = ()) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *python, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}


def test_topology_json_imports_no_heavy_module(shared_snapshot: Callable[[str], Path]) -> None:
    need_shared()
    snap = shared_snapshot("memorysidecaches")
    found = _imported([*AS_SCRIPT, "topology", "--json", "--topology", str(snap)])
    for heavy in (*HEAVY, "json", "re", "enum", "typing", "dataclasses", "collections"):
        assert heavy not in found, f"numarun topology --json imports {heavy}"


def test_placement_json_imports_no_heavy_module() -> None:
    found = _imported([*AS_SCRIPT, "placement", str(os.getpid()), "--json"])
    heavy_here = ("json", "re", "enum", "typing", "dataclasses", "numarun.placement.resolve")
    for heavy in (*HEAVY, *heavy_here):
        assert heavy not in found, f"numarun placement --json imports {heavy}"


@pytest.mark.skipif(not SCRIPT.exists(), reason="numarun is not installed in this environment")
def test_the_numarun_command_imports_no_re_of_its_own() -> None:
    # pip's entry-point wrapper imports re before numarun; bin/numarun does not.
    assert SCRIPT.read_text().splitlines()[0].startswith("#!")
    found = _imported([str(SCRIPT), "--policy", "bind", "--nodes", "0", "--", "true"])
    assert "re" not in found
    assert "numarun.commands.prefix" in found


def test_the_lean_supervisors_imports() -> None:
    # What the exec'd supervisor imports before it supervises, in the same interpreter mode.
    probe = (
        "import sys; sys.path[:0] = sys.argv[1:];"
        "from numarun.supervisor import handoff, manager, printer;"
        "import numarun.weights, numarun.preflight, numarun.__main__;"
        "print(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(REPO)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.split())
    assert "numarun.supervisor.manager" in modules
    for heavy in (*HEAVY, "numarun.spec", "numarun.plan", "numarun.topology"):
        assert heavy not in modules, f"the lean supervisor imports {heavy}"


SLEEPERS = """
[[process]]
name = "s"
command = ["sleep", "300"]
workers = 3
stop_timeout = 5
"""


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_numarun_run_supervises_from_a_lean_process(
    tmp_path: Path,
    cleanup: list[Job],  # noqa: F811
) -> None:
    job = Job(tmp_path, SLEEPERS, name="lean")
    cleanup.append(job)
    data = job.wait_running(3)
    pid = job.proc.pid
    supervisor = data["supervisor"]
    assert isinstance(supervisor, dict)
    assert supervisor["pid"] == pid  # the same process, exec'd: status and stop find it
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "numarun"
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[1:3] == [b"-I", b"-S"] and b"numarun.supervisor.handoff" in argv[4]
    assert "pydantic_core" not in _maps(pid)  # pydantic's compiled core is not loaded
    guardian = supervisor["guardian"]
    assert isinstance(guardian, int)
    guardian_argv = Path(f"/proc/{guardian}/cmdline").read_bytes().split(b"\0")
    assert guardian_argv[0] == b"/bin/sh"
    assert "libpython" not in _maps(guardian) and "python" not in os.readlink(
        f"/proc/{guardian}/exe"
    )
    shown = job.cli("status", "lean")
    assert shown.returncode == 0 and "3/3 running" in shown.stdout, shown.stderr
    job.proc.send_signal(signal.SIGTERM)
    code, _out, err = job.finish()
    assert code == 0, err


def test_a_spec_refused_before_the_hand_off_is_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[[process]]\nname = "x"\ncommand = ["sleep", "1"]\nworkers = "many"\n')
    done = subprocess.run(
        [sys.executable, "-m", "numarun", "run", str(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.startswith("numarun: ") and done.stderr.count("\n") == 1, done.stderr


def test_a_worker_refused_after_the_hand_off_is_one_line(tmp_path: Path) -> None:
    # Checked by the lean supervisor before its first spawn: the same line and exit code.
    spec = tmp_path / "missing.toml"
    spec.write_text('[[process]]\nname = "x"\ncommand = ["/nonexistent/prog"]\n')
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "numarun", "run", str(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(tmp_path)},
        timeout=60,
    )
    assert time.monotonic() - start < 60
    assert done.returncode == 127, done.stderr  # not found, as documented
    assert done.stderr.startswith("numarun: ") and done.stderr.count("\n") == 1, done.stderr


def test_the_job_crosses_the_exec_intact() -> None:
    from numarun.mempolicy import MemoryPolicy
    from numarun.supervisor import handoff
    from numarun.supervisor.model import JobSpec, WorkerSpec
    from numarun.supervisor.policy import Backoff, CrashLoop, Supervision
    from numarun.supervisor.watchpolicy import Watch

    environ = {"PATH": "/bin", "HOME": "/root", "LANG": "C"}
    job = JobSpec(
        "web",
        (
            WorkerSpec(
                "api",
                0,
                ("srv", "--port", "8000", "é"),
                node=1,
                cpus=frozenset({2, 3}),
                memory=MemoryPolicy("interleave", [0, 1], ["static-nodes"]),
                fallback="preferred",
                env={"PATH": "/usr/bin", "HOME": "/root", "PORT": "8000"},  # LANG unset
                cwd="/srv",
                supervision=Supervision(
                    restart="always",
                    backoff=Backoff(initial=1.0, max=5.0, jitter=0.0),
                    crash_loop=CrashLoop(limit=3, window=10.0),
                    on_failure="continue",
                    stop_signal="SIGINT",
                    stop_timeout=3.0,
                ),
                stdin="inherit",
                log="/var/log/api.log",
                smt="avoid",
            ),
            WorkerSpec("plain", 1, ("true",)),
        ),
        source="/etc/numarun/web.toml",
        watch=Watch(interval=2.0, threshold=0.8, remediate="migrate", migrate_rate_mbps=16.0),
    )
    # Every field away from its default, so a field the hand-off forgets to carry fails here
    # (a new field fails too, until it is given a value above and carried).
    import dataclasses

    for record in (job, job.workers[0]):
        for f in dataclasses.fields(record):
            default = f.default_factory() if callable(f.default_factory) else f.default
            assert getattr(record, f.name) != default, f"set {f.name} above"
    import json

    data = json.loads(
        json.dumps(
            handoff.encode(
                job,
                handoff.How(
                    colour=False,
                    state_dir="/run/x",
                    weights={0: 5, 2: 2},
                    metrics="/run/x/job.prom",
                    metrics_listen=":9464",
                ),
                environ,
            )
        )
    )
    back, how = handoff.decode(data, environ)
    assert back == job
    assert list(back.workers[0].env or {}) == ["PATH", "HOME", "PORT"]  # the order too
    assert how == handoff.How(
        colour=False,
        state_dir="/run/x",
        weights={0: 5, 2: 2},
        metrics="/run/x/job.prom",
        metrics_listen=":9464",
    )


def _guardian(*args: str) -> subprocess.Popen[bytes]:
    from numarun.supervisor.guardian import GUARDIAN_SH, SHELL

    return subprocess.Popen(
        [SHELL, "-c", GUARDIAN_SH, "numarun-guardian", *args],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )


def test_the_shell_guardian_kills_what_it_was_told_of_and_only_that(tmp_path: Path) -> None:
    groups = [
        subprocess.Popen(["sleep", "300"], start_new_session=True) for _ in range(3)
    ]  # each its own process group
    state = tmp_path / "job.json"
    state.write_text("{}")
    guardian = _guardian(str(state))
    assert guardian.stdin is not None
    kept, killed, twice = groups
    lines = [f"+{p.pid}" for p in groups] + [f"+{twice.pid}", f"-{kept.pid}", "+x", "-", "+12a"]
    guardian.stdin.write(("\n".join(lines) + "\n").encode())
    guardian.stdin.close()  # the supervisor died
    assert guardian.wait(timeout=30) == 0
    for proc in (killed, twice):
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert kept.poll() is None  # reaped and forgotten: not the guardian's to kill
    assert not state.exists()
    kept.kill()
    kept.wait()


def test_the_shell_guardian_ends_the_cgroup(tmp_path: Path) -> None:
    # A stand-in directory: cgroup.kill is written (in a real cgroup that kills every
    # process in it), then removing the directory is retried for about two seconds (a real
    # one can be removed once its processes are gone; this one keeps the file).
    cgroup = tmp_path / "numarun-job-1"
    cgroup.mkdir()
    guardian = _guardian("--cgroup", str(cgroup))
    assert guardian.stdin is not None
    guardian.stdin.close()
    assert guardian.wait(timeout=60) == 0
    assert (cgroup / "cgroup.kill").read_text() == "1\n"
