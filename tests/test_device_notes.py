"""A process placed near a device, and its memory on other nodes: a note, never a failure.

numarun tells a process it places near a device (a per-gpu worker, ``near = ...``, a prefix
launch with ``--nodes gpu:N`` or ``-N netdev:...``) the device in its environment
(``NUMARUN_DEVICE``, ``NUMARUN_DEVICE_NODE``); ``numarun placement`` and ``numarun status
--verdict`` read it back and say when the pages are elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from numarun.numamaps import summarize
from numarun.plan import plan_job
from numarun.report import PASS, ProcessReport, build_report, device_of, to_json
from numarun.spec import parse_spec_text
from numarun.topology import load_topology

from .conftest import REPO
from .test_devices import PER_GPU, gpu_server, numarun
from .test_placement_cli import CHILD

MAPS = "7f0000000000 default anon=1000 dirty=1000 N0=900 N1=100 kernelpagesize_kB=4\n"


def _report(device: tuple[str, int] | None, maps: str = MAPS) -> ProcessReport:
    return build_report(
        1, summarize(maps), cpu_to_node={0: 0, 1: 1}, cpus_allowed=frozenset({0, 1}),
        device=device,
    )  # fmt: skip


def test_memory_off_the_devices_node_is_noted_not_failed() -> None:
    report = _report(("gpu 1 (0000:ca:00.0)", 1))
    assert report.ok and report.verdicts[0].status == PASS
    data = to_json(report)
    assert data["status"] == "pass"
    assert data["device"] == {
        "name": "gpu 1 (0000:ca:00.0)",
        "node": 1,
        "elsewhere_bytes": {"0": 900 * 4096},
        "elsewhere_share": 0.9,
        "note": "90% of the memory is not on node 1 of gpu 1 (0000:ca:00.0), the device it "
        "runs near (3.5 MB on node 0): copies to the device cross nodes",
    }


def test_memory_on_the_devices_node_has_no_note() -> None:
    maps = "7f0000000000 default anon=1000 dirty=1000 N0=995 N1=5 kernelpagesize_kB=4\n"
    device = to_json(_report(("eth0 (0000:18:00.0)", 0), maps))["device"]
    assert isinstance(device, dict)
    assert device["note"] is None
    assert device["elsewhere_share"] == 0.005
    assert to_json(_report(None))["device"] is None


@pytest.mark.parametrize(
    "env",
    [{}, {"NUMARUN_DEVICE": "gpu 0"}, {"NUMARUN_DEVICE": "gpu 0", "NUMARUN_DEVICE_NODE": "x"}],
)
def test_no_device_without_both_variables(env: dict[str, str]) -> None:
    assert device_of(env) is None


def test_per_gpu_and_near_workers_are_told_their_device(tmp_path: Path) -> None:
    server = load_topology(gpu_server(tmp_path / "server"))
    (group,) = plan_job(server, parse_spec_text(PER_GPU)).processes
    told = [(w.env["NUMARUN_DEVICE"], w.env["NUMARUN_DEVICE_NODE"]) for w in group.workers]
    assert told[0] == ("gpu 0 (0000:65:00.0)", "0")
    assert told[4] == ("gpu 4 (0000:d0:00.0)", "2")  # the device's own node, not the CPUs'
    near = '[[process]]\nname = "rx"\ncommand = ["rx"]\nnear = "netdev:eth0"\n'
    (group,) = plan_job(server, parse_spec_text(near)).processes
    assert group.workers[0].env["NUMARUN_DEVICE"] == "eth0 (0000:18:00.0)"


def test_prefix_dry_run_shows_the_device_it_tells_the_command(tmp_path: Path) -> None:
    server = gpu_server(tmp_path / "server")
    done = numarun("--root", str(server), "--nodes", "gpu:2", "--dry-run", "--", "true")
    assert done.returncode == 0, done.stderr
    assert "env: NUMARUN_DEVICE=gpu 2 (0000:ca:00.0)\nenv: NUMARUN_DEVICE_NODE=1\n" in done.stdout
    plain = numarun("--root", str(server), "--nodes", "1", "--dry-run", "--", "true")
    assert "env:" not in plain.stdout


@pytest.fixture
def near_child(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child allocating 8 MiB on this machine's node 0, told it runs near a GPU on node 1."""
    env = {**os.environ, "NUMARUN_DEVICE": "gpu 3 (0000:e3:00.0)", "NUMARUN_DEVICE_NODE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "8"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


def test_placement_of_a_live_process_notes_its_device(near_child: subprocess.Popen[str]) -> None:
    done = numarun("placement", str(near_child.pid), "--check")
    assert done.returncode == 0, done.stderr  # a note is not a failed check
    note = [line for line in done.stdout.splitlines() if line.startswith("  NOTE  ")]
    assert len(note) == 1
    assert "of the memory is not on node 1 of gpu 3 (0000:e3:00.0)" in note[0]
    assert " on node 0)" in note[0]
    data = json.loads(numarun("placement", str(near_child.pid), "--json").stdout)
    device = data["processes"][0]["device"]
    assert device["node"] == 1 and device["elsewhere_share"] > 0.9


def test_a_prefix_launch_near_a_nic_carries_its_device(tmp_path: Path) -> None:
    server = gpu_server(tmp_path / "server")  # eth0 is on node 0, which this machine has
    script = "import os; print(os.environ['NUMARUN_DEVICE'], os.environ['NUMARUN_DEVICE_NODE'])"
    done = subprocess.run(
        [sys.executable, "-m", "numarun", "--root", str(server), "-N", "netdev:eth0", "--",
         sys.executable, "-c", script],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "eth0 (0000:18:00.0) 0\n"
