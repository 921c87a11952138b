"""The machine's NUMA topology: one model that every view and every plan is made from.

:func:`read_topology` reads sysfs and procfs under a root (``/`` on a live machine, an
unpacked snapshot of another one); :func:`load_topology` also takes a saved snapshot
(JSON written by :func:`save_snapshot`). Everything else in numarun (drawings, JSON,
``--hardware``, plans, launch checks) works from the resulting :class:`Topology`.

Truths chosen where tools disagree (each tested against ``../shared/topologies``):

* **Offline CPUs are kept and marked** ``online = False``. hwloc drops them; numactl and
  lscpu list them. A node's cpulist may still name offline CPUs; they never count as
  usable.
* **Memory-less nodes are kept** (``has_memory = False``); hwloc drops them, numactl shows
  them with size 0. **CPU-less nodes have no CPUs**, as numactl and lscpu say; hwloc's habit
  of lending them their package's CPUs as locality is not followed.
* **A physical core is its set of SMT siblings** (split by ``core_id`` where the kernel
  calls two integer cores siblings, as on AMD Bulldozer), never ``core_id`` alone, which repeats
  across packages. Cores are numbered by numarun in order of their lowest CPU.
* **Allowed** is what ``/proc/PID/status`` and the process's cpuset cgroup (v2
  ``cpuset.*.effective``, or the v1 cpuset) both allow; the whole machine is always reported.
* A machine whose sysfs has no node directory at all is one node, 0, holding every CPU and
  the memory of ``/proc/meminfo`` (what numactl reports on non-NUMA kernels).

The classes are :class:`numarun.value.Value` records rather than dataclasses on purpose:
importing :mod:`dataclasses` costs ~15 ms here, a large share of ``numarun topology``'s
run time. They are also the JSON schema: :meth:`Topology.to_dict` and :func:`from_dict`
(the snapshot reader and its validation) are derived from their annotations.
"""

from __future__ import annotations

import os

from numarun import sysfs
from numarun.errors import TopologyError
from numarun.value import DecodeError, Layout, Value, decode, encode, layout, same_as

# typing and collections.abc are needed only by the type checker; importing them costs
# several ms on every run of `numarun topology`, so they stay out of the runtime path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any, ClassVar

    CpusetFound = tuple[frozenset[int] | None, frozenset[int] | None, str]
    _Mounts = list[tuple[str, str, str, list[str]]]

SNAPSHOT_FORMAT = "numarun-topology"
SNAPSHOT_VERSION = 1

# The record classes below are the one definition of the model, of its JSON (``--json``
# and snapshots: :func:`numarun.value.encode`) and of a snapshot's validation
# (:func:`numarun.value.decode`). Defaults are what a snapshot may leave out; a field
# added later is one annotated line (with a default, so older snapshots still load).
# Keys computed from the whole topology are in each class's ``_json`` layout.


class Cpu(Value):
    """One logical CPU (a hardware thread, hwloc's PU)."""

    id: int
    online: bool = True
    node: int | None = None  # None: no node lists it (seen with offline nodes)
    package: int | None = None  # physical_package_id; None where the kernel gives no topology
    die: int | None = None
    cluster: int | None = None
    core_id: int | None = None  # sysfs core_id: NOT unique across packages
    core: int | None = None  # index into Topology.cores; None for offline CPUs
    siblings: frozenset[int] = frozenset()  # SMT siblings, itself included

    _json: ClassVar[Layout] = layout(
        "id online allowed", allowed=lambda cpu, topo: cpu.id in topo.allowed.cpus
    )


class Core(Value):
    """A physical core: the set of SMT siblings that share it."""

    index: int
    cpus: frozenset[int]
    package: int | None = None
    node: int | None = None


class Access(Value):
    """ACPI HMAT's figures for a memory node, from its best initiators (``nodeN/access0``).

    ``initiators`` are the nodes whose CPUs (or devices) reach it best; for a CXL or HBM
    node without CPUs, the socket it hangs off. Figures the firmware does not give are None.
    """

    initiators: frozenset[int] = frozenset()
    read_bandwidth_mbps: int | None = None
    write_bandwidth_mbps: int | None = None
    read_latency_ns: int | None = None
    write_latency_ns: int | None = None


class Node(Value):
    """A NUMA node: CPUs, memory, distances to every other node, its tier and HMAT figures."""

    id: int
    cpus: frozenset[int]  # every CPU the node lists, online or not
    memory_total_kb: int = 0
    memory_free_kb: int = 0
    distances: dict[int, int] = {}  # noqa: RUF012 - node id -> distance (10 = local)
    tier: int | None = None  # memory_tierN holding it (lower is faster); None: no tiering
    access: Access | None = None  # None where the firmware has no HMAT (most clouds)

    _json: ClassVar[Layout] = layout(
        "id cpus has_cpus has_memory memory_total_kb memory_free_kb allowed_cpus allowed_memory",
        has_cpus=lambda node, topo: topo.has_cpus(node.id),
        has_memory=lambda node, _topo: node.has_memory,
        allowed_cpus=lambda node, topo: topo.usable_cpus(node.id),
        allowed_memory=lambda node, topo: node.id in topo.allowed.mems,
    )

    @property
    def has_memory(self) -> bool:
        return self.memory_total_kb > 0


class Allowed(Value):
    """What this process may use, and where each limit came from.

    ``cpus``/``mems`` are what it may use now: its inherited affinity (``taskset``, a
    launcher) within its cgroup cpuset. ``cpuset_cpus``/``cpuset_mems`` are what the
    cpuset alone allows (the whole machine when none applies): the limit up to which
    explicit CPU and node options may widen the affinity.
    """

    cpus: frozenset[int]
    mems: frozenset[int]
    source: str = "snapshot"  # e.g. "/proc/self/status and cgroup v2 /sys/fs/cgroup/job1"
    cpuset_cpus: frozenset[int] = same_as("cpus")
    cpuset_mems: frozenset[int] = same_as("mems")
    cpuset_source: str = same_as("source")  # "cgroup v2 /sys/fs/cgroup/job1", "whole machine"


class Identity(Value):
    """Who the machine is, and kernel settings that matter for placement."""

    sys_vendor: str | None = None  # DMI, e.g. "Amazon EC2"
    product_name: str | None = None  # DMI, e.g. "r5.24xlarge"
    numa_balancing: bool | None = None  # /proc/sys/kernel/numa_balancing
    numa_balancing_mode: int | None = None  # its number: 0 off, 1 normal, 2 tiering, 3 both
    kernel: str | None = None  # release, e.g. "6.1.0-18-amd64"


class WeightedInterleave(Value):
    """The kernel's weighted-interleave weights (Linux 6.9+), global to the machine.

    ``auto`` is True while the kernel derives them from HMAT itself (the ``auto`` file of
    Linux 6.16+), None where the kernel has no such file.
    """

    auto: bool | None = None
    weights: dict[int, int] = {}  # noqa: RUF012 - node id -> weight (1-255)


class Device(Value):
    """A PCI function that placement can be near: a GPU, a NIC, a disk controller.

    ``node`` is the node the kernel attaches it to (``numa_node``, or the one node its
    ``local_cpulist`` falls in); None when the firmware does not say. ``gpu`` is the GPU's
    index: NVIDIA's order (``/dev/nvidiaN``) where the driver is loaded, PCI order otherwise.
    """

    pci: str  # "0000:41:00.0"
    class_: str | None = None  # JSON "class": "0x030000", as sysfs gives it
    kind: str = "other"  # "gpu", "net", "block" or "other"
    vendor: str | None = None  # "0x10de"
    device: str | None = None  # "0x1db4"
    names: tuple[str, ...] = ()  # what the OS calls it: "eth0", "nvme0n1"
    node: int | None = None
    gpu: int | None = None

    _json: ClassVar[Layout] = layout(omit_default="gpu")

    def label(self) -> str:
        """``gpu 0 (0000:41:00.0)``, ``eth0 (0000:00:03.0)``: the device as people name it."""
        if self.gpu is not None:
            return f"gpu {self.gpu} ({self.pci})"
        return f"{', '.join(self.names)} ({self.pci})" if self.names else f"pci {self.pci}"


class Topology(Value):
    """The whole machine, with what this process is allowed to use marked."""

    source: str = "snapshot"  # the sysfs root or snapshot it was read from
    identity: Identity = Identity()
    allowed: Allowed
    nodes: dict[int, Node]  # by id, ascending; ids may be sparse (0, 8, 250-255)
    cpus: dict[int, Cpu]  # by id, ascending
    cores: tuple[Core, ...]  # physical cores of online CPUs, by lowest CPU
    notes: tuple[str, ...] = ()  # files read as hwloc reads them (empty, unreadable)
    # None where the kernel has no weighted interleave (before 6.9)
    weighted_interleave: WeightedInterleave | None = None
    demotion_enabled: bool | None = None  # reclaim moves pages to a lower tier; None: unknown
    devices: tuple[Device, ...] = ()  # PCI functions but bridges, by address

    _json: ClassVar[Layout] = layout(
        "format version",
        format=lambda _topo, _root: SNAPSHOT_FORMAT,
        version=lambda _topo, _root: SNAPSHOT_VERSION,
        omit_default="notes",
    )

    def gpus(self) -> list[Device]:
        """The GPUs and accelerators, by index."""
        return sorted((d for d in self.devices if d.gpu is not None), key=lambda d: d.gpu or 0)

    def online_cpus(self) -> frozenset[int]:
        return frozenset(c.id for c in self.cpus.values() if c.online)

    def offline_cpus(self) -> frozenset[int]:
        return frozenset(c.id for c in self.cpus.values() if not c.online)

    def usable_cpus(self, node: int | None = None) -> frozenset[int]:
        """Online CPUs this process may run on, of one node or of the whole machine."""
        pool = self.nodes[node].cpus if node is not None else self.cpus.keys()
        return frozenset(
            c for c in pool if c in self.cpus and self.cpus[c].online and c in self.allowed.cpus
        )

    def node_of(self, cpu: int) -> int | None:
        found = self.cpus.get(cpu)
        return found.node if found is not None else None

    def has_cpus(self, node: int) -> bool:
        """True when the node has at least one online CPU."""
        return any(self.cpus[c].online for c in self.nodes[node].cpus if c in self.cpus)

    def nodes_with_cpus(self, *, allowed_only: bool = True) -> list[int]:
        """Nodes with online CPUs (that this process may use, unless ``allowed_only=False``)."""
        if allowed_only:
            return [n for n in self.nodes if self.usable_cpus(n)]
        return [n for n in self.nodes if self.has_cpus(n)]

    def nodes_with_memory(self, *, allowed_only: bool = True) -> list[int]:
        return [
            n.id
            for n in self.nodes.values()
            if n.has_memory and (not allowed_only or n.id in self.allowed.mems)
        ]

    def distance(self, a: int, b: int) -> int:
        """The kernel's distance from node a to node b (10 local; 20 when unknown)."""
        found = self.nodes[a].distances.get(b)
        if found is not None:
            return found
        return 10 if a == b else 20

    def nearest(self, node: int, among: Iterable[int]) -> list[int]:
        """``among`` ordered by distance from ``node``, nearest first, ties by id."""
        return sorted(among, key=lambda other: (self.distance(node, other), other))

    def cores_of(self, cpus: Iterable[int]) -> dict[int, frozenset[int]]:
        """The given CPUs grouped by physical core index (offline CPUs left out)."""
        out: dict[int, set[int]] = {}
        for cpu in cpus:
            core = self.cpus[cpu].core if cpu in self.cpus else None
            if core is not None:
                out.setdefault(core, set()).add(cpu)
        return {k: frozenset(v) for k, v in sorted(out.items())}

    def to_dict(self) -> dict[str, Any]:
        """The whole model as JSON-ready data (the ``--json`` and snapshot format)."""
        return encode(self)


# --- building the model -----------------------------------------------------------------


def read_topology(
    root: str | os.PathLike[str] = "/", *, pid: int | str = "self", devices: bool = True
) -> Topology:
    """Read the machine under ``root``, with the allowed sets of process ``pid``.

    ``devices=False`` leaves the PCI devices out: a few files per device, which the prefix
    launcher does not pay for unless a node is named by a device.
    """
    fs = sysfs.Root(root)
    cpu_ids = sysfs.cpu_ids(fs)
    if not cpu_ids:
        raise TopologyError(
            f"no CPUs under {fs.join(sysfs.CPU_DIR)}",
            "point --root at a directory holding sys/ and proc/ (a sysfs snapshot)",
        )
    online = _online_cpus(fs, cpu_ids)
    nodes = _read_nodes(fs, cpu_ids)
    node_of = {cpu: n.id for n in nodes.values() for cpu in sorted(n.cpus)}
    for cpu in cpu_ids:
        if cpu not in node_of:  # a CPU no node lists: fall back to the cpuN/nodeM link
            links = sysfs.cpu_node_links(fs, cpu)
            if links and links[0] in nodes:
                node_of[cpu] = links[0]
    cpus, cores = _read_cpus(fs, cpu_ids, online, node_of)
    allowed = _read_allowed(fs, pid, frozenset(cpus), frozenset(nodes))
    found = read_devices(fs, nodes, cpu_ids) if devices else ()
    identity = Identity(
        sys_vendor=_dmi(fs, "sys_vendor"),
        product_name=_dmi(fs, "product_name"),
        numa_balancing=sysfs.numa_balancing(fs),
        numa_balancing_mode=sysfs.numa_balancing_mode(fs),
        kernel=sysfs.kernel_release(fs),
    )
    weighted = (
        WeightedInterleave(auto=sysfs.interleave_auto(fs), weights=sysfs.interleave_weights(fs))
        if sysfs.has_weighted_interleave(fs)
        else None
    )
    return Topology(
        nodes=_with_tiers(fs, nodes),
        cpus=cpus,
        cores=cores,
        allowed=allowed,
        identity=identity,
        source=fs.path,
        weighted_interleave=weighted,
        demotion_enabled=sysfs.demotion_enabled(fs),
        notes=fs.notes(),
        devices=found,
    )


def _with_tiers(fs: sysfs.Root, nodes: dict[int, Node]) -> dict[int, Node]:
    """The nodes with their memory tier and HMAT access figures, where the kernel has them."""
    ids = sorted(nodes)
    tier_of = {n: tier for tier, members in sysfs.memory_tiers(fs, ids).items() for n in members}
    out = {}
    for node in nodes.values():
        found = sysfs.node_access(fs, node.id, ids)
        access = None
        if found is not None:
            initiators, figures = found
            access = Access(
                initiators=initiators,
                read_bandwidth_mbps=figures["read_bandwidth"],
                write_bandwidth_mbps=figures["write_bandwidth"],
                read_latency_ns=figures["read_latency"],
                write_latency_ns=figures["write_latency"],
            )
        out[node.id] = node.replace(tier=tier_of.get(node.id), access=access)
    return out


def _online_cpus(fs: sysfs.Root, cpu_ids: list[int]) -> frozenset[int]:
    listed = sysfs.cpus_online(fs, cpu_ids)
    if listed is not None:
        return listed
    # Old kernels: no cpu/online; each hot-pluggable CPU has its own online flag, and a
    # CPU without one (cpu0, usually) is online. An offline CPU has no topology folder.
    out = set()
    for cpu in cpu_ids:
        flag = sysfs.cpu_online_flag(fs, cpu)
        if flag or (flag is None and sysfs.cpu_has_topology(fs, cpu)):
            out.add(cpu)
    return frozenset(out)


def _read_nodes(fs: sysfs.Root, cpu_ids: list[int]) -> dict[int, Node]:
    ids = sysfs.node_ids(fs)
    if not ids:
        mem = sysfs.proc_meminfo(fs)
        return {
            0: Node(
                id=0,
                cpus=frozenset(cpu_ids),
                memory_total_kb=mem.get("MemTotal", 0),
                memory_free_kb=mem.get("MemFree", 0),
                distances={0: 10},
            )
        }
    # nodeN/distance lists distances to the *online* nodes, in id order.
    ids_set = frozenset(ids)
    candidates = [
        sorted(sysfs.nodes_online(fs, ids) or ids),
        ids,
        sorted(sysfs.nodes_possible(fs) or ()),
    ]
    nodes: dict[int, Node] = {}
    for node in ids:
        mem = sysfs.node_meminfo(fs, node)
        row = sysfs.node_distances(fs, node) or []
        # The row has one entry per online node; edited or odd snapshots may instead
        # have one per node folder or per possible node. Take the first list that fits.
        targets = next((c for c in candidates if len(c) == len(row)), [])
        distances = {t: d for t, d in zip(targets, row, strict=False) if t in ids_set}
        nodes[node] = Node(
            id=node,
            # Some firmware lists CPUs that do not exist (POWER9: node 0 = 0-87 with 16
            # present); only CPUs the kernel has a folder for are real.
            cpus=sysfs.node_cpus(fs, node, cpu_ids) or frozenset(),
            memory_total_kb=mem.get("MemTotal", 0),
            memory_free_kb=mem.get("MemFree", 0),
            distances=distances,
        )
    return nodes


def _read_cpus(
    fs: sysfs.Root, cpu_ids: list[int], online: frozenset[int], node_of: Mapping[int, int]
) -> tuple[dict[int, Cpu], tuple[Core, ...]]:
    raw: dict[int, dict[str, Any]] = {}
    for cpu in cpu_ids:
        is_online = cpu in online
        siblings = sysfs.cpu_siblings(fs, cpu, cpu_ids) if is_online else None
        raw[cpu] = {
            "online": is_online,
            "package": sysfs.cpu_topology_int(fs, cpu, "physical_package_id"),
            "die": _real_id(sysfs.cpu_topology_int(fs, cpu, "die_id")),
            "cluster": _real_id(sysfs.cpu_topology_int(fs, cpu, "cluster_id")),
            "core_id": sysfs.cpu_topology_int(fs, cpu, "core_id"),
            # Siblings that are offline do not share the core today.
            "siblings": (siblings & online if siblings else frozenset({cpu}))
            if is_online
            else frozenset({cpu}),
        }
    # AMD family 15h (Bulldozer): the kernel calls a module's two integer cores SMT
    # siblings, though each has its own core_id and pipeline. Like hwloc, split such a
    # sibling set by core_id, so a core is one hardware core on every vendor.
    for r in raw.values():
        mine = r["core_id"]
        if mine is not None and len(r["siblings"]) > 1:
            r["siblings"] = frozenset(
                s for s in r["siblings"] if raw.get(s, {}).get("core_id", mine) == mine
            )
    # A physical core is identified by its sibling set; core_id repeats across packages.
    groups = sorted({r["siblings"] | {c} for c, r in raw.items() if r["online"]}, key=min)
    core_index = {cpu: i for i, group in enumerate(groups) for cpu in group}
    cores = tuple(
        Core(
            index=i,
            cpus=group,
            package=raw[min(group)]["package"],
            node=node_of.get(min(group)),
        )
        for i, group in enumerate(groups)
    )
    cpus = {
        cpu: Cpu(
            id=cpu,
            node=node_of.get(cpu),
            core=core_index.get(cpu) if r["online"] else None,
            **r,
        )
        for cpu, r in raw.items()
    }
    return cpus, cores


# PCI base classes (the class file's top byte): display controllers and processing
# accelerators are GPUs, as the issue and Slurm's gres count them; bridges are wiring.
_GPU_CLASSES = ("0x03", "0x12")
_NET_CLASS, _STORAGE_CLASS, _BRIDGE_CLASS = "0x02", "0x01", "0x06"
# The VGA of a server's management controller (ASPEED AST, Matrox G200 on Dell and HPE
# boards) is class 0x03 too, but no one computes on it: it is no GPU, and counting it would
# make gpu:0 the BMC on nearly every GPU server.
_BMC_DISPLAY_VENDORS = frozenset({"0x1a03", "0x102b"})


def read_devices(
    fs: sysfs.Root, nodes: Mapping[int, Node], cpu_ids: list[int]
) -> tuple[Device, ...]:
    """The PCI functions but bridges, with their node, kind and OS names."""
    names: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for kind, found in (("net", sysfs.net_interfaces(fs)), ("block", sysfs.block_devices(fs))):
        for name, address in found.items():
            names.setdefault(address, []).append(name)
            kinds.setdefault(address, kind)
    minors = sysfs.nvidia_minors(fs)
    devices = []
    for address in sysfs.pci_addresses(fs):
        pci_class = sysfs.pci_class(fs, address)
        base = (pci_class or "")[:4]
        if base == _BRIDGE_CLASS:
            continue
        vendor = sysfs.pci_vendor(fs, address)
        kind = kinds.get(address) or _kind_of(base, vendor)
        devices.append(
            Device(
                pci=address,
                class_=pci_class,
                kind=kind,
                vendor=vendor,
                device=sysfs.pci_device(fs, address),
                names=tuple(names.get(address, ())),
                node=_device_node(fs, address, nodes, cpu_ids),
            )
        )
    gpus = [d for d in devices if d.kind == "gpu"]
    order = sorted(gpus, key=lambda d: (d.pci not in minors, minors.get(d.pci, 0), d.pci))
    index = {d.pci: i for i, d in enumerate(order)}
    return tuple(d.replace(gpu=index[d.pci]) if d.pci in index else d for d in devices)


def _kind_of(base: str, vendor: str | None) -> str:
    if base in _GPU_CLASSES and vendor not in _BMC_DISPLAY_VENDORS:
        return "gpu"
    return {_NET_CLASS: "net", _STORAGE_CLASS: "block"}.get(base, "other")


def _device_node(
    fs: sysfs.Root, address: str, nodes: Mapping[int, Node], cpu_ids: list[int]
) -> int | None:
    """``numa_node`` when it names a node; else the one node the device's local CPUs are in."""
    node = sysfs.pci_numa_node(fs, address)
    if node is not None and node in nodes:
        return node
    local = sysfs.pci_local_cpus(fs, address, cpu_ids)
    if not local:
        return None
    # Like hwloc: local CPUs within one node place the device there; all of them (what
    # kernels say when they do not know) or several nodes' place it nowhere in particular.
    touched = [n.id for n in nodes.values() if n.cpus & local]
    return touched[0] if len(touched) == 1 else None


def _real_id(value: int | None) -> int | None:
    """Kernels print -1 (or it as u16/u32) for a level the CPU does not have."""
    return None if value is None or value in (-1, 0xFFFF, 0xFFFFFFFF) else value


def _read_allowed(
    fs: sysfs.Root, pid: int | str, all_cpus: frozenset[int], all_nodes: frozenset[int]
) -> Allowed:
    cpus, mems, sources = all_cpus, all_nodes, []
    status = sysfs.proc_status(fs, pid)
    if "Cpus_allowed_list" in status:
        try:
            # Only CPUs and nodes that exist are kept, so a huge list costs nothing.
            cpus = sysfs.within_list(status["Cpus_allowed_list"], sorted(all_cpus))[0]
            mems = sysfs.within_list(status.get("Mems_allowed_list", ""), sorted(all_nodes))[0]
        except ValueError as err:
            raise TopologyError(f"/proc/{pid}/status under {fs.path}: {err}") from None
        sources.append(f"/proc/{pid}/status")
    found = _cgroup_cpuset(fs, pid)
    cpuset_cpus, cpuset_mems, cpuset_source = all_cpus, all_nodes, "whole machine"
    if found is not None:
        cg_cpus, cg_mems, cpuset_source = found
        if cg_cpus is not None:
            cpus, cpuset_cpus = cpus & cg_cpus, all_cpus & cg_cpus
        if cg_mems is not None:
            mems, cpuset_mems = mems & cg_mems, all_nodes & cg_mems
        sources.append(cpuset_source)
    return Allowed(
        cpus=cpus,
        mems=mems,
        source=" and ".join(sources) or "whole machine",
        cpuset_cpus=cpuset_cpus,
        cpuset_mems=cpuset_mems,
        cpuset_source=cpuset_source,
    )


def read_cgroup_cpuset(
    root: str | os.PathLike[str] = "/", pid: int | str = "self"
) -> tuple[frozenset[int] | None, frozenset[int] | None, str] | None:
    """The CPUs and memory nodes the process's cpuset cgroup allows, and which cgroup.

    Unlike :attr:`Topology.allowed`, this leaves out the process's own CPU affinity: it is
    what a launcher's binding (``mpirun --bind-to``, ``taskset``) is measured against.
    None when no cpuset cgroup applies; either set is None when the cgroup does not say.
    """
    return _cgroup_cpuset(sysfs.Root(root), pid)


def _cgroup_cpuset(fs: sysfs.Root, pid: int | str) -> CpusetFound | None:
    """The cpuset cgroup's CPUs and nodes, from cgroup v2 or the v1 cpuset, wherever mounted."""
    mounts = sysfs.proc_mounts(fs)
    for hierarchy, controllers, path in sysfs.proc_cgroups(fs, pid):
        unified = hierarchy == "0" and not controllers
        if unified or "cpuset" in controllers:
            found = _cpuset_at(fs, mounts, path, v1=not unified, v2=unified)
            if found is not None:
                return found
    # Old kernels, and snapshots without a cgroup file: /proc/PID/cpuset names the path,
    # which may lie under a cgroup2 mount (Slurm: /cgroup/unified) as well as a v1 cpuset
    # mount. Like hwloc, take the first mount of either kind that has it.
    named = sysfs.proc_cpuset_path(fs, pid)
    return _cpuset_at(fs, mounts, named, v1=True, v2=True) if named is not None else None


def _cpuset_at(
    fs: sysfs.Root, mounts: _Mounts, path: str, *, v1: bool, v2: bool
) -> CpusetFound | None:
    """The sets of cgroup ``path`` under the first mount (of the kinds asked) that has it."""
    for _dev, point, fstype, opts in mounts:
        base = _under(point, path)
        if fstype == "cgroup2" and v2:
            # The kernel's effective sets: the cgroup's own, within its ancestors'.
            names = ["cpuset.cpus.effective", "cpuset.mems.effective"]
            kind = "cgroup v2"
        elif (fstype == "cpuset" or (fstype == "cgroup" and "cpuset" in opts)) and v1:
            # v1 keeps the configured sets in cpuset.cpus/mems (or cpus/mems when mounted
            # as the old "cpuset" filesystem); read those first, as hwloc does. The kernel
            # intersects them with online CPUs, which the topology does anyway.
            names = ["cpuset.cpus", "cpuset.mems", "cpus", "mems"]
            names += ["cpuset.effective_cpus", "cpuset.effective_mems"]
            kind = "cpuset"
        else:
            continue
        for cpus_name, mems_name in zip(names[::2], names[1::2], strict=True):
            # No CPU folder bounds a cgroup's lists here: read them up to what Linux allows.
            cpus = fs.read_list(f"{base}/{cpus_name}", range(sysfs.MAX_CPUS))
            mems = fs.read_list(f"{base}/{mems_name}", range(sysfs.MAX_NODES))
            if cpus is not None or mems is not None:
                return cpus, mems, f"{kind} {_shown(point, path)}"
    return None


def _under(mount_point: str, path: str) -> str:
    return f"{mount_point.strip('/')}/{path.strip('/')}".strip("/")


def _shown(mount_point: str, path: str) -> str:
    return "/" + _under(mount_point, path)


def _dmi(fs: sysfs.Root, name: str) -> str | None:
    try:
        return sysfs.dmi(fs, name)
    except TopologyError:  # some DMI fields are root-only; identity is a nicety
        return None


# --- snapshots --------------------------------------------------------------------------


def save_snapshot(topology: Topology, path: str | os.PathLike[str]) -> None:
    """Write the topology as a JSON snapshot that :func:`load_topology` reads back."""
    from numarun import jsontext  # not json: it costs ~5 ms (re, enum) on the prefix's path

    with open(path, "w", encoding="utf-8") as f:
        f.write(jsontext.dumps(topology.to_dict()) + "\n")


def load_topology(path: str | os.PathLike[str] | None = None) -> Topology:
    """A topology from a sysfs root directory, a JSON snapshot, or the live machine (None)."""
    if path is None:
        return read_topology("/")
    if os.path.isdir(path):
        return read_topology(path)
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise TopologyError(
            f"topology {os.fspath(path)} does not exist",
            "give a snapshot saved with 'numarun topology --save FILE' or a sysfs root",
        ) from None
    except (OSError, ValueError) as err:
        raise TopologyError(f"cannot read topology snapshot {os.fspath(path)}: {err}") from None
    return from_dict(data, where=os.fspath(path))


def from_dict(data: object, *, where: str = "") -> Topology:
    """Rebuild a topology from :meth:`Topology.to_dict` output, validating it first.

    ``where`` (the file it came from) starts every message about it.
    """
    fix = "save one with 'numarun topology --save FILE'"
    where = where or "data"
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise TopologyError(
            f"{where} is not a numarun topology snapshot (format is {found!r}, "
            f"expected {SNAPSHOT_FORMAT!r})",
            fix,
        )
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > SNAPSHOT_VERSION:
        raise TopologyError(
            f"snapshot {where}: version {version!r} is not one this numarun reads "
            f"(1 to {SNAPSHOT_VERSION})",
            "save it again with this numarun, or update numarun",
        )
    try:
        topology: Topology = decode(Topology, data)
    except DecodeError as err:
        raise TopologyError(f"snapshot {where}: {err}", fix) from None
    problems = contradictions(topology)
    if problems:
        raise TopologyError(f"snapshot {where} contradicts itself: {'; '.join(problems)}", fix)
    return topology


def contradictions(topology: Topology) -> list[str]:
    """Where a topology disagrees with itself, one line per kind; empty when it does not.

    sysfs cannot disagree with itself this way; a hand-edited or corrupted snapshot can,
    and a plan made from it would place workers on CPUs of nodes that are not there.
    """
    nodes, cpus = topology.nodes, topology.cpus
    out: list[str] = []
    on_missing = {c.id: c.node for c in cpus.values() if c.node is not None and c.node not in nodes}
    if on_missing:
        out.append(
            f"CPUs {_ids(on_missing)} are on nodes {_ids(set(on_missing.values()))}, "
            "which are not in nodes"
        )
    for node in nodes.values():
        unknown = node.cpus - cpus.keys()
        if unknown:
            out.append(f"node {node.id} lists CPUs {_ids(unknown)}, which are not in cpus")
        elsewhere = {c for c in node.cpus & cpus.keys() if cpus[c].node not in (None, node.id)}
        if elsewhere:
            out.append(f"node {node.id} lists CPUs {_ids(elsewhere)}, which are on other nodes")
        far = set(node.distances) - nodes.keys()
        if far:
            out.append(f"node {node.id} has distances to nodes {_ids(far)}, not in nodes")
    unlisted = {c.id for c in cpus.values() if c.node in nodes and c.id not in nodes[c.node].cpus}
    if unlisted:
        out.append(f"CPUs {_ids(unlisted)} are on nodes that do not list them")
    for index, core in enumerate(topology.cores):
        if core.index != index:
            out.append(f"cores[{index}] has index {core.index}; cores are listed by index from 0")
        elif not core.cpus <= cpus.keys():
            out.append(f"core {index} lists CPUs {_ids(core.cpus - cpus.keys())}, not in cpus")
    bad_core = {
        c.id for c in cpus.values() if c.core is not None and not 0 <= c.core < len(topology.cores)
    }
    if bad_core:
        out.append(f"CPUs {_ids(bad_core)} are on cores that are not in cores")
    allowed = topology.allowed
    for kind, ids, have in (("CPUs", allowed.cpus, cpus), ("nodes", allowed.mems, nodes)):
        extra = ids - have.keys()
        if extra:
            out.append(f"the allowed {kind} {_ids(extra)} are not in it")
    return out


def _ids(ids: Iterable[int]) -> str:
    from numarun import cpulist

    return cpulist.format_list(ids)
