"""``numarun [placement] -- CMD``: what the launched command sees, and every refusal.

Oracles written by others: ``numactl --show`` run *as the command* (Debian's numactl),
``/proc/PID/status`` (``Cpus_allowed_list``, ``Mems_allowed_list``), the policy column of
``/proc/PID/numa_maps``, and the shell's own ``$$`` for "same PID". Refusals are checked
for their one-line message, their exit code, and that the command never ran (it would
have created a marker file).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from numarun import mempolicy
from numarun.commands.prefix import parse_args
from numarun.errors import UsageError

from .conftest import REPO
from .fakesysfs import FakeMachine, c5n_18xlarge

NUMACTL = shutil.which("numactl")
need_numactl = pytest.mark.skipif(NUMACTL is None, reason="numactl is not installed")
NODE = min(mempolicy.mems_allowed())
CPUS = sorted(os.sched_getaffinity(0))


def numarun(
    *args: str, env: dict[str, str] | None = None, python_flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "numarun", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def show_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


# -- what the command sees -----------------------------------------------------------------


@need_numactl
@pytest.mark.parametrize(
    ("options", "policy", "preferred_node", "membind", "preferred"),
    [
        (["--policy", "bind", "--nodes", str(NODE)], "bind", str(NODE), str(NODE), str(NODE)),
        ([f"--membind={NODE}"], "bind", str(NODE), str(NODE), str(NODE)),
        (["-m", str(NODE)], "bind", str(NODE), str(NODE), str(NODE)),
        (["-i", "all"], "interleave", f"{NODE} (interleave next)", None, str(NODE)),
        (["--policy", "interleave", "--nodes", str(NODE)], "interleave", None, None, str(NODE)),
        (["-p", str(NODE)], "preferred", str(NODE), None, str(NODE)),
        (["--preferred-many", str(NODE)], "preferred-many", f"{NODE} (preferred-many)", None,
         str(NODE)),
        (["-l"], "local", None, None, ""),
        (["--policy", "default"], "default", "current", None, ""),
    ],
)  # fmt: skip
def test_numactl_show_reports_the_policy(
    options: list[str],
    policy: str,
    preferred_node: str | None,
    membind: str | None,
    preferred: str,
) -> None:
    done = numarun(*options, "--", NUMACTL or "numactl", "--show")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    fields = show_fields(done.stdout)
    assert fields["policy"] == policy
    if preferred_node is not None:
        assert fields["preferred node"] == preferred_node
    if membind is not None:
        assert fields["membind"] == membind
    assert fields["preferred"] == preferred
    if policy == "interleave":
        assert fields["interleavemask"] == str(NODE)


@need_numactl
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["-C", str(CPUS[-1])], [CPUS[-1]]),
        (["--cpus", f"+{len(CPUS) - 1}"], [CPUS[-1]]),
        (["--physcpubind=all"], CPUS),
        (["-N", str(NODE)], CPUS),
        (["--cpu-nodes", "all", "--cpus", str(CPUS[0])], [CPUS[0]]),
    ],
)
def test_numactl_show_reports_the_cpu_binding(options: list[str], expected: list[int]) -> None:
    done = numarun(*options, "--", NUMACTL or "numactl", "--show")
    assert done.returncode == 0, done.stderr
    fields = show_fields(done.stdout)
    assert fields["physcpubind"].split() == [str(c) for c in expected]
    assert fields["policy"] == "default"  # CPU options alone leave the memory policy


@pytest.mark.parametrize(
    ("options", "word"),
    [
        (["-m", str(NODE)], f"bind:{NODE}"),
        (["-i", str(NODE)], f"interleave:{NODE}"),
        (["-p", str(NODE)], f"prefer:{NODE}"),
        (["--policy", "preferred-many", "--nodes", str(NODE)], f"prefer (many):{NODE}"),
        (["-w", str(NODE)], f"weighted interleave:{NODE}"),
        (["--policy", "bind", "--nodes", str(NODE), "--static-nodes"], f"bind=static:{NODE}"),
        (["-l"], "local"),
    ],
)
def test_numa_maps_and_status_of_the_command(options: list[str], word: str) -> None:
    """The kernel's own view of the launched process, read from its /proc entry."""
    if "-w" in options and mempolicy.kernel_lacks("weighted-interleave"):
        pytest.skip("kernel before 6.9")
    script = "echo $$; grep -E '^(Cpus|Mems)_allowed_list' /proc/$$/status; cat /proc/$$/numa_maps"
    done = numarun(*options, "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"Mems_allowed_list:\t{NODE}" in lines
    assert any(line.startswith("Cpus_allowed_list:") for line in lines)
    maps = [line for line in lines[1:] if line[:1].isalnum() and " " in line]
    policies = {
        line.split(" ", 2)[1] if not line.split(" ")[1].startswith("prefer") else ""
        for line in maps
    }
    assert any(f" {word} " in f" {line} " for line in maps), (word, policies)


def test_same_pid_same_environment_and_the_commands_exit_status() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "numarun", "-m", str(NODE), "--", "sh", "-c",
         'echo "$$ $NUMARUN_TEST_VALUE"; exit 42'],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), NUMARUN_TEST_VALUE="kept"),
    )  # fmt: skip
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 42
    assert out.split() == [str(proc.pid), "kept"]


def test_command_without_double_dash_like_numactl() -> None:
    done = numarun("-m", str(NODE), "sh", "-c", "echo ran $0", "arg0")
    assert (done.returncode, done.stdout) == (0, "ran arg0\n")


def test_command_options_are_the_commands() -> None:
    done = numarun("--", "sh", "-c", "echo $1", "sh", "--membind=9")
    assert (done.returncode, done.stdout) == (0, "--membind=9\n")


def test_checkout_alone_on_pythonpath(tmp_path: Path) -> None:
    """What the QEMU guest runs: no install, no site-packages, just the checkout."""
    done = subprocess.run(
        [sys.executable, "-S", "-m", "numarun", "--membind", str(NODE), "--", "sh", "-c",
         "grep -c bind: /proc/$$/numa_maps"],
        capture_output=True, text=True, cwd=tmp_path, check=False, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0


def test_prefix_path_imports_no_heavy_modules() -> None:
    done = numarun("--policy", "bind", "--nodes", str(NODE), "--", "true",
                   python_flags=("-X", "importtime"))  # fmt: skip
    assert done.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    for heavy in ("typer", "pydantic", "argparse", "click", "rich", "psutil", "numarun.cli"):
        assert heavy not in imported, f"{heavy} is imported on the prefix path"


def test_show_prints_the_current_policy_and_affinity() -> None:
    done = numarun("--show")
    assert done.returncode == 0, done.stderr
    fields = show_fields(done.stdout)
    assert fields["policy"] == "default"
    assert fields["physcpubind"].split() == [str(c) for c in CPUS]
    assert list(fields)[:7] == [
        "policy", "preferred node", "physcpubind", "cpubind", "nodebind", "membind", "preferred",
    ]  # fmt: skip
    done = numarun("-m", str(NODE), "-C", str(CPUS[0]), "--show")
    fields = show_fields(done.stdout)
    assert (fields["policy"], fields["membind"], fields["physcpubind"]) == (
        "bind",
        str(NODE),
        str(CPUS[0]),
    )


@need_numactl
def test_show_matches_numactl_show_line_for_line() -> None:
    for options in (["-m", str(NODE)], ["-i", str(NODE)], ["-p", str(NODE)], []):
        ours = numarun(*options, "--show").stdout
        theirs = subprocess.run(
            [NUMACTL or "numactl", *options, "--show"], capture_output=True, text=True, check=True
        ).stdout
        assert ours == theirs, options


def test_hardware_uses_the_render_layout() -> None:
    from numarun.render import render_hardware
    from numarun.topology import read_topology

    done = numarun("-H")
    assert done.returncode == 0
    expected = render_hardware(read_topology())
    # Free memory moves between the two reads; compare everything else.
    strip = lambda t: [x for x in t.splitlines() if " free: " not in x]  # noqa: E731
    assert strip(done.stdout) == strip(expected)


def test_dry_run_and_explain_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for flag in ("--dry-run", "--explain"):
        done = numarun("--policy", "bind", flag, "--", "touch", str(marker))
        assert done.returncode == 0, done.stderr
        assert f"memory policy: bind:{NODE}" in done.stdout
        assert not marker.exists()
    assert "why:" in done.stdout
    assert "the most free memory" in done.stdout


def test_policy_without_nodes_chooses_a_node_and_runs_there() -> None:
    done = numarun("--policy", "bind", "--", "sh", "-c", "grep -m1 bind: /proc/$$/numa_maps")
    assert done.returncode == 0, done.stderr
    assert f"bind:{NODE}" in done.stdout


def test_smt_avoid_keeps_one_thread_per_core() -> None:
    from numarun.placement.cores import one_per_core
    from numarun.topology import read_topology

    expected = one_per_core(read_topology(), frozenset(CPUS))
    done = numarun("--smt", "avoid", "--", "sh", "-c", "grep Cpus_allowed_list /proc/$$/status")
    assert done.returncode == 0, done.stderr
    from numarun.cpulist import parse_list

    assert parse_list(done.stdout.split(":")[1]) == expected


def test_a_preset_sets_mode_and_nodes() -> None:
    done = numarun("--policy", "database", "--explain", "--", "true")
    assert done.returncode == 0, done.stderr
    assert "memory policy: interleave:" in done.stdout
    assert "from preset database" in done.stdout


# -- refusals --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fake machines for refusals this host cannot show: several nodes, a cgroup, gaps."""
    out: dict[str, Path] = {}
    out["c5n"] = c5n_18xlarge().write(tmp_path_factory.mktemp("c5n"))
    odd = FakeMachine(
        nodes={0: [0, 1], 1: [2, 3], 2: [], 3: [4, 5]},
        siblings=[(0, 1), (2, 3), (4,), (5,)],
        memory_mb={0: 4096, 1: 4096, 2: 8192, 3: 0},
        offline=[5],
    )
    out["odd"] = odd.write(tmp_path_factory.mktemp("odd"))
    confined = c5n_18xlarge()
    root = confined.write(tmp_path_factory.mktemp("confined"))
    confined.confine(root, "/jobs/job1", cpus=range(18), mems=[0])
    out["confined"] = root
    return out


REFUSALS: list[tuple[str, list[str], int, str]] = [
    # machine, options, exit code, expected message (after "numarun: ")
    ("c5n", ["--nodes", "2"], 4,
     "--nodes: node 2 does not exist on this machine — valid nodes are 0-1"),
    ("c5n", ["-m", "0,7"], 4, "-m: node 7 does not exist on this machine — valid nodes are 0-1"),
    ("c5n", ["-C", "72"], 4, "-C: CPU 72 does not exist on this machine — valid CPUs are 0-71"),
    ("confined", ["--membind", "1"], 5,
     "--membind: node 1 is outside the memory nodes this process may use: its cgroup's cpuset "
     "(cgroup v2 /sys/fs/cgroup/jobs/job1) allows only 0 — choose from 0, or widen "
     "cpuset.mems of the cgroup"),
    ("confined", ["--cpus", "20"], 5,
     "--cpus: CPU 20 is outside the CPUs this process may use: its cgroup's cpuset "
     "(cgroup v2 /sys/fs/cgroup/jobs/job1) allows only 0-17 — choose from 0-17, or widen "
     "cpuset.cpus of the cgroup"),
    ("confined", ["-N", "1"], 5, None),
    ("confined", ["--nodes", "+1"], 5, None),
    ("odd", ["--policy", "bind", "--nodes", "3"], 6,
     "--nodes: node 3 has no memory, so no pages can be placed there — choose nodes with "
     "memory: 0-2"),
    ("odd", ["-C", "5"], 6,
     "-C: CPU 5 is offline — bring it online (echo 1 > /sys/devices/system/cpu/cpu5/online) "
     "or choose from 0-4"),
    ("odd", ["-N", "2"], 6, "-N: node 2 has no CPUs (a memory-only node) — nodes with usable "
     "CPUs are 0-1,3"),
    ("c5n", ["--cpus", "0", "--cpu-nodes", "1"], 6, None),
    ("odd", ["--policy", "preferred", "--nodes", "0,1"], 6, None),
    ("c5n", ["-m", "0", "-i", "1"], 2, "-m and -i both set the memory policy — give one "
     "memory policy"),
    ("c5n", ["--policy", "local", "--nodes", "0"], 6, None),
    ("c5n", ["--smt", "sometimes"], 2, None),
    ("c5n", ["--membind"], 2, "--membind needs a value — see numarun --help"),
    ("c5n", ["--frobnicate"], 2, "unknown option --frobnicate — see numarun --help"),
    ("c5n", ["--shm", "x"], 2, None),
    ("c5n", ["--static-nodes"], 2, None),
    ("c5n", ["-m", "netdev:eth0"], 4, "-m netdev:eth0: no such network interface with a PCI "
     "device here — numarun topology lists the devices"),
    ("c5n", ["--nodes", "1-"], 2, None),
    ("c5n", ["--policy", "nosuchpreset"], 2, None),
]  # fmt: skip


@pytest.mark.parametrize(("machine", "options", "code", "message"), REFUSALS)
def test_refusals(  # noqa: PLR0917 - pytest passes fixtures and parameters by name
    machines: dict[str, Path],
    tmp_path: Path,
    machine: str,
    options: list[str],
    code: int,
    message: str | None,
) -> None:
    marker = tmp_path / "ran"
    done = numarun("--root", str(machines[machine]), *options, "--", "touch", str(marker))
    assert done.returncode == code, done.stderr
    assert not marker.exists(), "the command ran"
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("numarun: ")
    assert " — " in lines[0]
    if message is not None:
        # "*" stands for wording owned by the topology reader (where the sets were read).
        assert fnmatch.fnmatchcase(lines[0], "numarun: " + message), lines[0]


@pytest.mark.parametrize(
    ("snapshot", "options", "code", "fragment"),
    [
        (
            "16amd64-8n2c-cpusets",
            ["-m", "0"],
            5,
            "cgroup's cpuset (cpuset /dev/cpuset/dummy) allows only 1-4",
        ),
        ("16amd64-8n2c-cpusets", ["-C", "4"], 6, "CPU 4 is offline"),
        ("16amd64-8n2c-cpusets", ["--nodes", "8"], 4, "valid nodes are 0-7"),
        ("nvidiagpunumanodes", ["-N", "250"], 6, "node 250 has no CPUs"),
        ("nvidiagpunumanodes", ["-m", "7"], 4, "valid nodes are 0,8,250-255"),
        ("fakememinitiators-1np2c+1npp+gi", ["-m", "0"], 6, "node 0 has no memory"),
        ("fakememinitiators-1np2c+1npp+gi", ["--policy", "bind"], 6, "no node has both CPUs"),
    ],
)
def test_refusals_on_real_snapshots(  # noqa: PLR0917 - as above
    shared_snapshot: Callable[[str], Path],
    tmp_path: Path,
    snapshot: str,
    options: list[str],
    code: int,
    fragment: str,
) -> None:
    marker = tmp_path / "ran"
    root = shared_snapshot(snapshot)
    done = numarun("--root", str(root), *options, "--", "touch", str(marker))
    assert done.returncode == code, done.stderr
    assert not marker.exists()
    assert len(done.stderr.splitlines()) == 1
    assert fragment in done.stderr


def test_snapshot_choice_is_explained(shared_snapshot: Callable[[str], Path]) -> None:
    done = numarun("--root", str(shared_snapshot("nvidiagpunumanodes")), "--policy", "bind",
                   "--explain", "--", "true")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "memory policy: bind:8" in done.stdout
    assert "chose node 8: the most free memory" in done.stdout


@pytest.mark.parametrize(
    ("command", "code", "message"),
    [
        (["no-such-command-xyz"], 127,
         "no-such-command-xyz: command not found on PATH — check the spelling, or give its "
         "full path"),
        (["/nonexistent/tool"], 127, None),
        (["{plain}"], 126, "{plain} is not executable — chmod +x it, or run it through its "
         "interpreter (sh FILE, python3 FILE)"),
        (["/"], 126, None),
    ],
)  # fmt: skip
def test_command_not_found_or_not_executable(
    tmp_path: Path, command: list[str], code: int, message: str | None
) -> None:
    plain = tmp_path / "data.txt"
    plain.write_text("not a program\n")
    plain.chmod(0o644)
    command = [c.format(plain=plain) for c in command]
    message = message.format(plain=plain) if message else None
    done = numarun("-m", str(NODE), "--", *command)
    assert done.returncode == code
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("numarun: ")
    if message:
        assert lines[0] == "numarun: " + message


def test_script_without_shebang_runs_through_sh(tmp_path: Path) -> None:
    script = tmp_path / "plain"
    script.write_text("echo from-sh\n")
    script.chmod(0o755)
    done = numarun("-m", str(NODE), "--", str(script))
    assert (done.returncode, done.stdout) == (0, "from-sh\n")


# -- seccomp: a real filter installed before numarun starts ----------------------------------

SECCOMP_LAUNCHER = textwrap.dedent(
    """
    import ctypes, os, struct, sys
    nr, mode, errno_ = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    LD, JEQ, RET = 0x20, 0x15, 0x06
    ALLOW, ERRNO = 0x7FFF0000, 0x00050000
    prog = [(LD, 0, 0, 0), (JEQ, 0, 3, nr)]
    if mode >= 0:  # only this mode (the low word of args[0])
        prog += [(LD, 0, 0, 16), (JEQ, 0, 1, mode)]
    else:
        prog += [(LD, 0, 0, 0), (JEQ, 0, 1, nr)]
    prog += [(RET, 0, 0, ERRNO | errno_), (RET, 0, 0, ALLOW)]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Fprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        sys.exit(99)
    os.execv(sys.executable, [sys.executable, "-m", "numarun", *sys.argv[4:]])
    """
)


def under_seccomp(errno_: int, *args: str, mode: int = -1) -> subprocess.CompletedProcess[str]:
    number = mempolicy._numbers()[1]  # set_mempolicy
    done = subprocess.run(
        [sys.executable, "-c", SECCOMP_LAUNCHER, str(number), str(mode), str(errno_), *args],
        capture_output=True, text=True, check=False, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    if done.returncode == 99:
        pytest.skip("cannot install a seccomp filter here")
    return done


def test_seccomp_eperm_is_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = under_seccomp(1, "-m", str(NODE), "--", "touch", str(marker))
    assert done.returncode == 7, done.stderr
    assert not marker.exists()
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert "the kernel refused set_mempolicy for bind:" in lines[0]
    assert "seccomp filter" in lines[0] and "Seccomp: 2" in lines[0]


def test_seccomp_enosys_is_reported_as_no_numa_support(tmp_path: Path) -> None:
    done = under_seccomp(38, "-i", str(NODE), "--", "touch", str(tmp_path / "ran"))
    assert done.returncode == 7
    assert "ENOSYS" in done.stderr and not (tmp_path / "ran").exists()


def test_kernel_without_the_mode_is_refused_naming_the_release(tmp_path: Path) -> None:
    """A filter answering EINVAL for mode 6 only is exactly what a pre-6.9 kernel does."""
    done = under_seccomp(
        22, "-w", str(NODE), "--", "touch", str(tmp_path / "ran"),
        mode=mempolicy.MPOL_WEIGHTED_INTERLEAVE,
    )  # fmt: skip
    assert done.returncode == 7, done.stderr
    assert "needs Linux 6.9 or later" in done.stderr
    assert "--fallback" in done.stderr
    assert not (tmp_path / "ran").exists()


def test_fallback_is_used_and_reported(tmp_path: Path) -> None:
    done = under_seccomp(
        22, "--policy", "weighted-interleave", "--nodes", str(NODE), "--fallback",
        "interleave", "--", "sh", "-c", "grep -c ' interleave:' /proc/$$/numa_maps",
        mode=mempolicy.MPOL_WEIGHTED_INTERLEAVE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
    assert done.stderr.startswith("numarun: the kernel refused memory policy weighted-interleave")
    assert f"using interleave:{NODE} instead (--fallback)" in done.stderr


# -- the option parser ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "1", "cmd"],
        ["-m1", "cmd"],
        ["-m=1", "cmd"],
        ["--membind", "1", "cmd"],
        ["--membind=1", "--", "cmd"],
        ["--policy", "bind", "--nodes", "1", "--", "cmd"],
        ["--nodes=1", "--policy=membind", "cmd"],
    ],
)
def test_spellings_of_the_same_request(argv: list[str]) -> None:
    request = parse_args(argv).request
    assert request.mode == "bind"
    assert request.nodes is not None and request.nodes.items == {1}
    assert request.command == ["cmd"]


def test_switches_do_not_take_values() -> None:
    with pytest.raises(UsageError, match="takes no value"):
        parse_args(["--show=yes"])


def test_explicit_smt_wins_over_a_preset_in_any_order() -> None:
    assert parse_args(["--smt", "avoid", "--policy", "database", "x"]).request.smt == "avoid"
    assert parse_args(["--policy", "database", "--smt", "avoid", "x"]).request.smt == "avoid"
