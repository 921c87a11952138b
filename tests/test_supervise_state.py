"""The state file and its directory, as status, stop and run see them.

A state file is one typed record written by the supervisor and validated by every reader:
a corrupt or foreign file costs one warning line, not ``status`` and ``stop`` for every
job. The directory is never trusted blindly: a symbolic link, a directory of another user
or one that others may write to is refused before anything starts, and left as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from numarun.errors import StateDirError
from numarun.supervisor import JobSpec, QuietPrinter, Supervisor, WorkerSpec
from numarun.supervisor import state as statefile
from tests.test_supervise_seams import Run, Sim

REPO = Path(__file__).resolve().parent.parent


def cli(runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "numarun", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def sim_supervisor(state_dir: Path) -> tuple[Supervisor, Sim]:
    sim = Sim(lambda label, n: Run())
    sup = Supervisor(
        JobSpec("svc", (WorkerSpec("w", 0, ("w",)), WorkerSpec("w", 1, ("w",)))),
        printer=QuietPrinter(),
        clock=sim,
        launcher=sim,
        state_dir=str(state_dir),
        guardian=False,
    )
    return sup, sim


# -- the schema ---------------------------------------------------------------------------


def test_what_the_supervisor_writes_is_what_readers_read_back(tmp_path: Path) -> None:
    sup, sim = sim_supervisor(tmp_path / "rt")
    with sup:
        sup.start()
        path = tmp_path / "rt" / "svc.json"
        written = json.loads(path.read_text())
        assert written["format"] == statefile.FORMAT and written["version"] == 2
        assert [w["pid"] for w in written["workers"]] == sorted(sim.procs)
        read = statefile.read_state(str(path))
        assert read == sup.snapshot()
        assert read is not None and [w.label for w in read.workers] == ["w.0", "w.1"]
        ((_, listed),) = statefile.list_jobs(str(tmp_path / "rt")).jobs
        assert listed.supervisor.pid == os.getpid()


BAD_FILES = {
    "broken.json": "{",
    "foreign.json": '{"format": "something-else"}',
    "future.json": json.dumps({"format": statefile.FORMAT, "version": 99}),
    "typed.json": json.dumps(
        {
            "format": statefile.FORMAT,
            "version": 1,
            "job": "typed",
            "source": None,
            "state": "running",
            "supervisor": {"pid": "12", "start_ticks": 1, "started": 0},
            "workers": [],
        }
    ),
    "binary.json": "\udcff",
    "nested.json": "[" * 100_000,
}


def write_bad_files(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True)
    for name, text in BAD_FILES.items():
        (directory / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    os.mkfifo(directory / "fifo.json")  # reading it must not hang


def test_corrupt_and_foreign_files_are_skipped_each_with_one_warning(tmp_path: Path) -> None:
    write_bad_files(tmp_path / "rt")
    sup, _sim = sim_supervisor(tmp_path / "rt")
    with sup:
        sup.start()
        listing = statefile.list_jobs(str(tmp_path / "rt"))
    assert [state.job for _, state in listing.jobs] == ["svc"]
    assert len(listing.warnings) == len(BAD_FILES) + 1
    assert all("\n" not in w and w.startswith("skipping ") for w in listing.warnings)
    # Nothing numarun cannot read as its own is removed.
    assert {p.name for p in (tmp_path / "rt").iterdir()} >= set(BAD_FILES)


def test_status_and_stop_survive_corrupt_state_files(tmp_path: Path) -> None:
    write_bad_files(tmp_path / "numarun")
    shown = cli(tmp_path, "status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "no numarun jobs are running"
    warnings = shown.stderr.strip().splitlines()
    assert len(warnings) == len(BAD_FILES) + 1
    assert all(w.startswith("numarun: warning: skipping ") for w in warnings)
    assert any("foreign.json: not a numarun state file" in w for w in warnings)
    stopped = cli(tmp_path, "stop", "svc")
    assert stopped.returncode == 9
    assert stopped.stderr.strip().splitlines()[-1].startswith("numarun: no job named svc")
    assert "Traceback" not in shown.stderr + stopped.stderr


# -- the directory ------------------------------------------------------------------------


def refused_start(state_dir: Path) -> str:
    sup, sim = sim_supervisor(state_dir)
    with pytest.raises(StateDirError) as caught:
        sup.start()
    assert sim.starts == {}  # refused before the first worker was started
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 13  # not 9, "no such job"
    return caught.value.message


def test_a_symlinked_state_directory_is_refused_and_left_untouched(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    (tmp_path / "rt").symlink_to(target)
    message = refused_start(tmp_path / "rt")
    assert message.startswith(f"state directory {tmp_path / 'rt'} is a symbolic link")
    assert target.stat().st_mode & 0o777 == 0o755 and list(target.iterdir()) == []
    listing = statefile.list_jobs(str(tmp_path / "rt"))
    assert listing.jobs == () and "is a symbolic link" in listing.warnings[0]


def test_a_state_directory_others_may_write_is_refused_not_chmodded(tmp_path: Path) -> None:
    (tmp_path / "rt").mkdir()
    (tmp_path / "rt").chmod(0o777)
    assert "is writable by other users (mode 0777)" in refused_start(tmp_path / "rt")
    assert (tmp_path / "rt").stat().st_mode & 0o777 == 0o777


def test_a_state_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rt").mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(tmp_path / "rt", 12345, 12345)
    else:  # the same check, seen from a user who is not its owner
        me = os.geteuid() + 1
        monkeypatch.setattr(os, "geteuid", lambda: me)
    message = refused_start(tmp_path / "rt")
    assert "belongs to uid" in message and " — " in message


def test_a_state_directory_numarun_creates_is_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        sup, _sim = sim_supervisor(tmp_path / "rt")
        with sup:
            sup.start()
    finally:
        os.umask(old)
    assert (tmp_path / "rt").stat().st_mode & 0o777 == 0o700


def test_run_refuses_a_symlinked_state_directory_before_starting_anything(
    tmp_path: Path,
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    target.chmod(0o755)
    (tmp_path / "numarun").symlink_to(target)
    marker = tmp_path / "started"
    spec = tmp_path / "job.toml"
    spec.write_text(f'[[process]]\nname = "t"\ncommand = ["touch", "{marker}"]\nworkers = 1\n')
    done = cli(tmp_path, "run", str(spec))
    assert done.returncode == 13, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("numarun: state directory ") and "symbolic link" in line
    assert not marker.exists()
    assert target.stat().st_mode & 0o777 == 0o755


def test_start_ticks_identify_live_processes_only() -> None:
    ticks = statefile.start_ticks(os.getpid())
    assert isinstance(ticks, int) and ticks > 0
    assert statefile.start_ticks(2**22 + 1) is None
