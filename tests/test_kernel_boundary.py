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
from collections.abc import Iterator
from pathlib import Path

import pytest

from numarun import mempolicy, procfs, sysfs
from numarun.errors import ProcessError
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


# -- numa_maps read ahead, by a copier beside numarun ------------------------------------------

MANY_MAPPINGS = """
import ctypes, mmap, sys
page = mmap.PAGESIZE
n = 4000
buf = mmap.mmap(-1, n * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None)
for i in range(n):
    buf[i * page] = 1
for i in range(0, n, 2):  # every other page read-only: one mapping a page
    libc.mprotect(ctypes.c_void_p(base + i * page), page, mmap.PROT_READ)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def large_process() -> Iterator[int]:
    """A process whose numa_maps spans hundreds of the kernel's 4 kB reads."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MANY_MAPPINGS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc.pid
    proc.kill()
    proc.wait()


def _addresses(numa_maps: bytes) -> list[bytes]:
    # Every mapping, in order; the counters after it (active=) change from read to read.
    return [line.partition(b" ")[0] for line in numa_maps.splitlines()]


def _children() -> list[str]:
    """The commands of this process's children, zombies included."""
    import psutil

    return [child.name() for child in psutil.Process().children()]


def test_read_ahead_gives_the_file_as_read_here(large_process: int) -> None:
    before = _children()
    here = b"".join(procfs.numa_maps_chunks(large_process))
    reader = procfs.numa_maps_chunks(large_process, ahead=True)
    assert "dd" in _children()  # already copying, before the first chunk is asked for
    ahead = b"".join(reader)
    assert here.count(b"\n") > 4000 and _addresses(ahead) == _addresses(here)
    assert _children() == before  # the copier is reaped, not left a zombie


@pytest.mark.parametrize(
    ("copiers", "why"),
    [
        (("/nonexistent/dd",), "no dd on this machine"),
        (("/bin/false",), "a dd that refuses its options (exits before reading)"),
    ],
)
def test_read_ahead_falls_back_to_reading_here(
    large_process: int, monkeypatch: pytest.MonkeyPatch, copiers: tuple[str, ...], why: str
) -> None:
    here = b"".join(procfs.numa_maps_chunks(large_process))
    monkeypatch.setattr(procfs, "_COPIERS", copiers)
    ahead = b"".join(procfs.numa_maps_chunks(large_process, ahead=True))
    assert _addresses(ahead) == _addresses(here), why


def test_a_copier_killed_mid_file_is_one_refusal(
    large_process: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half a file would be judged as if it were the process: refuse instead.
    monkeypatch.setattr(procfs, "_COPIERS", ("/bin/sh",))
    monkeypatch.setattr(procfs, "_COPIER_ARGV", ["sh", "-c", "head -c 5000; kill -9 $$"])
    with pytest.raises(ProcessError) as refused:
        b"".join(procfs.numa_maps_chunks(large_process, ahead=True))
    assert refused.value.message.startswith(
        f"reading /proc/{large_process}/numa_maps was cut short: its copier (dd) was killed "
        "by signal 9 — "
    )
    assert refused.value.exit_code == 9


def test_closing_early_ends_the_copier(large_process: int) -> None:
    before = _children()
    fds = len(os.listdir("/proc/self/fd"))
    reader = procfs.numa_maps_chunks(large_process, ahead=True)
    assert next(reader)
    reader.close()
    reader.close()  # twice is harmless
    assert _children() == before
    assert len(os.listdir("/proc/self/fd")) == fds
    assert list(reader) == []
