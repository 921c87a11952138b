"""numactl's spellings, read as numactl's getopt_long and libnuma read them.

Oracles: numactl.c's option table (transcribed in numarun.options.NUMACTL_LONG) checked
against the installed numactl binary, and that binary's own ``--show`` output for the
same spellings. Refusals are one line and exit 2; what numactl ignores gets one warning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from numarun import mempolicy
from numarun.commands.prefix import parse_args
from numarun.errors import UsageError
from numarun.options import NUMACTL_LONG, NUMACTL_REFUSED

from .conftest import REPO

NUMACTL = shutil.which("numactl")
need_numactl = pytest.mark.skipif(NUMACTL is None, reason="numactl is not installed")
NODE = min(mempolicy.mems_allowed())
CPUS = sorted(os.sched_getaffinity(0))


def run(*argv: str, program: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [program] if program else [sys.executable, "-m", "numarun"]
    return subprocess.run(
        [*command, *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=60,
        check=False,
    )


# -- getopt_long: prefixes, clusters -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["--phys=3", "cmd"], "cpus", {3}),
        (["--physcpu", "3", "cmd"], "cpus", {3}),
        (["--inter=all", "cmd"], "mode", "interleave"),
        (["--cpunode=1", "cmd"], "cpu_nodes", {1}),
        (["--cpub=1", "cmd"], "cpu_nodes", {1}),  # numactl's old --cpubind
        (["--mem", "1", "cmd"], "mode", "bind"),
        (["--bal", "-m", "1", "cmd"], "flags", {"numa-balancing"}),
        (["--loc", "cmd"], "mode", "local"),
        (["--preferred=1", "cmd"], "mode", "preferred"),  # exact beats the longer name
        (["--preferred-m=1", "cmd"], "mode", "preferred-many"),
        (["-lN1", "cmd"], "cpu_nodes", {1}),
        (["-lN1", "cmd"], "mode", "local"),
        (["-bm1", "cmd"], "flags", {"numa-balancing"}),
        (["-bm1", "cmd"], "nodes", {1}),
        (["-bm", "1", "cmd"], "nodes", {1}),
        (["-C0-3", "cmd"], "cpus", {0, 1, 2, 3}),
    ],
)
def test_numactl_spellings(argv: list[str], field: str, expected: object) -> None:
    request = parse_args(argv).request
    value = getattr(request, field)
    if hasattr(value, "items"):
        value = set(value.items)
    assert value == expected
    assert request.command == ["cmd"]


@pytest.mark.parametrize(
    ("argv", "candidates"),
    [
        (["--pref=1", "cmd"], "--preferred, --preferred-many"),
        (["--cpu=1", "cmd"], "--cpubind, --cpunodebind, --cpu-compress"),
        (["--s", "cmd"], "--show, --shm, --strict, --shmmode, --shmid"),
        (["--h", "cmd"], "--hardware, --huge"),
    ],
)
def test_ambiguous_prefixes_are_refused_naming_the_candidates(
    argv: list[str], candidates: str
) -> None:
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    assert err.value.exit_code == 2
    assert f"ambiguous: it could be {candidates}" in err.value.message


@pytest.mark.parametrize("name", ["--pol", "--node", "--cpu-n", "--dry", "--expl", "--per"])
def test_numarun_own_options_stay_exact(name: str) -> None:
    with pytest.raises(UsageError):
        parse_args([name, "1", "cmd"])


@need_numactl
@pytest.mark.parametrize("name", sorted(NUMACTL_LONG))
def test_the_option_table_matches_the_installed_numactl(name: str) -> None:
    """Each name numactl knows takes a value exactly when numarun's table says so."""
    done = run(f"--{name}", program=NUMACTL)
    if "unrecognized option" in done.stderr:
        pytest.skip(f"the installed numactl predates --{name}")
    assert ("requires an argument" in done.stderr) == NUMACTL_LONG[name], done.stderr


@need_numactl
@pytest.mark.parametrize(
    "argv",
    [
        ["--phys=0", "--show"],
        [f"--cpunode={NODE}", "--show"],
        ["--inter=all", "--show"],
        [f"--mem={NODE}", "--show"],
        [f"-m0x{NODE:x}", "--show"],  # libnuma reads 0x numbers as hexadecimal
        [f"-C0x{CPUS[-1]:x}", "--show"],
        [f"--membind={NODE}", "--cpunodebind=same", "--show"],
    ],
)
def test_show_matches_numactl_for_the_same_spelling(argv: list[str]) -> None:
    theirs = run(*argv, program=NUMACTL)
    assert theirs.returncode == 0, theirs.stderr
    ours = run(*argv)
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, "")


# -- same, --all, --cpu-compress ----------------------------------------------------------


def test_same_copies_the_previous_node_option() -> None:
    request = parse_args(["--membind=1", "--cpunodebind=same", "cmd"]).request
    assert request.cpu_nodes is not None and request.cpu_nodes.items == {1}
    request = parse_args(["-N", "0-1", "-i", "same", "cmd"]).request
    assert request.nodes is not None and request.nodes.items == {0, 1}
    assert request.mode == "interleave"


def test_same_without_a_previous_node_option_is_refused() -> None:
    with pytest.raises(UsageError, match="no node option comes before it"):
        parse_args(["-C", "1", "--cpunodebind=same", "cmd"])  # -C names CPUs, not nodes


def test_all_is_accepted_and_recorded() -> None:
    for argv in (["-a", "-m", "all", "cmd"], ["--all", "cmd"], ["--a", "cmd"], ["-am1", "c"]):
        opts = parse_args(argv)
        assert opts.whole_machine is True
    assert parse_args(["-m", "all", "cmd"]).whole_machine is False


@pytest.mark.parametrize(
    "argv",
    [["--physcpubind=0", "--all"], ["-m", str(NODE), "-a"], ["-N0", "--a"], ["-i", "all", "-a"]],
)
def test_all_after_a_node_or_cpu_option_is_refused_as_numactl_does(argv: list[str]) -> None:
    ours = run(*argv, "true")
    assert ours.returncode == 2
    assert ours.stderr.startswith("numarun: ") and len(ours.stderr.splitlines()) == 1
    assert "it must come before every node and CPU option" in ours.stderr
    if NUMACTL is not None:
        assert run(*argv, "true", program=NUMACTL).returncode != 0


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs in this process's affinity")
@pytest.mark.parametrize("program", [None, NUMACTL] if NUMACTL else [None])
def test_physcpubind_outside_the_inherited_affinity_needs_all_first(program: str | None) -> None:
    """numactl's test/bind_range, check_physcpubind: after taskset to one CPU, -C another
    fails, and -a -C another runs."""
    command = [program] if program else [sys.executable, "-m", "numarun"]
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def rc(*argv: str) -> int:
        taskset = ["taskset", "-c", str(CPUS[0])]
        argv = (*taskset, *command, *argv, "true")
        return subprocess.run(argv, capture_output=True, env=env, check=False).returncode

    assert rc(f"--physcpubind={CPUS[-1]}") != 0
    assert rc("--all", f"--physcpubind={CPUS[-1]}") == 0
    assert rc(f"--physcpubind={CPUS[0]}") == 0


def test_cpu_compress_prints_ranges_and_counts() -> None:
    plain = run("--hardware").stdout.splitlines()
    compressed = run("--hardware", "--cpu-compress").stdout.splitlines()
    assert len(plain) == len(compressed)
    for line, short in zip(plain, compressed, strict=True):
        if " cpus:" not in line:
            continue
        cpus = [int(c) for c in line.split(":")[1].split()]
        from numarun.cpulist import format_list

        ranges = format_list(cpus).replace(",", ", ")
        assert short == f"{line.split(':')[0]}: {ranges} ({len(cpus)})".replace(":  (", ": (")


# -- what numactl ignores: a warning, and on --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "warning"),
    [
        (["-b", "-N", str(NODE), "--", "echo", "ran"], "-b/--balancing applies to a bind"),
        (["-b", "-i", str(NODE), "--", "echo", "ran"], "-b/--balancing applies to a bind"),
        (["--cpu-compress", "--", "echo", "ran"], "--cpu-compress only changes --hardware"),
    ],
)
def test_ignored_options_warn_and_run(argv: list[str], warning: str) -> None:
    done = run(*argv)
    assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"numarun: warning: {warning}")


@pytest.mark.parametrize("option", ["-s", "--show", "-H", "--hardware"])
def test_a_command_after_show_or_hardware_is_ignored_with_a_warning(
    option: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    done = run(option, "touch", str(marker))
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert done.stdout.startswith(("policy:", "available:"))
    assert done.stderr.startswith("numarun: warning: ")
    assert len(done.stderr.splitlines()) == 1


def test_balancing_with_bind_is_kept() -> None:
    assert parse_args(["-b", "-m", "0", "c"]).request.flags == {"numa-balancing"}
    assert parse_args(["--balancing", "--nodes", "0", "c"]).request.flags == {"numa-balancing"}
    assert parse_args(["-b", "-m", "0", "c"]).warnings == []


# -- refused by name -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[long, "x"] for long in NUMACTL_REFUSED]
    + [[short, "x"] for short in NUMACTL_REFUSED.values()]
    + [["--shmi=3"], ["--dump-n"], ["-tm0"]],
)
def test_shared_memory_options_are_refused_by_name(argv: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        parse_args([*argv, "cmd"])
    assert "shared-memory" in err.value.message
    assert "run numactl itself" in err.value.message
    assert "--all" not in err.value.message


# -- numbers: ASCII only, bounded -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "٠"],  # ARABIC-INDIC DIGIT ZERO: int() alone reads it as 0
        ["-C", "١"],
        ["--nodes", "0-١"],
        ["-m", "1_0"],
        ["--rank", "٣"],
        ["-C", "0-99999999999999999999"],
        ["-m", "0-99999999999999999999"],
        ["-C", "9" * 5000],
        ["-m", "0-1024"],  # past MAX_NUMNODES
        ["-C", "0-65536"],
        ["-C", "0-4000000000:1/2"],
        ["-m", "010"],  # octal to numactl (8): refused rather than read either way
    ],
)
def test_bad_numbers_are_refused_at_once(argv: list[str]) -> None:
    started = time.perf_counter()
    with pytest.raises(UsageError) as err:
        parse_args([*argv, "cmd"])
    assert time.perf_counter() - started < 0.5
    assert "\n" not in err.value.message


def test_a_huge_range_is_refused_in_one_line_by_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = run("-C", "0-99999999999999999999", "--", "touch", str(marker))
    assert done.returncode == 2
    assert not marker.exists()
    assert len(done.stderr.splitlines()) == 1
    assert "goes past 65535" in done.stderr
