"""The job side's promises under attack: no worker outlives a killed numarun, codes tell truth.

Killing numarun's supervisor *and* its guardian at once (what an OOM kill of the service or
``kill -9`` of both does) must not leave workers running, on both containment paths: the
job's own cgroup (root, cgroup v2) and the ``PR_SET_PDEATHSIG`` fallback
(``NUMARUN_CGROUP=0``). Then the exit codes and hints: every code means one thing, and no
hint names a key that does not exist.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from numarun import errors, refusals

REPO = Path(__file__).resolve().parent.parent

SLEEPERS = """
[[process]]
name = "s"
command = ["sleep", "300"]
workers = 2
"""

# A worker that leaves a grandchild behind: PDEATHSIG reaches only the worker itself.
FAMILY = """
[[process]]
name = "fam"
shell = true
command = "sleep 301 & echo ready; wait"
workers = 1
"""


class Run:
    def __init__(self, tmp: Path, text: str, *, cgroup: bool) -> None:
        self.runtime = tmp / "rt"
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        self.spec = tmp / "job.toml"
        self.spec.write_text(text)
        self.state = self.runtime / "numarun" / "job.json"
        env = dict(os.environ, XDG_RUNTIME_DIR=str(self.runtime), PYTHONPATH=str(REPO))
        env["NUMARUN_CGROUP"] = "1" if cgroup else "0"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "numarun", "run", str(self.spec)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, which the test kills whole
        )

    def running(self, workers: int) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"numarun run ended: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                data: dict[str, Any] = json.loads(self.state.read_text())
            except (OSError, ValueError):
                data = {}
            pids = [w["pid"] for w in data.get("workers", []) if w["state"] == "running"]
            if len(pids) == workers:
                return data
            time.sleep(0.05)
        raise AssertionError("the job's workers did not start")

    def kill_numarun(self, data: dict[str, Any]) -> None:
        """SIGKILL the supervisor's process group and the guardian's, together: the
        guardian first, which, woken by the supervisor's death, could otherwise still end
        the job before its own SIGKILL lands."""
        sup = data["supervisor"]
        for pid in (sup["guardian"], sup["pid"]):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


def _cgroup_of(pid: int) -> str:
    text = Path(f"/proc/{pid}/cgroup").read_text()
    return next(line[3:] for line in text.splitlines() if line.startswith("0::"))


def _may_create_cgroup() -> bool:
    from numarun.supervisor.contain import own_cgroup_dir

    home = own_cgroup_dir()
    return home is not None and os.access(os.path.join(home, "cgroup.procs"), os.W_OK)


@pytest.mark.parametrize("cgroup", [True, False], ids=["job cgroup", "pdeathsig fallback"])
def test_killing_supervisor_and_guardian_together_leaves_no_worker(
    tmp_path: Path, cgroup: bool
) -> None:
    if cgroup and not _may_create_cgroup():
        pytest.skip("numarun may not create a cgroup here (needs cgroup v2, writable)")
    run = Run(tmp_path, SLEEPERS, cgroup=cgroup)
    pids: list[int] = []
    try:
        data = run.running(2)
        pids = [w["pid"] for w in data["workers"]]
        where = data["supervisor"].get("cgroup")
        if cgroup:
            assert where is not None and Path(where, "cgroup.kill").exists()
            assert all(where.endswith(_cgroup_of(p)) for p in pids)
        else:
            assert where is None
        run.kill_numarun(data)
        assert gone_within(pids, 1.0) == [], "workers outlived numarun"
    finally:
        run.stop()
        for pid in pids:  # a failed run must not leave sleepers behind for the next tests
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_what_a_killed_job_left_in_its_cgroup_is_ended_by_the_next_run(tmp_path: Path) -> None:
    if not _may_create_cgroup():
        pytest.skip("numarun may not create a cgroup here (needs cgroup v2, writable)")
    first = Run(tmp_path, FAMILY, cgroup=True)
    data = first.running(1)
    where = data["supervisor"]["cgroup"]
    # "Running" is the spawn; the worker's shell starts its child a moment later.
    deadline = time.monotonic() + 10
    while len(Path(where, "cgroup.procs").read_text().split()) < 2:
        assert time.monotonic() < deadline, "the worker did not start its child"
        time.sleep(0.01)
    first.kill_numarun(data)
    left = [int(p) for p in Path(where, "cgroup.procs").read_text().split()]
    grandchildren = [p for p in left if alive(p)]
    assert grandchildren, "expected the worker's own child to remain (documented)"
    second = Run(tmp_path, FAMILY, cgroup=True)
    try:
        second.running(1)
        assert gone_within(grandchildren, 2.0) == []
        # Removed once its last process is reaped (a lazy init may keep a zombie a while).
        left = Path(where, "cgroup.procs").read_text().split() if Path(where).exists() else []
        assert not any(alive(int(p)) for p in left)
    finally:
        second.stop()
    assert second.proc.returncode == 0


def test_a_job_ends_with_its_cgroup_removed(tmp_path: Path) -> None:
    if not _may_create_cgroup():
        pytest.skip("numarun may not create a cgroup here (needs cgroup v2, writable)")
    run = Run(tmp_path, SLEEPERS, cgroup=True)
    data = run.running(2)
    run.stop()
    assert run.proc.returncode == 0
    assert not Path(data["supervisor"]["cgroup"]).exists()


# What the worker itself sees, from its first instruction: its PDEATHSIG and its cgroup.
SEES_ITS_CONTAINMENT = (
    "import ctypes; got = ctypes.c_int(); "
    "ctypes.CDLL(None).prctl(2, ctypes.byref(got), 0, 0, 0); "  # PR_GET_PDEATHSIG
    "cgroup = [l for l in open('/proc/self/cgroup') if l.startswith('0::')]; "
    "print(got.value, cgroup[0][3:].strip() if cgroup else '-')"
)


@pytest.mark.parametrize("setpriv", [True, False], ids=["exec'd through setpriv", "no setpriv"])
def test_a_worker_starts_with_pdeathsig_and_in_the_job_cgroup(
    monkeypatch: pytest.MonkeyPatch, setpriv: bool
) -> None:
    # With setpriv the worker starts by vfork and the supervisor enters the job's cgroup for
    # the spawn; without it, Python between fork and exec does both. Either way the worker
    # has both from its first instruction, and the supervisor ends where it began.
    from numarun.supervisor import (
        JobSpec,
        QuietPrinter,
        Supervision,
        Supervisor,
        WorkerSpec,
        contain,
    )

    if not setpriv:
        monkeypatch.setattr(contain, "_SETPRIV", ("/nonexistent/setpriv",))
    monkeypatch.setattr(contain, "_pdeathsig_prefix", [])
    cgroup = _may_create_cgroup()
    before = _cgroup_of(os.getpid())
    spec = WorkerSpec(
        "sees", 0, (sys.executable, "-c", SEES_ITS_CONTAINMENT), supervision=Supervision()
    )
    sup = Supervisor(
        JobSpec("contain", (spec,)),
        printer=QuietPrinter(),
        state_dir=False,
        guardian=False,
        output_events=True,
        cgroup=cgroup,
    )
    said = [e.message for e in sup.events() if e.kind == "output"]
    assert (contain.pdeathsig_prefix() is not None) == setpriv
    pdeathsig, where = said[0].split()
    assert pdeathsig == str(int(signal.SIGKILL))
    if cgroup:
        assert where.endswith(f"/numarun-contain-{os.getpid()}"), where
    assert _cgroup_of(os.getpid()) == before


# -- exit codes and messages -------------------------------------------------------------


def _error_classes() -> list[type[errors.NumarunError]]:
    return [
        c
        for c in vars(errors).values()
        if isinstance(c, type)
        and issubclass(c, errors.NumarunError)
        and c is not errors.NumarunError
    ]


def test_every_exit_code_means_one_thing_and_is_in_the_catalogue() -> None:
    classes = _error_classes()
    codes = [c.exit_code for c in classes]
    assert len(codes) == len(set(codes)), "two error classes share an exit code"
    catalogue = [code for code, _meaning, _conditions in refusals.CATALOGUE]
    assert len(catalogue) == len(set(catalogue))
    from numarun.output import EXIT_PIPE  # a closed pipe: a status with no error class

    assert sorted(catalogue) == sorted([0, *codes, EXIT_PIPE])


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.WorkerPathError, 12),
        (errors.StateDirError, 13),
        (errors.JobRunningError, 14),
        (errors.StopTimeoutError, 15),
    ],
)
def test_the_job_sides_own_refusals_are_not_9_or_11(
    cls: type[errors.NumarunError], code: int
) -> None:
    assert cls.exit_code == code
    assert code not in (errors.ProcessError.exit_code, errors.SupervisorError.exit_code)


def test_root_is_never_told_the_supervisor_belongs_to_another_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from numarun.commands import run

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    as_root = run._not_permitted("web", 123)
    assert "another user" not in as_root.message
    assert as_root.exit_code == errors.KernelRefusedError.exit_code
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "another user" in run._not_permitted("web", 123).message


def _known_keys() -> set[str]:
    from numarun import spec
    from numarun.supervisor import policy, watchpolicy

    top = set(spec._known_keys(()))
    top |= set(spec.JobSpec.model_fields) - {"processes", "path", "lines"}  # job-level keys
    tables = {"initial", "max", "jitter", "limit", "window"}  # backoff's and crash_loop's
    tables |= set(watchpolicy.KEYS)  # the [watch] table's
    return top | tables | set(policy.KEYS)


def _hints() -> list[str]:
    from numarun import spec
    from numarun.supervisor import policy
    from numarun.supervisor.manager import JobResult, Worker
    from numarun.supervisor.model import WorkerSpec

    failed = JobResult(failed=(Worker(WorkerSpec("w", 0, ("x",)), failure="x"),), reason="")
    return [*spec.HINTS.values(), *policy.HINTS.values(), failed.error().fix or ""]


def test_hints_name_only_keys_that_exist() -> None:
    known = _known_keys()
    for hint in _hints():
        named = set(re.findall(r"\b([a-z][a-z_]*) = ", hint))
        named |= set(re.findall(r"\b([a-z][a-z_]*)\.[a-z]", hint)) - {"numarun"}
        assert named <= known, f"{hint!r} names {sorted(named - known)}"


def test_the_man_pages_name_no_retired_key() -> None:
    for page in ("numarun.1", "numarun-job.5"):
        text = (REPO / "man" / page).read_text()
        for bad in ("crash_limit", "crash_window"):
            assert bad not in text, f"{page} names {bad}, which is not a key"


def test_a_supervisor_the_kernel_keeps_in_the_job_cgroup_does_not_kill_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Moving back out can be refused (EBUSY, a controller enabled meanwhile): the job must
    # still end by process group, not by cgroup.kill of the cgroup the supervisor is in.
    from numarun.supervisor import JobSpec, QuietPrinter, Supervision, Supervisor, WorkerSpec
    from numarun.supervisor.contain import JobCgroup, own_cgroup_dir, pdeathsig_prefix

    if not _may_create_cgroup() or pdeathsig_prefix() is None:
        pytest.skip("the supervisor enters a job cgroup only with cgroup v2 and setpriv")
    home = _cgroup_of(os.getpid())
    monkeypatch.setattr(JobCgroup, "leave", lambda self: False)
    spec = WorkerSpec("w", 0, ("sleep", "0.2"), supervision=Supervision(restart="never"))
    sup = Supervisor(
        JobSpec("stuck", (spec,)), printer=QuietPrinter(), state_dir=False, guardian=False
    )
    try:
        kinds = [e.kind for e in sup.events() if e.kind in ("spawned", "exited")]
        assert _cgroup_of(os.getpid()).endswith(f"/numarun-stuck-{os.getpid()}")  # and alive
        assert kinds == ["spawned", "exited"]
    finally:
        job_dir = own_cgroup_dir()
        if job_dir is not None and _cgroup_of(os.getpid()) != home:
            Path(os.path.dirname(job_dir), "cgroup.procs").write_text("0")  # back home
            os.rmdir(job_dir)
