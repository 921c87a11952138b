"""Real machines read as they are: odd files, cgroups mounted anywhere, the allowed sets apart.

Each fixture is a fake sysfs tree (:mod:`tests.fakesysfs`) with one thing the way some real
machine or captured snapshot has it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numarun import cpulist, sysfs
from numarun.errors import TopologyError
from numarun.render import warnings
from numarun.topology import load_topology, read_cgroup_cpuset, read_topology, save_snapshot
from tests.conftest import REPO
from tests.fakesysfs import FakeMachine, c5n_18xlarge

CPU = "sys/devices/system/cpu"


def _small(tmp_path: Path, **options: object) -> Path:
    machine = FakeMachine(
        nodes={0: [0, 1, 2, 3], 1: [4, 5, 6, 7]},
        siblings=[(0, 1), (2, 3), (4, 5), (6, 7)],
        **options,  # type: ignore[arg-type]
    )
    return machine.write(tmp_path, old_sysfs=True)  # no cpu/online: each CPU's flag decides


# --- the allowed sets, modelled apart -------------------------------------------------


def test_slurm_cgroup_v2_at_cgroup_unified(tmp_path: Path) -> None:
    machine = c5n_18xlarge()
    root = machine.write(tmp_path)
    job = cpulist.parse_list("18-35,54-71")
    machine.confine(
        root, "/system.slice/slurmstepd.scope/job_42", job, [1], mount="/cgroup/unified"
    )
    topo = read_topology(root)
    where = "cgroup v2 /cgroup/unified/system.slice/slurmstepd.scope/job_42"
    assert topo.allowed.cpus == job and topo.allowed.mems == {1}
    assert topo.allowed.cpuset_cpus == job and topo.allowed.cpuset_mems == {1}
    assert topo.allowed.cpuset_source == where
    assert topo.nodes_with_cpus() == [1]
    assert read_cgroup_cpuset(root) == (job, frozenset({1}), where)


def test_only_proc_cpuset_names_a_cgroup_v2_path(tmp_path: Path) -> None:
    machine = c5n_18xlarge()
    root = machine.write(tmp_path)
    machine.confine(root, "/job_7", range(4, 8), [0], mount="/cgroup/unified", cgroup_file=False)
    topo = read_topology(root)
    assert topo.allowed.cpus == {4, 5, 6, 7}
    assert topo.allowed.cpuset_source == "cgroup v2 /cgroup/unified/job_7"


def test_inherited_affinity_is_not_the_cpuset(tmp_path: Path) -> None:
    machine = c5n_18xlarge()
    root = machine.write(tmp_path)
    machine.confine(root, "/kubepods/pod1", range(0, 36), [0, 1])
    machine.pin(root, [0, 1])  # taskset -c 0-1
    topo = read_topology(root)
    assert topo.allowed.cpus == {0, 1}
    assert topo.allowed.cpuset_cpus == frozenset(range(36))
    assert topo.allowed.source == "/proc/self/status and cgroup v2 /sys/fs/cgroup/kubepods/pod1"
    assert topo.allowed.cpuset_source == "cgroup v2 /sys/fs/cgroup/kubepods/pod1"


def test_no_cpuset_is_the_whole_machine(tmp_path: Path) -> None:
    machine = c5n_18xlarge()
    root = machine.write(tmp_path)
    machine.pin(root, [3])
    topo = read_topology(root)
    assert topo.allowed.cpus == {3}
    assert topo.allowed.cpuset_cpus == frozenset(range(72)) and topo.allowed.cpuset_mems == {0, 1}
    assert topo.allowed.cpuset_source == "whole machine"


def test_snapshot_keeps_the_cpuset_sets(tmp_path: Path) -> None:
    machine = c5n_18xlarge()
    root = machine.write(tmp_path / "root")
    machine.confine(root, "/job", range(0, 36), [0])
    machine.pin(root, [0, 1])
    topo = read_topology(root)
    save_snapshot(topo, tmp_path / "snap.json")
    again = load_topology(tmp_path / "snap.json")
    assert again == topo and again.allowed.cpuset_cpus == frozenset(range(36))


# --- files that exist but say nothing -------------------------------------------------------


def test_empty_cpu_online_flag_is_online_with_one_warning(tmp_path: Path) -> None:
    root = _small(tmp_path)
    for cpu in (1, 2, 3):
        (root / f"{CPU}/cpu{cpu}/online").write_text("")
    topo = read_topology(root)
    assert topo.online_cpus() == frozenset(range(8))
    assert topo.notes == (
        f"{root}/{CPU}/cpu1/online and 2 more like it: is empty; read as online, as hwloc does",
    )
    assert sum("is empty" in w for w in warnings(topo)) == 1


def test_empty_global_online_falls_back_to_each_flag(tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path)
    (root / f"{CPU}/online").write_text("\n")
    (root / f"{CPU}/cpu5/online").write_text("0\n")
    topo = read_topology(root)
    assert topo.offline_cpus() == {5}
    assert any("cpu/online: is empty" in n for n in topo.notes)


def test_empty_topology_number_is_absent(tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path)
    (root / f"{CPU}/cpu5/topology/physical_package_id").write_text("")
    topo = read_topology(root)
    assert topo.cpus[5].package is None and topo.cpus[6].package == 0
    assert len(topo.notes) == 1


def test_unreadable_file_is_read_as_absent(tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path)
    target = root / "sys/devices/system/node/node1/meminfo"
    target.unlink()
    target.mkdir()  # reading a directory fails with EISDIR, as an unreadable attribute would
    topo = read_topology(root)
    assert not topo.nodes[1].has_memory
    assert topo.notes == (f"{target}: cannot be read (EISDIR); read as absent",)


def test_a_normal_machine_has_no_notes(tmp_path: Path) -> None:
    topo = read_topology(c5n_18xlarge().write(tmp_path))
    assert topo.notes == () and "notes" not in topo.to_dict()


# --- huge lists: refused fast, in bounded memory ------------------------------------------


@pytest.mark.parametrize(
    ("rel", "text"),
    [
        (f"{CPU}/online", "0-999999999\n"),
        (f"{CPU}/online", "0-71,72\n"),
        ("sys/devices/system/node/online", "0-999999999\n"),
    ],
)
def test_online_list_naming_what_does_not_exist_is_refused(
    tmp_path: Path, rel: str, text: str
) -> None:
    root = c5n_18xlarge().write(tmp_path)
    (root / rel).write_text(text)
    start = time.perf_counter()
    with pytest.raises(TopologyError, match="of which only"):
        read_topology(root)
    assert time.perf_counter() - start < 2


def test_huge_lists_elsewhere_are_bounded_by_what_exists(tmp_path: Path) -> None:
    machine = c5n_18xlarge()
    root = machine.write(tmp_path)
    machine.confine(root, "/job", range(0, 10), [0])
    (root / "sys/devices/system/node/node0/cpulist").write_text("0-17,36-53,100-999999999\n")
    (root / "sys/devices/system/node/possible").write_text("0-999999999\n")
    (root / "sys/fs/cgroup/job/cpuset.cpus.effective").write_text("0-9,1000-9999999999\n")
    (root / "proc/self/status").write_text(
        "Cpus_allowed_list:\t0-99999999999\nMems_allowed_list:\t0-1\n"
    )
    topo = read_topology(root)
    assert topo.nodes[0].cpus == cpulist.parse_list("0-17,36-53")
    assert topo.allowed.cpus == frozenset(range(10))


def test_huge_online_file_in_bounded_memory(tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path)
    (root / f"{CPU}/online").write_text("0-999999999\n")
    limit = 400 << 20  # a set of 10^9 ints would need ~60 GB
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
        "from numarun.topology import read_topology\n"
        "from numarun.errors import TopologyError\n"
        f"try:\n    read_topology({str(root)!r})\nexcept TopologyError:\n    sys.exit(8)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 8, done.stderr


def test_huge_file_is_refused_unread(tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path)
    shutil.rmtree(root / "sys/devices/system/node")  # a non-NUMA kernel: proc/meminfo is read
    with (root / "proc/meminfo").open("wb") as f:
        f.truncate(sysfs.MAX_FILE_BYTES + 1)
    with pytest.raises(TopologyError, match="larger than 4 MiB"):
        read_topology(root)


@pytest.mark.parametrize(
    ("text", "within", "ids", "named"),
    [
        ("0-999999999", [0, 5, 7], {0, 5, 7}, 1_000_000_000),
        ("0-15:2/4", range(16), {0, 1, 4, 5, 8, 9, 12, 13}, 8),
        ("3,9-10", [1, 3, 9], {3, 9}, 3),
        ("", [1], set(), 0),
    ],
)
def test_within_list(text: str, within: list[int], ids: set[int], named: int) -> None:
    assert sysfs.within_list(text, within) == (ids, named)
    if named < 100:
        assert sysfs.within_list(text, within)[0] == cpulist.parse_list(text) & set(within)


@pytest.mark.parametrize("text", ["3-1", "x", "1-2:0/4", "١"])
def test_within_list_refuses_what_parse_list_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        sysfs.within_list(text, range(8))


def test_topology_command_on_the_slurm_fixture(tmp_path: Path) -> None:
    machine = c5n_18xlarge()
    root = machine.write(tmp_path)
    machine.confine(root, "/job_9", range(18, 36), [1], mount="/cgroup/unified", cgroup_file=False)
    done = subprocess.run(
        [sys.executable, "-m", "numarun", "topology", "--json", "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    allowed = json.loads(done.stdout)["allowed"]
    assert allowed["cpus"] == list(range(18, 36)) and allowed["mems"] == [1]
    assert allowed["cpuset_source"] == "cgroup v2 /cgroup/unified/job_9"


_CONTENT = st.sampled_from(
    ["", "\n", "\x00", "seven-ish\n", "0-999999999\n", "٣\n", "-1\n", "1\n", "0\n", "0-3\n",
     "0-3:2/4\n", "ffffffff,ffffffff\n", "3-1\n", "MemTotal: 12 kB\n", "10 21\n", " , \n"]
)  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(picks=st.lists(st.tuples(st.integers(0, 10_000), _CONTENT), min_size=1, max_size=3))
def test_any_damaged_sysfs_tree_is_read_or_refused_in_one_line(
    tmp_path: Path, picks: list[tuple[int, str]]
) -> None:
    root = tmp_path / "tree"
    if not root.exists():
        FakeMachine(nodes={0: [0, 1], 1: [2, 3]}, siblings=[(0, 1), (2, 3)]).write(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    saved = {}
    try:
        for index, content in picks:
            target = files[index % len(files)]
            saved.setdefault(target, target.read_bytes())
            target.write_text(content)
        try:
            topo = read_topology(root)
        except TopologyError as err:
            assert "\n" not in str(err)
        else:
            assert topo.usable_cpus() <= topo.online_cpus() <= frozenset(topo.cpus)
    finally:
        for target, data in saved.items():
            target.write_bytes(data)
