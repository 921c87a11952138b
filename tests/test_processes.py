"""Process arguments: what a PID or a name names, and a process that is no longer running.

A name never matches numarun or what started it (the shell whose command line carries the
name); a name that matches nothing, and a process that is gone or a zombie under
``placement --check``, end with one line and their own exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from numarun import processes
from numarun.errors import ProcessError, UsageError
from tests.fakesysfs import c5n_18xlarge

REPO = Path(__file__).resolve().parent.parent
NUMARUN = f"{sys.executable} -m numarun"


def _sh(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by a shell, whose own command line holds every word of it."""
    return subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


def _numarun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "numarun", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


@pytest.fixture
def sleeper() -> Iterator[int]:
    child = subprocess.Popen(["sleep", "3017"])
    yield child.pid
    child.kill()
    child.wait()


@pytest.fixture
def zombie() -> Iterator[int]:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.02)
    yield child.pid
    child.wait()


@pytest.fixture
def gone() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["migrate", "zq9xunmatched", "--to", "0"],
        ["placement", "zq9xunmatched"],
        ["placement", "zq9xunmatched", "--check"],
    ],
)
def test_a_name_in_the_wrappers_command_line_matches_nothing(argv: list[str]) -> None:
    # The shell that runs numarun has the name in its command line; so does numarun.
    done = _sh(f"{NUMARUN} {' '.join(argv)}; echo status $?")
    assert done.stdout.splitlines()[-1] == "status 9", done.stderr
    assert done.stderr.count("\n") == 1 and "no process matches 'zq9xunmatched'" in done.stderr


def test_a_name_finds_the_process_and_not_the_wrapper(sleeper: int) -> None:
    done = _sh(f"{NUMARUN} placement 'sleep 3017' --json")
    assert done.returncode == 0, done.stderr
    assert [p["pid"] for p in json.loads(done.stdout)["processes"]] == [sleeper]


def test_find_never_returns_this_process_or_its_ancestors() -> None:
    me = psutil.Process()
    ours = {me.pid, *(p.pid for p in me.parents())}
    # This test's own command line holds "pytest"; so do its ancestors' likely.
    assert not ours & set(processes.matching("pytest"))
    assert not ours & set(processes.matching(sys.executable))


@pytest.mark.parametrize(
    ("target", "error", "words"),
    [
        ("", UsageError, "empty process name"),
        ("  ", UsageError, "empty process name"),
        ("\u0663", ProcessError, "no process matches"),  # Arabic-Indic 3 is not PID 3
        ("zq9x-nothing-has-this", ProcessError, "no process matches"),
    ],
)
def test_names_that_match_nothing_are_refused(
    target: str, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        processes.find(target)


@pytest.mark.parametrize(("target", "pids"), [("1", [1]), ("007", [7]), ("99999999", [99999999])])
def test_a_pid_is_taken_as_given(target: str, pids: list[int]) -> None:
    assert processes.find(target) == pids


# -- processes that are no longer running --------------------------------------------------


@pytest.mark.parametrize(
    ("which", "check", "code", "words"),
    [
        ("zombie", True, 10, "is a zombie"),
        ("gone", True, 10, "is gone"),
        ("gone", False, 9, "does not exist"),
        ("sleeper", True, None, None),  # alive: judged by its memory, not refused as gone
    ],
)
def test_placement_check_fails_for_a_process_that_is_not_running(
    request: pytest.FixtureRequest, which: str, check: bool, code: int | None, words: str | None
) -> None:
    pid = request.getfixturevalue(which)
    done = _numarun("placement", str(pid), *(["--check"] if check else []))
    if code is None:
        assert done.returncode in (0, 10) and "zombie" not in done.stderr
        assert "gone" not in done.stderr
        return
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1 and words in done.stderr
    assert "Traceback" not in done.stderr


def test_check_reports_the_live_ones_and_fails_for_the_dead(sleeper: int, zombie: int) -> None:
    done = _numarun("placement", str(sleeper), str(zombie), "--check", "--json")
    assert done.returncode == 10
    assert [p["pid"] for p in json.loads(done.stdout)["processes"]] == [sleeper]
    assert f"PID {zombie} is a zombie" in done.stderr


def test_exited_tells_gone_zombie_and_running(sleeper: int, zombie: int, gone: int) -> None:
    assert processes.exited(sleeper) is None
    assert processes.exited(zombie) == "a zombie"
    assert processes.exited(gone) == "gone"


# -- numastat --root ----------------------------------------------------------------------


def test_numastat_refuses_a_root_that_is_not_a_sysfs_tree(tmp_path: Path) -> None:
    machine = c5n_18xlarge().write(tmp_path / "machine")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    cases = {
        str(tmp_path / "missing"): 8,
        str(tmp_path / "empty"): 8,
        str(tmp_path / "file"): 8,
        str(machine): 0,
    }
    for root, code in cases.items():
        done = _numarun("numastat", "--root", root)
        assert done.returncode == code, (root, done.stderr)
        if code:
            assert done.stderr.count("\n") == 1 and done.stdout == ""
        else:
            assert "Node 1" in done.stdout
