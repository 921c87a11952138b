"""A job's ``weights = "bandwidth"``: set when the job starts, restored when it stops.

The weights go to a fake sysfs tree; ``numarun run`` uses the same context on ``/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from numarun import sysfs, weights
from numarun.errors import KernelRefusedError, SpecError
from numarun.spec import parse_spec_text
from numarun.topology import read_topology
from tests.conftest import REPO
from tests.fakesysfs import write_two_sockets_with_cxl

JOB = '[[process]]\nname = "db"\ncommand = ["db"]\n'


def _on_disk(root: Path) -> dict[int, int]:
    return sysfs.interleave_weights(sysfs.Root(root))


def test_spec_takes_bandwidth_or_given_weights() -> None:
    assert parse_spec_text('weights = "bandwidth"\n' + JOB).weights == "bandwidth"
    assert parse_spec_text('weights = "0=5,2=2"\n' + JOB).weights == "0=5,2=2"
    assert parse_spec_text(JOB).weights is None


@pytest.mark.parametrize("value", ['"fast"', '"0=0"', "5"])
def test_spec_refuses_other_weights_naming_the_line(value: str) -> None:
    with pytest.raises(SpecError, match=r"job\.toml:1: weights: .* is not bandwidth") as err:
        parse_spec_text(f"weights = {value}\n" + JOB, "job.toml")
    assert "weights such as" in str(err.value)


def test_weights_in_force_while_the_job_runs_then_restored(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path, weights={0: 1, 1: 1, 2: 1, 3: 1})
    topology = read_topology(root)
    with weights.applied("bandwidth", topology, str(root)) as asked:
        assert asked == {0: 5, 1: 5, 2: 2, 3: 2}
        assert _on_disk(root) == {0: 5, 1: 5, 2: 2, 3: 2}
    assert _on_disk(root) == {0: 1, 1: 1, 2: 1, 3: 1}


def test_restored_when_the_job_fails_and_auto_comes_back(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path, weights={0: 3, 1: 3, 2: 1, 3: 1}, auto=True)
    topology = read_topology(root)
    with pytest.raises(RuntimeError), weights.applied("0=7", topology, str(root)):
        # what the kernel does at the first weight written: auto goes off
        (root / sysfs.WEIGHTS_DIR / "auto").write_text("false\n")
        raise RuntimeError("a worker crashed")
    assert _on_disk(root) == {0: 3, 1: 3, 2: 1, 3: 1}
    assert (root / sysfs.WEIGHTS_DIR / "auto").read_text() == "true\n"


def test_refused_before_anything_starts(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path)
    (root / sysfs.WEIGHTS_DIR / "node3").unlink()
    (root / sysfs.WEIGHTS_DIR / "node3").mkdir()  # the kernel refuses node 3
    started = []
    with (
        pytest.raises(KernelRefusedError, match="refused weight 2 for node 3"),
        weights.applied("bandwidth", read_topology(root), str(root)),
    ):
        started.append("worker")
    assert not started
    assert _on_disk(root) == {0: 1, 1: 1, 2: 1}


# --- numarun plan: the weights a job would write, next to those in force, and each share ---

WEIGHTED = (
    '[[process]]\nname = "db"\ncommand = ["db"]\npolicy = "weighted-interleave"\n'
    'memory_nodes = "local+cpuless"\nworkers = "per-node"\n'
)


def _plan(tmp_path: Path, text: str, *, json_out: bool = False, **changes: object) -> Any:
    # fresh: tmp_path/root must not exist yet
    root = write_two_sockets_with_cxl(tmp_path / "root", **changes)
    (tmp_path / "job.toml").write_text(text)
    argv = ["plan", str(tmp_path / "job.toml"), "--topology", str(root)]
    done = subprocess.run(
        [sys.executable, "-m", "numarun", *argv, *(["--json"] if json_out else [])],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if json_out else done.stdout


def test_plan_shows_the_weights_the_job_writes_next_to_those_in_force(tmp_path: Path) -> None:
    out = _plan(tmp_path, 'weights = "bandwidth"\n' + WEIGHTED)
    lines = out.splitlines()
    assert lines[0].startswith("weighted interleave weights: the job writes 'bandwidth' while")
    assert [line.split() for line in lines[1:6]] == [
        ["node", "in", "force", "job"],
        ["0", "1", "5"],
        ["1", "1", "5"],
        ["2", "1", "2"],
        ["3", "1", "2"],
    ]
    assert "weighted-interleave 0,2 (0: 71%, 2: 29%)" in out
    assert "weighted-interleave 1,3 (1: 71%, 3: 29%)" in out


def test_plan_json_weights_and_each_workers_shares(tmp_path: Path) -> None:
    data = _plan(tmp_path, 'weights = "0=3,2=1"\n' + WEIGHTED, json_out=True)
    assert data["weights"] == {
        "asked": "0=3,2=1",
        "auto": None,
        "in_force": {"0": 1, "1": 1, "2": 1, "3": 1},
        "job": {"0": 3, "2": 1},
    }
    workers = data["processes"][0]["workers"]
    assert [(w["memory"]["nodes"], w["shares"]) for w in workers] == [
        ([0, 2], {"0": 0.75, "2": 0.25}),
        ([1, 3], {"1": 0.5, "3": 0.5}),  # nodes 1 and 3 keep the weights in force: 1:1
    ]


def test_plan_without_job_weights_shows_those_in_force(tmp_path: Path) -> None:
    out = _plan(tmp_path, WEIGHTED, weights={0: 3, 1: 3, 2: 1, 3: 1}, auto=True)
    assert out.splitlines()[0] == (
        "weighted interleave weights in force (the kernel's auto mode); the job sets none"
    )
    assert "job" not in out.splitlines()[1].split()
    assert "weighted-interleave 0,2 (0: 75%, 2: 25%)" in out


def test_plan_of_a_job_without_weighted_interleave_has_no_weights(tmp_path: Path) -> None:
    data = _plan(tmp_path / "a", JOB, json_out=True)
    assert data["weights"] is None
    assert data["processes"][0]["workers"][0]["shares"] is None
    assert _plan(tmp_path / "b", JOB).startswith("process db: 2 workers, policy default")


def test_plan_says_run_would_refuse_weights_without_hmat(tmp_path: Path) -> None:
    data = _plan(tmp_path, 'weights = "bandwidth"\n' + WEIGHTED, json_out=True, access={})
    assert data["weights"]["job"] is None
    assert any(
        w.startswith("numarun run would refuse: weights = 'bandwidth': ") and "no HMAT" in w
        for w in data["warnings"]
    )
    # the workers interleave by the weights in force meanwhile
    assert data["processes"][0]["workers"][0]["shares"] == {"0": 0.5, "2": 0.5}


def test_plan_on_a_kernel_without_weighted_interleave(tmp_path: Path) -> None:
    out = _plan(tmp_path, 'weights = "bandwidth"\n' + WEIGHTED, weights=None)
    assert out.splitlines()[0] == "weighted interleave: none on this kernel (Linux 6.9+)"
    assert "warning: numarun run would refuse: weights = 'bandwidth': this kernel" in out


def test_readme_shows_the_plan_of_the_tiered_example(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    command = "$ numarun plan examples/tiered.toml --topology cxl-host.json"
    block = readme.split(command, 1)[1].split("\n```", 1)[0].splitlines()[1:]
    shown = _plan(tmp_path, (REPO / "examples/tiered.toml").read_text()).splitlines()
    assert block == shown[: len(block)]
    assert shown[len(block) :] == [] or shown[len(block)] == ""  # then only warnings
