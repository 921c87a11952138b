"""``numarun --per-rank``: rank and size from launcher environments, the slot each rank takes
on fake machines (plain, cgroup-confined, already bound by the launcher), every refusal
(message, exit code, nothing run), and the prefix path's start-up cost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from numarun import cpulist
from numarun.commands.prefix import parse_args
from numarun.errors import NumarunError, UnknownResourceError, UsageError
from numarun.placement.prefix import LaunchPlan as Plan
from numarun.placement.rank import launcher_room
from numarun.placement.rank import plan_rank as make_rank_plan
from numarun.ranks import discover, parse_task_list
from numarun.topology import Topology, read_topology

from .conftest import REPO
from .fakesysfs import FakeMachine, c5n_18xlarge

OMPI = {"OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
HYDRA = {"MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "3"}
SLURM = {"SLURM_LOCALID": "3", "SLURM_STEP_TASKS_PER_NODE": "4(x2),2", "SLURM_NODEID": "1"}


# -- where rank and size come from -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "counts"),
    [("4", [4]), ("4(x2)", [4, 4]), ("2(x3),1", [2, 2, 2, 1]), ("1,2, 3(x2)", [1, 2, 3, 3])],
)
def test_slurm_task_lists(text: str, counts: list[int]) -> None:
    assert parse_task_list(text) == counts


@pytest.mark.parametrize("text", ["", "4(x)", "x4", "4(2)", "four"])
def test_bad_slurm_task_list_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="SLURM_TASKS_PER_NODE="):
        parse_task_list(text)


@pytest.mark.parametrize(
    ("env", "rank", "size", "launcher", "rank_from", "size_from"),
    [
        (OMPI, 1, 4, "Open MPI", "OMPI_COMM_WORLD_LOCAL_RANK=1", "OMPI_COMM_WORLD_LOCAL_SIZE=4"),
        (HYDRA, 2, 3, "MPICH/Hydra", "MPI_LOCALRANKID=2", "MPI_LOCALNRANKS=3"),
        (SLURM, 3, 4, "Slurm", "SLURM_LOCALID=3",
         "SLURM_STEP_TASKS_PER_NODE=4(x2),2 at SLURM_NODEID=1"),
        ({"SLURM_LOCALID": "1", "SLURM_STEP_TASKS_PER_NODE": "4,2", "SLURM_NODEID": "1"}, 1, 2,
         "Slurm", "SLURM_LOCALID=1", "SLURM_STEP_TASKS_PER_NODE=4,2 at SLURM_NODEID=1"),
        # The same count on every node: no node index needed.
        ({"SLURM_LOCALID": "0", "SLURM_TASKS_PER_NODE": "8(x3)"}, 0, 8, "Slurm",
         "SLURM_LOCALID=0", "SLURM_TASKS_PER_NODE=8(x3)"),
        # The step's count wins over the job's and over the request.
        ({"SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_TASKS_PER_NODE": "4",
          "SLURM_NTASKS_PER_NODE": "4"}, 0, 2, "Slurm", "SLURM_LOCALID=0",
         "SLURM_STEP_TASKS_PER_NODE=2"),
        # A list that differs per node without SLURM_NODEID: the request is the fallback.
        ({"SLURM_LOCALID": "0", "SLURM_TASKS_PER_NODE": "4,2", "SLURM_NTASKS_PER_NODE": "4"},
         0, 4, "Slurm", "SLURM_LOCALID=0", "SLURM_NTASKS_PER_NODE=4"),
        # mpirun inside an sbatch script: every rank inherits the batch step's SLURM_LOCALID=0.
        (OMPI | {"SLURM_LOCALID": "0", "SLURM_TASKS_PER_NODE": "1"}, 1, 4, "Open MPI",
         "OMPI_COMM_WORLD_LOCAL_RANK=1", "OMPI_COMM_WORLD_LOCAL_SIZE=4"),
        (OMPI | HYDRA, 1, 4, "Open MPI", "OMPI_COMM_WORLD_LOCAL_RANK=1",
         "OMPI_COMM_WORLD_LOCAL_SIZE=4"),
        (HYDRA | SLURM, 2, 3, "MPICH/Hydra", "MPI_LOCALRANKID=2", "MPI_LOCALNRANKS=3"),
    ],
)  # fmt: skip
def test_discover_from_the_environment(  # noqa: PLR0917 - one argument per parameter column
    env: dict[str, str], rank: int, size: int, launcher: str, rank_from: str, size_from: str
) -> None:
    info = discover(env)
    assert (info.rank, info.size, info.launcher) == (rank, size, launcher)
    assert (info.rank_from, info.size_from) == (rank_from, size_from)


def test_explicit_rank_and_ranks_win() -> None:
    info = discover(OMPI, 3, 8)
    assert (info.rank, info.size, info.launcher) == (3, 8, "command line")
    assert (info.rank_from, info.size_from) == ("--rank 3", "--ranks 8")
    # Each on its own: --ranks overrides the launcher's size, keeping its rank.
    info = discover(OMPI, None, 2)
    assert (info.rank, info.size) == (1, 2)
    assert (info.rank_from, info.size_from) == ("OMPI_COMM_WORLD_LOCAL_RANK=1", "--ranks 2")
    info = discover(SLURM, 0, None)
    assert (info.rank, info.size, info.launcher) == (0, 4, "Slurm")
    assert discover({}, 0, 1).launcher == "command line"


@pytest.mark.parametrize(
    ("env", "rank", "ranks", "error", "words"),
    [
        ({}, None, None, UsageError, "no rank information"),
        ({"PMI_RANK": "0"}, None, 4, UsageError, "no rank information"),
        ({}, 0, None, UsageError, "no number of local ranks"),
        ({"OMPI_COMM_WORLD_LOCAL_RANK": "0"}, None, None, UsageError,
         "OMPI_COMM_WORLD_LOCAL_SIZE (not set)"),
        ({"SLURM_LOCALID": "0"}, None, None, UsageError, "Slurm's task counts (not set)"),
        ({"SLURM_LOCALID": "0", "SLURM_TASKS_PER_NODE": "4,2"}, None, None, UsageError,
         "no number of local ranks"),
        ({"MPI_LOCALRANKID": "one", "MPI_LOCALNRANKS": "2"}, None, None, UsageError,
         "MPI_LOCALRANKID='one' is not a number"),
        ({"SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "4(x"}, None, None, UsageError,
         "not a Slurm task count list"),
        ({}, 0, 0, UsageError, "0 local ranks"),
        (OMPI | {"OMPI_COMM_WORLD_LOCAL_RANK": "4"}, None, None, UnknownResourceError,
         "local rank 4 (OMPI_COMM_WORLD_LOCAL_RANK=4) is outside 0..3"),
        ({}, 2, 2, UnknownResourceError, "local rank 2 (--rank 2) is outside 0..1"),
        ({}, -1, 2, UnknownResourceError, "is outside 0..1"),
        (OMPI, None, 1, UnknownResourceError, "outside 0..0"),
    ],
)  # fmt: skip
def test_discover_refusals(
    env: dict[str, str],
    rank: int | None,
    ranks: int | None,
    error: type[NumarunError],
    words: str,
) -> None:
    with pytest.raises(error) as caught:
        discover(env, rank, ranks)
    assert type(caught.value) is error
    assert words in caught.value.message
    assert "\n" not in caught.value.message


# -- the slot each rank takes ------------------------------------------------------------------


def _four_node(root: Path) -> Path:
    """4 nodes x 2 cores x 2 threads: node n has cores (4n, 4n+2) and (4n+1, 4n+3)."""
    machine = FakeMachine(
        nodes={n: range(4 * n, 4 * n + 4) for n in range(4)},
        siblings=[(4 * n + i, 4 * n + i + 2) for n in range(4) for i in range(2)],
    )
    return machine.write(root)


def _plan(
    root: Path, env: dict[str, str], *options: str, live_room: bool = True
) -> tuple[Plan, Topology]:
    opts = parse_args(["--per-rank", *options, "--", "true"])
    topology = read_topology(root)
    room = launcher_room(topology, str(root)) if live_room else None
    return make_rank_plan(opts.request, topology, env, room=room), topology


def _slots(root: Path, size: int, *options: str) -> list[frozenset[int]]:
    out = []
    for rank in range(size):
        plan, _ = _plan(root, {}, "--rank", str(rank), "--ranks", str(size), *options)
        assert plan.cpus is not None
        out.append(plan.cpus)
    return out


def test_ranks_equal_nodes_one_node_each(tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path)
    node0 = frozenset([*range(18), *range(36, 54)])
    node1 = frozenset([*range(18, 36), *range(54, 72)])
    for rank, node, cpus in ((0, 0, node0), (1, 1, node1)):
        env = {"OMPI_COMM_WORLD_LOCAL_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
        plan, _ = _plan(root, env, "--policy", "bind")
        assert plan.cpus == cpus
        assert plan.policy is not None and plan.policy.mode == "bind"
        assert plan.policy.nodes == {node}
        assert plan.notice is None and plan.rank == rank


def test_more_ranks_than_nodes_cores_first_and_no_overlap(tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path)
    slots = _slots(root, 4, "--smt", "avoid")
    assert [len(s) for s in slots] == [9, 9, 9, 9]
    assert len(frozenset().union(*slots)) == 36  # one thread of every core, none shared
    assert all(c < 36 for s in slots for c in s)  # first threads only
    # smt allow: whole cores, siblings together.
    slots = _slots(root, 4)
    assert [len(s) for s in slots] == [18, 18, 18, 18]
    assert all(c + 36 in s for s in slots for c in s if c < 36)


def test_fewer_ranks_than_nodes_no_core_shared(tmp_path: Path) -> None:
    root = _four_node(tmp_path)
    slots = _slots(root, 3)
    for i, a in enumerate(slots):
        for b in slots[i + 1 :]:
            assert not a & b
    assert frozenset().union(*slots) == frozenset(range(16))


def test_no_policy_leaves_memory_alone(tmp_path: Path) -> None:
    plan, _ = _plan(_four_node(tmp_path), {}, "--rank", "2", "--ranks", "4")
    assert plan.policy is None and plan.cpus == frozenset(range(8, 12))


@pytest.mark.parametrize(
    ("options", "mode", "nodes"),
    [
        (("--policy", "interleave"), "interleave", {0, 1, 2, 3}),
        (("--policy", "preferred"), "preferred", {1}),
        (("--policy", "local"), "local", set()),
        (("--nodes", "3"), "bind", {3}),
        (("-i", "0,1"), "interleave", {0, 1}),
    ],
)
def test_memory_policy_options(
    tmp_path: Path, options: tuple[str, ...], mode: str, nodes: set[int]
) -> None:
    plan, _ = _plan(_four_node(tmp_path), {}, "--rank", "1", "--ranks", "4", *options)
    assert plan.policy is not None
    assert (plan.policy.mode, set(plan.policy.nodes)) == (mode, nodes)
    assert plan.cpus == frozenset(range(4, 8))


def test_cpu_options_restrict_the_plan(tmp_path: Path) -> None:
    root = _four_node(tmp_path)
    assert _slots(root, 2, "--cpu-nodes", "2-3") == [
        frozenset(range(8, 12)),
        frozenset(range(12, 16)),
    ]
    assert _slots(root, 2, "--cpus", "0-3") == [frozenset({0, 2}), frozenset({1, 3})]


def test_cgroup_cpuset_bounds_the_plan(tmp_path: Path) -> None:
    machine = c5n_18xlarge()
    root = machine.write(tmp_path)
    cpus = [*range(18, 27), *range(54, 63)]  # 9 cores of node 1, like a k8s pod
    machine.confine(tmp_path, "/kubepods/pod1", cpus, [1])
    slots = _slots(root, 3)
    assert frozenset().union(*slots) == frozenset(cpus)
    assert [len(s) for s in slots] == [6, 6, 6]
    plan, _ = _plan(root, {}, "--rank", "0", "--ranks", "3", "--policy", "bind")
    assert plan.policy is not None and plan.policy.nodes == {1}
    assert plan.notice is None  # the cgroup is not a launcher's binding


def test_already_bound_rank_stays_within_its_cpus(tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path)
    # What mpirun --bind-to core leaves: this rank may run on one core's two threads.
    status = tmp_path / "proc/self/status"
    status.write_text(
        status.read_text().replace("Cpus_allowed_list:\t0-71", "Cpus_allowed_list:\t20,56")
    )
    env = {"SLURM_LOCALID": "2", "SLURM_NTASKS_PER_NODE": "4"}
    plan, _ = _plan(root, env, "--policy", "bind")
    assert plan.cpus == frozenset({20, 56})
    assert plan.policy is not None and plan.policy.nodes == {1}
    assert plan.notice is not None and "\n" not in plan.notice
    assert "rank 2 of 4 was already bound by its launcher to CPUs 20,56" in plan.notice
    assert "its cpuset allows 0-71" in plan.notice
    plan, _ = _plan(root, env, "--policy", "bind", "--smt", "avoid")
    assert plan.cpus == frozenset({20})
    # Without the cgroup to compare with (a snapshot), there is nothing to tell it by.
    plan, _ = _plan(root, {"SLURM_LOCALID": "0", "SLURM_NTASKS_PER_NODE": "2"}, live_room=False)
    assert plan.notice is None and plan.cpus == frozenset({20})


def test_isolated_cpus_are_not_a_launchers_binding(tmp_path: Path) -> None:
    root = _four_node(tmp_path)
    (tmp_path / "sys/devices/system/cpu/isolated").write_text("12-15\n")
    status = tmp_path / "proc/self/status"
    status.write_text(
        status.read_text().replace("Cpus_allowed_list:\t0-15", "Cpus_allowed_list:\t0-11")
    )
    plan, _ = _plan(root, {}, "--rank", "2", "--ranks", "3")
    assert plan.notice is None and plan.cpus == frozenset(range(8, 12))


# -- the command line: --explain, refusals, nothing run ---------------------------------------


def numarun(
    *args: str, env: dict[str, str] | None = None, python_flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "SLURM_", "MPI_"))}
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "numarun", *args],
        capture_output=True, text=True, env=clean | {"PYTHONPATH": str(REPO)} | (env or {}),
        timeout=60, check=False,
    )  # fmt: skip


def test_explain_names_the_slot_and_where_rank_and_size_came_from(tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path)
    done = numarun("--per-rank", "--policy", "bind", "--root", str(root), "--explain", "--", "true",
                   env={"MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[0] == "rank: 1 of 2 on this host (MPICH/Hydra: MPI_LOCALRANKID=1, MPI_LOCALNRANKS=2)"
    )
    assert lines[1] == "slot: 1 of 2: node(s) 1, CPUs 18-35,54-71 (18 cores)"
    assert "memory policy: bind:1" in lines
    assert "cpus: 18-35,54-71" in lines
    assert any("2 slots planned over CPUs 0-71" in line for line in lines)


def test_run_applies_the_slot_before_exec() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    env = {"OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    done = numarun("--per-rank", "--", "sh", "-c", "grep Cpus_allowed_list /proc/$$/status",
                   env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = cpulist.parse_list(done.stdout.split(":")[1])
    assert got and got < frozenset(cpus) and max(cpus) in got


@pytest.mark.parametrize(
    ("args", "env", "code", "words"),
    [
        (["--per-rank"], {}, 2, "no rank information"),
        (["--rank", "4", "--ranks", "4"], {}, 4, "local rank 4 (--rank 4) is outside 0..3"),
        (["--per-rank"], {"SLURM_LOCALID": "5", "SLURM_NTASKS_PER_NODE": "2"}, 4,
         "SLURM_LOCALID=5"),
        (["--rank", "0", "--ranks", "73"], {}, 6, "73 ranks on this host (--ranks 73) but only 72"),
        (["--rank", "0", "--ranks", "40", "--smt", "avoid"], {}, 6, "use --smt allow"),
        (["--rank", "x"], {}, 2, "--rank 'x' is not a number"),
        (["--rank", "0", "--ranks", "1", "--nodes", "3"], {}, 4, "node 3 does not exist"),
        (["--rank", "0", "--ranks", "1", "--policy", "local", "--nodes", "1"], {}, 6,
         "takes no nodes"),
    ],
)  # fmt: skip
def test_refusals_run_nothing(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, words: str
) -> None:
    root = c5n_18xlarge().write(tmp_path / "m")
    marker = tmp_path / "ran"
    done = numarun(*args, "--root", str(root), "--", "touch", str(marker), env=env)
    assert done.returncode == code, done.stderr
    assert words in done.stderr
    assert done.stderr.startswith("numarun: ") and done.stderr.count("\n") == 1
    assert not marker.exists()


def test_node_outside_the_cgroup_is_refused_naming_it(tmp_path: Path) -> None:
    machine = c5n_18xlarge()
    root = machine.write(tmp_path / "m")
    machine.confine(root, "/slurm/job7", range(18), [0])
    marker = tmp_path / "ran"
    done = numarun("--rank", "0", "--ranks", "1", "--policy", "bind", "--nodes", "1",
                   "--root", str(root), "--", "touch", str(marker))  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert "cgroup v2 /sys/fs/cgroup/slurm/job7" in done.stderr
    assert not marker.exists()
    done = numarun("--rank", "0", "--ranks", "1", "--cpu-nodes", "1", "--root", str(root),
                   "--", "touch", str(marker))  # fmt: skip
    assert done.returncode == 5 and "slurm/job7" in done.stderr, done.stderr


def test_per_rank_path_imports_no_heavy_modules() -> None:
    done = numarun("--rank", "0", "--ranks", "1", "--policy", "bind", "--", "true",
                   python_flags=("-X", "importtime"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "numarun.placement.slots" in imported  # the planner's slot rules, no job planner
    for heavy in ("typer", "pydantic", "argparse", "click", "rich", "psutil", "numarun.cli",
                  "numarun.spec", "tomllib"):  # fmt: skip
        assert heavy not in imported, f"{heavy} is imported on the --per-rank path"
