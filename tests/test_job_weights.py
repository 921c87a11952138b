"""A job's ``weights = "bandwidth"``: set when the job starts, restored when it stops.

The weights go to a fake sysfs tree; ``numarun run`` uses the same context on ``/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from numarun import sysfs, weights
from numarun.errors import KernelRefusedError, SpecError
from numarun.spec import parse_spec_text
from numarun.topology import read_topology
from tests.fakesysfs import two_sockets_with_cxl

JOB = '[[process]]\nname = "db"\ncommand = ["db"]\n'


def _root(tmp_path: Path, **changes: object) -> Path:
    machine, tiering = two_sockets_with_cxl()
    for name, value in changes.items():
        setattr(tiering, name, value)
    tiering.write(machine.write(tmp_path))
    return tmp_path


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
    root = _root(tmp_path, weights={0: 1, 1: 1, 2: 1, 3: 1})
    topology = read_topology(root)
    with weights.applied("bandwidth", topology, str(root)) as asked:
        assert asked == {0: 5, 1: 5, 2: 2, 3: 2}
        assert _on_disk(root) == {0: 5, 1: 5, 2: 2, 3: 2}
    assert _on_disk(root) == {0: 1, 1: 1, 2: 1, 3: 1}


def test_restored_when_the_job_fails_and_auto_comes_back(tmp_path: Path) -> None:
    root = _root(tmp_path, weights={0: 3, 1: 3, 2: 1, 3: 1}, auto=True)
    topology = read_topology(root)
    with pytest.raises(RuntimeError), weights.applied("0=7", topology, str(root)):
        # what the kernel does at the first weight written: auto goes off
        (root / sysfs.WEIGHTS_DIR / "auto").write_text("false\n")
        raise RuntimeError("a worker crashed")
    assert _on_disk(root) == {0: 3, 1: 3, 2: 1, 3: 1}
    assert (root / sysfs.WEIGHTS_DIR / "auto").read_text() == "true\n"


def test_refused_before_anything_starts(tmp_path: Path) -> None:
    root = _root(tmp_path)
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
