"""One plain function per sysfs or procfs file that the topology needs.

Every path is read under a *root* (``/`` on a live machine, an unpacked snapshot in tests),
the way ``lstopo --input DIR`` and ``lscpu --sysroot DIR`` work. A file that is absent
returns ``None`` (kernels differ in what they provide, and callers decide what absence
means); a file that is present but unreadable or malformed raises
:class:`~numarun.errors.TopologyError` naming the path. Nothing here interprets the
machine: :mod:`numarun.topology` does that.
"""

from __future__ import annotations

import os

from numarun import cpulist
from numarun.errors import TopologyError

TYPE_CHECKING = False  # typing costs ms at start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable

NODE_DIR = "sys/devices/system/node"
CPU_DIR = "sys/devices/system/cpu"


class Root:
    """A filesystem root to read sysfs and procfs under."""

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str] = "/") -> None:
        self.path = os.fspath(path)

    def join(self, rel: str) -> str:
        return os.path.join(self.path, rel)

    def read(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist."""
        path = self.join(rel)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            # EINVAL/EIO come from sysfs attributes the hardware cannot answer.
            raise TopologyError(
                f"cannot read {path}: {err.strerror}",
                "check the sysfs root (--root) or run with enough privileges",
            ) from None

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
        text = self.read(rel)
        if text is None:
            return None
        try:
            return int(text.strip())
        except ValueError:
            raise TopologyError(
                f"{self.join(rel)} holds {text.strip()[:40]!r}, not a number",
                "the snapshot or sysfs is damaged",
            ) from None

    def read_list(self, rel: str) -> frozenset[int] | None:
        """A file in the kernel's list format (``0-3,8``)."""
        return self._read_set(rel, cpulist.parse_list)

    def read_mask(self, rel: str) -> frozenset[int] | None:
        """A file in the kernel's hex mask format (``00000000,0000000f``)."""
        return self._read_set(rel, cpulist.parse_mask)

    def _read_set(self, rel: str, parse: Callable[[str], frozenset[int]]) -> frozenset[int] | None:
        text = self.read(rel)
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as err:
            raise TopologyError(
                f"{self.join(rel)}: {err}", "the snapshot or sysfs is damaged"
            ) from None

    def read_set(self, list_rel: str, mask_rel: str) -> frozenset[int] | None:
        """The list-format file if present, else the older mask-format twin."""
        found = self.read_list(list_rel)
        return found if found is not None else self.read_mask(mask_rel)


def numbered_entries(names: list[str], prefix: str) -> list[int]:
    """``["node0", "node8", "online"]`` with prefix ``node`` -> ``[0, 8]``, sorted."""
    out = [
        int(n[len(prefix) :]) for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()
    ]
    out.sort()
    return out


# --- /sys/devices/system/node ---------------------------------------------------------


def node_ids(root: Root) -> list[int]:
    return numbered_entries(root.listdir(NODE_DIR), "node")


def node_cpus(root: Root, node: int) -> frozenset[int] | None:
    base = f"{NODE_DIR}/node{node}"
    return root.read_set(f"{base}/cpulist", f"{base}/cpumap")


def node_meminfo(root: Root, node: int) -> dict[str, int]:
    """``nodeN/meminfo`` as ``{"MemTotal": kB, "MemFree": kB, ...}``; empty when absent."""
    text = root.read(f"{NODE_DIR}/node{node}/meminfo")
    return parse_meminfo(text) if text is not None else {}


def node_distances(root: Root, node: int) -> list[int] | None:
    text = root.read(f"{NODE_DIR}/node{node}/distance")
    if text is None:
        return None
    try:
        return [int(x) for x in text.split()]
    except ValueError:
        raise TopologyError(
            f"{root.join(f'{NODE_DIR}/node{node}/distance')} is not a list of numbers",
            "the snapshot or sysfs is damaged",
        ) from None


def nodes_online(root: Root) -> frozenset[int] | None:
    return root.read_list(f"{NODE_DIR}/online")


# --- /sys/devices/system/cpu ----------------------------------------------------------


def cpu_ids(root: Root) -> list[int]:
    return numbered_entries(root.listdir(CPU_DIR), "cpu")


def cpus_online(root: Root) -> frozenset[int] | None:
    return root.read_list(f"{CPU_DIR}/online")


def cpu_online_flag(root: Root, cpu: int) -> bool | None:
    """``cpuN/online`` (absent for CPUs that cannot be hot-unplugged, such as cpu0)."""
    value = root.read_int(f"{CPU_DIR}/cpu{cpu}/online")
    return None if value is None else value != 0


def cpu_topology_int(root: Root, cpu: int, name: str) -> int | None:
    """One number from ``cpuN/topology/`` (``physical_package_id``, ``die_id``, ...)."""
    return root.read_int(f"{CPU_DIR}/cpu{cpu}/topology/{name}")


def cpu_has_topology(root: Root, cpu: int) -> bool:
    return root.exists(f"{CPU_DIR}/cpu{cpu}/topology")


def cpu_siblings(root: Root, cpu: int) -> frozenset[int] | None:
    """The SMT siblings of a CPU, itself included, from the newest file the kernel has."""
    base = f"{CPU_DIR}/cpu{cpu}/topology"
    found = root.read_set(f"{base}/core_cpus_list", f"{base}/core_cpus")
    if found is None:
        found = root.read_set(f"{base}/thread_siblings_list", f"{base}/thread_siblings")
    return found


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


def proc_meminfo(root: Root) -> dict[str, int]:
    text = root.read("proc/meminfo")
    return parse_meminfo(text) if text is not None else {}


def proc_stat_cpus(root: Root) -> dict[int, tuple[int, int]]:
    """The ``cpuN`` lines of ``/proc/stat`` as (busy, total) jiffies; {} when unreadable."""
    try:
        text = root.read("proc/stat")
    except TopologyError:  # only a tie-break reads it: no load is no reason to refuse
        return {}
    out: dict[int, tuple[int, int]] = {}
    for line in (text or "").splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdecimal() or not name[3:].isascii():
            continue
        try:
            values = [int(v) for v in rest.split()]
        except ValueError:
            continue
        idle = sum(values[3:5])  # idle + iowait
        out[int(name[3:])] = (sum(values) - idle, sum(values))
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


def numa_balancing(root: Root) -> bool | None:
    value = root.read_int("proc/sys/kernel/numa_balancing")
    return None if value is None else value != 0


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
        text = root.read(f"{base}/{name}")
        if text is not None:
            return text.strip() or None
    return None
