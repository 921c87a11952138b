"""The memory-policy system calls, checked against the kernel's own reports.

Oracles: ``/proc/thread-self/numa_maps`` (the kernel's ``mpol_to_str`` of the thread's
policy), ``/proc/self/status`` for the mask width, and a second thread for per-thread
behaviour. This machine may have one node; every mode can still be applied to node 0.
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

import pytest

from numarun import mempolicy
from numarun.errors import KernelRefusedError, ProcessError
from numarun.mempolicy import MemoryPolicy, ModeUnsupportedError, thread_policy

ALL_NODE_MODES = ["bind", "interleave", "preferred", "preferred-many", "weighted-interleave"]
NODE = min(mempolicy.mems_allowed()) if os.path.exists("/proc/self/numa_maps") else 0


def numa_maps_policy() -> str:
    """Everything between the address and the first key=value field of our mapping."""
    with mmap.mmap(-1, 4096) as mm:
        mm[0] = 1
        import ctypes

        c = ctypes.c_char.from_buffer(mm)
        address = ctypes.addressof(c)
        del c
        for line in Path("/proc/thread-self/numa_maps").read_text().splitlines():
            start, rest = line.split(" ", 1)
            if int(start, 16) == address:
                words = []
                for word in rest.split(" "):
                    if "=" in word and not word.startswith(("bind=", "interleave=", "prefer=")):
                        break
                    words.append(word)
                return " ".join(words)
    raise AssertionError("mapping not found in numa_maps")


# -- the value type ------------------------------------------------------------------------


def test_policy_value_semantics() -> None:
    a = MemoryPolicy("membind", [0, 1])
    assert a.mode == "bind"
    assert a == MemoryPolicy("bind", {1, 0})
    assert hash(a) == hash(MemoryPolicy("bind", {0, 1}))
    assert str(a) == "bind:0-1"
    assert (
        str(MemoryPolicy("interleave", {0, 2}, ["static-nodes"])) == "interleave=static-nodes:0,2"
    )
    assert MemoryPolicy("preferred-many", {1}).numa_maps_word == "prefer (many):1"
    assert MemoryPolicy("bind", {0}, ["static-nodes"]).numa_maps_word == "bind=static:0"
    assert MemoryPolicy("local").kernel_mode == mempolicy.MPOL_LOCAL
    assert MemoryPolicy("bind", {0}, ["relative-nodes"]).kernel_mode == 2 | (1 << 14)
    with pytest.raises(AttributeError):
        a.mode = "local"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mode", "nodes", "flags", "match"),
    [
        ("bind", (), (), "needs at least one node"),
        ("local", (0,), (), "takes no nodes"),
        ("default", (), ("static-nodes",), "takes no mode flags"),
        ("preferred", (0, 1), (), "exactly one node"),
        ("bind", (0,), ("static-nodes", "relative-nodes"), "exclude each other"),
        ("interleave", (0,), ("numa-balancing",), "bind only"),
        ("bind", (0,), ("sticky",), "unknown mode flag"),
        ("hoard", (0,), (), "unknown memory policy mode"),
        ("bind", (-1,), (), "negative"),
    ],
)
def test_invalid_shapes_are_refused(
    mode: str, nodes: tuple[int, ...], flags: tuple[str, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        MemoryPolicy(mode, nodes, flags)


def test_from_kernel_reads_flags_and_old_local() -> None:
    got = MemoryPolicy.from_kernel(2 | mempolicy.MPOL_F_STATIC_NODES, [0, 3])
    assert got == MemoryPolicy("bind", {0, 3}, ["static-nodes"])
    # Kernels before MPOL_LOCAL existed as its own mode reported preferred + empty mask.
    assert MemoryPolicy.from_kernel(mempolicy.MPOL_PREFERRED, []) == MemoryPolicy("local")
    with pytest.raises(KernelRefusedError, match="mode 42"):
        MemoryPolicy.from_kernel(42, [])


@pytest.mark.parametrize(
    ("release", "version"),
    [("6.18.44-fc-v657", (6, 18)), ("5.15.0-91-generic", (5, 15)), ("4.9", (4, 9)),
     ("6", (6, 0)), ("junk", (0, 0)), ("3.10.0-1160.el7.x86_64", (3, 10))],
)  # fmt: skip
def test_parse_release(release: str, version: tuple[int, int]) -> None:
    assert mempolicy.parse_release(release) == version


def test_kernel_lacks_names_the_needed_release() -> None:
    assert mempolicy.kernel_lacks("weighted-interleave", (6, 8)) == (6, 9)
    assert mempolicy.kernel_lacks("weighted-interleave", (6, 9)) is None
    assert mempolicy.kernel_lacks("preferred-many", (5, 14)) == (5, 15)
    assert mempolicy.kernel_lacks("bind", (2, 6)) is None


def test_fallback_policy_keeps_what_fits() -> None:
    many = MemoryPolicy("preferred-many", {2, 1})
    assert mempolicy.fallback_policy(many, "preferred") == MemoryPolicy("preferred", {1})
    weighted = MemoryPolicy("weighted-interleave", {0, 1}, ["static-nodes"])
    assert mempolicy.fallback_policy(weighted, "interleave") == MemoryPolicy(
        "interleave", {0, 1}, ["static-nodes"]
    )
    assert mempolicy.fallback_policy(weighted, "local") == MemoryPolicy("local")
    balanced = MemoryPolicy("bind", {0}, ["numa-balancing"])
    assert mempolicy.fallback_policy(balanced, "preferred") == MemoryPolicy("preferred", {0})


# -- the kernel ----------------------------------------------------------------------------


def test_mask_width_is_the_width_of_mems_allowed() -> None:
    status = Path("/proc/self/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("Mems_allowed:"))
    digits = line.split(":", 1)[1].strip().replace(",", "")
    assert mempolicy.node_mask_bits() == 4 * len(digits)


def test_mems_allowed_matches_proc_status() -> None:
    from numarun.cpulist import parse_list

    status = Path("/proc/self/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("Mems_allowed_list:"))
    assert mempolicy.mems_allowed() == parse_list(line.split(":", 1)[1])


@pytest.mark.parametrize("mode", [*ALL_NODE_MODES, "local", "default"])
def test_each_mode_round_trips_through_the_kernel(mode: str) -> None:
    if mempolicy.kernel_lacks(mode):
        pytest.skip(f"this kernel lacks {mode}")
    policy = MemoryPolicy(mode) if mode in mempolicy.NODELESS_MODES else MemoryPolicy(mode, {NODE})
    before = mempolicy.get_mempolicy()
    with thread_policy(policy) as previous:
        assert previous == before
        assert mempolicy.get_mempolicy() == policy
        if mode != "default":
            assert numa_maps_policy() == policy.numa_maps_word
    assert mempolicy.get_mempolicy() == before


@pytest.mark.parametrize("flag", ["static-nodes", "relative-nodes"])
def test_mode_flags_reach_the_kernel(flag: str) -> None:
    policy = MemoryPolicy("bind", {NODE if flag == "static-nodes" else 0}, [flag])
    with thread_policy(policy):
        assert mempolicy.get_mempolicy() == policy
        assert numa_maps_policy() == policy.numa_maps_word


def test_numa_balancing_flag() -> None:
    if mempolicy.kernel_lacks("numa-balancing"):
        pytest.skip("kernel before 5.12")
    policy = MemoryPolicy("bind", {NODE}, ["numa-balancing"])
    with thread_policy(policy):
        assert mempolicy.get_mempolicy() == policy


def test_policy_is_per_thread() -> None:
    seen: dict[str, MemoryPolicy] = {}
    ready = threading.Event()
    go = threading.Event()

    def before_thread() -> None:
        ready.set()
        go.wait(5)
        seen["existing"] = mempolicy.get_mempolicy()

    early = threading.Thread(target=before_thread)
    early.start()
    ready.wait(5)
    policy = MemoryPolicy("interleave", {NODE})
    with thread_policy(policy):
        go.set()
        early.join(5)
        late = threading.Thread(
            target=lambda: seen.__setitem__("created", mempolicy.get_mempolicy())
        )
        late.start()
        late.join(5)
    assert seen["existing"] == MemoryPolicy("default")  # made before: untouched
    assert seen["created"] == policy  # made inside the block: inherits


def test_context_manager_restores_on_exception() -> None:
    before = mempolicy.get_mempolicy()
    with pytest.raises(RuntimeError), thread_policy(MemoryPolicy("bind", {NODE})):
        raise RuntimeError("boom")
    assert mempolicy.get_mempolicy() == before


def test_interleave_next_node() -> None:
    assert mempolicy.interleave_next_node() is None
    with thread_policy(MemoryPolicy("interleave", {NODE})):
        assert mempolicy.interleave_next_node() == NODE


def test_mbind_and_node_of_address() -> None:
    import ctypes

    size = 1 << 20
    with mmap.mmap(-1, size) as mm:
        c = ctypes.c_char.from_buffer(mm)
        address = ctypes.addressof(c)
        del c
        mempolicy.mbind(address, size, MemoryPolicy("bind", {NODE}), move=True, strict=True)
        mm[0] = 1
        assert mempolicy.node_of_address(address) == NODE


def test_migrate_pages_of_self_and_of_nobody() -> None:
    assert mempolicy.migrate_pages(0, {NODE}, {NODE}) >= 0
    with pytest.raises(ProcessError, match="does not exist"):
        mempolicy.migrate_pages(2**22 + 12345, {NODE}, {NODE})


def test_node_beyond_the_kernel_mask_is_refused_before_the_call() -> None:
    with pytest.raises(Exception, match="beyond the kernel's"):
        mempolicy.set_mempolicy(MemoryPolicy("bind", {mempolicy.node_mask_bits()}))


def test_mode_newer_than_the_kernel_is_refused_naming_the_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mempolicy, "kernel_version", lambda: (6, 1))
    before = mempolicy.get_mempolicy()
    with pytest.raises(ModeUnsupportedError) as err:
        mempolicy.set_mempolicy(MemoryPolicy("weighted-interleave", {NODE}))
    assert err.value.exit_code == 7
    assert "needs Linux 6.9 or later" in err.value.message
    assert "--fallback" in err.value.message
    assert mempolicy.get_mempolicy() == before  # nothing was applied


def test_apply_with_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mempolicy, "kernel_version", lambda: (5, 10))
    before = mempolicy.get_mempolicy()
    try:
        applied, reason = mempolicy.apply_with_fallback(
            MemoryPolicy("preferred-many", {NODE}), "preferred"
        )
        assert applied == MemoryPolicy("preferred", {NODE})
        assert reason is not None and reason.needed == (5, 15)
        assert mempolicy.get_mempolicy() == applied
        with pytest.raises(ModeUnsupportedError):
            mempolicy.apply_with_fallback(MemoryPolicy("preferred-many", {NODE}), None)
    finally:
        mempolicy.set_mempolicy(before)


@pytest.mark.parametrize(
    ("errno_", "call", "match"),
    [
        (1, "set_mempolicy", "EPERM: a seccomp filter"),
        (38, "set_mempolicy", "ENOSYS"),
        (22, "set_mempolicy", "EINVAL"),
        (12, "mbind", "ENOMEM"),
    ],
)
def test_errno_translation(errno_: int, call: str, match: str) -> None:
    err = mempolicy._translate(call, OSError(errno_, os.strerror(errno_)))
    assert isinstance(err, KernelRefusedError)
    assert err.exit_code == 7
    assert match in err.message
    assert "\n" not in err.message


def test_interleave_weights_are_read_not_written(tmp_path: Path) -> None:
    weights = tmp_path / mempolicy.WEIGHTS_DIR
    weights.mkdir(parents=True)
    (weights / "node0").write_text("3\n")
    (weights / "node2").write_text("1\n")
    (weights / "auto").write_text("true\n")
    assert mempolicy.interleave_weights(str(tmp_path)) == {0: 3, 2: 1}
    assert (weights / "node0").read_text() == "3\n"
    assert mempolicy.interleave_weights(str(tmp_path / "absent")) == {}


def test_unknown_architecture_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = os.uname_result(("Linux", "h", "6.9", "v", "s390x"))
    monkeypatch.setattr(mempolicy.os, "uname", lambda: fake)
    with pytest.raises(KernelRefusedError, match="system call numbers of s390x"):
        mempolicy._numbers()
