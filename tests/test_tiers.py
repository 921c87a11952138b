"""Tiered memory in the topology: memory tiers, HMAT figures, interleave weights, demotion.

The fixture is the issue's machine: two sockets, each with DRAM and its own CPU-less CXL
node (tests/fakesysfs.py ``two_sockets_with_cxl``); the JSON names are the ones the issue
promises to scripts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from numarun.errors import TopologyError
from numarun.render import render_drawing, render_hardware, warnings
from numarun.topology import load_topology, read_topology, save_snapshot
from tests.conftest import REPO
from tests.fakesysfs import Tiering, c5n_18xlarge, write_two_sockets_with_cxl


def test_json_names_tiers_and_hmat_figures(tmp_path: Path) -> None:
    data = read_topology(write_two_sockets_with_cxl(tmp_path)).to_dict()
    nodes = {n["id"]: n for n in data["nodes"]}
    assert [nodes[n]["tier"] for n in range(4)] == [4, 4, 35, 35]
    assert nodes[2]["access"] == {
        "initiators": [0],
        "read_bandwidth_mbps": 8000,
        "write_bandwidth_mbps": 8000,
        "read_latency_ns": 250,
        "write_latency_ns": 300,
    }
    assert nodes[3]["access"]["initiators"] == [1]
    assert data["weighted_interleave"] == {"auto": None, "weights": {str(n): 1 for n in range(4)}}
    assert data["demotion_enabled"] is True
    assert data["identity"]["numa_balancing_mode"] == 2


def test_machine_without_tiering_says_null(tmp_path: Path) -> None:
    data = read_topology(c5n_18xlarge().write(tmp_path)).to_dict()
    assert {n["tier"] for n in data["nodes"]} == {None}
    assert {n["access"] for n in data["nodes"]} == {None}
    assert data["weighted_interleave"] is None  # a kernel before 6.9
    assert data["demotion_enabled"] is None


def test_auto_mode_is_read(tmp_path: Path) -> None:
    topo = read_topology(
        write_two_sockets_with_cxl(tmp_path, auto=True, weights={0: 5, 1: 5, 2: 2, 3: 2})
    )
    assert topo.weighted_interleave is not None
    assert topo.weighted_interleave.auto is True
    assert topo.weighted_interleave.weights == {0: 5, 1: 5, 2: 2, 3: 2}
    assert "weights 0:5 1:5 2:2 3:2 (auto" in render_drawing(topo)


def test_drawing_shows_tier_and_bandwidth_per_node(tmp_path: Path) -> None:
    text = render_drawing(read_topology(write_two_sockets_with_cxl(tmp_path)))
    boxes = text.split("╭─")[1:]
    assert "tier 4 · read 20.0 GB/s 100 ns" in boxes[0]
    assert "tier 35 · read 8.0 GB/s 250 ns, write 8.0 GB/s 300 ns from node 0" in boxes[2]
    assert "from node 1" in boxes[3]
    assert "weighted interleave: weights 0:1 1:1 2:1 3:1" in text
    assert "demotion to lower tiers: on" in text
    assert "NUMA balancing tiering" in text.splitlines()[0]


def test_warnings_name_tiering_balancing_and_equal_weights(tmp_path: Path) -> None:
    found = warnings(read_topology(write_two_sockets_with_cxl(tmp_path)))
    assert any("memory-tiering mode (2)" in w for w in found)
    assert any("weights are all equal" in w and "--set bandwidth" in w for w in found)
    fixed = warnings(
        read_topology(write_two_sockets_with_cxl(tmp_path / "b", weights={0: 5, 1: 5, 2: 2, 3: 2}))
    )
    assert not any("weights are all equal" in w for w in fixed)


def test_hardware_view_is_numactls_layout_still(tmp_path: Path) -> None:
    text = render_hardware(read_topology(write_two_sockets_with_cxl(tmp_path)))
    assert "tier" not in text and "GB/s" not in text
    assert text.startswith("available: 4 nodes (0-3)\n")


def test_snapshot_carries_all_of_it(tmp_path: Path) -> None:
    topo = read_topology(write_two_sockets_with_cxl(tmp_path / "root"))
    save_snapshot(topo, tmp_path / "snap.json")
    again = load_topology(tmp_path / "snap.json")
    assert again.nodes == topo.nodes
    assert again.weighted_interleave == topo.weighted_interleave
    assert again.demotion_enabled is True and again.identity.numa_balancing_mode == 2


def test_old_snapshot_without_the_fields_loads(tmp_path: Path) -> None:
    data = read_topology(write_two_sockets_with_cxl(tmp_path / "root")).to_dict()
    for node in data["nodes"]:
        del node["tier"], node["access"]
    del data["weighted_interleave"], data["demotion_enabled"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = load_topology(tmp_path / "old.json")
    assert old.nodes[2].tier is None and old.weighted_interleave is None


def test_bad_weights_in_a_snapshot_are_one_line(tmp_path: Path) -> None:
    data = read_topology(write_two_sockets_with_cxl(tmp_path / "root")).to_dict()
    data["weighted_interleave"]["weights"]["2"] = "heavy"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(TopologyError, match=r"weighted_interleave\.weights\.2"):
        load_topology(tmp_path / "bad.json")


def test_firmware_zeros_are_unknown_figures(tmp_path: Path) -> None:
    # memorysidecaches (a real HMAT): initiators given, every figure 0 = not given.
    tiering = Tiering(tiers={}, access={0: ((0,), 0, 0, 0, 0)}, demotion=None)
    machine = c5n_18xlarge()
    tiering.write(machine.write(tmp_path))
    access = read_topology(tmp_path).nodes[0].access
    assert access is not None and access.initiators == {0}
    assert access.read_bandwidth_mbps is None


def test_garbage_demotion_flag_is_one_line(tmp_path: Path) -> None:
    root = write_two_sockets_with_cxl(tmp_path)
    (root / "sys/kernel/mm/numa/demotion_enabled").write_text("maybe\n")
    done = subprocess.run(
        [sys.executable, "-m", "numarun", "topology", "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 8 and done.stderr.count("\n") == 1
    assert "demotion_enabled holds 'maybe', not true or false" in done.stderr
