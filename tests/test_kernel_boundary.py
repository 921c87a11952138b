"""One boundary to the kernel: only numarun.procfs and numarun.sysfs name /proc and /sys files.

The rest of the package asks them, so every read is bounded, every error is translated
into numarun's own in one place, and tests can point the readers at a fake tree.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from numarun import mempolicy, procfs, sysfs
from tests.conftest import REPO

BOUNDARY = {"numarun/procfs.py", "numarun/sysfs.py"}
# Modules that still read a /proc file themselves, and what they are to call instead. The
# entry goes when the module switches (the test below fails until it does).
PENDING: dict[str, str] = {}
PREFIXES = ("/proc", "/sys", "proc/", "sys/")


READERS = {"open", "os.open", "os.listdir", "os.scandir", "os.path.join", "os.stat", "Path"}


def _kernel_paths(path: Path) -> list[str]:
    """The /proc and /sys paths that the module opens, lists or joins onto a root itself."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in READERS:
            for arg in node.args:
                found += [
                    part.value
                    for part in ast.walk(arg)
                    if isinstance(part, ast.Constant)
                    and isinstance(part.value, str)
                    and part.value.startswith(PREFIXES)
                ]
    return found


def test_only_procfs_and_sysfs_name_kernel_files() -> None:
    offenders = {}
    for path in sorted((REPO / "numarun").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        found = _kernel_paths(path)
        if rel in BOUNDARY:
            continue
        if rel in PENDING:
            assert found, f"{rel} no longer reads /proc itself: remove it from PENDING"
            continue
        if found:
            offenders[rel] = found
    assert not offenders, f"read these through numarun.procfs or numarun.sysfs: {offenders}"


def test_start_ticks_names_this_process_for_good() -> None:
    mine = procfs.start_ticks(os.getpid())
    assert isinstance(mine, int) and mine > 0
    assert procfs.start_ticks(os.getpid()) == mine
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        theirs = procfs.start_ticks(child.pid)
        assert theirs is not None and theirs >= mine
    finally:
        child.kill()
        child.wait()
    assert procfs.start_ticks(child.pid) is None  # reaped: gone


def test_start_ticks_counts_fields_after_the_name() -> None:
    # the command name may hold blanks and ')': fields are counted from the last ')'
    line = "42 (a) b) c) S " + " ".join(str(n) for n in range(4, 53))
    assert procfs.parse_stat_start_ticks(line) == 22
    assert procfs.parse_stat_start_ticks("42 (cut") is None


def test_proc_stat_cpus(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/stat").write_text(
        "cpu  10 0 10 100 5 0 0 0 0 0\n"
        "cpu0 4 0 6 50 0 0 0 0 0 0\n"
        "cpu1 1 2 3 40 10 0 0 0 0 0\n"
        "cpu٣ 1 1 1 1\n"
        "cpu2 x y\n"
        "intr 123\n"
    )
    assert sysfs.proc_stat_cpus(sysfs.Root(tmp_path)) == {0: (10, 60), 1: (6, 56)}
    assert sysfs.proc_stat_cpus(sysfs.Root(tmp_path / "none")) == {}


def test_live_proc_stat_has_every_online_cpu() -> None:
    cpus = sysfs.proc_stat_cpus(sysfs.Root("/"))
    assert set(cpus) >= os.sched_getaffinity(0)
    assert all(0 <= busy <= total for busy, total in cpus.values())


def test_interleave_weights(tmp_path: Path) -> None:
    base = tmp_path / sysfs.WEIGHTS_DIR
    base.mkdir(parents=True)
    (base / "node0").write_text("3\n")
    (base / "node1").write_text("1\n")
    (base / "node2").write_text("junk\n")
    (base / "auto").write_text("Y\n")
    assert mempolicy.interleave_weights(str(tmp_path)) == {0: 3, 1: 1}
    assert mempolicy.interleave_weights(str(tmp_path / "old-kernel")) == {}


def test_own_status_is_this_process() -> None:
    status = procfs.own_status()
    assert int(status["Pid"]) == os.getpid()
    assert "Mems_allowed" in status
    assert mempolicy.node_mask_bits() == 4 * len(status["Mems_allowed"].replace(",", ""))


def test_find_by_name_never_matches_numarun_or_its_ancestors() -> None:
    marker = f"numarun-find-{os.getpid()}-{time.monotonic_ns()}"
    # The ancestors (this test's shell) hold the marker in their command line too.
    code = (
        "import subprocess, sys\n"
        "sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', "
        f"{marker!r}])\n"
        "try:\n"
        "    from numarun import processes\n"
        f"    print(processes.matching({marker!r}), sleeper.pid)\n"
        "finally:\n"
        "    sleeper.kill()\n"
    )
    done = subprocess.run(
        ["sh", "-c", f'{sys.executable} -c "$0" {marker}', code],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    found, sleeper = done.stdout.rsplit(" ", 1)
    assert found == f"[{sleeper.strip()}]"


def test_find_by_pid_and_nothing() -> None:
    from numarun import processes

    assert processes.find("12345") == [12345]
    assert processes.matching(f"no-such-process-{time.monotonic_ns()}") == []


@pytest.mark.parametrize("pattern", ["٣"])  # not ASCII digits: a name, never PID 3
def test_find_digits_are_ascii(pattern: str) -> None:
    from numarun import processes

    assert processes.matching(pattern) != [3]
