"""Issue 14 on a real two-node kernel: ``numarun watch --once --json`` flags the memory
imbalance that a process bound to node 0 creates, and its node figures are the kernel's
(check: ``watch_memory_imbalance`` in checks_watch.py).

Oracles: sysfs ``nodeN/meminfo`` read just before and just after the watch, and the policy
the holder was launched under.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport

MiB = 1 << 20
FOOTPRINT = 64 * MiB  # what numarun watch itself may hold while it reads


def test_watch_flags_node_0_and_reports_the_kernels_figures(guest_2n2c2t: GuestReport) -> None:
    got = guest_2n2c2t.check("watch_memory_imbalance")
    assert got["rc"] == 0, got["stderr"] or got["stdout"]
    nodes = {n["id"]: n for n in got["nodes"]}
    assert sorted(nodes) == [0, 1]
    for node, figures in nodes.items():
        before, after = got["meminfo_before"][str(node)], got["meminfo_after"][str(node)]
        assert figures["memory_total_bytes"] == before["MemTotal"] * 1024 == after[
            "MemTotal"] * 1024  # fmt: skip
        # Free memory moves while numarun runs: its own interpreter (tens of MiB; 15 MiB on
        # the node it ran on, measured once) is in use while it reads and free again after.
        # The figure lies between the two readings, give or take that footprint.
        low = min(before["MemFree"], after["MemFree"]) * 1024 - FOOTPRINT
        high = max(before["MemFree"], after["MemFree"]) * 1024 + FOOTPRINT
        assert low <= figures["memory_free_bytes"] <= high, (node, figures, before, after)
        assert figures["memory_used_bytes"] + figures["memory_free_bytes"] == figures[
            "memory_total_bytes"]  # fmt: skip
        assert figures["cpu_utilization"] is not None  # two readings, 0.25 s apart
    memory = [i for i in got["issues"] if i["kind"] == "memory-imbalance"]
    assert len(memory) == 1, got["issues"]
    (issue,) = memory
    assert issue["nodes"][0] == 0, issue
    assert issue["value"] > issue["threshold"] == 0.3, issue
    (holder,) = got["processes"]
    assert holder["pid"] == got["pid"] and holder["home_nodes"] == [0], holder
    assert holder["home_source"] == "policy bind:0", holder
    assert holder["judged_bytes"] >= 256 * MiB and holder["local_ratio"] >= 0.99, holder
