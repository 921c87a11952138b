"""Nothing starts until everything is checked, and ``numarun plan`` tells what ``run`` refuses.

Each row is a job whose *second* group cannot start. ``numarun run`` must refuse it with one
line and the catalogue's code before the first group's worker runs (it would create a
marker file); ``numarun plan`` on this machine refuses it the same way; ``numarun plan
--topology`` (another machine's snapshot) plans it and warns, saying the check was made on
this host. Then snapshots that contradict themselves, and the state directory's problems.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp / "rt"), NO_COLOR="1", PYTHONPATH=str(REPO))
    (tmp / "rt").mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "numarun", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [x for x in done.stderr.splitlines() if not x.startswith("numarun: warning:")]
    assert len(lines) == 1, done.stderr
    assert " — " in lines[0], lines[0]
    return lines[0]


def job_text(marker: Path, second: str) -> str:
    return f"""
[[process]]
name = "first"
command = ["touch", "{marker}"]
workers = 1

[[process]]
name = "second"
workers = 1
{second}
"""


def _setup(tmp: Path) -> None:
    (tmp / "afile").write_text("x")
    (tmp / "adir").mkdir()
    noexec = tmp / "noexec"
    noexec.write_text("#!/bin/sh\n")
    noexec.chmod(0o644)
    bindir = tmp / "bin"
    bindir.mkdir()
    prog = bindir / "only-here"
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)


# (name, the second group's keys, exit code, words of the refusal); {tmp} is the test's folder.
REFUSED = [
    ("cwd missing", 'command = ["true"]\ncwd = "{tmp}/gone/{{worker}}"', 12, "cwd"),
    ("cwd a file", 'command = ["true"]\ncwd = "{tmp}/afile"', 12, "is not a directory"),
    ("log dir a file", 'command = ["true"]\nlogs = "{tmp}/afile/x.log"', 12, "is not a directory"),
    ("log a directory", 'command = ["true"]\nlogs = "{tmp}/adir"', 12, "is a directory"),
    ("stdin missing", 'command = ["cat"]\nstdin = "{tmp}/nothing"', 12, "stdin file"),
    ("stdin a directory", 'command = ["cat"]\nstdin = "{tmp}/adir"', 12, "is a directory"),
    ("command unknown", 'command = ["no-such-program-x"]', 127, "command not found"),
    ("command not executable", 'command = ["{tmp}/noexec"]', 126, "not executable"),
    ("command a directory", 'command = ["{tmp}/adir"]', 126, "a directory"),
    (
        "not on the worker's PATH",
        'command = ["true"]\nenv = {{ PATH = "{tmp}/adir" }}',
        127,
        "command not found",
    ),
    ("relative to its cwd", 'command = ["./noexec"]\ncwd = "{tmp}"', 126, "not executable"),
    ("reserved CPU absent", 'command = ["true"]\nreserve_cpus = [4000]', 4, "CPU 4000"),
]


@pytest.mark.parametrize(("name", "second", "code", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_bad_second_group_starts_nothing_and_plan_says_so(
    tmp_path: Path, name: str, second: str, code: int, words: str
) -> None:
    _setup(tmp_path)
    marker = tmp_path / "first-started"
    spec = tmp_path / "job.toml"
    spec.write_text(job_text(marker, second.format(tmp=tmp_path)))
    ran = cli(tmp_path, "run", str(spec))
    assert ran.returncode == code, ran.stderr
    line = one_line(ran)
    assert words in line
    assert "second" in line  # names the group (or its worker) that cannot start
    assert not marker.exists(), "the first group started before the refusal"
    planned = cli(tmp_path, "plan", str(spec))
    assert planned.returncode == code, planned.stderr
    assert one_line(planned) == line
    assert not (tmp_path / "rt" / "numarun").exists()  # plan changes nothing


@pytest.mark.parametrize(
    ("name", "second", "code", "words"),
    [r for r in REFUSED if r[2] != 4],
    ids=[r[0] for r in REFUSED if r[2] != 4],
)
def test_plan_for_a_snapshot_warns_that_it_checked_this_host(
    tmp_path: Path, name: str, second: str, code: int, words: str
) -> None:
    _setup(tmp_path)
    snap = _snapshot(tmp_path)
    spec = tmp_path / "job.toml"
    spec.write_text(job_text(tmp_path / "m", second.format(tmp=tmp_path)))
    planned = cli(tmp_path, "plan", str(spec), "--topology", str(snap), "--json")
    assert planned.returncode == 0, planned.stderr
    warnings = json.loads(planned.stdout)["warnings"]
    about = [w for w in warnings if words in w]
    assert len(about) == 1, warnings
    assert about[0].startswith("checked on this host, not the snapshot's: numarun run would")


def test_what_the_worker_finds_is_not_refused(tmp_path: Path) -> None:
    """The worker's own PATH and cwd, not numarun's, decide whether its command exists."""
    _setup(tmp_path)
    (tmp_path / "adir" / "tool").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "adir" / "tool").chmod(0o755)
    spec = tmp_path / "job.toml"
    second = (
        f'command = ["only-here"]\nenv = {{ PATH = "{tmp_path}/bin" }}\n'
        f'[[process]]\nname = "third"\nworkers = 1\ncommand = ["./tool"]\ncwd = "{tmp_path}/adir"\n'
        f'logs = "{tmp_path}/new/logs/{{name}}.log"\nstdin = "{tmp_path}/afile"'
    )
    spec.write_text(job_text(tmp_path / "m", second))
    planned = cli(tmp_path, "plan", str(spec))
    assert planned.returncode == 0, planned.stderr
    assert not (tmp_path / "new").exists()


def test_many_workers_with_one_problem_give_a_bounded_warning(
    tmp_path: Path, shared_snapshot: Callable[[str], Path]
) -> None:
    root = shared_snapshot("64amd64-4s2n4ca2co")
    spec = tmp_path / "job.toml"
    spec.write_text(
        '[[process]]\nname = "w"\nworkers = 16\ncommand = ["true"]\n'
        f'cwd = "{tmp_path}/gone/{{worker}}"\n'
    )
    planned = cli(tmp_path, "plan", str(spec), "--topology", str(root), "--json")
    assert planned.returncode == 0, planned.stderr
    lines = [w for w in json.loads(planned.stdout)["warnings"] if "gone" in w or "more" in w]
    assert len(lines) == 6
    assert lines[0].endswith(
        f"w.0: cwd {tmp_path}/gone/0 does not exist — create it, or fix cwd in [[process]] w"
    )
    assert lines[-1].endswith("and 11 more workers like these")


# -- snapshots that contradict themselves ---------------------------------------------------


def _snapshot(tmp: Path) -> Path:
    path = tmp / "snap.json"
    if not path.exists():
        done = cli(tmp, "topology", "--save", str(path))
        assert done.returncode == 0, done.stderr
    return path


def _cpu_on_missing_node(data: dict[str, object]) -> None:
    data["cpus"][0]["node"] = 77  # type: ignore[index]


def _node_listing_a_missing_cpu(data: dict[str, object]) -> None:
    data["nodes"][0]["cpus"].append(4000)  # type: ignore[index]


def _duplicate_node(data: dict[str, object]) -> None:
    nodes = data["nodes"]
    nodes.append({**nodes[0], "cpus": []})  # type: ignore[attr-defined,index]


def _duplicate_cpu(data: dict[str, object]) -> None:
    data["cpus"].append(dict(data["cpus"][0]))  # type: ignore[attr-defined,index]


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (_cpu_on_missing_node, "contradicts itself: CPUs 0 are on nodes 77, which are not in"),
        (_node_listing_a_missing_cpu, "contradicts itself: node 0 lists CPUs 4000, which are not"),
        (_duplicate_node, "nodes[1]: id 0 appears twice"),
        (_duplicate_cpu, "cpus[2]: id 0 appears twice"),
    ],
)
def test_a_snapshot_that_contradicts_itself_is_refused(
    tmp_path: Path, mutate: object, words: str
) -> None:
    snap = _snapshot(tmp_path)
    data = json.loads(snap.read_text())
    assert callable(mutate)
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    spec = tmp_path / "job.toml"
    spec.write_text('[[process]]\nname = "w"\nworkers = 1\ncommand = ["true"]\n')
    assert cli(tmp_path, "plan", str(spec), "--topology", str(snap)).returncode == 0
    planned = cli(tmp_path, "plan", str(spec), "--topology", str(bad))
    assert planned.returncode == 8, planned.stderr
    line = one_line(planned)
    assert words in line


# -- the state directory and the job's name -------------------------------------------------


def test_plan_warns_about_a_state_directory_run_would_refuse(tmp_path: Path) -> None:
    (tmp_path / "rt").mkdir(mode=0o700)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "rt" / "numarun").symlink_to(tmp_path / "elsewhere")
    spec = tmp_path / "job.toml"
    spec.write_text('[[process]]\nname = "w"\nworkers = 1\ncommand = ["true"]\n')
    planned = cli(tmp_path, "plan", str(spec), "--json")
    assert planned.returncode == 0, planned.stderr
    (warning,) = [w for w in json.loads(planned.stdout)["warnings"] if "symbolic link" in w]
    assert warning.startswith("numarun run would refuse: state directory ")
    ran = cli(tmp_path, "run", str(spec))
    assert ran.returncode == 13 and "symbolic link" in one_line(ran)
    assert stat.S_ISLNK(os.lstat(tmp_path / "rt" / "numarun").st_mode)
