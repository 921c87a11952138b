"""``numarun --per-gpu``: local rank i gets GPU i, the way per-gpu workers get theirs.

On the fake GPU server of test_devices (GPUs 0-1 on node 0, 2-3 on node 1, an accelerator
on the CPU-less node 2 nearest node 1), under Open MPI's and Slurm's rank variables: each
rank's CPUs, memory and visible-devices variable are those of the per-gpu worker of the
same index; the variables the launcher set are kept; every refusal is one line, exit 6.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from numarun import cpulist
from numarun.plan import plan_job
from numarun.spec import parse_spec_text
from numarun.topology import load_topology

from .conftest import REPO
from .test_devices import gpu_server

SPEC = '[[process]]\nname = "train"\ncommand = ["train"]\nworkers = "per-gpu"\npolicy = "bind"\n'
VISIBLE = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


def numarun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """numarun with no launcher's rank variables and no visible-devices variables but ``env``."""
    launchers = ("OMPI_", "SLURM_", "MPI_", *VISIBLE)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(launchers)}
    return subprocess.run(
        [sys.executable, "-m", "numarun", *args],
        capture_output=True, text=True, env=clean | {"PYTHONPATH": str(REPO)} | (env or {}),
        timeout=60, check=False,
    )  # fmt: skip


def _dry(root: Path, env: dict[str, str], *options: str) -> dict[str, str]:
    """The --dry-run lines as a mapping: memory policy, cpus, slot, and each env variable."""
    done = numarun("--per-gpu", *options, "--root", str(root), "--dry-run", "--", "true", env=env)
    assert done.returncode == 0, done.stderr
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(": ")
        if key == "env":
            key, _, value = value.partition("=")
        out[key] = value
    return out


@pytest.fixture
def server(tmp_path: Path) -> Path:
    return gpu_server(tmp_path / "server")


def test_each_open_mpi_rank_gets_what_the_per_gpu_worker_of_its_index_gets(server: Path) -> None:
    (group,) = plan_job(load_topology(server), parse_spec_text(SPEC)).processes
    for worker in group.workers:
        env = {"OMPI_COMM_WORLD_LOCAL_RANK": str(worker.index), "OMPI_COMM_WORLD_LOCAL_SIZE": "5"}
        shown = _dry(server, env, "--policy", "bind")
        assert shown["cpus"] == cpulist.format_list(worker.cpus)
        assert shown["memory policy"] == f"bind:{cpulist.format_list(worker.memory.nodes)}"
        told = {k: v for k, v in shown.items() if k in (*VISIBLE, "NUMARUN_DEVICE")}
        assert told == {k: v for k, v in worker.env.items() if k in (*VISIBLE, "NUMARUN_DEVICE")}


def test_a_slurm_rank_on_the_second_socket(server: Path) -> None:
    env = {"SLURM_LOCALID": "2", "SLURM_STEP_TASKS_PER_NODE": "4", "SLURM_CPU_BIND_TYPE": "none"}
    shown = _dry(server, env)
    assert shown["rank"].startswith("2 of 4 on this host (Slurm: SLURM_LOCALID=2")
    assert shown["slot"] == "2 of 4: gpu 2 (0000:ca:00.0), node(s) 1, CPUs 4-5 (1 core)"
    assert shown["cpus"] == "4-5"
    assert shown["memory policy"] == "unchanged (inherited)"
    assert (shown["CUDA_VISIBLE_DEVICES"], shown["CUDA_DEVICE_ORDER"]) == ("2", "PCI_BUS_ID")
    assert (shown["NUMARUN_DEVICE"], shown["NUMARUN_DEVICE_NODE"]) == ("gpu 2 (0000:ca:00.0)", "1")


def test_visible_devices_the_launcher_set_are_kept(server: Path) -> None:
    env = {"SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "2", "CUDA_VISIBLE_DEVICES": "0,1"}
    done = numarun("--per-gpu", "--root", str(server), "--explain", "--", "true", env=env)
    assert done.returncode == 0, done.stderr
    assert "env: CUDA_VISIBLE_DEVICES" not in done.stdout
    assert "env: CUDA_DEVICE_ORDER" not in done.stdout  # it would change what 0,1 mean
    assert "CUDA_VISIBLE_DEVICES already set by the launcher: left as it is" in done.stdout
    assert "env: NUMARUN_DEVICE=gpu 1 (0000:17:00.0)" in done.stdout


def test_local_rank_of_a_cpu_less_nodes_gpu_runs_nearest(server: Path) -> None:
    shown = _dry(server, {"MPI_LOCALRANKID": "4", "MPI_LOCALNRANKS": "5"})
    assert shown["cpus"] == "7"  # node 1's CPUs split between gpus 2, 3 and 4
    assert shown["ROCR_VISIBLE_DEVICES"] == "0"
    assert shown["NUMARUN_DEVICE_NODE"] == "2"


def _bound(server: Path) -> Path:
    status = server / "proc/self/status"
    text = status.read_text()
    status.write_text(
        "\n".join(
            "Cpus_allowed_list:\t4-5" if line.startswith("Cpus_allowed_list:") else line
            for line in text.splitlines()
        )
        + "\n"
    )
    return server


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--rank", "0", "--ranks", "6"], {},
         "--per-gpu: 6 ranks on this host (--ranks 6) but 5 GPUs for them (gpu 0 (0000:65:00.0)"),
        (["--per-rank", "--cpu-nodes", "0"], {"SLURM_LOCALID": "2", "SLURM_NTASKS_PER_NODE": "3"},
         "--per-gpu: 3 ranks on this host (SLURM_NTASKS_PER_NODE=3) but 2 GPUs for them"),
    ],
)  # fmt: skip
def test_more_ranks_than_gpus_is_refused(
    server: Path, args: list[str], env: dict[str, str], words: str
) -> None:
    done = numarun("--per-gpu", *args, "--root", str(server), "--", "true", env=env)
    assert done.returncode == 6, done.stderr
    assert done.stderr.startswith(f"numarun: {words}") and done.stderr.count("\n") == 1
    assert "start at most" in done.stderr


def test_a_rank_its_launcher_bound_is_refused(server: Path) -> None:
    root = _bound(server)
    env = {"OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    done = numarun("--per-gpu", "--root", str(root), "--", "true", env=env)
    assert done.returncode == 6, done.stderr
    assert done.stderr.startswith(
        "numarun: --per-gpu: local rank 0 was already bound by its launcher to CPUs 4-5"
    )
    assert "mpirun --bind-to none" in done.stderr


def test_a_machine_without_gpus_is_refused(tmp_path: Path) -> None:
    from .fakesysfs import c5n_18xlarge

    root = c5n_18xlarge().write(tmp_path)
    done = numarun("--per-gpu", "--rank", "0", "--ranks", "1", "--root", str(root), "--", "true")
    assert done.returncode == 6
    assert done.stderr.startswith("numarun: --per-gpu but this machine has no GPU")


def test_run_applies_the_gpus_slot_and_variables_before_exec(server: Path) -> None:
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    script = (
        'echo "$CUDA_VISIBLE_DEVICES $NUMARUN_DEVICE_NODE"; grep Cpus_allowed_list /proc/$$/status'
    )
    env = {"OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    done = numarun("--per-gpu", "--root", str(server), "--", "sh", "-c", script, env=env)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "1 0"  # gpu 0 is /dev/nvidia0 at 65:00.0, CUDA's second in PCI order
    assert cpulist.parse_list(second.split(":")[1]) == frozenset({0, 1})
