"""``numarun --per-rank`` under a real Slurm in the 4-node guest (4 nodes x 1 core x 2 threads:
node i has CPUs 2i and 2i+1), as issue 15 measures it.

Results come from checks_slurm.py: munged, slurmctld and slurmd run in the guest, srun starts
the ranks, and each rank reports from /proc/self/status and /proc/self/numa_maps (8 MiB it
wrote) after numarun exec'd into it.
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING, Any

import pytest
from test_ranks_guest import _cpus

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport

Rank = dict[str, Any]


def _mask(text: str) -> set[int]:
    value = int(text, 16)
    return {c for c in range(value.bit_length()) if value >> c & 1}


def _node_of(cpus: set[int]) -> int:
    nodes = {c // 2 for c in cpus}
    assert len(nodes) == 1, f"CPUs {sorted(cpus)} span nodes {sorted(nodes)}"
    return nodes.pop()


def _got(guest: GuestReport, name: str) -> dict[str, Any]:
    got = guest.check(name)
    if "missing" in got:
        pytest.fail(f"Slurm in the guest: {got['missing']}")
    return got


def _ranks(got: dict[str, Any], count: int) -> list[Rank]:
    run = got["run"]
    assert run["rc"] == 0, run
    ranks: list[Rank] = got["ranks"]
    assert [r["rank"] for r in ranks] == list(range(count)), (ranks, run)
    assert "already bound" not in run["stderr"], run["stderr"]
    return ranks


def _memory_on(rank: Rank, node: int) -> None:
    """Its 8 MiB under bind to exactly ``node``, and >= 99 % of the pages there."""
    words = rank["policy"].split(":")
    assert words[0] == "bind" and _cpus(words[1]) == {node}, rank
    pages = {int(n): p for n, p in rank["pages"].items()}
    total = sum(pages.values())
    assert total >= 2048 and pages.get(node, 0) / total >= 0.99, rank


def _disjoint(ranks: list[Rank]) -> None:
    for a, b in combinations(ranks, 2):
        assert not _cpus(a["cpus"]) & _cpus(b["cpus"]), (a, b)


def test_cpu_bind_none_gives_each_rank_its_own_cpus_and_node(guest_4n1c2t: GuestReport) -> None:
    """srun -n 4 --cpu-bind=none: Slurm gives every task the 4-CPU allocation; numarun plans
    the four ranks inside it, pairwise disjoint, each in one node with its memory there."""
    ranks = _ranks(_got(guest_4n1c2t, "slurm_affinity")["none"], 4)
    _disjoint(ranks)
    for rank in ranks:
        _memory_on(rank, _node_of(_cpus(rank["cpus"])))
    # All inside the one mask Slurm gave every task (what the variables say it gave).
    masks = {r["bind"] for r in ranks}
    assert len(masks) == 1, masks
    (mask,) = masks
    assert mask.startswith("quiet,mask_cpu:") and "," not in mask.partition(":")[2], mask
    shared = _mask(mask.partition(":")[2])
    assert set().union(*(_cpus(r["cpus"]) for r in ranks)) <= shared, (shared, ranks)


def test_cpus_per_task_two_gives_one_rank_per_node(guest_4n1c2t: GuestReport) -> None:
    ranks = _ranks(_got(guest_4n1c2t, "slurm_affinity")["none_c2"], 4)
    nodes = []
    for rank in ranks:
        cpus = _cpus(rank["cpus"])
        node = _node_of(cpus)
        assert cpus == {2 * node, 2 * node + 1}, rank
        _memory_on(rank, node)
        nodes.append(node)
    assert sorted(nodes) == [0, 1, 2, 3], ranks


def test_cpu_bind_cores_keeps_slurms_cores_with_memory_following(
    guest_4n1c2t: GuestReport,
) -> None:
    """--cpu-bind=cores: each rank stays on the core Slurm gave it (its mask list says which),
    ranks Slurm put on one core take a thread each, and memory is on that core's node."""
    ranks = _ranks(_got(guest_4n1c2t, "slurm_affinity")["cores"], 4)
    _disjoint(ranks)
    for rank in ranks:
        masks = rank["bind"].partition(":")[2].split(",")
        slurms = _mask(masks[rank["rank"] % len(masks)])
        cpus = _cpus(rank["cpus"])
        assert cpus <= slurms and len({c // 2 for c in slurms}) == 1, (rank, slurms)
        _memory_on(rank, _node_of(cpus))


def test_sbatch_example_runs_one_rank_per_node(guest_4n1c2t: GuestReport) -> None:
    got = _got(guest_4n1c2t, "slurm_affinity")["sbatch"]
    assert got["outputs"], got
    ranks = _ranks(got, 4)
    for rank in ranks:
        node = _node_of(_cpus(rank["cpus"]))
        assert _cpus(rank["cpus"]) == {2 * node, 2 * node + 1}, rank
        _memory_on(rank, node)
    assert sorted(_node_of(_cpus(r["cpus"])) for r in ranks) == [0, 1, 2, 3]


def test_task_cgroup_cpuset_bounds_the_ranks(guest_4n1c2t: GuestReport) -> None:
    """task/cgroup: the ranks run in the step's cgroup, whose cpuset.cpus.effective is the
    allocation; numarun plans within it, one rank per node of it."""
    ranks = _ranks(_got(guest_4n1c2t, "slurm_cgroup")["none"], 2)
    _disjoint(ranks)
    for rank in ranks:
        assert "/job_" in rank["cgroup"] and "/step_" in rank["cgroup"], rank
        cpuset = _cpus(rank["cpuset"])
        assert len(cpuset) == 4, rank  # -n 2 -c 2: four CPUs, not the machine's eight
        cpus = _cpus(rank["cpus"])
        node = _node_of(cpus)
        assert cpus == {2 * node, 2 * node + 1} <= cpuset, rank
        _memory_on(rank, node)
