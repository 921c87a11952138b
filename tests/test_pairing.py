"""``memory_nodes = "local+cpuless"``: each worker with its own socket's CXL node, never another's.

On the fixture (two sockets, CXL node 2 behind node 0 and CXL node 3 behind node 1) worker 0
must interleave over 0+2 and worker 1 over 1+3: by HMAT's initiators, or by SLIT distance
where the firmware has no HMAT.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from numarun.plan import plan_process
from numarun.spec import ProcessSpec
from numarun.topology import Topology, read_topology
from tests.conftest import REPO
from tests.fakesysfs import two_sockets_with_cxl


def _topology(tmp_path: Path, *, hmat: bool = True, far: dict[int, int] | None = None) -> Topology:
    machine, tiering = two_sockets_with_cxl()
    if not hmat:
        tiering.access = {}
    for node, row in (far or {}).items():  # replace a CPU-less node's SLIT distances
        for other, distance in row.items():
            machine.distances[node][other] = machine.distances[other][node] = distance
    tiering.write(machine.write(tmp_path))
    return read_topology(tmp_path)


def _memory(topology: Topology, **keys: Any) -> list[tuple[int, list[int]]]:
    spec = ProcessSpec.model_validate(
        {"name": "g", "command": ["run"], "memory_nodes": "local+cpuless", **keys}
    )
    plan, _ = plan_process(topology, spec)
    return [(w.node, sorted(w.memory.nodes)) for w in plan.workers]


@pytest.mark.parametrize("mode", ["interleave", "weighted-interleave", "preferred-many", "bind"])
def test_each_worker_gets_its_own_sockets_cxl(tmp_path: Path, mode: str) -> None:
    assert _memory(_topology(tmp_path), policy=mode) == [(0, [0, 2]), (1, [1, 3])]


def test_without_hmat_slit_distance_pairs_the_same(tmp_path: Path) -> None:
    topology = _topology(tmp_path, hmat=False)
    assert topology.nodes[2].access is None
    assert _memory(topology, policy="interleave") == [(0, [0, 2]), (1, [1, 3])]


def test_hmat_initiator_wins_over_slit(tmp_path: Path) -> None:
    # SLIT says node 3 is nearer node 0 than node 2 is; HMAT says node 2 hangs off node 0.
    topology = _topology(tmp_path, far={3: {0: 12}})
    assert topology.distance(0, 3) < topology.distance(0, 2)
    assert _memory(topology, policy="interleave") == [(0, [0, 2]), (1, [1, 3])]


def test_a_socket_without_cxl_stays_local_and_says_so(tmp_path: Path) -> None:
    machine, tiering = two_sockets_with_cxl()
    tiering.access = {**tiering.access, 3: ((0,), 8000, 8000, 250, 300)}  # both behind 0
    tiering.write(machine.write(tmp_path))
    spec = ProcessSpec.model_validate(
        {"name": "g", "command": ["run"], "memory_nodes": "local+cpuless", "policy": "interleave"}
    )
    plan, warnings = plan_process(read_topology(tmp_path), spec)
    assert [sorted(w.memory.nodes) for w in plan.workers] == [[0, 2, 3], [1]]
    assert any("no CPU-less memory node hangs off node 1" in w for w in warnings)


def test_prefix_form_preset_pairs_by_the_cpus(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _topology(root)
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol/tiered.toml").write_text(
        'description = "DRAM and its CXL"\nmode = "weighted-interleave"\n'
        'memory_nodes = "local+cpuless"\n'
    )
    env = {**os.environ, "NUMARUN_POLICY_PATH": str(tmp_path / "pol")}
    for cpu_node, expect in (("0", "weighted-interleave:0,2"), ("1", "weighted-interleave:1,3")):
        argv = ["--root", str(root), "--policy", "tiered", "--cpu-nodes", cpu_node]
        done = subprocess.run(
            [sys.executable, "-m", "numarun", *argv, "--dry-run", "--", "true"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert f"memory policy: {expect}\n" in done.stdout


def _prefix(
    root: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "numarun", "--root", str(root), *argv, "--", "true"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )


@pytest.mark.parametrize("mode", ["interleave", "weighted-interleave", "preferred-many"])
@pytest.mark.parametrize(("cpu_node", "memory"), [("0", "0,2"), ("1", "1,3")])
def test_prefix_nodes_word_pairs_the_cpu_node_with_its_cxl(
    tmp_path: Path, mode: str, cpu_node: str, memory: str
) -> None:
    _topology(tmp_path)
    argv = ("--policy", mode, "--nodes", "local+cpuless", "-N", cpu_node, "--explain")
    done = _prefix(tmp_path, *argv)
    assert done.returncode == 0, done.stderr
    assert f"memory policy: {mode}:{memory}\n" in done.stdout
    assert f"memory nodes {memory}: --nodes asks for local+cpuless" in done.stdout


def test_prefix_nodes_word_without_cpus_runs_on_the_chosen_node_and_its_cxl(
    tmp_path: Path,
) -> None:
    _topology(tmp_path, hmat=False)  # SLIT pairs them where HMAT is absent
    done = _prefix(tmp_path, "--policy", "interleave", "--nodes", "local+cpuless", "--dry-run")
    assert done.returncode == 0, done.stderr
    policy = done.stdout.splitlines()[0]
    cpus = done.stdout.splitlines()[1]
    assert (policy, cpus) in (
        ("memory policy: interleave:0,2", "cpus: 0-3"),
        ("memory policy: interleave:1,3", "cpus: 4-7"),
    )


def test_prefix_nodes_word_alone_binds(tmp_path: Path) -> None:
    _topology(tmp_path)
    done = _prefix(tmp_path, "--nodes", "local+cpuless", "-N", "1", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "memory policy: bind:1,3\n" in done.stdout


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ("--policy", "local", "--nodes", "local+cpuless"),
            6,
            "memory policy local takes no nodes, but --nodes local+cpuless was given",
        ),
        (
            ("--nodes", "local+cpuless", "--nodes", "1"),
            2,
            "--nodes local+cpuless and --nodes 1 both name memory nodes",
        ),
        (("-m", "local+cpuless"), 2, "-m 'local+cpuless' is not a node list"),
    ],
)
def test_prefix_nodes_word_refusals(
    tmp_path: Path, argv: tuple[str, ...], code: int, message: str
) -> None:
    _topology(tmp_path)
    done = _prefix(tmp_path, *argv, "--dry-run")
    assert done.returncode == code
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_prefix_nodes_word_wins_over_a_presets(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _topology(root)
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol/spread.toml").write_text('mode = "interleave"\nmemory_nodes = "all"\n')
    env = {**os.environ, "NUMARUN_POLICY_PATH": str(tmp_path / "pol")}
    argv = ("--policy", "spread", "--nodes", "local+cpuless", "-N", "1", "--dry-run")
    done = _prefix(root, *argv, env=env)
    assert done.returncode == 0, done.stderr
    assert "memory policy: interleave:1,3\n" in done.stdout


def test_prefix_nodes_word_per_rank_pairs_each_ranks_node(tmp_path: Path) -> None:
    _topology(tmp_path)
    for rank, expect in ((0, "0,2"), (1, "1,3")):
        argv = ("--rank", str(rank), "--ranks", "2", "--policy", "weighted-interleave")
        done = _prefix(tmp_path, *argv, "--nodes", "local+cpuless", "--dry-run")
        assert done.returncode == 0, done.stderr
        assert f"memory policy: weighted-interleave:{expect}\n" in done.stdout


def test_prefix_nodes_word_warns_where_a_socket_has_no_cxl(tmp_path: Path) -> None:
    machine, tiering = two_sockets_with_cxl()
    tiering.access = {**tiering.access, 3: ((0,), 8000, 8000, 250, 300)}  # both behind 0
    tiering.write(machine.write(tmp_path))
    argv = ("--policy", "interleave", "--nodes", "local+cpuless", "-N", "1", "--explain")
    done = _prefix(tmp_path, *argv)
    assert done.returncode == 0, done.stderr
    assert "memory policy: interleave:1\n" in done.stdout
    assert (
        "  - local+cpuless: no CPU-less memory node hangs off node 1 (by HMAT); using local\n"
        in done.stdout
    )
