"""``numarun --per-rank`` under Open MPI and Slurm variables, and cgroup cpusets, in the
4-node guest (4 nodes x 1 core x 2 threads: node i has CPUs 2i and 2i+1).

Results come from checks_ranks.py; each rank reports from /proc/self/status (its CPUs) and
/proc/self/numa_maps (the policy and nodes of 8 MiB it wrote) after numarun exec'd into it.
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport


def _cpus(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _ranks(got: dict[str, Any], count: int) -> list[dict[str, Any]]:
    run = got["run"]
    assert run["rc"] == 0, run["stderr"]
    ranks: list[dict[str, Any]] = got["ranks"]
    assert [r["rank"] for r in ranks] == list(range(count)), (ranks, run["stderr"])
    return ranks


def _memory_on(rank: dict[str, Any], nodes: set[int]) -> None:
    """Its 8 MiB under bind to exactly ``nodes``, and every page there."""
    words = rank["policy"].split(":")
    assert words[0] == "bind" and _cpus(words[1]) == nodes, rank
    pages = {int(n): p for n, p in rank["pages"].items()}
    assert sum(pages.values()) >= 2048 and set(pages) <= nodes, rank


def _node_cpus(node: int) -> set[int]:
    return {2 * node, 2 * node + 1}


def _core(cpu: int) -> int:
    return cpu // 2  # this guest's SMT siblings: 2i and 2i+1


def test_mpirun_np4_one_rank_per_node(guest_4n1c2t: GuestReport) -> None:
    for rank in _ranks(guest_4n1c2t.check("ranks_mpirun_np4"), 4):
        node = rank["rank"]
        assert _cpus(rank["cpus"]) == _node_cpus(node), rank
        _memory_on(rank, {node})


def test_mpirun_np8_two_ranks_per_node_on_distinct_cpus(guest_4n1c2t: GuestReport) -> None:
    """Two ranks per node; the node has one core, so each rank gets one of its threads."""
    got = guest_4n1c2t.check("ranks_mpirun_np8")
    ranks = _ranks(got, 8)
    for rank in ranks:
        node = rank["rank"] // 2
        cpus = _cpus(rank["cpus"])
        assert len(cpus) == 1 and cpus <= _node_cpus(node), rank
        _memory_on(rank, {node})
    for a, b in combinations(ranks, 2):
        assert not _cpus(a["cpus"]) & _cpus(b["cpus"]), (a, b)
    # The planner says once (local rank 0 only) that siblings are shared.
    assert got["run"]["stderr"].count("share cores") == 1, got["run"]["stderr"]


def test_mpirun_np3_no_two_ranks_share_a_core(guest_4n1c2t: GuestReport) -> None:
    ranks = _ranks(guest_4n1c2t.check("ranks_mpirun_np3"), 3)
    cores = [{_core(c) for c in _cpus(r["cpus"])} for r in ranks]
    for a, b in combinations(cores, 2):
        assert not a & b, cores
    assert set().union(*cores) == {0, 1, 2, 3}, cores  # every core used
    for rank, own in zip(ranks, cores, strict=True):
        _memory_on(rank, own)  # one core per node here: its nodes are its cores


def test_slurm_variables_by_hand(guest_4n1c2t: GuestReport) -> None:
    got = guest_4n1c2t.check("ranks_slurm_by_hand")
    assert got["run"]["rc"] == 0, got["run"]["stderr"]
    assert [r["rank"] for r in got["ranks"]] == [1, 3], got
    for rank in got["ranks"]:
        assert _cpus(rank["cpus"]) == _node_cpus(rank["rank"]), rank
        _memory_on(rank, {rank["rank"]})


def test_rank_bound_by_mpirun_stays_within_its_cpus(guest_4n1c2t: GuestReport) -> None:
    """mpirun's default binding (a core per rank): numarun keeps it, binds memory to that
    core's node, and says so once per rank."""
    got = guest_4n1c2t.check("ranks_mpirun_bound")
    ranks = _ranks(got, 2)
    stderr = got["run"]["stderr"]
    for rank in ranks:
        cpus = _cpus(rank["cpus"])
        nodes = {c // 2 for c in cpus}
        assert len(nodes) == 1, rank
        _memory_on(rank, nodes)
        assert f"rank {rank['rank']} of 2 was already bound by its launcher to CPUs" in stderr
    assert not _cpus(ranks[0]["cpus"]) & _cpus(ranks[1]["cpus"]), ranks
    assert stderr.count("already bound") == 2, stderr


def test_cgroup_cpuset_bounds_plan_prefix_and_ranks(guest_4n1c2t: GuestReport) -> None:
    got = guest_4n1c2t.check("ranks_cgroup")
    inside, cpus = set(got["nodes"]), set(got["cpus"])
    # numarun plan: one worker per allowed node, on its CPUs, memory bound there.
    assert got["plan"]["run"]["rc"] == 0, got["plan"]["run"]["stderr"]
    workers = got["plan_workers"]
    assert [w["node"] for w in workers] == sorted(inside), workers
    for w in workers:
        assert set(w["cpus"]) <= _node_cpus(w["node"]), w
        assert w["memory"] == {"mode": "bind", "nodes": [w["node"]]}, w
    # The plain prefix: numarun chooses a node, within the cgroup.
    (plain,) = got["prefix_bind"]["ranks"]
    assert _cpus(plain["cpus"]) <= cpus and _cpus(plain["mems"]) == inside, plain
    _memory_on(plain, {min(_cpus(plain["cpus"])) // 2})
    # --per-rank: two ranks, one per allowed node.
    for name, node in (("rank0", min(inside)), ("rank1", max(inside))):
        (rank,) = got[name]["ranks"]
        assert _cpus(rank["cpus"]) == _node_cpus(node), (name, rank)
        _memory_on(rank, {node})
    # A node outside cpuset.mems: refused, naming the cgroup, exit 5 (NotAllowedError).
    refused = got["rank_outside"]["run"]
    assert refused["rc"] == 5, refused["stderr"]
    assert f"node {got['outside']} is outside" in refused["stderr"], refused["stderr"]
    assert "/sys/fs/cgroup/numarun-ranks-check" in refused["stderr"], refused["stderr"]
    assert refused["stderr"].count("\n") == 1, refused["stderr"]  # one line
