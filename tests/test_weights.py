"""``numarun weights``: weights from bandwidth as small integers, written all or none.

Every write goes to a fake sysfs tree (``--root``), never to this machine's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from numarun import sysfs, weights
from numarun.topology import read_topology
from tests.conftest import REPO
from tests.fakesysfs import c5n_18xlarge, write_two_sockets_with_cxl

WEIGHTS = sysfs.WEIGHTS_DIR


def _on_disk(root: Path) -> dict[int, int]:
    return {
        int(p.name[4:]): int(p.read_text())
        for p in (root / WEIGHTS).iterdir()
        if p.name.startswith("node") and p.is_file()
    }


def _weights(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "numarun", "weights", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    ("bandwidth", "expect"),
    [
        ({0: 20000, 2: 8000}, {0: 5, 2: 2}),  # the 20 GB/s : 8 GB/s
        ({0: 20480, 2: 8192}, {0: 5, 2: 2}),
        ({0: 20000, 2: 7900}, {0: 5, 2: 2}),  # shares within half a point: still 5:2
        ({0: 30000, 1: 20000, 2: 10000}, {0: 3, 1: 2, 2: 1}),
        ({0: 16000, 1: 16000}, {0: 1, 1: 1}),
        ({0: 25000, 1: 5000}, {0: 5, 1: 1}),
    ],
)
def test_small_ratio(bandwidth: dict[int, float], expect: dict[int, int]) -> None:
    assert weights.small_ratio(bandwidth) == expect


def test_small_ratio_keeps_every_share_close() -> None:
    bandwidth = {0: 25600.0, 1: 19200.0, 2: 6400.0, 3: 3333.0}
    found = weights.small_ratio(bandwidth)
    assert max(found.values()) <= 64
    want = weights.shares({n: round(v) for n, v in bandwidth.items()})
    got = weights.shares(found)
    assert all(abs(got[n] - want[n]) <= weights.SHARE_TOLERANCE for n in bandwidth)


def test_show_lists_weights_tiers_and_bandwidth(tmp_path: Path) -> None:
    done = _weights(
        "--root", str(write_two_sockets_with_cxl(tmp_path, weights={0: 5, 1: 5, 2: 2, 3: 2}))
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:]}
    assert rows["0"][:4] == ["0", "5", "35.7%", "4"] and "20.0" in rows["0"]
    assert rows["2"][:4] == ["2", "2", "14.3%", "35"] and "8.0" in rows["2"]


def test_set_bandwidth_writes_5_5_2_2_and_prints_old_and_new(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path)
    done = _weights("--root", str(root), "--set", "bandwidth")
    assert done.returncode == 0, done.stderr
    assert _on_disk(root) == {0: 5, 1: 5, 2: 2, 3: 2}
    assert done.stdout.splitlines()[0].split() == ["node", "old", "new"]
    assert done.stdout.splitlines()[3].split() == ["2", "1", "2", "changed"]
    assert read_topology(root).weighted_interleave.weights == {0: 5, 1: 5, 2: 2, 3: 2}  # type: ignore[union-attr]


def test_set_given_writes_only_those(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path)
    done = _weights("--root", str(root), "--set", "0=5,2=2", "--json")
    assert done.returncode == 0, done.stderr
    assert _on_disk(root) == {0: 5, 1: 1, 2: 2, 3: 1}
    assert '"new": {\n  "0": 5,\n  "1": 1,\n  "2": 2' in done.stdout


def test_all_or_none_when_the_kernel_refuses_one(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path)
    (root / WEIGHTS / "node3").unlink()
    (root / WEIGHTS / "node3").mkdir()  # a write there fails, after nodes 0-2 were written
    done = _weights("--root", str(root), "--set", "0=5,1=5,2=2,3=2")
    assert done.returncode == 7
    assert "refused weight 2 for node 3" in done.stderr and done.stderr.count("\n") == 1
    assert _on_disk(root) == {0: 1, 1: 1, 2: 1}  # undone


def test_reset_goes_back_to_one_or_to_auto(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path / "a", weights={0: 5, 1: 5, 2: 2, 3: 2})
    assert _weights("--root", str(root), "--reset").returncode == 0
    assert _on_disk(root) == {0: 1, 1: 1, 2: 1, 3: 1}
    auto = write_two_sockets_with_cxl(tmp_path / "b", weights={0: 5, 1: 5, 2: 2, 3: 2}, auto=False)
    assert _weights("--root", str(auto), "--reset").returncode == 0
    assert (auto / WEIGHTS / "auto").read_text() == "true\n"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--set", "0=x"], 2, "'0=x' is not NODE=WEIGHT"),
        (["--set", "0=256"], 2, "weight 256 for node 0 is outside 1-255"),
        (["--set", "7=1"], 4, "node 7 does not exist"),
        (["--set", "bandwidth", "--reset"], 2, "--set and --reset both"),
        (["--set", "measured"], 2, "the probe measures this machine, not --root's"),
    ],
)
def test_refusals_are_one_line(tmp_path: Path, args: list[str], code: int, words: str) -> None:
    root = write_two_sockets_with_cxl(tmp_path)
    done = _weights("--root", str(root), *args)
    assert done.returncode == code and done.stderr.count("\n") == 1, done.stderr
    assert words in done.stderr and done.stderr.startswith("numarun: ")
    assert _on_disk(root) == {0: 1, 1: 1, 2: 1, 3: 1}


def test_kernel_without_weighted_interleave(tmp_path: Path) -> None:
    done = _weights("--root", str(c5n_18xlarge().write(tmp_path)))
    assert done.returncode == 7 and done.stderr.count("\n") == 1
    assert "6.1.0-test) has no weighted interleave" in done.stderr and "6.9" in done.stderr


def test_no_hmat_refuses_bandwidth_and_takes_given_weights(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path, access={})
    done = _weights("--root", str(root), "--set", "bandwidth")
    assert done.returncode == 6 and "node 0 has no HMAT bandwidth" in done.stderr
    assert _weights("--root", str(root), "--set", "0=3").returncode == 0


def test_not_root_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path)
    for path in (root / WEIGHTS).iterdir():
        path.chmod(0o444)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes anything: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop root's capabilities")
        prefix = (setpriv, "--inh-caps=-all", "--bounding-set=-all", "--")
    done = _weights("--root", str(root), "--set", "bandwidth", prefix=prefix)
    assert done.returncode == 7 and done.stderr.count("\n") == 1, done.stderr
    assert "needs root" in done.stderr
    assert _on_disk(root) == {0: 1, 1: 1, 2: 1, 3: 1}


def test_a_job_asking_bandwidth_on_an_old_kernel_is_told_the_kernel_first(tmp_path: Path) -> None:
    # Linux 6.1 on a cloud instance: no weighted interleave and no HMAT either; the kernel is
    # what stands in the way (a job's weights = "bandwidth" is worked out before it starts).
    from numarun.errors import KernelRefusedError

    root = str(c5n_18xlarge().write(tmp_path))
    with pytest.raises(KernelRefusedError, match=r"has no weighted interleave.*6\.9"):
        weights.wanted("bandwidth", read_topology(root), root)
