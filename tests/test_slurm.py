"""``numarun --per-rank`` under srun: Slurm's allocation told from its binding by SLURM_CPU_BIND*.

The machine is the guest's shape, 4 nodes x 1 core x 2 threads (node n: CPUs 2n, 2n+1, one
core). The environments are what Slurm 22.05's srun and task/affinity gave each task in that
guest (tests/guest/checks_slurm.py runs them for real): ``srun -n 4 --cpu-bind=none`` on a
4-CPU allocation, CPUs 4-7, gives every task affinity 4-7 and ``mask_cpu:0xF0``; with ``-c 2``
(the whole node) ``none``; ``--cpu-bind=cores`` ``mask_cpu:0x30,0xC0,0x30,0xC0``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from numarun.commands.prefix import parse_args
from numarun.errors import UnsuitableError, UsageError
from numarun.placement.prefix import LaunchPlan
from numarun.placement.rank import launcher_room, plan_rank
from numarun.ranks import SlurmBinding, slurm_binding
from numarun.topology import read_topology

from .fakesysfs import FakeMachine
from .test_ranks import numarun

NONE = {"SLURM_CPU_BIND_TYPE": "none", "SLURM_CPU_BIND_LIST": "", "SLURM_CPU_BIND": "quiet,none"}


def _guest_shape(root: Path) -> tuple[FakeMachine, Path]:
    machine = FakeMachine(
        nodes={n: [2 * n, 2 * n + 1] for n in range(4)},
        siblings=[(2 * n, 2 * n + 1) for n in range(4)],
    )
    return machine, machine.write(root)


def _task(rank: int, tasks: int, bind: dict[str, str]) -> dict[str, str]:
    return {
        "SLURM_LOCALID": str(rank),
        "SLURM_NODEID": "0",
        "SLURM_STEP_TASKS_PER_NODE": str(tasks),
        "SLURM_TASKS_PER_NODE": str(tasks),
    } | bind


def _rank(tmp_path: Path, affinity: list[int], env: dict[str, str], *options: str) -> LaunchPlan:
    """This rank's plan on the guest's shape, its affinity narrowed as Slurm leaves it."""
    machine, root = _guest_shape(tmp_path / env.get("SLURM_LOCALID", "x"))
    machine.pin(root, affinity)
    topology = read_topology(root)
    opts = parse_args(["--per-rank", *options, "--", "true"])
    return plan_rank(opts.request, topology, env, room=launcher_room(topology, str(root)))


def _nodes(plan: LaunchPlan) -> set[int]:
    assert plan.policy is not None and plan.policy.mode == "bind"
    return set(plan.policy.nodes)


# -- what Slurm says ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "kind", "masks"),
    [
        (NONE, "none", ()),
        ({"SLURM_CPU_BIND": "quiet,none"}, "none", ()),
        ({"SLURM_CPU_BIND_TYPE": "mask_cpu:", "SLURM_CPU_BIND_LIST": "0x3,0xC"}, "mask_cpu",
         ({0, 1}, {2, 3})),
        # task/affinity reports --cpu-bind=cores as the masks it computed for each task.
        ({"SLURM_CPU_BIND_TYPE": "cores,mask_cpu:", "SLURM_CPU_BIND_LIST": "0x3,0x3,0xC,0xC"},
         "cores", ({0, 1}, {0, 1}, {2, 3}, {2, 3})),
        ({"SLURM_CPU_BIND_TYPE": "map_cpu:", "SLURM_CPU_BIND_LIST": "1,3,0x5"}, "map_cpu",
         ({1}, {3}, {5})),
        ({"SLURM_CPU_BIND": "verbose,mask_cpu:0x00000001,0x00000100"}, "mask_cpu", ({0}, {8})),
        ({"SLURM_CPU_BIND_TYPE": "sockets", "SLURM_CPU_BIND_LIST": ""}, "sockets", ()),
        # map_ldom/mask_ldom list memory nodes: no CPU masks to compare the ranks by.
        ({"SLURM_CPU_BIND_TYPE": "map_ldom:", "SLURM_CPU_BIND_LIST": "0,1"}, "map_ldom", ()),
    ],
)  # fmt: skip
def test_slurm_says_what_it_did(
    env: dict[str, str], kind: str, masks: tuple[set[int], ...]
) -> None:
    binding = slurm_binding(env)
    assert binding is not None
    assert binding.kind == kind
    assert binding.masks == tuple(frozenset(m) for m in masks)


@pytest.mark.parametrize("env", [{}, {"SLURM_CPU_BIND_TYPE": ""}, {"SLURM_CPU_BIND": "verbose"}])
def test_no_word_from_slurm_is_no_answer(env: dict[str, str]) -> None:
    assert slurm_binding(env) is None


def test_masks_cycle_and_name_who_shares() -> None:
    binding = SlurmBinding(
        kind="map_cpu", masks=(frozenset({1}), frozenset({3})), source="SLURM_CPU_BIND_TYPE=x"
    )
    # Fewer entries than tasks: Slurm reuses the list from its start.
    assert [binding.mask_of(t) for t in range(4)] == [{1}, {3}, {1}, {3}]
    assert binding.sharers(2, 4) == (0, 2)
    assert binding.sharers(1, 4) == (1, 3)
    assert SlurmBinding(kind="cores", source="x").sharers(2, 4) == (2,)


@pytest.mark.parametrize(
    "env",
    [
        {"SLURM_CPU_BIND_TYPE": "mask_cpu:", "SLURM_CPU_BIND_LIST": "0x3,zz"},
        {"SLURM_CPU_BIND": "quiet,map_cpu:one"},
    ],
)
def test_a_bad_bind_list_is_one_usage_line(env: dict[str, str]) -> None:
    with pytest.raises(UsageError) as caught:
        slurm_binding(env)
    assert "is not a Slurm CPU bind list" in caught.value.message
    assert "\n" not in caught.value.message


# -- srun --cpu-bind=none: the affinity is the allocation --------------------------------------


PART_OF_NODE = {
    "SLURM_CPU_BIND_TYPE": "mask_cpu:",
    "SLURM_CPU_BIND_LIST": "0xF0",
    "SLURM_CPU_BIND": "quiet,mask_cpu:0xF0",
    "SLURM_CPUS_ON_NODE": "4",
}


def test_cpu_bind_none_plans_every_rank_inside_the_allocation(tmp_path: Path) -> None:
    # srun -n 4 --cpu-bind=none: all four tasks have CPUs 4-7 (nodes 2 and 3), one mask.
    plans = [
        _rank(tmp_path, [4, 5, 6, 7], _task(r, 4, PART_OF_NODE), "--policy", "bind")
        for r in range(4)
    ]
    assert [p.cpus for p in plans] == [{4}, {5}, {6}, {7}]  # distinct CPUs, one each
    assert [_nodes(p) for p in plans] == [{2}, {2}, {3}, {3}]  # memory on each rank's node
    assert all(p.notice is None for p in plans)  # not "already bound by its launcher"
    assert plans[1].heading[1] == "slot: 1 of 4: node(s) 2, CPUs 5 (1 core)"
    assert any("one CPU mask 4-7 for all 4 local ranks is the step's allocation" in r
               for r in plans[0].reasons)  # fmt: skip


def test_type_none_plans_every_rank_inside_the_allocation(tmp_path: Path) -> None:
    plans = [_rank(tmp_path, [0, 1, 2, 3], _task(r, 4, NONE), "--policy", "bind") for r in range(4)]
    assert [p.cpus for p in plans] == [{0}, {1}, {2}, {3}]
    assert [_nodes(p) for p in plans] == [{0}, {0}, {1}, {1}]
    assert all(p.notice is None for p in plans)
    assert any("SLURM_CPU_BIND_TYPE=none: the affinity 0-3 is the step's allocation" in r
               for r in plans[0].reasons)  # fmt: skip


def test_cpus_per_task_allocation_gives_one_rank_per_node(tmp_path: Path) -> None:
    # srun -n 4 -c 2 --cpu-bind=none: the allocation spans every node.
    plans = [_rank(tmp_path, list(range(8)), _task(r, 4, NONE), "--policy", "bind")
             for r in range(4)]  # fmt: skip
    assert [p.cpus for p in plans] == [{2 * r, 2 * r + 1} for r in range(4)]
    assert [_nodes(p) for p in plans] == [{0}, {1}, {2}, {3}]


def test_more_ranks_than_the_allocation_holds_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsuitableError) as caught:
        _rank(tmp_path, [0, 1], _task(0, 3, NONE), "--policy", "bind")
    assert "3 ranks on this host" in caught.value.message
    assert "only 2 usable CPUs to place them on (0-1)" in caught.value.message


def test_without_slurms_word_an_allocation_still_reads_as_a_binding(tmp_path: Path) -> None:
    # Older srun, or variables scrubbed: the narrower affinity can only be guessed at.
    plan = _rank(tmp_path, [0, 1, 2, 3], _task(1, 4, {}), "--policy", "bind")
    assert plan.notice is not None and "already bound" in plan.notice
    assert plan.cpus == frozenset({0, 1, 2, 3})


def test_mpirun_in_a_batch_script_ignores_the_batch_steps_binding(tmp_path: Path) -> None:
    env = _task(0, 1, NONE) | {
        "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
    }
    plan = _rank(tmp_path, list(range(8)), env, "--policy", "bind")
    assert plan.cpus == frozenset({4, 5, 6, 7}) and _nodes(plan) == {2, 3}


# -- srun --cpu-bind=cores|sockets|map_cpu|mask_cpu: Slurm's binding kept --------------------


def _bound(masks: list[int], kind: str = "cores,mask_cpu:") -> dict[str, str]:
    return {"SLURM_CPU_BIND_TYPE": kind, "SLURM_CPU_BIND_LIST": ",".join(hex(m) for m in masks)}


def _cpus_of(mask: int) -> list[int]:
    return [c for c in range(mask.bit_length()) if mask >> c & 1]


def test_ranks_sharing_a_core_split_it(tmp_path: Path) -> None:
    # srun -n 4 --cpu-bind=cores in a 2-core allocation: cyclic, tasks 0 and 2 on one core.
    masks = [0x30, 0xC0, 0x30, 0xC0]
    plans = [_rank(tmp_path, _cpus_of(masks[r]), _task(r, 4, _bound(masks, "mask_cpu:")),
                   "--policy", "bind")
             for r in range(4)]  # fmt: skip
    assert [p.cpus for p in plans] == [{4}, {6}, {5}, {7}]  # Slurm's cores, a thread each
    assert [_nodes(p) for p in plans] == [{2}, {3}, {2}, {3}]  # memory follows
    assert all(p.notice is None for p in plans)
    assert any("Slurm bound this rank to CPUs 4-5, shared with local rank(s) 2" in r
               for r in plans[0].reasons)  # fmt: skip
    assert plans[2].heading[1] == "slot: 1 of 2 sharing the binding 4-5: node(s) 2, CPUs 5 (1 core)"


def test_slurms_own_binding_one_thread_each_is_kept(tmp_path: Path) -> None:
    # srun -n 4 with no --cpu-bind: task/affinity's implicit binding to threads.
    masks = [0x10, 0x40, 0x20, 0x80]
    plans = [_rank(tmp_path, _cpus_of(masks[r]), _task(r, 4, _bound(masks, "mask_cpu:")),
                   "--policy", "bind")
             for r in range(4)]  # fmt: skip
    assert [p.cpus for p in plans] == [{4}, {6}, {5}, {7}]
    assert [_nodes(p) for p in plans] == [{2}, {3}, {2}, {3}]


def test_a_rank_alone_on_its_core_keeps_it_and_memory_follows(tmp_path: Path) -> None:
    masks = [0x3, 0xC, 0x30, 0xC0]  # srun -n 4 -c 2 --cpu-bind=cores
    for r in range(4):
        core = [2 * r, 2 * r + 1]
        plan = _rank(tmp_path, core, _task(r, 4, _bound(masks)), "--policy", "bind")
        assert plan.cpus == frozenset(core)
        assert _nodes(plan) == {r}
        assert plan.notice is None
        assert any("Slurm bound this rank to CPUs" in line for line in plan.reasons)


def test_a_socket_binding_shared_by_two_ranks_is_split_by_node(tmp_path: Path) -> None:
    # --cpu-bind=ldoms on a machine whose "socket" Slurm saw as nodes 0-1: tasks 0, 1 there.
    masks = [0xF, 0xF, 0xF0, 0xF0]
    plans = [_rank(tmp_path, sorted(c for c in range(8) if masks[r] >> c & 1),
                   _task(r, 4, _bound(masks, "ldoms,mask_cpu:")), "--policy", "bind")
             for r in range(4)]  # fmt: skip
    assert [p.cpus for p in plans] == [{0, 1}, {2, 3}, {4, 5}, {6, 7}]
    assert [_nodes(p) for p in plans] == [{0}, {1}, {2}, {3}]


def test_map_cpu_cycles_and_a_list_that_disagrees_is_not_trusted(tmp_path: Path) -> None:
    env = _task(2, 4, _bound([1 << 5, 1 << 6], "map_cpu:"))
    env["SLURM_CPU_BIND_LIST"] = "5,6"
    plan = _rank(tmp_path, [5], env, "--policy", "bind")  # task 2 reuses the first entry
    assert plan.cpus == frozenset({5}) and _nodes(plan) == {2}
    # The affinity is not what the list says: the kernel's word wins, this rank alone.
    plan = _rank(tmp_path, [6, 7], _task(0, 4, _bound([0x3, 0x3])), "--policy", "bind")
    assert plan.cpus == frozenset({6, 7}) and _nodes(plan) == {3}


# -- task/cgroup: the step's cpuset is the bound ------------------------------------------------


def test_the_task_cgroups_cpuset_bounds_the_ranks(tmp_path: Path) -> None:
    # task/cgroup with cgroup/v2: the step's cpuset is CPUs 4-7; affinity is the same.
    plans = []
    for r in range(2):
        machine, root = _guest_shape(tmp_path / str(r))
        cgroup = f"/system.slice/slurmstepd.scope/job_7/step_0/user/task_{r}"
        machine.confine(root, cgroup, range(4, 8), [2, 3])
        machine.pin(root, range(4, 8))
        topology = read_topology(root)
        opts = parse_args(["--per-rank", "--policy", "bind", "--", "true"])
        room = launcher_room(topology, str(root))
        plans.append(plan_rank(opts.request, topology, _task(r, 2, NONE), room=room))
    assert [p.cpus for p in plans] == [{4, 5}, {6, 7}]
    assert [_nodes(p) for p in plans] == [{2}, {3}]


# -- the command line ---------------------------------------------------------------------------


def test_explain_says_the_affinity_is_slurms_allocation(tmp_path: Path) -> None:
    machine, root = _guest_shape(tmp_path)
    machine.pin(root, [0, 1, 2, 3])
    done = numarun("--per-rank", "--policy", "bind", "--root", str(root), "--explain", "--",
                   "true", env=_task(3, 4, NONE))  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("rank: 3 of 4 on this host (Slurm: SLURM_LOCALID=3")
    assert lines[1] == "slot: 3 of 4: node(s) 1, CPUs 3 (1 core)"
    assert "memory policy: bind:1" in lines
    assert any("SLURM_CPU_BIND_TYPE=none: the affinity 0-3 is the step's allocation" in line
               for line in lines)  # fmt: skip
