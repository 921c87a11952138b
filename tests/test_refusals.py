"""One mistake, one message, one exit code: through the prefix form, a job spec and a rank.

Each row is one condition of the refusal catalogue (numarun.refusals), made three ways on
the same fake machine: as prefix options, as job-spec keys planned by ``numarun plan``, and
as ``--per-rank`` options. All three must exit with the same code and say the same thing
(the words after the location, which names the option or the spec key), and run nothing.
Also here: the man page's EXIT STATUS is the catalogue; CPUs follow memory in numarun's
spelling and not in numactl's; the cpuset is the limit and the inherited affinity a choice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from numarun import refusals
from tests.fakesysfs import FakeMachine, c5n_18xlarge
from tests.test_prefix import numarun

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out: dict[str, Path] = {}
    out["c5n"] = c5n_18xlarge().write(tmp_path_factory.mktemp("c5n"))
    odd = FakeMachine(
        nodes={0: [0, 1], 1: [2, 3], 2: [], 3: [4, 5], 4: [6, 7]},
        siblings=[(0, 1), (2, 3), (4,), (5,), (6,), (7,)],
        memory_mb={0: 4096, 1: 4096, 2: 8192, 3: 0, 4: 1024},
        offline=[5, 6, 7],
    )
    out["odd"] = odd.write(tmp_path_factory.mktemp("odd"))
    confined = c5n_18xlarge()
    root = confined.write(tmp_path_factory.mktemp("confined"))
    confined.confine(root, "/jobs/job1", cpus=range(18), mems=[0])
    out["confined"] = root
    tasksetted = c5n_18xlarge()
    root = tasksetted.write(tmp_path_factory.mktemp("taskset"))
    # `taskset -c 0-1`: the affinity is narrower than the (absent) cpuset.
    (root / "proc/self/status").write_text(
        "Name:\tfake\nCpus_allowed_list:\t0-1\nMems_allowed_list:\t0-1\n"
    )
    out["taskset"] = root
    return out


# (condition, machine, prefix options, spec keys, exit code, words every front end says)
SAME_MISTAKE: list[tuple[str, str, list[str], dict[str, str], int, str]] = [
    ("unknown memory node", "c5n", ["--policy", "bind", "--nodes", "7"],
     {"policy": "bind", "memory_nodes": "7"}, 4,
     "node 7 does not exist on this machine — valid nodes are 0-1"),
    ("unknown CPU node", "c5n", ["-N", "7"], {"nodes": "7"}, 4,
     "node 7 does not exist on this machine — valid nodes are 0-1"),
    ("memory node outside the cpuset", "confined", ["--policy", "bind", "--nodes", "1"],
     {"policy": "bind", "memory_nodes": "1"}, 5,
     "node 1 is outside the memory nodes this process may use: its cgroup's cpuset "
     "(cgroup v2 /sys/fs/cgroup/jobs/job1) allows only 0"),
    ("CPU node outside the cpuset", "confined", ["-N", "1"], {"nodes": "1"}, 5,
     "the CPUs of node 1 (18-35,54-71) are outside the CPUs this process may use (its "
     "cgroup's cpuset (cgroup v2 /sys/fs/cgroup/jobs/job1))"),
    ("memory-less node", "odd", ["--policy", "bind", "--nodes", "3"],
     {"policy": "bind", "memory_nodes": "3"}, 6,
     "node 3 has no memory, so no pages can be placed there — choose nodes with memory: 0-2,4"),
    ("CPU-less node for CPUs", "odd", ["-N", "2"], {"nodes": "2"}, 6,
     "node 2 has no CPUs (a memory-only node) — nodes with usable CPUs are 0-1,3"),
    ("every CPU of the node offline", "odd", ["-N", "4"], {"nodes": "4"}, 6,
     "every CPU of node 4 (6-7) is offline"),
    ("preferred with several nodes", "c5n", ["--policy", "preferred", "--nodes", "0,1"],
     {"policy": "preferred", "memory_nodes": "0,1"}, 6,
     "memory policy preferred takes one node, not 0-1 — use preferred-many for several "
     "nodes, or name one node"),
    ("a node-less mode with nodes", "c5n", ["--policy", "local", "--nodes", "0"],
     {"policy": "local", "memory_nodes": "0"}, 6, "memory policy local takes no nodes, but"),
]  # fmt: skip


def _words(stderr: str) -> str:
    """The message without its location: what every front end must say alike."""
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("numarun: "), stderr
    return line


def _spec(tmp_path: Path, keys: dict[str, str]) -> Path:
    body = "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    path = tmp_path / "job.toml"
    path.write_text(f'[[process]]\nname = "w"\ncommand = ["true"]\nworkers = 1\n{body}')
    return path


@pytest.mark.parametrize("row", SAME_MISTAKE, ids=[row[0] for row in SAME_MISTAKE])
def test_same_mistake_same_code_and_words_everywhere(
    machines: dict[str, Path],
    tmp_path: Path,
    row: tuple[str, str, list[str], dict[str, str], int, str],
) -> None:
    _condition, machine, options, keys, code, words = row
    root = str(machines[machine])
    marker = tmp_path / "ran"
    command = ("--root", root, "--", "touch", str(marker))
    fronts = {
        "prefix": numarun(*options, *command),
        "rank": numarun("--rank", "0", "--ranks", "1", *options, *command),
        "spec": numarun("plan", str(_spec(tmp_path, keys)), "--topology", root),
    }
    for front, done in fronts.items():
        assert done.returncode == code, f"{front}: {done.stderr}"
        line = _words(done.stderr)
        assert words in line, f"{front} says {line!r}"
        assert "Traceback" not in done.stderr
    assert not marker.exists()


def test_man_page_exit_status_is_the_catalogue() -> None:
    page = (REPO / "man" / "numarun.1").read_text()
    found = re.search(r"^\.SH EXIT STATUS\n(.*?)^\.SH ", page, re.S | re.M)
    assert found is not None
    assert found.group(1) == refusals.man_exit_status(), (
        "man/numarun.1 EXIT STATUS differs from numarun.refusals.CATALOGUE: "
        "regenerate it with python -m numarun.refusals"
    )


def test_every_error_class_is_in_the_catalogue() -> None:
    from numarun import errors

    codes = {code for code, _meaning, _conditions in refusals.CATALOGUE}
    base = errors.NumarunError
    classes = [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, base)
    ]  # fmt: skip
    classes.remove(base)
    assert classes
    for cls in classes:
        assert cls.exit_code in codes, f"{cls.__name__} ({cls.exit_code}) is not documented"


def _dry(*args: str) -> dict[str, str]:
    done = numarun(*args, "--dry-run", "--", "true")
    assert done.returncode == 0, done.stderr
    return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)


def test_cpus_follow_memory_in_numaruns_spelling(machines: dict[str, Path]) -> None:
    root = str(machines["c5n"])
    plan = _dry("--policy", "bind", "--nodes", "1", "--root", root)
    assert plan["cpus"] == "18-35,54-71"
    plan = _dry("--policy", "bind", "--nodes", "1", "--smt", "avoid", "--root", root)
    assert plan["cpus"] == "18-35"  # one thread per core of node 1
    plan = _dry("--policy", "preferred-many", "--nodes", "0,1", "--root", root)
    assert plan["cpus"] == "0-71"
    plan = _dry("--nodes", "1", "--root", root)  # --nodes alone means bind
    assert plan["cpus"] == "18-35,54-71"


def test_numactl_spellings_leave_cpus_and_warn_of_remote_memory(
    machines: dict[str, Path],
) -> None:
    root = str(machines["c5n"])
    for options in (["-m", "1"], ["--membind=1"], ["-p", "1"], ["-i", "1"], ["-P", "0,1"]):
        assert _dry(*options, "--root", root)["cpus"] == "unchanged", options
    done = numarun("-m", "1", "--root", root, "--explain", "--", "true")
    assert "memory is bound to node 1 but the command may run on CPUs 0-17,36-53" in done.stdout
    assert "-N 1, or write --policy bind --nodes 1" in done.stdout
    quiet = numarun("-N", "1", "-m", "1", "--root", root, "--explain", "--", "true")
    assert "remotely" not in quiet.stdout


def test_explicit_options_widen_the_inherited_affinity(machines: dict[str, Path]) -> None:
    root = str(machines["taskset"])
    assert _dry("-N", "1", "--root", root)["cpus"] == "18-35,54-71"
    assert _dry("--cpus", "40-41", "--root", root)["cpus"] == "40-41"
    assert _dry("--policy", "bind", "--nodes", "1", "--root", root)["cpus"] == "18-35,54-71"


def test_numactls_physcpubind_keeps_to_the_inherited_affinity(machines: dict[str, Path]) -> None:
    # As libnuma checks it (numactl's test/bind_range): only -a first lets -C leave it.
    root = str(machines["taskset"])
    for option in ("-C", "--physcpubind"):
        done = numarun(option, "40-41", "--root", root, "--dry-run", "--", "true")
        assert done.returncode == 5, done.stderr
        assert done.stderr == (
            f"numarun: {option}: CPUs 40-41 are outside its inherited CPU affinity (0-1: "
            f"taskset or a launcher), and {option} keeps to it, as numactl's does — choose "
            "from 0-1, or put -a first (numactl's --all), or use --cpus, which may widen the "
            "affinity within the cpuset\n"
        )
    assert _dry("-a", "-C", "40-41", "--root", root)["cpus"] == "40-41"
    assert _dry("-C", "all", "--root", root)["cpus"] == "0-1"  # all: the affinity's
    assert _dry("--physcpubind=+1", "--root", root)["cpus"] == "1"
    # Outside the cgroup's cpuset, the cpuset is named: it is what -a cannot widen.
    done = numarun("-C", "40", "--root", str(machines["confined"]), "--dry-run", "--", "true")
    assert done.returncode == 5, done.stderr
    assert "its cgroup's cpuset (cgroup v2 /sys/fs/cgroup/jobs/job1) allows" in done.stderr


def test_numaruns_own_choices_stay_in_the_inherited_affinity(
    machines: dict[str, Path], tmp_path: Path
) -> None:
    root = str(machines["taskset"])
    done = numarun("--policy", "bind", "--root", root, "--explain", "--", "true")
    assert done.returncode == 0, done.stderr
    assert "cpus: 0-1" in done.stdout
    assert "within its inherited CPU affinity (0-1: taskset or a launcher)" in done.stdout
    # The affinity reads as the launcher's binding of this rank: it is planned within it.
    assert _dry("--rank", "1", "--ranks", "2", "--root", root)["cpus"] == "0-1"
    # A job naming node 1 is refused, naming the affinity, not the cgroup, as the limit.
    done = numarun("plan", str(_spec(tmp_path, {"nodes": "1"})), "--topology", root)
    assert done.returncode == 5, done.stderr
    assert "inherited CPU affinity (0-1: taskset or a launcher)" in done.stderr
    assert "cgroup" not in done.stderr


def test_relative_nodes_are_positions_never_looked_up(machines: dict[str, Path]) -> None:
    root = str(machines["confined"])  # allows memory node 0 only
    plan = _dry("--relative-nodes", "-m", "12", "--root", root)
    assert plan["memory policy"].startswith("bind") and plan["cpus"] == "unchanged"
    plan = _dry("--relative-nodes", "--policy", "bind", "--nodes", "3", "--root", root)
    assert plan["cpus"] == "unchanged"  # positions: no CPUs to follow
    assert "relative" in _dry("--relative-nodes", "-i", "all", "--root", root)["memory policy"]
    done = numarun("--relative-nodes", "-m", "!0", "--root", root, "--dry-run", "--", "true")
    assert done.returncode == 2 and "already positions" in done.stderr
