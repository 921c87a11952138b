"""Linux NUMA memory policy through the kernel's own system calls.

This module talks to ``set_mempolicy(2)``, ``get_mempolicy(2)``, ``mbind(2)`` and
``migrate_pages(2)`` directly through :mod:`ctypes`; it needs neither libnuma nor
numactl. Everything above it works with :class:`MemoryPolicy` values and Python sets;
raw integers, node masks and ``errno`` stay inside this module, and every failure leaves
it as a :class:`~numarun.errors.NumarunError` naming the call, the cause and the fix.

Modes (``include/uapi/linux/mempolicy.h``)
------------------------------------------
=====================  ==========  =========================================================
name                   since       pages come from
=====================  ==========  =========================================================
``default``            always      the thread's policy is removed: the system default
                                   (allocate on the node of the CPU that faults the page)
``local``              3.8         explicitly the faulting CPU's node
``bind``               always      only the given nodes; allocation fails (OOM) rather than
                                   spill elsewhere
``preferred``          always      the one given node, falling back to others when full
``interleave``         always      the given nodes round-robin, page by page
``preferred-many``     5.15        any of the given nodes first, then others
``weighted-interleave`` 6.9        the given nodes round-robin in proportion to the weights
                                   in ``/sys/kernel/mm/mempolicy/weighted_interleave/nodeN``
=====================  ==========  =========================================================

Mode flags: ``static-nodes`` (the node set is never remapped when the cpuset changes),
``relative-nodes`` (node numbers are positions in the cpuset's allowed set, remapped when
it changes), ``numa-balancing`` (``bind`` only, 5.12+: let automatic NUMA balancing move
pages between the bound nodes).

Node masks
----------
The kernel copies node masks in whole ``unsigned long`` words and rejects masks shorter
than its node count (``nr_node_ids``) in ``get_mempolicy``. Like libnuma, numarun sizes its
masks by the number of bits in ``Mems_allowed`` of ``/proc/self/status`` (which the kernel
prints ``MAX_NUMNODES`` wide) and passes ``maxnode`` as that size *plus one*, because the
kernel's ``get_nodes()`` counts one bit fewer than it is given (a historical off-by-one the
ABI now keeps).

Importing this module is cheap: :mod:`ctypes` and libc are loaded on the first system call,
because ``numarun --show`` and the refusal paths may never need them.
"""

from __future__ import annotations

import errno
import os

from numarun import procfs, sysfs
from numarun.errors import KernelRefusedError, NumarunError, ProcessError, UsageError
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing and collections.abc cost start-up time
    import ctypes
    from collections.abc import Callable, Iterable
    from types import TracebackType

# -- kernel ABI constants (include/uapi/linux/mempolicy.h) --------------------------------

MPOL_DEFAULT = 0
MPOL_PREFERRED = 1
MPOL_BIND = 2
MPOL_INTERLEAVE = 3
MPOL_LOCAL = 4
MPOL_PREFERRED_MANY = 5
MPOL_WEIGHTED_INTERLEAVE = 6

MPOL_F_STATIC_NODES = 1 << 15
MPOL_F_RELATIVE_NODES = 1 << 14
MPOL_F_NUMA_BALANCING = 1 << 13
_MODE_FLAGS = MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING

# get_mempolicy() request flags.
MPOL_F_NODE = 1 << 0
MPOL_F_ADDR = 1 << 1
MPOL_F_MEMS_ALLOWED = 1 << 2

# mbind() flags.
MPOL_MF_STRICT = 1 << 0
MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2

#: Mode names as numarun and numactl spell them, to the kernel's numbers.
MODES: dict[str, int] = {
    "default": MPOL_DEFAULT,
    "preferred": MPOL_PREFERRED,
    "bind": MPOL_BIND,
    "interleave": MPOL_INTERLEAVE,
    "local": MPOL_LOCAL,
    "preferred-many": MPOL_PREFERRED_MANY,
    "weighted-interleave": MPOL_WEIGHTED_INTERLEAVE,
}
_MODE_NAMES: dict[int, str] = {number: name for name, number in MODES.items()}

#: Other spellings accepted for a mode (numactl's option names, numa_maps' words).
MODE_ALIASES: dict[str, str] = {
    "membind": "bind",
    "localalloc": "local",
    "prefer": "preferred",
    "preferred_many": "preferred-many",
    "weighted_interleave": "weighted-interleave",
    "weighted": "weighted-interleave",
}

#: Mode flag names to the kernel's bits.
FLAGS: dict[str, int] = {
    "static-nodes": MPOL_F_STATIC_NODES,
    "relative-nodes": MPOL_F_RELATIVE_NODES,
    "numa-balancing": MPOL_F_NUMA_BALANCING,
}

#: The first Linux release that accepts a mode or flag; absent means "any kernel numarun runs on".
MIN_KERNEL: dict[str, tuple[int, int]] = {
    "local": (3, 8),
    "numa-balancing": (5, 12),
    "preferred-many": (5, 15),
    "weighted-interleave": (6, 9),
}

#: Modes that take no nodes.
NODELESS_MODES = frozenset({"default", "local"})

WEIGHTS_DIR = sysfs.WEIGHTS_DIR

# System call numbers: (mbind, set_mempolicy, get_mempolicy, migrate_pages), from each
# architecture's syscall table. aarch64 and riscv64 use the generic table
# (include/uapi/asm-generic/unistd.h).
_SYSCALL_NUMBERS: dict[str, tuple[int, int, int, int]] = {
    "x86_64": (237, 238, 239, 256),
    "aarch64": (235, 237, 236, 238),
    "arm64": (235, 237, 236, 238),
    "riscv64": (235, 237, 236, 238),
    "ppc64le": (259, 261, 260, 258),
    "ppc64": (259, 261, 260, 258),
}


def canonical_mode(name: str) -> str:
    """The canonical name of a mode spelling (``membind`` -> ``bind``); ValueError if unknown."""
    key = name.strip().lower()
    key = MODE_ALIASES.get(key, key)
    if key not in MODES:
        raise ValueError(f"unknown memory policy mode {name!r}; modes are {', '.join(MODES)}")
    return key


def _check_shape(mode: str, nodes: frozenset[int], flags: frozenset[str]) -> None:
    """Refuse (ValueError) a policy shape the kernel would refuse; see :class:`MemoryPolicy`."""
    for flag in flags:
        if flag not in FLAGS:
            raise ValueError(f"unknown mode flag {flag!r}; flags are {', '.join(FLAGS)}")
    if any(n < 0 for n in nodes):
        raise ValueError("node numbers cannot be negative")
    if mode in NODELESS_MODES:
        if nodes:
            raise ValueError(f"mode {mode} takes no nodes")
        if flags:
            raise ValueError(f"mode {mode} takes no mode flags")
    elif not nodes:
        raise ValueError(f"mode {mode} needs at least one node")
    if mode == "preferred" and len(nodes) != 1:
        raise ValueError("mode preferred takes exactly one node; use preferred-many for several")
    if {"static-nodes", "relative-nodes"} <= flags:
        raise ValueError("static-nodes and relative-nodes exclude each other")
    if "numa-balancing" in flags and mode != "bind":
        raise ValueError("the numa-balancing flag goes with mode bind only")


class MemoryPolicy(Value):
    """A NUMA memory policy: a mode, the nodes it names and its mode flags.

    An immutable value: equal policies compare equal and hash alike. The constructor checks
    the shape the kernel demands (``default``/``local`` take no nodes, ``preferred`` exactly
    one, the others at least one; ``static-nodes`` and ``relative-nodes`` exclude each other;
    ``numa-balancing`` goes with ``bind`` only) and raises :class:`ValueError` otherwise. It
    does not check the nodes against a machine: that is the launcher's job, with the topology.
    """

    mode: str
    nodes: frozenset[int]
    flags: frozenset[str]

    def __init__(self, mode: str, nodes: Iterable[int] = (), flags: Iterable[str] = ()) -> None:
        mode_name = canonical_mode(mode)
        node_set = frozenset(nodes)
        flag_set = frozenset(flags)
        _check_shape(mode_name, node_set, flag_set)
        super().__init__(mode=mode_name, nodes=node_set, flags=flag_set)

    def __repr__(self) -> str:
        return f"MemoryPolicy({self.mode!r}, {sorted(self.nodes)!r}" + (
            f", {sorted(self.flags)!r})" if self.flags else ")"
        )

    def __str__(self) -> str:
        """``bind:0-1``, ``interleave=static-nodes:0,2``, ``local``: for messages and --explain."""
        from numarun.cpulist import format_list

        text = self.mode
        if self.flags:
            text += "=" + ",".join(sorted(self.flags))
        if self.nodes:
            text += ":" + format_list(self.nodes)
        return text

    @property
    def kernel_mode(self) -> int:
        """The ``mode`` argument of ``set_mempolicy(2)``: the mode number or'd with its flags."""
        value = MODES[self.mode]
        for flag in self.flags:
            value |= FLAGS[flag]
        return value

    @property
    def numa_maps_word(self) -> str:
        """How ``/proc/PID/numa_maps`` names this policy (the kernel's ``mpol_to_str``)."""
        from numarun.cpulist import format_list

        word = {
            "default": "default",
            "local": "local",
            "preferred": "prefer",
            "preferred-many": "prefer (many)",
            "bind": "bind",
            "interleave": "interleave",
            "weighted-interleave": "weighted interleave",
        }[self.mode]
        for flag, shown in (
            ("static-nodes", "static"),
            ("relative-nodes", "relative"),
            ("numa-balancing", "balancing"),
        ):
            if flag in self.flags:
                word += "=" + shown
                break
        if self.nodes:
            word += ":" + format_list(self.nodes)
        return word

    @classmethod
    def from_kernel(cls, mode: int, nodes: Iterable[int]) -> MemoryPolicy:
        """Build from what ``get_mempolicy(2)`` returned (mode number with flag bits)."""
        number = mode & ~_MODE_FLAGS
        flags = [name for name, bit in FLAGS.items() if mode & bit]
        node_set = frozenset(nodes)
        if number not in _MODE_NAMES:
            raise KernelRefusedError(
                f"the kernel reports memory policy mode {number}, which numarun does not know",
                "update numarun",
            )
        name = _MODE_NAMES[number]
        # Kernels before 5.x report "local" as "preferred" with an empty mask.
        if name == "preferred" and not node_set:
            name = "local"
        if name in NODELESS_MODES:
            return cls(name)
        if name == "preferred" and len(node_set) > 1:
            node_set = frozenset({min(node_set)})
        return cls(name, node_set, flags)


DEFAULT_POLICY = MemoryPolicy("default")


# -- kernel version ------------------------------------------------------------------------


def parse_release(release: str) -> tuple[int, int]:
    """``"6.18.44-fc-v657"`` -> ``(6, 18)``; ``(0, 0)`` when the string is not a version."""
    parts = release.split(".")
    try:
        major = int(parts[0])
        minor_digits = ""
        for ch in parts[1] if len(parts) > 1 else "0":
            if not ch.isdigit():
                break
            minor_digits += ch
        return major, int(minor_digits or "0")
    except ValueError:
        return 0, 0


def kernel_version() -> tuple[int, int]:
    """The running kernel's (major, minor) from ``uname``."""
    return parse_release(os.uname().release)


def kernel_lacks(feature: str, version: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The release ``feature`` (a mode or flag name) needs, if ``version`` is older; else None.

    Decided from the version number alone, so it can be wrong for distribution kernels
    with backports; :func:`set_mempolicy` therefore also treats ``EINVAL`` for a mode
    newer than the kernel's number as "not supported".
    """
    needed = MIN_KERNEL.get(feature)
    have = kernel_version() if version is None else version
    if needed is not None and have < needed:
        return needed
    return None


class ModeUnsupportedError(KernelRefusedError):
    """The running kernel does not know a mode or flag (exit code 7, like any kernel refusal).

    ``feature`` is the mode or flag name, ``needed`` the first release that has it.
    """

    def __init__(self, feature: str, needed: tuple[int, int], *, refused: bool) -> None:
        self.feature = feature
        self.needed = needed
        release = os.uname().release
        if refused:
            problem = (
                f"the kernel refused memory policy {feature} (EINVAL): it needs Linux "
                f"{needed[0]}.{needed[1]} or later and this kernel ({release}) lacks it"
            )
        else:
            problem = (
                f"memory policy {feature} needs Linux {needed[0]}.{needed[1]} or later; "
                f"this kernel is {release}"
            )
        super().__init__(problem, "use another mode, or add --fallback MODE to use one instead")


# -- the system calls ----------------------------------------------------------------------

_state: dict[str, object] = {}


def _syscall() -> Callable[..., int]:
    """libc's ``syscall(3)``, loaded on first use."""
    fn = _state.get("syscall")
    if fn is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
        fn.restype = ctypes.c_long
        _state["syscall"] = fn
    return fn  # type: ignore[return-value]


def _numbers() -> tuple[int, int, int, int]:
    machine = os.uname().machine
    numbers = _SYSCALL_NUMBERS.get(machine)
    if numbers is None:
        raise KernelRefusedError(
            f"numarun does not know the memory-policy system call numbers of {machine}",
            f"use numactl on this machine, or add {machine} to numarun.mempolicy",
        )
    return numbers


def _call(index: int, name: str, *args: object) -> int:
    """Make system call ``index`` of :data:`_SYSCALL_NUMBERS`; its result, or OSError."""
    import ctypes

    number = _numbers()[index]
    # syscall(3) is variadic: every integer must be passed as a full machine word, or
    # ctypes would pass a 32-bit int and leave the register's upper half undefined.
    # None is a NULL pointer; arrays and byref() pointers pass as they are.
    words = [
        ctypes.c_ulong(0 if a is None else a) if a is None or isinstance(a, int) else a
        for a in args
    ]
    ctypes.set_errno(0)
    result = _syscall()(ctypes.c_long(number), *words)
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return int(result)


def node_mask_bits() -> int:
    """How many bits the kernel's node masks have (its ``MAX_NUMNODES``), as libnuma finds it.

    Read from the width of ``Mems_allowed`` in ``/proc/self/status``; where that line is
    missing, probed with ``get_mempolicy(2)`` (which refuses masks narrower than the node
    count) from 64 bits up.
    """
    cached = _state.get("mask_bits")
    if isinstance(cached, int):
        return cached
    try:
        digits = procfs.own_status().get("Mems_allowed", "").replace(",", "")
    except ProcessError:  # no procfs (a sandbox): the probe below still finds the width
        digits = ""
    bits = 4 * len(digits)
    if bits <= 0:
        bits = _probe_mask_bits()
    _state["mask_bits"] = bits
    return bits


def _probe_mask_bits() -> int:
    import ctypes

    bits = 64
    while bits <= 1 << 15:
        mask = _new_mask(bits)
        mode = ctypes.c_int(0)
        try:
            _call(2, "get_mempolicy", ctypes.byref(mode), mask, bits + 1, 0, 0)
            return bits
        except OSError as err:
            if err.errno != errno.EINVAL:  # the mask is narrower than the node count
                raise _translate("get_mempolicy", err) from None
        bits *= 2
    return 1024


def _new_mask(bits: int) -> ctypes.Array[ctypes.c_ulong]:
    import ctypes

    word = ctypes.sizeof(ctypes.c_ulong) * 8
    return (ctypes.c_ulong * ((bits + word - 1) // word))()


def _mask_from(nodes: Iterable[int], bits: int) -> ctypes.Array[ctypes.c_ulong]:
    import ctypes

    word = ctypes.sizeof(ctypes.c_ulong) * 8
    mask = _new_mask(bits)
    for node in nodes:
        if node >= bits:
            raise UsageError(
                f"node {node} is beyond the kernel's {bits} possible nodes",
                "name a node this machine has",
            )
        mask[node // word] |= 1 << (node % word)
    return mask


def _mask_to_set(mask: ctypes.Array[ctypes.c_ulong]) -> frozenset[int]:
    import ctypes

    word = ctypes.sizeof(ctypes.c_ulong) * 8
    out: set[int] = set()
    for i, word_value in enumerate(mask):
        value = int(word_value)
        while value:
            low = value & -value
            out.add(i * word + low.bit_length() - 1)
            value ^= low
    return frozenset(out)


def _seccomp_mode() -> str | None:
    try:
        return procfs.own_status().get("Seccomp")
    except ProcessError:
        return None


def _translate(call: str, err: OSError, policy: MemoryPolicy | None = None) -> NumarunError:
    """Turn ``err`` from system call ``call`` into the error a user reads."""
    code = err.errno
    what = f" for {policy}" if policy is not None else ""
    if code == errno.EPERM:  # these calls need no privilege on their own thread
        filtered = _seccomp_mode() == "2"
        cause = (
            "a seccomp filter blocks it (this process runs under one: Seccomp: 2)"
            if filtered
            else "a seccomp filter or security module blocks it"
        )
        return KernelRefusedError(
            f"the kernel refused {call}{what} with EPERM: {cause}",
            "allow the call (Docker: --cap-add SYS_NICE or a seccomp profile that permits "
            f"{call}), or leave out the memory policy options",
        )
    if code == errno.ENOSYS:
        return KernelRefusedError(
            f"the kernel has no {call} (ENOSYS): it was built without NUMA support "
            "(CONFIG_NUMA) or a seccomp filter hides the call",
            "leave out the memory policy options; CPU binding still works",
        )
    if code == errno.EINVAL:
        return KernelRefusedError(
            f"the kernel rejected {call}{what} as invalid (EINVAL): the nodes may be "
            "outside the cpuset's allowed memory nodes or have no memory",
            "check the nodes with `numarun --hardware` and `numarun --show`",
        )
    if code == errno.ENOMEM:
        return KernelRefusedError(f"{call}{what} failed: the kernel is out of memory (ENOMEM)")
    name = errno.errorcode.get(code or 0, f"errno {code}")
    return KernelRefusedError(f"{call}{what} failed: {os.strerror(code or 0)} ({name})")


def _policy_args(policy: MemoryPolicy) -> tuple[object, int]:
    """The (nodemask, maxnode) pair that set_mempolicy and mbind take for ``policy``.

    Refuses first, naming the Linux release needed, a mode or flag this kernel lacks:
    an old kernel would answer EINVAL, which says nothing useful.
    """
    for feature in (policy.mode, *sorted(policy.flags)):
        needed = kernel_lacks(feature)
        if needed is not None:
            raise ModeUnsupportedError(feature, needed, refused=False)
    if policy.mode in NODELESS_MODES:
        return None, 0
    bits = node_mask_bits()
    return _mask_from(policy.nodes, bits), bits + 1


def set_mempolicy(policy: MemoryPolicy) -> None:
    """Make ``policy`` the calling thread's memory policy (see :class:`thread_policy`).

    Raises :class:`ModeUnsupportedError` when the kernel lacks the mode or flag (by version
    number, or by ``EINVAL`` for a mode newer than the version suggests), and
    :class:`~numarun.errors.KernelRefusedError` for seccomp (``EPERM``), missing NUMA
    support (``ENOSYS``) and other refusals.
    """
    mask, maxnode = _policy_args(policy)
    try:
        _call(1, "set_mempolicy", policy.kernel_mode, mask, maxnode)
    except OSError as err:
        if err.errno == errno.EINVAL:
            for feature in (policy.mode, *sorted(policy.flags)):
                if feature in MIN_KERNEL and feature != "local":
                    raise ModeUnsupportedError(feature, MIN_KERNEL[feature], refused=True) from None
        raise _translate("set_mempolicy", err, policy) from None


def get_mempolicy() -> MemoryPolicy:
    """The calling thread's memory policy (``default`` when it has none of its own)."""
    import ctypes

    bits = node_mask_bits()
    mask = _new_mask(bits)
    mode = ctypes.c_int(0)
    try:
        _call(2, "get_mempolicy", ctypes.byref(mode), mask, bits + 1, None, 0)
    except OSError as err:
        raise _translate("get_mempolicy", err) from None
    return MemoryPolicy.from_kernel(mode.value, _mask_to_set(mask))


def mems_allowed() -> frozenset[int]:
    """The memory nodes the calling thread's cpuset allows (``MPOL_F_MEMS_ALLOWED``)."""
    import ctypes

    bits = node_mask_bits()
    mask = _new_mask(bits)
    mode = ctypes.c_int(0)
    try:
        _call(2, "get_mempolicy", ctypes.byref(mode), mask, bits + 1, None, MPOL_F_MEMS_ALLOWED)
    except OSError as err:
        raise _translate("get_mempolicy", err) from None
    return _mask_to_set(mask)


def interleave_next_node() -> int | None:
    """The node the next interleaved page goes to, if the thread's policy interleaves."""
    import ctypes

    node = ctypes.c_int(-1)
    try:
        _call(2, "get_mempolicy", ctypes.byref(node), None, 0, None, MPOL_F_NODE)
    except OSError as err:
        if err.errno == errno.EINVAL:  # not an interleave policy
            return None
        raise _translate("get_mempolicy", err) from None
    return node.value if node.value >= 0 else None


def node_of_address(address: int) -> int:
    """The node holding the page at ``address`` in this process (faults it in if absent)."""
    import ctypes

    node = ctypes.c_int(-1)
    try:
        _call(2, "get_mempolicy", ctypes.byref(node), None, 0, address, MPOL_F_NODE | MPOL_F_ADDR)
    except OSError as err:
        raise _translate("get_mempolicy", err) from None
    return node.value


def mbind(
    address: int,
    length: int,
    policy: MemoryPolicy,
    *,
    move: bool = False,
    move_all: bool = False,
    strict: bool = False,
) -> None:
    """Set ``policy`` on the page-aligned range ``[address, address + length)`` of this process.

    ``move`` migrates pages already there that violate the policy (``MPOL_MF_MOVE``);
    ``move_all`` also pages shared with other processes (needs ``CAP_SYS_NICE``);
    ``strict`` fails with ``EIO`` if pages stay misplaced. A range policy outranks the
    thread's policy for that range and is inherited across ``fork`` but not ``exec``.
    """
    mask, maxnode = _policy_args(policy)
    flags = (MPOL_MF_MOVE if move else 0) | (MPOL_MF_MOVE_ALL if move_all else 0)
    flags |= MPOL_MF_STRICT if strict else 0
    try:
        _call(0, "mbind", address, length, policy.kernel_mode, mask, maxnode, flags)
    except OSError as err:
        if err.errno == errno.EIO:
            raise KernelRefusedError(
                f"mbind {policy}: some pages could not be moved to satisfy the policy (EIO)",
                "retry without strict, or free memory on the target nodes",
            ) from None
        raise _translate("mbind", err, policy) from None


def migrate_pages(pid: int, from_nodes: Iterable[int], to_nodes: Iterable[int]) -> int:
    """Move process ``pid``'s pages on ``from_nodes`` to ``to_nodes``; return pages left behind.

    ``pid`` 0 is this process. Moving another user's process needs ``CAP_SYS_NICE``.
    """
    bits = node_mask_bits()
    old = _mask_from(from_nodes, bits)
    new = _mask_from(to_nodes, bits)
    try:
        return _call(3, "migrate_pages", pid, bits + 1, old, new)
    except OSError as err:
        if err.errno == errno.ESRCH:
            raise ProcessError(
                f"process {pid} does not exist", "check the PID (it may have exited)"
            ) from None
        if err.errno == errno.EPERM and pid not in (0, os.getpid()):
            raise ProcessError(
                f"not permitted to move the pages of process {pid} (EPERM): it belongs to "
                "another user, or a seccomp filter blocks migrate_pages",
                "run as its owner or with CAP_SYS_NICE",
            ) from None
        raise _translate("migrate_pages", err) from None


# -- weighted interleave weights ------------------------------------------------------------


def interleave_weights(root: str = "/") -> dict[int, int]:
    """The weighted-interleave weight of each node, from sysfs (empty before Linux 6.9).

    numarun only reads these: they are system-wide, and changing them would change every
    process that uses weighted interleave.
    """
    return sysfs.interleave_weights(sysfs.Root(root))


# -- per-thread scope --------------------------------------------------------------------------


class thread_policy:  # noqa: N801 - used like a function: ``with thread_policy(p):``
    """Apply a memory policy to the calling thread for a ``with`` block, then restore the old one.

    ::

        from numarun.mempolicy import MemoryPolicy, thread_policy

        with thread_policy(MemoryPolicy("bind", {1})):
            buffer = bytearray(1 << 30)   # first touched here: pages come from node 1

    **The policy belongs to one thread.** Linux keeps the memory policy per task, that is
    per thread, not per process. What that means for a library caller:

    * Only the thread that enters the block is affected. Other threads that already exist,
      thread pools included (a ``ThreadPoolExecutor``, BLAS or OpenMP workers, a database
      driver's I/O thread), keep their own policy and allocate as before, even for work
      handed to them from inside the block.
    * A thread created *inside* the block, and a process forked there, inherit the policy
      at creation and keep it after the block ends: restoring changes only the calling
      thread.
    * ``exec`` keeps the calling thread's policy, which is how ``numarun -- CMD`` passes it
      on: it sets the policy on its only thread and then replaces itself with CMD.
    * The policy decides where a page comes from when it is first *touched*, not when
      memory is reserved. Python's allocator reuses memory it faulted in earlier, so small
      objects made in the block may sit on old pages; allocate and touch large buffers
      inside the block. Pages already placed stay put (see :func:`migrate_pages`).
    * asyncio tasks on the same thread share the policy while the block is open.

    ``__enter__`` returns the policy that was in force before, which ``__exit__`` restores
    (on exceptions too). Errors are those of :func:`set_mempolicy`.
    """

    __slots__ = ("_previous", "policy")

    def __init__(self, policy: MemoryPolicy) -> None:
        self.policy = policy
        self._previous: MemoryPolicy | None = None

    def __enter__(self) -> MemoryPolicy:
        previous = get_mempolicy()
        set_mempolicy(self.policy)
        self._previous = previous
        return previous

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._previous is not None:
            set_mempolicy(self._previous)
            self._previous = None


def probe(policy: MemoryPolicy) -> None:
    """Check that the kernel accepts ``policy`` without keeping it: apply it, then restore.

    Raises what :func:`set_mempolicy` raises. Used by ``--dry-run`` and by the launcher's
    seccomp check before it touches anything else.
    """
    with thread_policy(policy):
        pass


# -- fallback ---------------------------------------------------------------------------------


def fallback_policy(policy: MemoryPolicy, fallback: str) -> MemoryPolicy:
    """``policy`` rewritten in mode ``fallback``, keeping as much of its meaning as fits.

    ``preferred`` keeps only the lowest node (it takes one); ``local`` and ``default`` drop
    the nodes; flags stay only where the fallback mode accepts them.
    """
    mode = canonical_mode(fallback)
    if mode in NODELESS_MODES:
        return MemoryPolicy(mode)
    nodes = policy.nodes or frozenset()
    if not nodes:
        raise ValueError(f"fallback {mode} needs nodes but {policy} has none")
    if mode == "preferred":
        nodes = frozenset({min(nodes)})
    flags = {f for f in policy.flags if f != "numa-balancing" or mode == "bind"}
    return MemoryPolicy(mode, nodes, flags)


def apply_with_fallback(
    policy: MemoryPolicy, fallback: str | None
) -> tuple[MemoryPolicy, ModeUnsupportedError | None]:
    """Apply ``policy``; if the kernel lacks its mode and ``fallback`` is given, apply that.

    Returns the policy in force and, when the fallback was used, the error that caused it
    (for the caller to report). Without a fallback the :class:`ModeUnsupportedError` is
    raised. A fallback the kernel also lacks raises its own error.
    """
    try:
        set_mempolicy(policy)
    except ModeUnsupportedError as err:
        if fallback is None:
            raise
        replacement = fallback_policy(policy, fallback)
        set_mempolicy(replacement)
        return replacement, err
    return policy, None
