"""Tiered memory (issue 13) on a real Linux 6.12 kernel with ACPI HMAT (the tier2n guest).

The figures are the harness's (numavm.TIER2N): DRAM nodes 0 and 1 read 20000 MB/s from their
own socket, CPU-less nodes 2 (near 0) and 3 (near 1) 8000 MB/s, so bandwidth weights are
5:5:2:2. Where the pages are is the kernel's word (numa_maps, read by the probe itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numavm

from numarun.errors import KernelRefusedError

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport

SHAPE = numavm.TIER2N
UNIT = {"bandwidth": "mbps", "latency": "ns"}  # sysfs name -> numarun's JSON suffix
ACCESS_KEYS = ("read_bandwidth", "write_bandwidth", "read_latency", "write_latency")


def _share(report: dict[str, Any], node: int) -> float:
    pages = {int(k): v for k, v in report["pages"].items()}
    return pages.get(node, 0) / sum(pages.values())


# -- the guest is the machine we asked for (no numarun) -------------------------------------


def test_tier2n_kernel_sees_hmat_tiers_and_weights(guest_tier2n: GuestReport) -> None:
    fs = guest_tier2n.check("tier_sysfs")
    assert fs["kernel"] == SHAPE.kernel.version
    # DRAM in the default tier (4), both CXL nodes in one lower tier (a larger number).
    assert sorted(fs["tiers"].values()) == [[0, 1], [2, 3]]
    by_nodes = {tuple(v): int(k) for k, v in fs["tiers"].items()}
    assert by_nodes[(0, 1)] == 4 < by_nodes[(2, 3)]
    for node in range(SHAPE.all_nodes):
        got = fs["nodes"][str(node)]
        near = SHAPE.near_cpu_node(node)
        assert got["cpus"] == (SHAPE.node_cpus(node) if node < SHAPE.nodes else []), node
        assert got["initiators"] == [near], node
        assert got["access"] == dict(zip(ACCESS_KEYS, SHAPE.access(near, node), strict=True))
        assert got["distance"] == [SHAPE.distance(node, b) for b in range(SHAPE.all_nodes)]
    assert fs["weights"] == {"0": 1, "1": 1, "2": 1, "3": 1}  # the kernel's default
    assert fs["demotion_enabled"] == "false"


# -- numarun topology -------------------------------------------------------------------------


def test_topology_tiers_access_weights_equal_sysfs(guest_tier2n: GuestReport) -> None:
    fs = guest_tier2n.check("tier_sysfs")
    topo = guest_tier2n.check("tier_topology")
    assert topo["run"]["rc"] == 0, topo["run"]
    tier_of = {n: int(t) for t, nodes in fs["tiers"].items() for n in nodes}
    assert [n["id"] for n in topo["nodes"]] == list(range(SHAPE.all_nodes))
    for node in topo["nodes"]:
        sysfs = fs["nodes"][str(node["id"])]
        assert node["tier"] == tier_of[node["id"]]
        assert node["access"] == {
            "initiators": sysfs["initiators"],
            **{
                f"{k}_{'mbps' if 'bandwidth' in k else 'ns'}": v for k, v in sysfs["access"].items()
            },
        }
    # 6.12 has no "auto" file (that came later): auto is unknown, not false.
    assert fs["weights_auto"] is None
    assert topo["weighted_interleave"] == {"auto": None, "weights": fs["weights"]}
    assert topo["demotion_enabled"] is False
    # The guest boots with numa_balancing=disable: mode 0 (2 would be memory tiering).
    assert topo["identity"]["numa_balancing_mode"] == int(fs["numa_balancing"]) == 0


def test_topology_drawing_shows_tier_and_bandwidth(guest_tier2n: GuestReport) -> None:
    drawing = guest_tier2n.check("tier_topology")["drawing"]
    assert drawing["rc"] == 0, drawing
    text = drawing["stdout"]
    assert "tier 4 · read 20.0 GB/s 80 ns" in text
    assert "read 8.0 GB/s 250 ns, write 6.0 GB/s 300 ns from node 0" in text
    assert "weights 0:1 1:1 2:1 3:1" in text


# -- numarun weights and the weighted verdict -----------------------------------------------


def test_weights_set_bandwidth_writes_5_to_2(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_weights")
    assert got["boot_weights"] == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert got["set"]["run"]["rc"] == 0, got["set"]["run"]
    assert got["set"]["data"] == {
        "old": {"0": 1, "1": 1, "2": 1, "3": 1},
        "new": {"0": 5, "1": 5, "2": 2, "3": 2},
    }
    # The kernel's word, and what `numarun weights` shows afterwards.
    assert got["after_set"] == {"0": 5, "1": 5, "2": 2, "3": 2}
    assert got["shown"]["data"] == {"auto": None, "weights": got["after_set"]}


def test_weighted_interleave_pages_follow_5_to_2(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_weights")
    report = got["weighted"]["report"]
    assert report is not None, got["weighted"]
    assert report["policy"] == "weighted interleave:0,2"  # numa_maps' name
    assert report["weights"] == {"0": 5, "1": 5, "2": 2, "3": 2}
    assert sum(report["pages"].values()) >= got["mb"] * 256
    # 5:2 within 10 %: node 0 holds 5/7 of the pages, node 2 the other 2/7.
    assert abs(_share(report, 0) - 5 / 7) <= 0.1 * 5 / 7, report
    assert abs(_share(report, 2) - 2 / 7) <= 0.1 * 2 / 7, report
    assert set(report["pages"]) == {"0", "2"}


def test_weighted_verdict_passes_5_to_2_and_fails_1_to_1(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_weights")
    even, weighted = got["even"]["report"], got["weighted"]["report"]
    assert even is not None, got["even"]
    # Placed while the weights were 1:1: an even split under the same policy.
    assert even["weights"] == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert abs(_share(even, 0) - 0.5) <= 0.05, even
    placement = got["placement"]
    by_pid = {p["pid"]: p for p in placement["processes"]}
    assert set(by_pid) == {even["pid"], weighted["pid"]}, placement
    # Judged by the weights in force (5:2): the 1:1 pages fail, the 5:2 ones pass.
    assert by_pid[weighted["pid"]]["status"] == "pass", by_pid[weighted["pid"]]
    assert by_pid[even["pid"]]["status"] == "fail", by_pid[even["pid"]]
    fail = next(v for v in by_pid[even["pid"]]["verdicts"] if v["status"] == "fail")
    assert fail["policy"] == "weighted-interleave:0,2"
    assert "5:2" in fail["message"], fail
    assert placement["rc"] == 10, placement  # --check: a verdict failed


def test_weights_reset_restores_1(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_weights")
    assert got["reset"]["run"]["rc"] == 0, got["reset"]["run"]
    assert got["reset"]["data"] == {
        "old": {"0": 5, "1": 5, "2": 2, "3": 2},
        "new": {"0": 1, "1": 1, "2": 1, "3": 1},
    }
    assert got["after_reset"] == {"0": 1, "1": 1, "2": 1, "3": 1}


# -- a job: weights = "bandwidth", workers paired with their own CXL node -------------------


def _workers(got: dict[str, Any], policy: str) -> dict[int, dict[str, Any]]:
    """The probes' reports under ``policy`` (numa_maps' name), by the CPU node they ran on."""
    node_of = {_cpulist(n): n for n in range(SHAPE.nodes)}
    return {node_of[r["cpus"]]: r for r in got["workers"] if (r["policy"] or "").startswith(policy)}


def _cpulist(node: int) -> str:
    cpus = SHAPE.node_cpus(node)
    return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0])


def test_plan_pairs_each_worker_with_its_own_cxl_node(guest_tier2n: GuestReport) -> None:
    plan = guest_tier2n.check("tier_job")["plan"]
    assert plan["run"]["rc"] == 0, plan["run"]
    got = {(w["process"], w["index"]): (w["node"], w["cpus"], w["memory"]) for w in plan["workers"]}
    assert got == {
        ("wi", 0): (0, "0-1", {"mode": "weighted-interleave", "nodes": [0, 2]}),
        ("wi", 1): (1, "2-3", {"mode": "weighted-interleave", "nodes": [1, 3]}),
        ("pm", 0): (0, "0-1", {"mode": "preferred-many", "nodes": [0, 2]}),
        ("pm", 1): (1, "2-3", {"mode": "preferred-many", "nodes": [1, 3]}),
    }


def test_plan_shows_the_jobs_weights_and_each_workers_shares(guest_tier2n: GuestReport) -> None:
    plan = guest_tier2n.check("tier_job")["plan"]
    assert plan["weights"] == {
        "asked": "bandwidth",
        "auto": None,
        "in_force": {"0": 1, "1": 1, "2": 1, "3": 1},
        "job": {"0": 5, "1": 5, "2": 2, "3": 2},
    }
    shares = {(w["process"], w["index"]): w["shares"] for w in plan["workers"]}
    assert shares == {
        ("wi", 0): {"0": 0.7143, "2": 0.2857},  # 5/7 and 2/7
        ("wi", 1): {"1": 0.7143, "3": 0.2857},
        ("pm", 0): None,
        ("pm", 1): None,
    }


def test_prefix_local_cpuless_pairs_the_cpu_node_with_its_cxl(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_prefix_pairs")
    inter = got["interleave"]["report"]
    assert inter is not None, got["interleave"]["run"]
    # --policy interleave --nodes local+cpuless -N 1: node 1 with node 3, never 0 or 2.
    assert (inter["cpus"], inter["policy"]) == (_cpulist(1), "interleave:1,3")
    assert set(inter["pages"]) == {"1", "3"}
    assert abs(_share(inter, 1) - 0.5) <= 0.05, inter
    assert sum(inter["pages"].values()) >= got["mb"] * 256
    pref = got["preferred"]["report"]
    assert pref is not None, got["preferred"]["run"]
    # preferred-many over node 0 and node 2: DRAM first.
    assert (pref["cpus"], pref["policy"]) == (_cpulist(0), "prefer (many):0,2")
    assert _share(pref, 0) >= 0.99, pref


def test_run_lands_each_workers_pages_on_its_own_pair(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_job")
    assert got["run"]["rc"] == 0, got["run"]
    workers = _workers(got, "weighted interleave")
    assert sorted(workers) == [0, 1], got
    for node, report in workers.items():
        cxl = SHAPE.nodes + node  # 2 near 0, 3 near 1
        assert report["policy"] == f"weighted interleave:{node},{cxl}"
        assert set(report["pages"]) <= {str(node), str(cxl)}, report  # never across sockets
        # The job's weights = "bandwidth" were in force while it ran: 5:2 on the pair.
        assert report["weights"] == {"0": 5, "1": 5, "2": 2, "3": 2}
        assert abs(_share(report, node) - 5 / 7) <= 0.1 * 5 / 7, report
        assert sum(report["pages"].values()) >= got["mb"] * 256


def test_run_restores_the_weights_it_set(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_job")
    assert got["before"] == got["after"] == {"0": 1, "1": 1, "2": 1, "3": 1}


def test_preferred_many_over_the_pair_fills_dram_first(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_job")
    workers = _workers(got, "prefer (many)")
    assert sorted(workers) == [0, 1], got
    for node, report in workers.items():
        assert report["policy"] == f"prefer (many):{node},{SHAPE.nodes + node}"
        assert _share(report, node) >= 0.99, report  # room on DRAM: nothing spills to CXL


# -- numarun probe ------------------------------------------------------------------------------


def test_probe_measures_every_pair_where_it_says(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_probe")
    assert got["run"]["rc"] == 0, got["run"]
    cells = {(c["initiator"], c["target"]): c for c in got["cells"]}
    # Each CPU node to each memory node, CPU-less ones included.
    assert sorted(cells) == [(i, t) for i in range(SHAPE.nodes) for t in range(SHAPE.all_nodes)]
    for (initiator, target), cell in cells.items():
        # One thread per physical core (SMT siblings share one), seen on that core's CPU;
        # every sampled page of the buffer on the target (the kernel's get_mempolicy).
        assert cell["threads"] == SHAPE.cores
        assert cell["cpus"] == [SHAPE.node_cpus(initiator)[0]], cell
        assert set(cell["buffer_nodes"]) == {str(target)}, cell
        assert cell["read_bandwidth_mbps"] > 0


def test_weights_set_measured_writes_the_probes_figures(guest_tier2n: GuestReport) -> None:
    # Under TCG every node reads alike: only that all were written, as the kernel keeps them.
    got = guest_tier2n.check("tier_probe")
    assert got["measured"]["run"]["rc"] == 0, got["measured"]["run"]
    new = got["measured"]["data"]["new"]
    assert set(new) == {str(n) for n in range(SHAPE.all_nodes)}
    assert all(isinstance(w, int) and w >= 1 for w in new.values()), new
    assert got["after_measured"] == new
    assert got["after_reset"] == {"0": 1, "1": 1, "2": 1, "3": 1}


# -- demotion: bound pages on a lower tier ---------------------------------------------------


def test_demoted_pages_are_named_while_demotion_is_on(guest_tier2n: GuestReport) -> None:
    got = guest_tier2n.check("tier_demotion")
    report = got["holder"]["report"]
    assert report is not None, got["holder"]
    assert report["policy"] == "bind:0"
    assert sum(report["pages"].values()) >= got["mb"] * 256
    # More than node 0 holds: reclaim demoted the rest to node 0's lower tier, node 2.
    assert set(report["pages"]) == {"0", "2"}, report
    assert report["pages"]["2"] > 0
    assert got["demoted_after"] - got["demoted_before"] >= report["pages"]["2"] * 0.5, got
    enabled = got["enabled"]
    assert enabled["rc"] == 0 and enabled["status"] == "pass", enabled
    bound = next(v for v in enabled["verdicts"] if v["policy"] == "bind:0")
    assert "demoted to a lower tier" in bound["message"], bound
    assert "demotion_enabled = true" in bound["message"], bound


def test_pages_off_their_bound_node_fail_without_demotion(guest_tier2n: GuestReport) -> None:
    disabled = guest_tier2n.check("tier_demotion")["disabled"]
    assert disabled["status"] == "fail", disabled
    assert disabled["rc"] == 10, disabled  # --check
    bound = next(v for v in disabled["verdicts"] if v["policy"] == "bind:0")
    assert "outside" in bound["message"] and "demoted" not in bound["message"], bound


# -- Linux 6.1 (2n2c2t): refused, one line, the catalogue's code ----------------------------


def test_6_1_kernel_refuses_weights_and_weighted_jobs(guest_2n2c2t: GuestReport) -> None:
    got = guest_2n2c2t.check("tier_too_old")
    assert got["kernel"].startswith("6.1.")
    assert got["has_weights"] is False
    for run in (got["weights"], got["job"]):
        assert run["rc"] == KernelRefusedError.exit_code, run
        lines = run["stderr"].strip().splitlines()
        assert len(lines) == 1, run["stderr"]
        assert "no weighted interleave" in lines[0] and "6.9" in lines[0], lines[0]
    assert got["job"]["ran"] is False
