"""numarun.watch: node samples, balancing counters, locality and the issues found.

On fake trees (tests/fakesysfs.py) where every figure is known, and on this machine's real
/proc and /sys, where the sampler must agree with the kernel's own files.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from numarun import sysfs
from numarun.topology import read_topology
from numarun.watch import Sampler, Thresholds, find_issues, locality, process_locality
from numarun.watch.locality import Locality
from tests.fakesysfs import FakeCounters, FakeMachine, Tiering

MiB = 1 << 20


def two_nodes(tmp_path: Path) -> tuple[Path, FakeCounters]:
    machine = FakeMachine(nodes={0: [0, 1], 1: [2, 3]}, siblings=[[0], [1], [2], [3]])
    root = machine.write(tmp_path)
    counters = FakeCounters(root)
    counters.meminfo(0, 1024, 900)
    counters.meminfo(1, 1024, 900)
    counters.stat({0: (0, 0), 1: (0, 0), 2: (0, 0), 3: (0, 0)})
    return root, counters


def test_node_samples_are_the_files_figures(tmp_path: Path) -> None:
    root, counters = two_nodes(tmp_path)
    counters.meminfo(0, 1024, 200)
    counters.meminfo(1, 2048, 2000, used=False)
    counters.numastat(0, numa_hit=500, numa_miss=7, numa_foreign=0, interleave_hit=3,
                      local_node=490, other_node=10)  # fmt: skip
    sampler = Sampler(root=str(root))
    first = sampler.sample_nodes()
    assert [n.id for n in first] == [0, 1]
    zero, one = first
    assert zero.cpus == (0, 1) and one.cpus == (2, 3)
    assert (zero.memory_total_bytes, zero.memory_free_bytes, zero.memory_used_bytes) == (
        1024 * MiB, 200 * MiB, 824 * MiB)  # fmt: skip
    assert one.memory_used_bytes == 48 * MiB  # no MemUsed line: total - free
    assert (zero.numa_hit, zero.numa_miss, zero.interleave_hit, zero.other_node) == (500, 7, 3, 10)
    assert one.numa_hit is None  # no numastat file for node 1
    assert zero.cpu_utilization is None and one.cpu_utilization is None  # one reading only


def test_utilisation_is_the_busy_share_since_the_previous_sample(tmp_path: Path) -> None:
    root, counters = two_nodes(tmp_path)
    sampler = Sampler(root=str(root))
    sampler.sample_nodes()
    # node 0: cpu0 busy 90 of 100, cpu1 busy 10 of 100 -> 50 %; node 1 idle
    counters.stat({0: (90, 10), 1: (10, 90), 2: (0, 100), 3: (0, 100)})
    zero, one = sampler.sample_nodes()
    assert zero.cpu_utilization == pytest.approx(0.5)
    assert one.cpu_utilization == 0.0
    # cpu3 goes offline (no line): node 1 is judged by cpu2 alone
    counters.stat({0: (90, 110), 1: (10, 190), 2: (100, 100)})
    zero, one = sampler.sample_nodes()
    assert zero.cpu_utilization == 0.0
    assert one.cpu_utilization == pytest.approx(1.0)
    # no jiffy passed: unknown rather than 0
    zero, _ = sampler.sample_nodes()
    assert zero.cpu_utilization is None


def test_interval_follows_the_clock(tmp_path: Path) -> None:
    root, _ = two_nodes(tmp_path)
    ticks = iter([100.0, 110.5])
    sampler = Sampler(root=str(root), clock=lambda: next(ticks))
    sampler.sample_nodes()
    assert sampler.interval is None
    sampler.sample_nodes()
    assert sampler.interval == pytest.approx(10.5)


def test_balancing_counters_from_vmstat(tmp_path: Path) -> None:
    root, counters = two_nodes(tmp_path)
    counters.vmstat(numa_hint_faults=40, numa_hint_faults_local=30, numa_pages_migrated=5,
                    pgpromote_success=2, pgdemote_kswapd=1)  # fmt: skip
    counters.put("proc/sys/kernel/numa_balancing", "2\n")
    found = Sampler(root=str(root)).balancing()
    assert found.mode == 2
    assert (found.numa_hint_faults, found.numa_hint_faults_local) == (40, 30)
    assert (found.numa_pages_migrated, found.pgpromote_success) == (5, 2)
    assert found.pgdemote_kswapd == 1
    assert found.pgdemote_direct is None  # this kernel does not count it


def test_no_vmstat_gives_unknowns(tmp_path: Path) -> None:
    root, _ = two_nodes(tmp_path)
    found = Sampler(root=str(root)).balancing()
    assert found.numa_hint_faults is None and found.pgpromote_success is None


def test_counter_readers_skip_odd_lines(tmp_path: Path) -> None:
    counters = FakeCounters(tmp_path)
    counters.put("sys/devices/system/node/node0/numastat", "numa_hit 5\nodd\nnuma_miss x\n")
    counters.put("proc/vmstat", "numa_hint_faults 9\nnuma_pages_migrated ٣\n")
    fs = sysfs.Root(tmp_path)
    assert sysfs.node_numastat(fs, 0) == {"numa_hit": 5}
    assert sysfs.node_numastat(fs, 1) is None
    assert sysfs.proc_vmstat(fs) == {"numa_hint_faults": 9}


def test_non_numa_kernel_is_one_node_with_the_machines_memory(tmp_path: Path) -> None:
    counters = FakeCounters(tmp_path)
    for cpu in (0, 1):
        (tmp_path / f"sys/devices/system/cpu/cpu{cpu}/topology").mkdir(parents=True)
    counters.put("sys/devices/system/cpu/online", "0-1\n")
    counters.put("proc/meminfo", "MemTotal:  2048 kB\nMemFree:  1024 kB\n")
    (node,) = Sampler(root=str(tmp_path)).sample_nodes()
    assert (node.id, node.memory_total_bytes, node.memory_used_bytes) == (0, 2 << 20, 1 << 20)
    assert node.numa_hit is None


NUMA_MAPS = (
    "55d0a000 default heap anon=256 dirty=256 N0=192 N1=64 kernelpagesize_kB=4\n"
    "7f000000 bind:1 anon=512 dirty=512 N1=512 kernelpagesize_kB=4\n"
    "7f100000 default file=/usr/lib/libc.so.6 mapped=100 N0=50 N1=50 kernelpagesize_kB=4\n"
    "7ffd0000 default stack anon=8 dirty=8 N0=8 kernelpagesize_kB=4\n"
)


def test_locality_counts_judged_pages_not_file_cache(tmp_path: Path) -> None:
    root, counters = two_nodes(tmp_path)
    counters.process(4242, NUMA_MAPS, cpus=[0, 1], mems=[0, 1])
    found = locality(4242, [1], root=str(root))
    assert found is not None
    # heap 192+64 pages, bind 512 on node 1, stack 8 on node 0; libc's page cache is left out
    assert found.node_bytes == {0: 200 * 4096, 1: 576 * 4096}
    assert found.judged_bytes == 776 * 4096
    assert found.home_nodes == (1,) and found.home_bytes == 576 * 4096
    assert found.local_ratio == pytest.approx(576 / 776)
    assert found.remote_bytes == {0: 200 * 4096}


def test_locality_of_a_gone_process_is_none(tmp_path: Path) -> None:
    root, _ = two_nodes(tmp_path)
    assert locality(999999, [0], root=str(root)) is None
    assert process_locality(999999, read_topology(root), root=str(root)) is None


def test_nothing_judged_has_no_ratio(tmp_path: Path) -> None:
    root, counters = two_nodes(tmp_path)
    counters.process(7, "7f000000 default file=/bin/x mapped=3 N0=3 kernelpagesize_kB=4\n",
                     cpus=[0], mems=[0, 1])  # fmt: skip
    found = locality(7, [0], root=str(root))
    assert found is not None and found.judged_bytes == 0 and found.local_ratio is None


def test_home_nodes_from_the_policy_when_it_names_nodes(tmp_path: Path) -> None:
    root, counters = two_nodes(tmp_path)
    counters.process(4242, NUMA_MAPS, cpus=[0, 1], mems=[0, 1])
    found = process_locality(4242, read_topology(root), root=str(root))
    assert found is not None
    assert found.home_nodes == (1,) and found.home_source == "policy bind:1"


def test_home_nodes_of_default_policy_are_its_cpus_nodes(tmp_path: Path) -> None:
    root, counters = two_nodes(tmp_path)
    maps = "55d0a000 default heap anon=10 dirty=10 N0=4 N1=6 kernelpagesize_kB=4\n"
    counters.process(11, maps, cpus=[2, 3], mems=[0, 1])
    topology = read_topology(root)
    found = process_locality(11, topology, root=str(root))
    assert found is not None
    assert found.home_nodes == (1,) and "cpus 2-3" in found.home_source
    assert found.local_ratio == pytest.approx(0.6)
    # a cpuset that keeps it off node 1's memory leaves no home there
    counters.process(12, maps, cpus=[1, 2], mems=[0])
    found = process_locality(12, topology, root=str(root))
    assert found is not None and found.home_nodes == (0,)


def test_find_issues_memory_imbalance_names_the_fullest_node_first(tmp_path: Path) -> None:
    root, counters = two_nodes(tmp_path)
    counters.meminfo(0, 512, 100)  # 80 % used
    counters.meminfo(1, 512, 400)  # 22 % used
    nodes = Sampler(root=str(root)).sample_nodes()
    (issue,) = find_issues(nodes, [], Thresholds())
    assert issue.kind == "memory-imbalance" and issue.nodes == (0, 1)
    assert issue.value == pytest.approx((412 - 112) / 512, abs=1e-4)
    assert issue.threshold == 0.30 and issue.pid is None
    assert "node 0" in issue.message and "80%" in issue.message
    assert find_issues(nodes, [], Thresholds(memory_imbalance=0.6)) == ()


def test_find_issues_cpu_imbalance(tmp_path: Path) -> None:
    root, counters = two_nodes(tmp_path)
    sampler = Sampler(root=str(root))
    sampler.sample_nodes()
    counters.stat({0: (20, 80), 1: (20, 80), 2: (60, 40), 3: (60, 40)})
    nodes = sampler.sample_nodes()
    (issue,) = find_issues(nodes, [], Thresholds())
    assert issue.kind == "cpu-imbalance" and issue.nodes == (1, 0)
    assert issue.value == pytest.approx(0.4)
    assert find_issues(nodes, [], Thresholds(cpu_imbalance=0.5)) == ()


def test_find_issues_below_threshold_names_the_remote_nodes() -> None:
    low = Locality(pid=5, home_nodes=(0,), node_bytes={0: 60 * MiB, 1: 10 * MiB, 2: 30 * MiB},
                   judged_bytes=100 * MiB, home_bytes=60 * MiB, local_ratio=0.6)  # fmt: skip
    fine = low.replace(pid=6, node_bytes={0: 95 * MiB, 1: 5 * MiB}, home_bytes=95 * MiB,
                       local_ratio=0.95)  # fmt: skip
    empty = low.replace(pid=7, node_bytes={}, judged_bytes=0, home_bytes=0, local_ratio=None)
    (issue,) = find_issues([], [low, fine, empty], Thresholds())
    assert (issue.kind, issue.pid, issue.nodes) == ("below-threshold", 5, (2, 1))
    assert issue.value == 0.6 and issue.threshold == 0.9
    assert "60% of 100 MiB" in issue.message and "30 MiB on node 2" in issue.message
    assert len(find_issues([], [low, fine], Thresholds(locality=0.99))) == 2


def test_a_small_process_is_not_judged_for_locality() -> None:
    tiny = Locality(pid=8, home_nodes=(0,), node_bytes={0: MiB, 1: MiB}, judged_bytes=2 * MiB,
                    home_bytes=MiB, local_ratio=0.5)  # fmt: skip
    assert find_issues([], [tiny], Thresholds()) == ()
    (issue,) = find_issues([], [tiny], Thresholds(min_judged_bytes=MiB))
    assert issue.pid == 8


def test_memory_imbalance_is_judged_within_a_memory_tier(tmp_path: Path) -> None:
    """DRAM nodes 0-1 (tier 4) and an empty CXL node 2 (tier 22): an emptier slow tier is
    tiering at work, not an imbalance; DRAM nodes far apart still are."""
    machine = FakeMachine(nodes={0: [0, 1], 1: [2, 3], 2: []}, siblings=[[0], [1], [2], [3]])
    root = machine.write(tmp_path)
    Tiering(tiers={4: [0, 1], 22: [2]}, access={}).write(root)
    counters = FakeCounters(root)
    counters.stat({0: (0, 0), 1: (0, 0), 2: (0, 0), 3: (0, 0)})
    counters.meminfo(0, 1024, 300)  # 71 % used
    counters.meminfo(1, 1024, 400)  # 61 %
    counters.meminfo(2, 4096, 4000)  # 2 %
    sampler = Sampler(root=str(root))
    nodes = sampler.sample_nodes()
    assert [n.tier for n in nodes] == [4, 4, 22]
    assert find_issues(nodes, [], Thresholds()) == ()
    counters.meminfo(1, 1024, 1000)  # 2 %: DRAM itself is now out of balance
    (issue,) = find_issues(sampler.sample_nodes(), [], Thresholds())
    assert issue.nodes == (0, 1) and "(memory tier 4)" in issue.message


def test_balanced_machine_has_no_issue(tmp_path: Path) -> None:
    root, _ = two_nodes(tmp_path)
    assert find_issues(Sampler(root=str(root)).sample_nodes(), [], Thresholds()) == ()


# --- this machine's real /proc and /sys -------------------------------------------------


def test_live_sample_agrees_with_the_kernels_files() -> None:
    sampler = Sampler()
    nodes = sampler.sample_nodes()
    fs = sysfs.Root("/")
    ids = sysfs.node_ids(fs) or [0]
    assert [n.id for n in nodes] == ids
    for node in nodes:
        meminfo = sysfs.node_meminfo(fs, node.id) or sysfs.proc_meminfo(fs)
        assert node.memory_total_bytes == meminfo["MemTotal"] * 1024
        assert 0 <= node.memory_free_bytes <= node.memory_total_bytes
        assert node.cpu_utilization is None
    assert set(os.sched_getaffinity(0)) <= {c for n in nodes for c in n.cpus}
    busy = sum(range(200_000))  # some work on some CPU between the two readings
    assert busy
    for node in sampler.sample_nodes():
        assert node.cpu_utilization is None or 0.0 <= node.cpu_utilization <= 1.0


def test_live_balancing_counters_match_vmstat() -> None:
    vmstat = sysfs.proc_vmstat(sysfs.Root("/"))
    assert vmstat is not None and "nr_free_pages" in vmstat
    found = Sampler().balancing()
    if "numa_hint_faults" in vmstat:
        assert found.numa_hint_faults is not None and found.numa_hint_faults >= 0


def test_live_locality_of_this_process_sees_memory_it_touched() -> None:
    size = 64 * MiB
    block = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
        nodes = sysfs.node_ids(sysfs.Root("/")) or [0]
        found = locality(os.getpid(), nodes)
        assert found is not None
        assert found.judged_bytes >= size
        assert found.local_ratio == 1.0  # every node is home
        assert locality(os.getpid(), []) is not None
        mine = process_locality(os.getpid(), read_topology("/"))
        assert mine is not None and mine.judged_bytes >= size
        assert mine.home_source.endswith("(default policy)")
    finally:
        block.close()
