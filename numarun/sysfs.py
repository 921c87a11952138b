"""One plain function per sysfs or procfs file that the topology needs.

Every path is read under a *root* (``/`` on a live machine, an unpacked snapshot in tests),
the way ``lstopo --input DIR`` and ``lscpu --sysroot DIR`` work. A file that is absent
returns ``None`` (kernels differ in what they provide, and callers decide what absence
means); a file that is present but unreadable or malformed raises
:class:`~numarun.errors.TopologyError` naming the path. Nothing here interprets the
machine: :mod:`numarun.topology` does that.
"""

from __future__ import annotations

import errno
import os

from numarun import cpulist
from numarun.errors import TopologyError
from numarun.value import Value

TYPE_CHECKING = False  # typing costs ms at start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Sequence

NODE_DIR = "sys/devices/system/node"
WEIGHTS_DIR = "sys/kernel/mm/mempolicy/weighted_interleave"
TIERS_DIR = "sys/devices/virtual/memory_tiering"
DEMOTION_FILE = "sys/kernel/mm/numa/demotion_enabled"
# HMAT's figures for a memory node from its best initiators, each file one number:
# bandwidth in MB/s, latency in nanoseconds (Documentation/admin-guide/mm/numaperf.rst).
ACCESS_FIGURES = ("read_bandwidth", "write_bandwidth", "read_latency", "write_latency")
# Linux's NR_CPUS is at most 8192 (x86, arm64 and POWER allow up to that); lists of CPUs
# read where no CPU folder bounds them are read up to this, never expanded further.
MAX_CPUS = 1 << 13
CPU_DIR = "sys/devices/system/cpu"


# No sysfs or procfs file numarun reads is near this size; a larger one (a snapshot holding
# /dev/zero, say) is refused rather than read into memory.
MAX_FILE_BYTES = 4 << 20
_CHUNK = 1 << 15
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC


class Root(Value):
    """A filesystem root to read sysfs and procfs under, and what reading it noticed."""

    path: str
    # What was read as hwloc reads it (an empty or unreadable file): {what: [paths]}.
    noticed: dict[str, list[str]]

    def __init__(self, path: str | os.PathLike[str] = "/") -> None:
        super().__init__(path=os.fspath(path), noticed={})
        # os.path.join's result for a relative ``rel``, by concatenation: join runs once
        # for each of the topology's ~450 files.
        base = self.path if not self.path or self.path.endswith("/") else self.path + "/"
        object.__setattr__(self, "_base", base)

    def join(self, rel: str) -> str:
        return rel if rel.startswith("/") else self._base + rel  # type: ignore[attr-defined]

    def notice(self, rel: str, what: str) -> None:
        """Note that ``rel`` was read leniently; :meth:`notes` words them, one per kind."""
        self.noticed.setdefault(what, []).append(self.join(rel))

    def notes(self) -> tuple[str, ...]:
        """One line per kind of leniency: ``{what}: PATH`` (and how many more like it)."""
        out = []
        for what, paths in self.noticed.items():
            more = f" and {len(paths) - 1} more like it" if len(paths) > 1 else ""
            out.append(f"{paths[0]}{more}: {what}")
        return tuple(out)

    def read(self, rel: str, *, quiet: bool = False) -> str | None:
        """The file's text, or None when it does not exist or cannot be read.

        A file that exists but cannot be read (EACCES, or the EINVAL/EIO that sysfs
        attributes give when the hardware cannot answer) is read as absent and noticed,
        unless ``quiet``: hwloc does the same, and one odd attribute must not cost the
        whole topology.
        """
        path = self.join(rel)
        try:
            # os.open/os.read, not open(): no file object to build, half the cost per file,
            # and a topology is some 450 small files.
            fd = os.open(path, _READ_FLAGS)
            try:
                data = os.read(fd, _CHUNK)
                if data:  # procfs hands out a page or so per read: to the end, or the limit
                    chunks = [data]
                    size = len(data)
                    while data and size <= MAX_FILE_BYTES:
                        data = os.read(fd, _CHUNK)
                        chunks.append(data)
                        size += len(data)
                    data = b"".join(chunks)
            finally:
                os.close(fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            if not quiet:
                self.notice(rel, f"cannot be read ({_errno_name(err)}); read as absent")
            return None
        if len(data) > MAX_FILE_BYTES:
            raise TopologyError(
                f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB, which no sysfs file is",
                "check the sysfs root (--root)",
            )
        return data.decode("utf-8", "replace")

    def listdir(self, rel: str) -> list[str]:
        try:
            return os.listdir(self.join(rel))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as err:
            raise TopologyError(f"cannot list {self.join(rel)}: {err.strerror}") from None

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.join(rel))

    def read_int(self, rel: str) -> int | None:
        """A number; None when absent, or empty (noticed: old kernels leave some empty)."""
        text = self.read(rel)
        if text is None:
            return None
        if not text.strip("\x00 \n\t"):
            self.notice(rel, "is empty; read as absent")
            return None
        return self.parse_int(rel, text)

    def parse_int(self, rel: str, text: str) -> int:
        """The number in ``text`` (read from ``rel``); refused when it is not one."""
        stripped = text.strip("\x00 \n\t")
        # ASCII digits only: int() would also take "٣"
        if not stripped.isascii() or not stripped.removeprefix("-").isdigit():
            raise TopologyError(
                f"{self.join(rel)} holds {stripped[:40]!r}, not a number",
                "the snapshot or sysfs is damaged",
            )
        return int(stripped)

    def read_list(
        self, rel: str, within: Sequence[int] | None = None, *, strict: bool = False
    ) -> frozenset[int] | None:
        """A file in the kernel's list format (``0-3,8``).

        With ``within`` (sorted ids), only those are kept, and a file naming
        ``0-999999999`` costs no more than they do; ``strict`` refuses a file that names
        others (a list of what is online names only CPUs or nodes that have folders).
        """
        text = self.read(rel)
        if text is None:
            return None
        try:
            if within is None:
                return cpulist.parse_list(text)
            found, named = within_list(text, within)
        except ValueError as err:
            raise TopologyError(
                f"{self.join(rel)}: {err}", "the snapshot or sysfs is damaged"
            ) from None
        if strict and named > len(found):
            raise TopologyError(
                f"{self.join(rel)} names {named} ids, of which only {len(found)} exist here",
                "the snapshot or sysfs is damaged",
            )
        return found

    def read_mask(self, rel: str, within: Sequence[int] | None = None) -> frozenset[int] | None:
        """A file in the kernel's hex mask format (``00000000,0000000f``), bits in ``within``."""
        text = self.read(rel)
        if text is None:
            return None
        if within is not None:  # keep the words that can hold a bit of within: 4 per digit
            digits = text.replace("\x00", "").strip().replace(",", "")
            text = digits[-((within[-1] if within else 0) // 4 + 1) :] if digits else digits
        try:
            found = cpulist.parse_mask(text)
        except ValueError as err:
            raise TopologyError(
                f"{self.join(rel)}: {err}", "the snapshot or sysfs is damaged"
            ) from None
        return found if within is None else found & frozenset(within)

    def read_set(
        self, list_rel: str, mask_rel: str, within: Sequence[int] | None = None
    ) -> frozenset[int] | None:
        """The list-format file if present, else the older mask-format twin."""
        found = self.read_list(list_rel, within)
        return found if found is not None else self.read_mask(mask_rel, within)


def within_list(text: str, within: Sequence[int]) -> tuple[frozenset[int], int]:
    """The ids of a kernel list that are in ``within`` (sorted), and how many it names.

    Never expands a range: each is matched against ``within`` by bisection, so a list
    naming ``0-999999999`` costs what ``within`` holds. Malformed items raise the
    :class:`ValueError` of :func:`numarun.cpulist.parse_list`.
    """
    from bisect import bisect_left, bisect_right  # only lists need it: off the start-up path

    found: set[int] = set()
    named = 0
    text = text.replace("\x00", "").strip()
    for item in text.split(",") if text else ():
        if item.isdigit() and item.isascii():  # one id, the common case (siblings "0,40")
            at = bisect_left(within, int(item))
            if at < len(within) and within[at] == int(item):
                found.add(within[at])
            named += 1
            continue
        rng, colon, stride = item.strip().partition(":")
        lo_text, dash, hi_text = rng.partition("-")
        used_text, _, group_text = stride.partition("/")
        words = [lo_text, *([hi_text] if dash else []), *([used_text, group_text] if colon else [])]
        if not all(w.isascii() and w.isdigit() for w in words):
            cpulist.parse_list(item)  # raises, naming the item
            raise ValueError(f"{item!r} in list {text!r} is not a number or range")
        lo = int(lo_text)
        hi = int(hi_text) if dash else lo
        used, group = (int(used_text), int(group_text)) if colon else (1, 1)
        if hi < lo or not 0 < used <= group:
            cpulist.parse_list(item)
            raise ValueError(f"{item!r} in list {text!r} is not a valid range")
        span = hi - lo + 1
        named += span // group * used + min(span % group, used)
        start, end = bisect_left(within, lo), bisect_right(within, hi)
        found.update(x for x in within[start:end] if (x - lo) % group < used)
    return frozenset(found), named


def _errno_name(err: OSError) -> str:
    return errno.errorcode.get(err.errno or 0, str(err.errno)) if err.errno else str(err)


def numbered_entries(names: list[str], prefix: str) -> list[int]:
    """``["node0", "node8", "online"]`` with prefix ``node`` -> ``[0, 8]``, sorted."""
    out = [
        int(n[len(prefix) :])
        for n in names
        if n.startswith(prefix) and n[len(prefix) :].isascii() and n[len(prefix) :].isdigit()
    ]
    out.sort()
    return out


# --- /sys/devices/system/node ---------------------------------------------------------


def node_ids(root: Root) -> list[int]:
    return numbered_entries(root.listdir(NODE_DIR), "node")


# Linux numbers nodes below MAX_NUMNODES (1 << CONFIG_NODES_SHIFT, at most 1024 today);
# lists of possible nodes are read up to this bound, never expanded further.
MAX_NODES = 1 << 12


def node_cpus(root: Root, node: int, cpus: Sequence[int] | None = None) -> frozenset[int] | None:
    """The CPUs a node lists, of ``cpus`` (firmware may list CPUs that do not exist)."""
    base = f"{NODE_DIR}/node{node}"
    return root.read_set(f"{base}/cpulist", f"{base}/cpumap", cpus)


def node_meminfo(root: Root, node: int) -> dict[str, int]:
    """``nodeN/meminfo`` as ``{"MemTotal": kB, "MemFree": kB, ...}``; empty when absent."""
    text = root.read(f"{NODE_DIR}/node{node}/meminfo")
    return parse_meminfo(text) if text is not None else {}


def node_distances(root: Root, node: int) -> list[int] | None:
    text = root.read(f"{NODE_DIR}/node{node}/distance")
    if text is None:
        return None
    words = text.split()
    if not all(w.isascii() and w.isdigit() for w in words):
        raise TopologyError(
            f"{root.join(f'{NODE_DIR}/node{node}/distance')} is not a list of numbers",
            "the snapshot or sysfs is damaged",
        )
    return [int(w) for w in words]


def node_numastat(root: Root, node: int) -> dict[str, int] | None:
    """``nodeN/numastat``: the allocator's counters (pages since boot); None when absent.

    ``numa_hit 1649145`` lines; a line that is not a name and a number is skipped (kernels
    add counters, and a monitor must not fail on one it does not know).
    """
    text = root.read(f"{NODE_DIR}/node{node}/numastat")
    return parse_counters(text) if text is not None else None


def nodes_online(root: Root, nodes: Sequence[int] | None = None) -> frozenset[int] | None:
    """``node/online``; refused when it names a node not in ``nodes`` (the node folders)."""
    return root.read_list(f"{NODE_DIR}/online", nodes, strict=True)


def nodes_possible(root: Root) -> frozenset[int] | None:
    return root.read_list(f"{NODE_DIR}/possible", range(MAX_NODES))


# --- /sys/devices/system/cpu ----------------------------------------------------------


def cpu_ids(root: Root) -> list[int]:
    return numbered_entries(root.listdir(CPU_DIR), "cpu")


def cpus_online(root: Root, cpus: Sequence[int] | None = None) -> frozenset[int] | None:
    """``cpu/online``: None when absent or empty (then each CPU's flag decides).

    Refused when it names a CPU not in ``cpus`` (the CPU folders): online CPUs have
    folders, so such a list (``0-999999999``) is damage, found without expanding it.
    """
    rel = f"{CPU_DIR}/online"
    text = root.read(rel)
    if text is not None and not text.strip("\x00 \n\t"):
        root.notice(rel, "is empty; each CPU's online flag was read instead")
        return None
    return root.read_list(rel, cpus, strict=True) if text is not None else None


def cpuset_cpus_effective(root: Root, cgroup_dir: str, top: str) -> frozenset[int] | None:
    """The CPUs a cgroup v2 directory's tasks may use (``cpuset.cpus.effective``).

    ``cgroup_dir`` is an absolute directory under the cgroup2 mount ``top``; where the
    cpuset controller is not enabled for it, the nearest ancestor's file is what applies.
    None when no directory up to ``top`` has one (no cpuset controller, cgroup v1).
    """
    here = os.path.normpath(cgroup_dir)
    stop = os.path.normpath(top)
    while True:
        found = root.read_list(os.path.join(here, "cpuset.cpus.effective").lstrip("/"))
        if found is not None or here == stop or len(here) <= len(stop):
            return found
        here = os.path.dirname(here)


def cpu_online_flag(root: Root, cpu: int) -> bool | None:
    """``cpuN/online`` (absent for CPUs that cannot be hot-unplugged, such as cpu0).

    An empty flag (old kernels, captured snapshots) means online, as hwloc reads it.
    """
    rel = f"{CPU_DIR}/cpu{cpu}/online"
    text = root.read(rel)
    if text is None:
        return None
    if not text.strip("\x00 \n\t"):
        root.notice(rel, "is empty; read as online, as hwloc does")
        return True
    return root.parse_int(rel, text) != 0


def cpu_topology_int(root: Root, cpu: int, name: str) -> int | None:
    """One number from ``cpuN/topology/`` (``physical_package_id``, ``die_id``, ...)."""
    return root.read_int(f"{CPU_DIR}/cpu{cpu}/topology/{name}")


def cpu_has_topology(root: Root, cpu: int) -> bool:
    return root.exists(f"{CPU_DIR}/cpu{cpu}/topology")


def cpu_siblings(root: Root, cpu: int, cpus: Sequence[int] | None = None) -> frozenset[int] | None:
    """The SMT siblings of a CPU, itself included, from the newest file the kernel has."""
    base = f"{CPU_DIR}/cpu{cpu}/topology"
    found = root.read_set(f"{base}/core_cpus_list", f"{base}/core_cpus", cpus)
    if found is None:
        found = root.read_set(f"{base}/thread_siblings_list", f"{base}/thread_siblings", cpus)
    return found


def cpus_isolated(root: Root) -> frozenset[int] | None:
    """``cpu/isolated``: CPUs kept from the scheduler (``isolcpus=``); None when absent."""
    return root.read_list(f"{CPU_DIR}/isolated", range(MAX_CPUS))


def cpu_node_links(root: Root, cpu: int) -> list[int]:
    """``cpuN/nodeM`` links: the node a CPU belongs to, for CPUs no node lists."""
    return numbered_entries(root.listdir(f"{CPU_DIR}/cpu{cpu}"), "node")


# --- /proc ------------------------------------------------------------------------------


def parse_meminfo(text: str) -> dict[str, int]:
    """``MemTotal: 123 kB`` lines (also ``Node 0 MemTotal: ...``) as a dict of kB values."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[key.split()[-1]] = int(fields[0])
    return out


def parse_counters(text: str) -> dict[str, int]:
    """``name value`` lines (``numastat``, ``/proc/vmstat``) as a dict; odd lines skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isascii() and fields[1].isdigit():
            out[fields[0]] = int(fields[1])
    return out


def proc_vmstat(root: Root) -> dict[str, int] | None:
    """``/proc/vmstat``: the memory manager's counters since boot (``numa_hint_faults``,
    ``numa_pages_migrated``, ``pgpromote_success``, ``pgdemote_kswapd`` ...); None when
    absent. Which counters exist depends on the kernel (``pgdemote_*`` from 5.15,
    ``pgpromote_success`` from 6.1) and its config (``CONFIG_NUMA_BALANCING``)."""
    text = root.read("proc/vmstat")
    return parse_counters(text) if text is not None else None


def proc_meminfo(root: Root) -> dict[str, int]:
    text = root.read("proc/meminfo")
    return parse_meminfo(text) if text is not None else {}


def proc_stat_cpus(root: Root) -> dict[int, tuple[int, int]]:
    """The ``cpuN`` lines of ``/proc/stat`` as (busy, total) jiffies; {} when unreadable.

    Busy is everything but idle and iowait. Only a tie-break (node choice by load) reads
    it, so a file that is missing or odd gives {} rather than a refusal.
    """
    out: dict[int, tuple[int, int]] = {}
    for line in (root.read("proc/stat", quiet=True) or "").splitlines():
        name, _, rest = line.partition(" ")
        number = name[3:]
        if not name.startswith("cpu") or not (number.isascii() and number.isdecimal()):
            continue
        words = rest.split()
        if not all(w.isascii() and w.isdecimal() for w in words):
            continue
        values = [int(w) for w in words]
        idle = sum(values[3:5])  # idle + iowait
        out[int(number)] = (sum(values) - idle, sum(values))
    return out


def proc_status(root: Root, pid: int | str = "self") -> dict[str, str]:
    """``/proc/PID/status`` as a dict of raw values."""
    text = root.read(f"proc/{pid}/status")
    if text is None:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def proc_cgroups(root: Root, pid: int | str = "self") -> list[tuple[str, list[str], str]]:
    """``/proc/PID/cgroup`` as (hierarchy id, controllers, path) triples."""
    text = root.read(f"proc/{pid}/cgroup")
    out: list[tuple[str, list[str], str]] = []
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((parts[0], [c for c in parts[1].split(",") if c], parts[2]))
    return out


def proc_cpuset_path(root: Root, pid: int | str = "self") -> str | None:
    """``/proc/PID/cpuset``: the process's cpuset path (cgroup v1 era, still present)."""
    text = root.read(f"proc/{pid}/cpuset")
    return text.strip() if text is not None and text.strip() else None


def proc_mounts(root: Root) -> list[tuple[str, str, str, list[str]]]:
    """``/proc/mounts`` as (device, mount point, fs type, options)."""
    text = root.read("proc/mounts") or root.read("proc/self/mounts") or ""
    out: list[tuple[str, str, str, list[str]]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append((parts[0], parts[1], parts[2], parts[3].split(",")))
    return out


def interleave_weights(root: Root) -> dict[int, int]:
    """``/sys/kernel/mm/mempolicy/weighted_interleave/nodeN``: each node's weight.

    Empty before Linux 6.9 (no such directory). A weight file that cannot be read or
    does not hold a number is left out: weights only shape what the kernel does anyway.
    """
    out: dict[int, int] = {}
    for node in interleave_nodes(root):
        text = root.read(f"{WEIGHTS_DIR}/node{node}", quiet=True)
        word = (text or "").strip()
        if word.isascii() and word.isdigit():
            out[node] = int(word)
    return out


def interleave_nodes(root: Root) -> list[int]:
    """The nodes that have a weight file (every possible node, or those with memory)."""
    return numbered_entries(root.listdir(WEIGHTS_DIR), "node")


def interleave_auto(root: Root) -> bool | None:
    """``weighted_interleave/auto`` (Linux 6.16+): True while the kernel sets the weights
    itself from HMAT bandwidth; None where the file does not exist."""
    return _read_bool(root, f"{WEIGHTS_DIR}/auto")


def has_weighted_interleave(root: Root) -> bool:
    """Whether the kernel has weighted interleave's weights (the directory, Linux 6.9+)."""
    return root.exists(WEIGHTS_DIR)


def write_interleave_weight(root: Root, node: int, weight: int) -> None:
    """Write one node's weight; OSError as the kernel (or the filesystem) gives it."""
    with open(root.join(f"{WEIGHTS_DIR}/node{node}"), "w", encoding="ascii") as f:
        f.write(f"{weight}\n")


def write_interleave_auto(root: Root) -> None:
    """Hand the weights back to the kernel (``auto`` = true, Linux 6.16+)."""
    with open(root.join(f"{WEIGHTS_DIR}/auto"), "w", encoding="ascii") as f:
        f.write("true\n")


def interleave_writable(root: Root, nodes: Sequence[int], *, auto: bool = False) -> bool:
    """Whether this process may write these nodes' weights (and ``auto``): root may."""
    names = [f"node{n}" for n in nodes] + (["auto"] if auto else [])
    return all(os.access(root.join(f"{WEIGHTS_DIR}/{name}"), os.W_OK) for name in names)


def memory_tiers(root: Root, nodes: Sequence[int]) -> dict[int, frozenset[int]]:
    """``memory_tiering/memory_tierN/nodelist``: the nodes of each tier, by tier id.

    A lower id is a faster tier (DRAM is usually 4). Empty before Linux 6.1, or with no
    tiering configured.
    """
    out: dict[int, frozenset[int]] = {}
    for tier in numbered_entries(root.listdir(TIERS_DIR), "memory_tier"):
        found = root.read_list(f"{TIERS_DIR}/memory_tier{tier}/nodelist", nodes)
        if found:
            out[tier] = found
    return out


def node_access(
    root: Root, node: int, nodes: Sequence[int]
) -> tuple[frozenset[int], dict[str, int | None]] | None:
    """``nodeN/access0/initiators``: the initiator nodes (its ``nodeM`` links) and the
    figures of :data:`ACCESS_FIGURES`; None without HMAT for this node.

    A figure that is absent, or 0 (what the kernel prints when HMAT gives none), is None;
    an ``access0`` that names no initiator and no figure (a node that only initiates) is
    read as no HMAT.
    """
    base = f"{NODE_DIR}/node{node}/access0/initiators"
    if not root.exists(base):
        return None
    known = frozenset(nodes)
    initiators = frozenset(n for n in numbered_entries(root.listdir(base), "node") if n in known)
    figures = {name: root.read_int(f"{base}/{name}") or None for name in ACCESS_FIGURES}
    if not initiators and not any(figures.values()):
        return None
    return initiators, figures


def demotion_enabled(root: Root) -> bool | None:
    """``/sys/kernel/mm/numa/demotion_enabled``: whether reclaim moves pages down a tier."""
    return _read_bool(root, DEMOTION_FILE)


def _read_bool(root: Root, rel: str) -> bool | None:
    """A sysfs boolean (``true``/``false``, ``1``/``0``, ``Y``/``N``); None when absent."""
    text = root.read(rel)
    if text is None:
        return None
    word = text.strip("\x00 \n\t").lower()
    if word in ("true", "1", "y", "yes", "on"):
        return True
    if word in ("false", "0", "n", "no", "off"):
        return False
    raise TopologyError(
        f"{root.join(rel)} holds {word[:40]!r}, not true or false",
        "the snapshot or sysfs is damaged",
    )


def numa_balancing(root: Root) -> bool | None:
    mode = numa_balancing_mode(root)
    return None if mode is None else mode != 0


def numa_balancing_mode(root: Root) -> int | None:
    """``kernel.numa_balancing``: 0 off, 1 normal, 2 memory tiering, 3 both."""
    return root.read_int("proc/sys/kernel/numa_balancing")


def kernel_release(root: Root) -> str | None:
    text = root.read("proc/sys/kernel/osrelease")
    if text is not None:
        return text.strip() or None
    text = root.read("proc/version")
    if text is not None:
        words = text.split()
        return words[2] if len(words) > 2 else None
    return None


def dmi(root: Root, name: str) -> str | None:
    """A DMI identity string (``sys_vendor``, ``product_name``), stripped; None if absent."""
    for base in ("sys/class/dmi/id", "sys/devices/virtual/dmi/id"):
        text = root.read(f"{base}/{name}", quiet=True)  # some are root-only: a nicety
        if text is not None:
            return text.strip() or None
    return None


# --- PCI devices and the names the OS gives them --------------------------------------

PCI_DIR = "sys/bus/pci/devices"
NET_DIR = "sys/class/net"
BLOCK_DIR = "sys/block"
NVIDIA_DIR = "proc/driver/nvidia/gpus"


def is_pci_address(name: str) -> bool:
    """``0000:41:00.0`` (domain:bus:device.function, hex; VMD domains have 5 digits)."""
    parts = name.split(":")
    if len(parts) != 3:
        return False
    domain, bus, slot = parts
    device, dot, function = slot.partition(".")
    hex_digits = "0123456789abcdefABCDEF"
    words = (domain, bus, device, function)
    return (
        bool(dot)
        and 4 <= len(domain) <= 8
        and len(bus) == 2
        and len(device) == 2
        and len(function) == 1
        and all(w and all(ch in hex_digits for ch in w) for w in words)
    )


def pci_addresses(root: Root) -> list[str]:
    """The PCI functions under ``/sys/bus/pci/devices``, in address order (lspci's)."""
    return sorted(n for n in root.listdir(PCI_DIR) if is_pci_address(n))


def pci_numa_node(root: Root, address: str) -> int | None:
    """``numa_node``: the node the firmware attaches the device to; -1 when it does not say."""
    return root.read_int(f"{PCI_DIR}/{address}/numa_node")


def pci_class(root: Root, address: str) -> str | None:
    """``class``: ``0x030000`` (base class, subclass, programming interface)."""
    return _word(root, f"{PCI_DIR}/{address}/class")


def pci_vendor(root: Root, address: str) -> str | None:
    """``vendor``: ``0x10de``."""
    return _word(root, f"{PCI_DIR}/{address}/vendor")


def pci_device(root: Root, address: str) -> str | None:
    """``device``: ``0x1db4``."""
    return _word(root, f"{PCI_DIR}/{address}/device")


def pci_local_cpus(
    root: Root, address: str, cpus: Sequence[int] | None = None
) -> frozenset[int] | None:
    """``local_cpulist`` (or the older ``local_cpus`` mask): the CPUs near the device.

    Old kernels and some platforms (POWER) give no ``numa_node`` but do give these; hwloc
    places the device by them.
    """
    base = f"{PCI_DIR}/{address}"
    return root.read_set(f"{base}/local_cpulist", f"{base}/local_cpus", cpus)


def _word(root: Root, rel: str) -> str | None:
    text = root.read(rel)
    word = (text or "").strip("\x00 \n\t").lower()
    return word or None


def pci_function_of(root: Root, rel: str) -> str | None:
    """The PCI function a ``device`` link leads to, walking up from what hangs below it.

    A virtio NIC's link is ``.../0000:00:03.0/virtio0``, a disk's
    ``.../0000:01:00.0/host0/target0:2:0/0:2:0:0``, an NVMe namespace's controller
    ``.../0000:41:00.0/nvme/nvme0``: the nearest PCI address on the way up is the function.
    None when the link is absent or leads to no PCI device (virtual interfaces, USB disks
    behind a hub are still found at their host controller).
    """
    path = root.join(rel)
    if not os.path.lexists(path):
        return None
    parts = os.path.realpath(path).split(os.sep)
    return next((p for p in reversed(parts) if is_pci_address(p)), None)


def net_interfaces(root: Root) -> dict[str, str]:
    """Network interfaces with a PCI device: ``{"eth0": "0000:00:03.0"}``."""
    return _pci_functions_of(root, NET_DIR)


def block_devices(root: Root) -> dict[str, str]:
    """Whole block devices with a PCI device: ``{"sda": "0000:01:00.0", "vda": ...}``."""
    return _pci_functions_of(root, BLOCK_DIR)


def _pci_functions_of(root: Root, directory: str) -> dict[str, str]:
    """Each entry of ``directory`` whose ``device`` leads to a PCI function: name -> BDF."""
    out = {}
    for name in sorted(root.listdir(directory)):
        address = pci_function_of(root, f"{directory}/{name}/device")
        if address is not None:
            out[name] = address
    return out


def nvidia_minors(root: Root) -> dict[str, int]:
    """``/proc/driver/nvidia/gpus/BDF/information``'s ``Device Minor``: NVIDIA's GPU order.

    Empty where the driver is not loaded. The minor is N of ``/dev/nvidiaN`` and the index
    ``nvidia-smi`` shows.
    """
    out = {}
    for address in root.listdir(NVIDIA_DIR):
        text = root.read(f"{NVIDIA_DIR}/{address}/information", quiet=True) or ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            word = value.strip()
            if key.strip() == "Device Minor" and word.isascii() and word.isdigit():
                out[address.lower()] = int(word)
    return out


def block_device_of(root: Root, major: int, minor: int) -> str | None:
    """The whole disk holding block device ``major:minor`` (``/sys/dev/block/M:N``).

    A partition's folder sits inside its disk's (``.../block/sda/sda1``), so the disk is
    the folder above one that has a ``partition`` file.
    """
    rel = f"sys/dev/block/{major}:{minor}"
    if not os.path.lexists(root.join(rel)):
        return None
    path = os.path.realpath(root.join(rel))
    if os.path.exists(os.path.join(path, "partition")):
        path = os.path.dirname(path)
    return os.path.basename(path)


def interface_of_address(root: Root, address: str) -> str | None:
    """The network interface that holds local address ``address`` (IPv4 or IPv6), or None.

    IPv6 addresses are in ``/proc/net/if_inet6``; IPv4 ones only in the kernel's interface
    table, asked per interface with ``SIOCGIFADDR`` as numactl does (live machine only:
    a snapshot root has no sockets to ask).
    """
    import socket

    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        packed = socket.inet_pton(family, address)
    except OSError:
        return None
    if family == socket.AF_INET6:
        for line in (root.read("proc/net/if_inet6", quiet=True) or "").splitlines():
            words = line.split()
            if len(words) >= 6 and words[0].lower() == packed.hex():
                return words[5]
        return None
    if root.path != "/":
        return None
    return _ipv4_interface(packed)


def _ipv4_interface(packed: bytes) -> str | None:
    import fcntl
    import socket
    import struct

    siocgifaddr = 0x8915  # <linux/sockios.h>
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(sock.fileno(), siocgifaddr, request)
            except OSError:  # no IPv4 address on this interface
                continue
            if answer[20:24] == packed:  # struct ifreq: name[16], sockaddr_in (family, port)
                return name
    return None
