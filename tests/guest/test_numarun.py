"""numarun's placement claims, proved on a real multi-node kernel with SMT siblings.

The results come from the ``numarun_*`` checks in inguest.py, run in the same guest boot as
the harness checks; the oracles are numactl, lscpu and the kernel's own numa_maps there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport


def _share(touch: dict[str, Any], node: int) -> float:
    assert touch["run"]["rc"] == 0, touch["run"]["stderr"]
    assert touch["total"] >= touch["expected_pages"], touch
    return int(touch["pages"].get(str(node), 0)) / int(touch["total"])


def _describe(touch: dict[str, Any]) -> str:
    return f"{touch.get('numa_maps')!r}; stderr: {touch['run']['stderr'][-500:]!r}"


def test_topology_matches_numactl_and_sysfs(guest: GuestReport) -> None:
    got = guest.check("numarun_topology")
    assert got["run"]["rc"] == 0, got["run"]["stderr"]
    topo = got["topology"]
    shape = guest.shape
    hw = guest.check("numactl_hardware")
    sysfs = guest.check("sysfs_cpus")["cpus"]
    assert [n["id"] for n in topo["nodes"]] == list(range(shape.nodes))
    for node in topo["nodes"]:
        assert node["cpus"] == hw["nodes"][str(node["id"])]["cpus"], node["id"]
        assert node["has_memory"], node["id"]
        row = [node["distances"][str(j)] for j in range(shape.nodes)]
        assert row == hw["distances"][node["id"]], node["id"]
    assert len(topo["cpus"]) == shape.cpus
    for cpu in topo["cpus"]:
        kernel = sysfs[str(cpu["id"])]
        assert cpu["node"] == kernel["node"], cpu
        assert cpu["siblings"] == kernel["siblings"], cpu
    assert topo["allowed"]["cpus"] == list(range(shape.cpus))
    assert topo["allowed"]["mems"] == list(range(shape.nodes))


def test_launcher_membind(guest: GuestReport) -> None:
    """`numarun --membind N -- cmd`: >= 99% of 256 MiB of anonymous pages on node N."""
    touch = guest.check("numarun_membind")
    assert touch["node"] == guest.shape.nodes - 1
    assert _share(touch, touch["node"]) >= 0.99, _describe(touch)


def test_launcher_interleave(guest: GuestReport) -> None:
    touch = guest.check("numarun_interleave")
    even = 1 / len(touch["nodes"])
    for node in touch["nodes"]:
        assert abs(_share(touch, node) - even) <= 0.05 * even, _describe(touch)


def test_launcher_preferred(guest: GuestReport) -> None:
    touch = guest.check("numarun_preferred")
    assert _share(touch, touch["node"]) >= 0.99, _describe(touch)
    assert touch["cpu_node"] == 0, touch  # ran on node 0: the policy, not locality


def test_launcher_smt_avoid_one_cpu_per_core(guest: GuestReport) -> None:
    got = guest.check("numarun_smt_avoid")
    assert got["run"]["rc"] == 0, got["run"]["stderr"]
    cpus = got["cpus"]
    shape = guest.shape
    sysfs = guest.check("sysfs_cpus")["cpus"]
    cores = {tuple(sysfs[str(c)]["siblings"]) for c in cpus}
    assert len(cpus) == len(cores) == shape.nodes * shape.cores, cpus


def test_launcher_refuses_unknown_node(guest: GuestReport) -> None:
    got = guest.check("numarun_unknown_node")
    assert not got["ran"]
    assert got["run"]["rc"] == 4, got["run"]["stderr"]  # UnknownResourceError
    assert str(got["node"]) in got["run"]["stderr"]


def test_launcher_refuses_node_outside_cpuset(guest: GuestReport) -> None:
    got = guest.check("numarun_outside_cpuset")
    refused = got["refused"]
    assert not refused["ran"]
    assert refused["rc"] == 5, refused["stderr"]  # NotAllowedError
    assert got["allowed_run"]["rc"] == 0 and got["allowed_run"]["ran"], got["allowed_run"]
    assert got["topology_allowed"]["mems"] == [0], got["topology_allowed"]
    assert got["topology_allowed"]["cpus"] == got["allowed_cpus"], got["topology_allowed"]
