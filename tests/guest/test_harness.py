"""The guest is the machine we asked for: proved with numactl, lscpu and sysfs inside it.

These need nothing from numarun.  They validate the harness as a proving ground: if
``numactl --membind`` did not put 99% of a process's anonymous pages on the bound node here,
no numarun placement claim tested in this guest would mean anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport


def _share(touch: dict[str, Any], node: int) -> float:
    """Fraction of the helper's buffer on ``node``, against the pages it asked for."""
    assert touch["total"] >= touch["expected_pages"], touch
    return int(touch["pages"].get(str(node), 0)) / int(touch["total"])


def _describe(touch: dict[str, Any]) -> str:
    return f"{touch.get('numa_maps')!r}; stderr: {touch['run']['stderr'][-500:]!r}"


# -- every shape --------------------------------------------------------------------------


def test_guest_boot_parameters(guest: GuestReport) -> None:
    info = guest.check("guest_info")
    assert "numa_balancing=disable" in info["cmdline"]
    assert info["numa_balancing"] == "0"
    assert info["online_nodes"] == (f"0-{guest.shape.nodes - 1}" if guest.shape.nodes > 1 else "0")
    assert info["online_cpus"] == f"0-{guest.shape.cpus - 1}"


def test_numactl_hardware_matches_shape(guest: GuestReport) -> None:
    hw = guest.check("numactl_hardware")
    shape = guest.shape
    assert hw["run"]["rc"] == 0, hw["run"]["stderr"]
    assert hw["available"] == shape.nodes
    assert sorted(hw["nodes"], key=int) == [str(i) for i in range(shape.nodes)]
    for i in range(shape.nodes):
        node = hw["nodes"][str(i)]
        assert node["cpus"] == shape.node_cpus(i), f"node {i}"
        # Each node has its own memory (less what the kernel keeps for itself).
        assert 0.75 * shape.mem_mb <= node["size_mb"] <= shape.mem_mb, f"node {i}"
    expected = [[shape.distance(a, b) for b in range(shape.nodes)] for a in range(shape.nodes)]
    assert hw["distances"] == expected


def test_lscpu_sees_smt_and_sockets(guest: GuestReport) -> None:
    lscpu = guest.check("lscpu")
    shape = guest.shape
    fields = lscpu["fields"]
    assert fields["Thread(s) per core"] == str(shape.threads)
    assert fields["Core(s) per socket"] == str(shape.cores)
    assert fields["Socket(s)"] == str(shape.nodes)
    assert fields["NUMA node(s)"] == str(shape.nodes)
    for row in lscpu["cpus"]:
        assert row["node"] == row["cpu"] // (shape.cores * shape.threads), row
        assert row["socket"] == row["node"], row


def test_sysfs_smt_siblings(guest: GuestReport) -> None:
    cpus = guest.check("sysfs_cpus")["cpus"]
    shape = guest.shape
    assert len(cpus) == shape.cpus
    for cpu_s, info in cpus.items():
        cpu = int(cpu_s)
        first = cpu - cpu % shape.threads  # QEMU numbers a core's threads consecutively
        assert info["siblings"] == list(range(first, first + shape.threads)), cpu
        assert info["node"] == info["package"] == cpu // (shape.cores * shape.threads), cpu


def test_membind_puts_anonymous_pages_on_the_node(guest: GuestReport) -> None:
    touch = guest.check("touch_membind")
    node = touch["node"]
    assert node == guest.shape.nodes - 1
    assert _share(touch, node) >= 0.99, _describe(touch)


def test_interleave_is_even(guest: GuestReport) -> None:
    touch = guest.check("touch_interleave")
    nodes = touch["nodes"]
    assert nodes == list(range(guest.shape.nodes))
    even = 1 / len(nodes)
    for node in nodes:
        # Within 5% of an even share, relative.
        assert abs(_share(touch, node) - even) <= 0.05 * even, _describe(touch)


def test_preferred_node_gets_the_pages(guest: GuestReport) -> None:
    touch = guest.check("touch_preferred")
    assert _share(touch, touch["node"]) >= 0.99, _describe(touch)
    # It ran on node 0's CPUs, so this is the policy and not first-touch locality.
    assert touch["cpu_node"] == 0, touch


# -- the two shapes by name, as the issue states them ---------------------------------------


def test_2n2c2t_node1_binding(guest_2n2c2t: GuestReport) -> None:
    """A process under `numactl --membind=1` touching 256 MiB has >= 99% on node 1."""
    touch = guest_2n2c2t.check("touch_membind")
    assert touch["node"] == 1
    assert touch["mb"] == 256
    assert _share(touch, 1) >= 0.99, _describe(touch)


def test_2n2c2t_interleave_0_1(guest_2n2c2t: GuestReport) -> None:
    touch = guest_2n2c2t.check("touch_interleave")
    assert touch["nodes"] == [0, 1]
    assert abs(_share(touch, 0) - _share(touch, 1)) <= 0.05, _describe(touch)


def test_4n1c2t_topology(guest_4n1c2t: GuestReport) -> None:
    hw = guest_4n1c2t.check("numactl_hardware")
    assert {k: v["cpus"] for k, v in hw["nodes"].items()} == {
        "0": [0, 1],
        "1": [2, 3],
        "2": [4, 5],
        "3": [6, 7],
    }
    assert guest_4n1c2t.check("lscpu")["fields"]["Thread(s) per core"] == "2"
