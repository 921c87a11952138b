"""Devices in the topology and nodes named by them (netdev:, pci:, block:, file:, ip:, gpu:).

The fake GPU server below has two nodes with CPUs and a CPU-less memory node (2) nearer
node 1. The shared snapshots are real machines' PCI trees, checked against what
``lstopo --input`` (hwloc 2.9.0) lists for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from numarun import sysfs
from numarun.errors import UsageError
from numarun.nodespec import parse_spec
from numarun.render import render_drawing
from numarun.topology import load_topology, read_topology, save_snapshot

from .conftest import REPO
from .fakedevices import FakeDevice, add_devices
from .fakesysfs import FakeMachine

NVIDIA, ASPEED, MELLANOX, VIRTIO = "0x10de", "0x1a03", "0x15b3", "0x1af4"


def gpu_server(root: Path) -> Path:
    machine = FakeMachine(
        nodes={0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: []},
        siblings=[(0, 1), (2, 3), (4, 5), (6, 7)],
        memory_mb={0: 4096, 1: 4096, 2: 8192},
        distances={
            0: {0: 10, 1: 21, 2: 30},
            1: {0: 21, 1: 10, 2: 20},
            2: {0: 30, 1: 20, 2: 10},
        },
    )
    machine.write(root)
    return add_devices(
        root,
        [
            # NVIDIA numbers its GPUs itself: 65:00.0 is /dev/nvidia0, before 17:00.0.
            FakeDevice("0000:17:00.0", "0x030200", vendor=NVIDIA, node=0, nvidia_minor=1),
            FakeDevice("0000:65:00.0", "0x030200", vendor=NVIDIA, node=0, nvidia_minor=0),
            FakeDevice("0000:ca:00.0", "0x030200", vendor=NVIDIA, node=1, nvidia_minor=2),
            FakeDevice("0000:e3:00.0", "0x030200", vendor=NVIDIA, node=1, nvidia_minor=3),
            # An accelerator on the CPU-less node: a GPU, after NVIDIA's, by PCI order.
            FakeDevice("0000:d0:00.0", "0x120000", vendor="0x1002", node=2),
            FakeDevice("0000:03:00.0", "0x030000", vendor=ASPEED, node=0),  # the BMC's VGA
            FakeDevice("0000:18:00.0", "0x020000", vendor=MELLANOX, node=0, net="eth0"),
            # A virtio NIC the firmware gives no node: numa_node -1, every CPU local.
            FakeDevice(
                "0000:00:05.0", "0x020000", vendor=VIRTIO, local_cpus=range(8), net="ens5",
                virtio=True,
            ),
            FakeDevice("0000:b0:01.0", "0x060400", node=1),  # a bridge: wiring, not listed
            FakeDevice("0000:b1:00.0", "0x010802", node=1, parent="0000:b0:01.0",
                       block="nvme0n1"),
        ],
    )  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Path:
    return gpu_server(tmp_path / "server")


def numarun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "numarun", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=60,
        check=False,
    )


# --- the topology ------------------------------------------------------------------------


def test_devices_json_names_kind_node_and_gpu_order(server: Path) -> None:
    devices = read_topology(server).to_dict()["devices"]
    by_pci = {d["pci"]: d for d in devices}
    assert "0000:b0:01.0" not in by_pci, "bridges are not devices to place near"
    assert list(by_pci) == sorted(by_pci)
    assert by_pci["0000:65:00.0"] == {
        "pci": "0000:65:00.0",
        "class": "0x030200",
        "kind": "gpu",
        "vendor": NVIDIA,
        "device": "0x1234",
        "names": [],
        "node": 0,
        "gpu": 0,
    }
    gpus = {d["gpu"]: (d["pci"], d["node"]) for d in devices if "gpu" in d}
    assert gpus == {
        0: ("0000:65:00.0", 0),
        1: ("0000:17:00.0", 0),
        2: ("0000:ca:00.0", 1),
        3: ("0000:e3:00.0", 1),
        4: ("0000:d0:00.0", 2),
    }
    assert by_pci["0000:03:00.0"]["kind"] == "other", "a BMC's VGA is no GPU"
    assert (by_pci["0000:18:00.0"]["kind"], by_pci["0000:18:00.0"]["names"]) == ("net", ["eth0"])
    assert by_pci["0000:00:05.0"]["names"] == ["ens5"], "virtio: walked up to the PCI function"
    assert by_pci["0000:00:05.0"]["node"] is None, "every CPU local: the node is unknown"
    nvme = by_pci["0000:b1:00.0"]
    assert (nvme["kind"], nvme["names"], nvme["node"]) == ("block", ["nvme0n1"], 1)


def test_snapshots_carry_the_devices(server: Path, tmp_path: Path) -> None:
    topology = read_topology(server)
    saved = tmp_path / "server.json"
    save_snapshot(topology, saved)
    assert load_topology(saved).devices == topology.devices
    data = json.loads(saved.read_text())
    del data["devices"]  # a snapshot saved before devices were read
    saved.write_text(json.dumps(data))
    assert load_topology(saved).devices == ()


def test_drawing_shows_devices_under_their_node(server: Path) -> None:
    text = render_drawing(read_topology(server), width=100)
    node0, node1 = text.index(" node 0 "), text.index(" node 1 ")
    node2 = text.index(" node 2 ")
    assert node0 < text.index("gpu 0 (0000:65:00.0)") < text.index("gpu 1 (0000:17:00.0)")
    assert text.index("gpu 1 (0000:17:00.0)") < text.index("eth0 (0000:18:00.0)") < node1
    assert node0 < text.index("+1 other PCI device") < node1  # the BMC's VGA
    assert node1 < text.index("nvme0n1 (0000:b1:00.0)") < node2
    assert node2 < text.index("gpu 4 (0000:d0:00.0)")
    assert "ens5 (0000:00:05.0)" in text[text.index("devices on no known node") :]


def test_topology_without_devices_costs_nothing_and_reads_none(server: Path) -> None:
    assert read_topology(server, devices=False).devices == ()


# --- real machines (../shared) ----------------------------------------------------------


def test_power9_gpus_are_on_the_nodes_hwloc_gives(shared_snapshot: object) -> None:
    # lstopo --input: PCI 0004:05:00.0, 0004:06:00.0, 0006:00:00.0 (class 0300) under NUMA
    # node P#0; 0007:00:00.0, 0035:04:00.0, 0035:05:00.0 under P#8 (numa_node is absent:
    # placed by local_cpus, as hwloc does).
    root = shared_snapshot("nvidiagpunumanodes")  # type: ignore[operator]
    gpus = read_topology(root).gpus()
    assert [(d.pci, d.node) for d in gpus] == [
        ("0004:05:00.0", 0),
        ("0004:06:00.0", 0),
        ("0006:00:00.0", 0),
        ("0007:00:00.0", 8),
        ("0035:04:00.0", 8),
        ("0035:05:00.0", 8),
    ]
    assert [d.gpu for d in gpus] == list(range(6))


def test_raid_controller_of_unknown_node_holds_sda(shared_snapshot: object) -> None:
    # lstopo --input: HostBridge at the machine (no NUMA node), PCI 0000:01:00.0 (class
    # 0104, RAID) holding Block "sda"; 0000:00:00.0 is a host bridge, 0000:00:03.0 a PCI
    # bridge: neither is a device here.
    root = shared_snapshot("40intel64-4n10c+pci-conflicts")  # type: ignore[operator]
    devices = read_topology(root).devices
    assert [(d.pci, d.kind, d.names, d.node) for d in devices] == [
        ("0000:01:00.0", "block", ("sda",), None)
    ]


# --- node specs by device ----------------------------------------------------------------


def test_device_specs_parse_and_bad_ones_are_usage_errors() -> None:
    assert parse_spec("netdev:eth0").device == "netdev:eth0"
    assert parse_spec("PCI:0000:3b:00.0").device == "pci:0000:3b:00.0"
    for bad in ("gpu:one", "netdev:", "block:  "):
        with pytest.raises(UsageError):
            parse_spec(bad, "--nodes")
    with pytest.raises(UsageError):
        parse_spec("netdev:eth0", "--cpus", "CPU")  # CPUs are not named by devices


@pytest.mark.parametrize(
    ("options", "cpus", "why"),
    [
        (["-N", "gpu:0"], "0-3", "node 0: -N gpu:0 is gpu 0 (0000:65:00.0), on node 0"),
        (["-N", "gpu:2"], "4-7", "node 1: -N gpu:2 is gpu 2 (0000:ca:00.0), on node 1"),
        (["--cpunodebind", "netdev:eth0"], "0-3", "eth0 (0000:18:00.0), on node 0"),
        (["-N", "block:nvme0n1"], "4-7", "nvme0n1 (0000:b1:00.0), on node 1"),
        (["-N", "pci:b1:00.0"], "4-7", "on node 1"),  # no domain: 0000, as numactl reads it
        (["--policy", "bind", "--nodes", "pci:0000:CA:00.0"], "4-7", "gpu 2 (0000:ca:00.0)"),
    ],
)
def test_device_names_resolve_to_the_devices_node(
    server: Path, options: list[str], cpus: str, why: str
) -> None:
    done = numarun("--root", str(server), "--explain", *options, "--", "true")
    assert done.returncode == 0, done.stderr
    assert f"cpus: {cpus}\n" in done.stdout
    assert why in done.stdout


def small_server(root: Path) -> Path:
    """CPU 0 on node 0, CPU 1 on node 1 (this host's two CPUs), node 2 CPU-less, nearer 1."""
    FakeMachine(
        nodes={0: [0], 1: [1], 2: []},
        siblings=[(0,), (1,)],
        memory_mb={0: 1024, 1: 1024, 2: 1024},
        distances={0: {0: 10, 1: 21, 2: 30}, 1: {0: 21, 1: 10, 2: 20}, 2: {0: 30, 1: 20, 2: 10}},
    ).write(root)
    return add_devices(
        root,
        [
            FakeDevice("0000:d0:00.0", "0x120000", vendor="0x1002", node=2),
            FakeDevice("0000:00:05.0", "0x020000", local_cpus=[0, 1], net="ens5", virtio=True),
        ],
    )


@pytest.mark.skipif(
    not {0, 1} <= os.sched_getaffinity(0), reason="runs the command on CPUs 0 and 1"
)
@pytest.mark.parametrize(
    ("spec", "cpu", "warning"),
    [
        ("gpu:0", 1, "-N gpu:0: gpu 0 (0000:d0:00.0) is on node 2, which has no CPUs; using "
         "the nearest node with CPUs, 1"),
        ("netdev:ens5", 0, "-N netdev:ens5: the kernel does not know the NUMA node of ens5 "
         "(0000:00:05.0) (numa_node is -1); using node 0, the first with usable CPUs"),
    ],
)  # fmt: skip
def test_device_without_a_cpu_node_runs_nearby_with_one_warning(
    tmp_path: Path, spec: str, cpu: int, warning: str
) -> None:
    root = small_server(tmp_path / "small")
    done = numarun("--root", str(root), "-N", spec, "--", "grep", "Cpus_allowed_list",
                   "/proc/self/status")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Cpus_allowed_list:", str(cpu)]
    assert done.stderr.splitlines() == [f"numarun: warning: {warning}"]


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        ("netdev:eth9", 4, "--nodes netdev:eth9: no such network interface with a PCI device "
         "here — devices here: netdev:ens5, netdev:eth0"),
        ("gpu:7", 4, "--nodes gpu:7: no such GPU here — devices here: gpu:0, gpu:1, gpu:2, "
         "gpu:3, gpu:4"),
        ("pci:0000:b0:01.0", 4, None),  # a bridge
        ("gpu:-1", 2, None),
    ],
)  # fmt: skip
def test_device_refusals_are_one_line(
    server: Path, spec: str, code: int, message: str | None
) -> None:
    done = numarun("--root", str(server), "--nodes", spec, "--", "true")
    assert done.returncode == code
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and " — " in lines[0], done.stderr
    if message is not None:
        assert lines[0] == f"numarun: {message}"


def test_file_and_ip_name_the_live_machines_devices() -> None:
    live = read_topology("/")
    dev = os.stat(REPO).st_dev
    disk = sysfs.block_device_of(sysfs.Root("/"), os.major(dev), os.minor(dev))
    if not any(d.kind == "block" for d in live.devices) or disk is None:
        pytest.skip("this machine's disks are not PCI devices numarun can see")
    done = numarun("--explain", "-N", f"file:{REPO}", "--", "true")
    assert done.returncode == 0, done.stderr
    assert f"-N file:{REPO} is " in done.stdout
    done = numarun("-N", "ip:127.0.0.1", "--", "true")
    assert done.returncode == 4
    assert "127.0.0.1 is on lo, which has no PCI device" in done.stderr


def test_spec_nodes_and_memory_nodes_by_device(server: Path, tmp_path: Path) -> None:
    from numarun.plan import plan_job
    from numarun.spec import parse_spec_text

    spec = parse_spec_text(
        '[[process]]\nname = "feeder"\ncommand = ["true"]\nworkers = 2\n'
        'nodes = "netdev:eth0"\npolicy = "bind"\nmemory_nodes = "gpu:3"\n'
    )
    plan = plan_job(load_topology(server), spec)
    (group,) = plan.processes
    assert [w.node for w in group.workers] == [0, 0]
    assert {w.memory.nodes for w in group.workers} == {frozenset({1})}


# --- per-gpu workers and near ---------------------------------------------------------------

PER_GPU = """
[[process]]
name = "trainer"
command = ["train", "--gpu", "{gpu}"]
workers = "per-gpu"
policy = "bind"
env = { LOG = "gpu{gpu}.log" }
"""


def test_per_gpu_runs_one_worker_per_gpu_on_its_node(server: Path) -> None:
    from numarun.plan import plan_job
    from numarun.spec import parse_spec_text

    plan = plan_job(load_topology(server), parse_spec_text(PER_GPU))
    (group,) = plan.processes
    rows = [(w.gpu, w.node, w.cpus, w.argv[-1], w.env["LOG"]) for w in group.workers]
    # node 0's four CPUs split between gpus 0 and 1, node 1's between 2, 3 and the
    # accelerator of the CPU-less node 2 (nearest node with CPUs: 1)
    assert rows == [
        (0, 0, (0, 1), "0", "gpu0.log"),
        (1, 0, (2, 3), "1", "gpu1.log"),
        (2, 1, (4, 5), "2", "gpu2.log"),
        (3, 1, (6,), "3", "gpu3.log"),
        (4, 1, (7,), "4", "gpu4.log"),
    ]
    assert [w.memory.nodes for w in group.workers][:3] == [
        frozenset({0}),
        frozenset({0}),
        frozenset({1}),
    ]
    # CUDA counts NVIDIA's GPUs in PCI order (CUDA_DEVICE_ORDER=PCI_BUS_ID): gpu 0 is
    # /dev/nvidia0 at 65:00.0, the second NVIDIA GPU by address.
    assert [w.env.get("CUDA_VISIBLE_DEVICES") for w in group.workers] == ["1", "0", "2", "3", None]
    assert group.workers[0].env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert group.workers[4].env["ROCR_VISIBLE_DEVICES"] == "0"
    assert any("gpu 4 (0000:d0:00.0) is on node 2, which has no CPUs" in w for w in plan.warnings)


def test_per_gpu_keeps_the_specs_own_visible_devices(server: Path) -> None:
    from numarun.plan import plan_job
    from numarun.spec import parse_spec_text

    text = PER_GPU.replace('env = { LOG = "gpu{gpu}.log" }', 'env = { CUDA_VISIBLE_DEVICES = "7" }')
    (group,) = plan_job(load_topology(server), parse_spec_text(text)).processes
    assert {w.env["CUDA_VISIBLE_DEVICES"] for w in group.workers} == {"7"}


def test_plan_shows_each_workers_device(server: Path, tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text(
        PER_GPU + '\n[[process]]\nname = "feeder"\ncommand = ["feed"]\nnear = "netdev:eth0"\n'
    )
    done = numarun("plan", str(spec), "--topology", str(server))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["worker", "node", "device", "cpus", "memory", "command"]
    assert "gpu 2 (0000:ca:00.0)" in lines[4]
    feeder = lines[lines.index("process feeder: 1 worker, policy default, smt allow") + 2]
    assert feeder.split()[:4] == ["0", "0", "eth0", "(0000:18:00.0)"]
    data = json.loads(numarun("plan", str(spec), "--topology", str(server), "--json").stdout)
    assert [w["gpu"] for w in data["processes"][0]["workers"]] == [0, 1, 2, 3, 4]
    assert data["processes"][1]["workers"][0]["device"] == "eth0 (0000:18:00.0)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('workers = 2\nnear = "gpu:0"\nnodes = "1"', "near and nodes both say where"),
        ('workers = "per-gpu"\nnear = "gpu:0"', "places each worker near its own GPU"),
        ('workers = 2\nnear = "0"', "names no device"),
        ('workers = 2\nenv = { G = "{gpu}" }', '{gpu} is used but workers is not "per-gpu"'),
    ],
)
def test_spec_refuses_near_and_gpu_mixups(extra: str, message: str) -> None:
    from numarun.errors import SpecError
    from numarun.spec import parse_spec_text

    with pytest.raises(SpecError, match="process\\[0\\]") as err:
        parse_spec_text(f'[[process]]\nname = "x"\ncommand = ["x"]\n{extra}\n')
    assert message in err.value.message


def test_per_gpu_without_gpus_is_refused(tmp_path: Path) -> None:
    from numarun.errors import UnsuitableError
    from numarun.plan import plan_job
    from numarun.spec import parse_spec_text

    root = FakeMachine(nodes={0: [0, 1]}, siblings=[(0,), (1,)]).write(tmp_path / "plain")
    with pytest.raises(UnsuitableError, match="this machine has no GPU"):
        plan_job(load_topology(root), parse_spec_text(PER_GPU))
