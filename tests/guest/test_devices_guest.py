"""Device-local placement (issue 17) in the tier2n guest: real PCI devices on real nodes.

numavm.TIER2N: a display device (class 0x03) on each CPU node, gpu 0 = 0000:21:01.0 on node
0 and gpu 1 = 0000:41:01.0 on node 1; eth0 (0000:41:02.0) and vda (0000:41:03.0) on node 1.
Node 0 has CPUs 0-1, node 1 CPUs 2-3. The launched command's CPUs are the kernel's word
(/proc/PID/status), with numactl --show beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numavm
import pytest

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport

SHAPE = numavm.TIER2N
GPU0, GPU1, NIC, DISK, RNG = (numavm.device_address(d) for d in SHAPE.devices)
ROOT_BUS = "0000:00:02.0"  # the 9p device on the root bus: numa_node -1


def _cpus(node: int) -> str:
    cpus = SHAPE.node_cpus(node)
    return f"{cpus[0]}-{cpus[-1]}"


def test_tier2n_devices_are_where_the_harness_put_them(guest_tier2n: GuestReport) -> None:
    fs = guest_tier2n.check("tier_sysfs")
    assert (GPU0, GPU1, NIC, DISK, RNG) == (
        "0000:21:01.0",
        "0000:41:01.0",
        "0000:41:02.0",
        "0000:41:03.0",
        "0000:61:01.0",
    )
    devices = fs["devices"]
    assert devices[GPU0] == {"class": "0x038000", "node": 0}
    assert devices[GPU1] == {"class": "0x038000", "node": 1}
    assert devices[NIC] == {"class": "0x020000", "node": 1}
    assert devices[DISK] == {"class": "0x010000", "node": 1}
    assert devices[RNG] == {"class": "0x00ff00", "node": 2}  # a node without CPUs
    assert devices[ROOT_BUS]["node"] == -1
    assert f"/{NIC}/" in fs["device_paths"]["eth0"]
    assert set(fs["device_paths"]) == {"eth0", "vda"}
    assert f"/{DISK}/" in fs["device_paths"]["vda"]


def test_topology_lists_the_devices_with_names_and_nodes(guest_tier2n: GuestReport) -> None:
    devices = {d["pci"]: d for d in guest_tier2n.check("tier_topology")["devices"]}
    fs = guest_tier2n.check("tier_sysfs")["devices"]
    for pci, kind, names, node in (
        (GPU0, "gpu", [], 0),
        (GPU1, "gpu", [], 1),
        (NIC, "net", ["eth0"], 1),
        (DISK, "block", ["vda"], 1),
        (RNG, "other", [], 2),
    ):
        got = devices[pci]
        assert (got["kind"], got["names"], got["node"], got["class"]) == (
            kind, names, node, fs[pci]["class"],
        ), got  # fmt: skip
    assert [devices[p].get("gpu") for p in (GPU0, GPU1)] == [0, 1]  # PCI order, no driver
    # Bridges are no devices; the root bus's devices have no node (numa_node -1 there).
    assert "0000:20:00.0" not in devices and "0000:40:00.0" not in devices
    assert all(d["node"] is None for p, d in devices.items() if p.startswith("0000:00:"))


EXPECTED = {
    "gpu:0": (0, f"gpu 0 ({GPU0}), on node 0"),
    "gpu:1": (1, f"gpu 1 ({GPU1}), on node 1"),
    "pci:0000:21:01.0": (0, f"gpu 0 ({GPU0}), on node 0"),
    "pci:41:02.0": (1, f"eth0 ({NIC}), on node 1"),
    "netdev:eth0": (1, f"eth0 ({NIC}), on node 1"),
    "block:vda": (1, f"vda ({DISK}), on node 1"),
    "ip:192.0.2.7": (1, f"eth0 ({NIC}), on node 1"),
    "file:/mnt/numarun-vda/data": (1, f"vda ({DISK}), on node 1"),
}


def _specs(guest: GuestReport) -> dict[tuple[str, ...], dict[str, Any]]:
    got = guest.check("devices_specs")
    failed = {k: v for k, v in got["prepare"].items() if v["rc"] != 0}
    assert not failed, failed  # eth0's address, vda's file system
    return {tuple(s["options"]): s for s in got["specs"]}


@pytest.mark.parametrize("spec", sorted(EXPECTED))
def test_device_spec_runs_the_command_on_the_devices_node(
    guest_tier2n: GuestReport, spec: str
) -> None:
    node, why = EXPECTED[spec]
    got = _specs(guest_tier2n)[("-N", spec)]
    assert got["launched"]["rc"] == 0, got["launched"]
    assert got["fields"]["Cpus_allowed_list"] == _cpus(node)
    assert got["fields"]["nodebind"] == str(node)
    assert got["fields"]["physcpubind"] == " ".join(map(str, SHAPE.node_cpus(node)))
    assert got["explain"]["rc"] == 0, got["explain"]
    assert f"node {node}: -N {spec} is {why}" in got["explain"]["stdout"], got["explain"]


@pytest.mark.parametrize(
    ("spec", "warning"),
    [
        (
            f"pci:{RNG}",
            f"pci {RNG} is on node 2, which has no CPUs; using the nearest node with CPUs, 0",
        ),
        (f"pci:{ROOT_BUS}", f"NUMA node of pci {ROOT_BUS} (numa_node is -1); using node 0"),
    ],
)
def test_device_without_a_cpu_node_runs_on_node_0_with_one_warning(
    guest_tier2n: GuestReport, spec: str, warning: str
) -> None:
    # Node 2 is 24 from node 0 and 30 from node 1: node 0 is the nearest with CPUs; a device
    # of unknown node gets the first node with usable CPUs, also node 0.
    got = _specs(guest_tier2n)[("-N", spec)]
    assert got["launched"]["rc"] == 0, got["launched"]
    assert got["fields"]["Cpus_allowed_list"] == _cpus(0)
    lines = got["launched"]["stderr"].strip().splitlines()
    assert len(lines) == 1 and warning in lines[0], lines
    assert f"node 0: -N {spec} is " in got["explain"]["stdout"], got["explain"]


def test_bind_near_a_nic_binds_cpus_and_memory_there(guest_tier2n: GuestReport) -> None:
    got = _specs(guest_tier2n)[("--policy", "bind", "--nodes", "netdev:eth0")]
    assert got["launched"]["rc"] == 0, got["launched"]
    assert got["fields"]["Cpus_allowed_list"] == _cpus(1)
    assert (got["fields"]["policy"], got["fields"]["membind"]) == ("bind", "1")
    assert f"--nodes netdev:eth0 is eth0 ({NIC}), on node 1" in got["explain"]["stdout"]


def test_per_gpu_plan_puts_each_worker_on_its_gpus_node(guest_tier2n: GuestReport) -> None:
    plan = guest_tier2n.check("devices_per_gpu_job")["plan"]
    assert plan["run"]["rc"] == 0, plan["run"]
    assert [
        (w["process"], w["gpu"], w["node"], w["cpus"], w["device"]) for w in plan["workers"]
    ] == [
        ("trainer", 0, 0, "0-1", f"gpu 0 ({GPU0})"),
        ("trainer", 1, 1, "2-3", f"gpu 1 ({GPU1})"),
        ("nic", None, 1, "2-3", f"eth0 ({NIC})"),
    ]
    assert f"gpu 1 ({GPU1})" in plan["text"]["stdout"], plan["text"]


def test_per_gpu_run_gives_each_worker_its_gpu(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("devices_per_gpu_job")
    assert got["run"]["rc"] == 0, got["run"]
    trainers = sorted(
        (w for w in got["workers"] if w["args"][:1] == ["--gpu"]), key=lambda w: w["args"]
    )
    assert len(trainers) == 2, got
    for gpu, worker in enumerate(trainers):
        assert worker["args"] == ["--gpu", str(gpu)]  # {gpu} in argv
        assert worker["cpus"] == _cpus(gpu)  # gpu N is on node N
        assert worker["policy"] == f"bind:{gpu}"
        assert set(worker["pages"]) == {str(gpu)}
        # bochs-display is neither NVIDIA's nor AMD's: both variables, no CUDA_DEVICE_ORDER;
        # {gpu} in the spec's env too.
        assert worker["env"] == {
            "CUDA_VISIBLE_DEVICES": str(gpu),
            "ROCR_VISIBLE_DEVICES": str(gpu),
            "PROBE_GPU": f"gpu{gpu}",
            "NUMARUN_DEVICE": f"gpu {gpu} ({(GPU0, GPU1)[gpu]})",
            "NUMARUN_DEVICE_NODE": str(gpu),
        }


def test_near_a_nic_runs_the_worker_on_its_node(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("devices_per_gpu_job")
    near = [w for w in got["workers"] if w["args"] == ["near"]]
    assert len(near) == 1, got
    assert near[0]["cpus"] == _cpus(1)
    assert near[0]["policy"] == "bind:1"
    assert near[0]["env"] == {"NUMARUN_DEVICE": f"eth0 ({NIC})", "NUMARUN_DEVICE_NODE": "1"}


def test_per_gpu_ranks_each_get_their_gpu(guest_tier2n: GuestReport) -> None:
    ranks = guest_tier2n.check("devices_per_gpu_ranks")["ranks"]
    for rank, got in enumerate(ranks):
        assert got["rc"] == 0, got
        report = got["report"]
        assert report["args"] == ["rank", str(rank)]
        assert report["cpus"] == _cpus(rank)  # local rank i: gpu i, on node i
        assert report["policy"] == f"bind:{rank}"
        assert set(report["pages"]) == {str(rank)}
        assert report["env"] == {
            "CUDA_VISIBLE_DEVICES": str(rank),
            "ROCR_VISIBLE_DEVICES": str(rank),
            "NUMARUN_DEVICE": f"gpu {rank} ({(GPU0, GPU1)[rank]})",
            "NUMARUN_DEVICE_NODE": str(rank),
        }


def test_memory_away_from_the_device_is_noted_not_failed(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("devices_note")
    away, near = got["away"]["report"], got["near"]["report"]
    # -N gpu:1 -m 0: on gpu 1's CPUs, memory bound to node 0; --nodes gpu:1: both on node 1.
    assert (away["cpus"], away["policy"], set(away["pages"])) == (_cpus(1), "bind:0", {"0"})
    assert (near["cpus"], near["policy"], set(near["pages"])) == (_cpus(1), "bind:1", {"1"})
    for report in (away, near):
        assert report["env"] == {"NUMARUN_DEVICE": f"gpu 1 ({GPU1})", "NUMARUN_DEVICE_NODE": "1"}
    placement = got["placement"]
    assert placement["rc"] == 0, placement  # a note is no failed check
    by_pid = {p["pid"]: p for p in placement["processes"]}
    noted, clean = by_pid[away["pid"]], by_pid[near["pid"]]
    assert noted["status"] == clean["status"] == "pass"
    assert noted["device"]["node"] == 1 and noted["device"]["elsewhere_share"] == 1.0
    assert f"not on node 1 of gpu 1 ({GPU1})" in noted["device"]["note"], noted
    assert clean["device"]["note"] is None and clean["device"]["elsewhere_share"] == 0.0
    assert f"NOTE  100% of the memory is not on node 1 of gpu 1 ({GPU1})" in got["text"]["stdout"]
