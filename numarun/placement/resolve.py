"""Node and CPU specs checked against the machine, and the memory nodes of a policy.

Each function takes *where* the spec came from (the option as typed, ``--membind``, or a
spec's ``file:line: process[0].nodes``) and refuses through :mod:`numarun.refusals`, so a
mistake reads the same from every front end. Explicit options are checked against the
cpuset's limit (:attr:`Bounds.cpus`); what they resolve to may widen the inherited affinity.
"""

from __future__ import annotations

from numarun import refusals
from numarun.nodespec import resolve as resolve_spec
from numarun.placement import DEVICE_ENV, DEVICE_NODE_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from numarun import sysfs
    from numarun.nodespec import Spec
    from numarun.placement.bounds import Bounds
    from numarun.topology import Device, Topology

#: The words a memory-node setting may be instead of a node spec.
MEMORY_WORDS = ("local", "all", "local+cpuless")


def node_cpus(topology: Topology, node: int, limit: frozenset[int]) -> frozenset[int]:
    """The online CPUs of ``node`` within ``limit``."""
    return topology.nodes[node].cpus & limit


def nodes_with_cpus(topology: Topology, limit: frozenset[int]) -> list[int]:
    return [n for n in topology.nodes if topology.nodes[n].cpus & limit]


def memory_nodes(topology: Topology, bounds: Bounds) -> list[int]:
    """The nodes with memory this process may place pages on."""
    return [n for n in topology.nodes if topology.nodes[n].has_memory and n in bounds.mems]


def cpu_nodes(
    spec: Spec, where: str, topology: Topology, bounds: Bounds, limit: frozenset[int]
) -> tuple[list[int], frozenset[int]]:
    """The nodes a CPU-node spec names and their CPUs within ``limit``, checked.

    ``limit`` is :attr:`Bounds.cpus` for an explicit option (it may widen the affinity) and
    :attr:`Bounds.inherited` for numarun's own choices (a job's ``nodes``).
    """
    usable = frozenset(nodes_with_cpus(topology, limit))
    universe = frozenset(nodes_with_cpus(topology, topology.online_cpus()))
    nodes = resolve_spec(
        spec,
        existing=frozenset(topology.nodes),
        allowed=universe if bounds.whole_machine else usable,
        option=where,
        kind="node",
    )
    if bounds.whole_machine and (spec.everything or spec.invert):
        nodes &= usable  # what the kernel keeps of the whole machine
    if not (spec.everything or spec.invert):
        for node in sorted(nodes - usable):
            raise _unusable_cpu_node(topology, bounds, node, where, limit)
    if not nodes:
        raise refusals.no_cpus(f"{where} {spec.text}", limit)
    cpus = frozenset().union(*(node_cpus(topology, n, limit) for n in nodes))
    return sorted(nodes), cpus


def _unusable_cpu_node(
    topology: Topology, bounds: Bounds, node: int, where: str, limit: frozenset[int]
) -> Exception:
    listed = topology.nodes[node].cpus
    with_cpus = nodes_with_cpus(topology, limit)
    if not listed:
        return refusals.cpuless(where, node, with_cpus)
    online = frozenset(c for c in listed if c in topology.cpus and topology.cpus[c].online)
    if not online:
        return refusals.node_offline(where, node, listed, with_cpus)
    return refusals.node_cpus_outside(where, node, online, with_cpus, bounds.source_of(online))


def cpus(
    spec: Spec, where: str, topology: Topology, bounds: Bounds, *, keep_affinity: bool = False
) -> frozenset[int]:
    """The CPUs a CPU spec names, checked: they exist, are online, and the cpuset allows them.

    ``keep_affinity`` is numactl's ``-C``/``--physcpubind`` without ``-a``: libnuma checks
    those CPUs (and counts ``all``, ``!`` and ``+``) against the affinity the process
    inherited, not the cpuset, so ``taskset -c 0 numactl -C 1`` is refused, and numactl's own
    test (bind_range) expects that.
    """
    limit = bounds.inherited if keep_affinity and not bounds.whole_machine else bounds.cpus
    universe = topology.online_cpus() if bounds.whole_machine else limit
    named = resolve_spec(
        spec, existing=frozenset(topology.cpus), allowed=universe, option=where, kind="CPU"
    )
    if bounds.whole_machine and (spec.everything or spec.invert):
        named &= bounds.cpus  # what the kernel keeps of the whole machine
    if not (spec.everything or spec.invert):
        offline = sorted(c for c in named if not topology.cpus[c].online)
        if offline:
            raise refusals.cpu_offline(where, offline, limit)
        beyond_cpuset = sorted(named - bounds.cpus)
        if beyond_cpuset:
            raise refusals.cpus_outside(where, beyond_cpuset, bounds.cpus, bounds.cpuset)
        beyond_affinity = sorted(named - limit)
        if beyond_affinity:
            raise refusals.cpus_outside_affinity(where, beyond_affinity, limit, bounds.affinity)
    if not named:
        raise refusals.no_cpus(f"{where} {spec.text}", limit)
    return named


def named_memory_nodes(
    spec: Spec, where: str, topology: Topology, bounds: Bounds
) -> frozenset[int]:
    """The memory nodes a node spec names, checked: they exist, have memory, are allowed.

    ``all`` and ``!LIST`` leave memory-less nodes out instead of refusing them: the user did
    not name them.
    """
    with_memory = frozenset(n for n in topology.nodes if topology.nodes[n].has_memory)
    universe = frozenset(topology.nodes) if bounds.whole_machine else bounds.mems
    named = resolve_spec(
        spec, existing=frozenset(topology.nodes), allowed=universe, option=where, kind="node"
    )
    if spec.everything or spec.invert:
        named &= with_memory & bounds.mems
    else:
        memless = sorted(named - with_memory)
        if memless:
            raise refusals.memoryless(where, memless, memory_nodes(topology, bounds))
        outside = sorted(named - bounds.mems)
        if outside:
            raise refusals.memory_outside(
                where, outside, memory_nodes(topology, bounds), bounds.cpuset
            )
    if not named:
        raise refusals.no_memory_allowed(f"{where} {spec.text}", bounds.cpuset)
    return named


def policy_nodes(
    topology: Topology,
    bounds: Bounds,
    *,
    mode: str,
    word: str | None,
    home: int,
    worker_nodes: Sequence[int],
    where: str,
    warn: Callable[[str], None],
) -> list[int]:
    """The memory nodes of a worker's policy from a memory word (one rule for every front end).

    ``local`` is the worker's own nodes that have memory, or the nearest node with memory
    when they have none (memory-less CPU nodes); ``all`` every allowed node with memory;
    ``local+cpuless`` adds the CPU-less memory nodes (CXL, HBM) of the worker's socket to
    ``local`` (:func:`paired_cpuless`). None
    means ``all`` for the interleave modes and ``local`` otherwise. ``preferred`` keeps the
    node nearest to ``home`` of a local set.
    """
    if word is None:
        word = "all" if mode in ("interleave", "weighted-interleave") else "local"
    mems = memory_nodes(topology, bounds)
    if not mems:
        raise refusals.no_memory_allowed(where, bounds.cpuset)
    if word == "all":
        if mode == "preferred" and len(mems) > 1:
            raise refusals.preferred_several(where, mems)
        return mems
    nodes = [n for n in worker_nodes if n in mems]
    if not nodes:
        nearest = topology.nearest(home, mems)[0]
        warn(
            f"node {home} has no usable memory; memory goes to the nearest node with "
            f"memory, {nearest}"
        )
        nodes = [nearest]
    if mode == "preferred":
        return [topology.nearest(home, nodes)[0]]
    if word == "local+cpuless":
        cpuless = [n for n in mems if not topology.nodes[n].cpus]
        paired = paired_cpuless(topology, cpuless, home=home, worker_nodes=nodes)
        if paired:
            nodes.extend(paired)
        elif cpuless:
            warn(
                f"local+cpuless: no CPU-less memory node hangs off node "
                f"{home} (by HMAT); using local"
            )
        else:
            warn("local+cpuless: no CPU-less memory node is allowed; using local")
    return sorted(nodes)


def paired_cpuless(
    topology: Topology, cpuless: Sequence[int], *, home: int, worker_nodes: Sequence[int]
) -> list[int]:
    """The CPU-less memory nodes that belong to a worker's socket, never another socket's.

    HMAT names each node's best initiators: a CXL or HBM node belongs to the worker when
    one of its initiators is one of the worker's nodes. Where no CPU-less node has HMAT
    initiators (most clouds), the nodes nearest to ``home`` by SLIT distance are taken.
    """
    with_hmat = {
        n: access.initiators
        for n in cpuless
        if (access := topology.nodes[n].access) is not None and access.initiators
    }
    if with_hmat:
        mine = set(worker_nodes) | {home}
        return sorted(n for n, initiators in with_hmat.items() if initiators & mine)
    if not cpuless:
        return []
    nearest = min(topology.distance(home, n) for n in cpuless)
    return [n for n in sorted(cpuless) if topology.distance(home, n) == nearest]


def nodes_of(topology: Topology, cpu_ids: Iterable[int]) -> list[int]:
    return sorted({n for c in cpu_ids if (n := topology.node_of(c)) is not None})


# --- nodes named by a device (netdev:eth0, pci:BDF, block:NAME, file:PATH, ip:ADDR, gpu:N) ---


def device_env(device: Device) -> dict[str, str]:
    """``NUMARUN_DEVICE=gpu 0 (0000:41:00.0)``, ``NUMARUN_DEVICE_NODE=1``; none when the
    device's node is unknown (there is then no node to compare its memory with)."""
    if device.node is None:
        return {}
    return {DEVICE_ENV: device.label(), DEVICE_NODE_ENV: str(device.node)}


def visible_devices(topology: Topology, gpu: Device) -> dict[str, str]:
    """The variable that shows a worker (or rank) its GPU alone: CUDA's for NVIDIA, ROCm's
    for AMD.

    The value is the GPU's place among its vendor's GPUs in PCI order, which is what CUDA
    counts with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (set too: CUDA's default order is fastest
    first) and what ROCm counts. Other vendors' devices get both variables.
    """
    same = sorted(d.pci for d in topology.gpus() if d.vendor == gpu.vendor)
    index = str(same.index(gpu.pci))
    if gpu.vendor == _NVIDIA:
        return {"CUDA_VISIBLE_DEVICES": index, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    if gpu.vendor == _AMD:
        return {"ROCR_VISIBLE_DEVICES": index}
    return {"CUDA_VISIBLE_DEVICES": index, "ROCR_VISIBLE_DEVICES": index}


_NVIDIA, _AMD = "0x10de", "0x1002"


def device_spec(
    spec: Spec,
    where: str,
    topology: Topology,
    limit: frozenset[int],
    *,
    reasons: list[str],
    warn: Callable[[str], None],
    found: list[Device] | None = None,
) -> Spec:
    """``spec`` with a device name replaced by the device's node; plain specs unchanged.

    The reason (which device gave which node) goes to ``reasons``, the device to ``found``;
    a device whose node is unknown or has no CPUs is placed on the nearest node with CPUs in
    ``limit``, with one warning.
    """
    if spec.device is None:
        return spec
    from numarun.nodespec import Spec as NodeSpec

    device = find_device(topology, spec.device, where)
    if found is not None:
        found.append(device)
    node, warning = device_node(topology, device, f"{where} {spec.text}", limit)
    if warning is not None:
        warn(warning)
    reasons.append(f"node {node}: {where} {spec.text} is {device.label()}, {_on(device)}")
    return NodeSpec(
        spec.text, everything=False, invert=False, relative=False, items=frozenset({node})
    )


def _on(device: Device) -> str:
    return f"on node {device.node}" if device.node is not None else "whose node is unknown"


def device_node(
    topology: Topology, device: Device, where: str, limit: frozenset[int]
) -> tuple[int, str | None]:
    """The node to run near ``device``, and a warning when it is not the device's own.

    A device on a node with CPUs gives that node, even when the cpuset forbids its CPUs:
    the usual refusal then says so. Unknown (firmware gave -1) or CPU-less nodes give the
    nearest node with CPUs this process may use.
    """
    if device.node is not None and topology.has_cpus(device.node):
        return device.node, None
    usable = nodes_with_cpus(topology, limit)
    if not usable:
        raise refusals.no_cpus(where, limit)
    if device.node is None:
        node = usable[0]
        why = f"the kernel does not know the NUMA node of {device.label()} (numa_node is -1)"
        return node, f"{where}: {why}; using node {node}, the first with usable CPUs"
    node = topology.nearest(device.node, usable)[0]
    return node, (
        f"{where}: {device.label()} is on node {device.node}, which has no CPUs; "
        f"using the nearest node with CPUs, {node}"
    )


def find_device(topology: Topology, text: str, where: str) -> Device:
    """The device ``netdev:eth0``, ``pci:3b:00.0``, ``block:vda``, ``file:/x``, ``ip:A``,
    ``gpu:N`` names; refused (exit 4) with the valid names when there is none."""
    kind, _, name = text.partition(":")
    devices = topology.devices
    via = None  # file: and ip: name a disk or an interface, which then names the device
    if kind == "file":
        name, kind = _disk_of_file(topology, name, where), "block"
        via = f"{text[5:]} is on {name}"
    elif kind == "ip":
        name, kind = _interface_of_address(topology, name, where), "netdev"
        via = f"{text[3:]} is on {name}"
    found: Device | None
    if kind == "gpu":
        found = next((d for d in devices if d.gpu == int(name)), None)
        valid = [f"gpu:{d.gpu}" for d in topology.gpus()]
    elif kind == "pci":
        address = name.lower() if name.count(":") == 2 else f"0000:{name.lower()}"
        found = next((d for d in devices if d.pci == address), None)
        valid = [f"pci:{d.pci}" for d in devices]
    else:
        own = "net" if kind == "netdev" else "block"
        found = next((d for d in devices if d.kind == own and name in d.names), None)
        valid = [f"{kind}:{n}" for d in devices if d.kind == own for n in d.names]
    if found is None:
        why = f"{via}, which has no PCI device" if via else None
        raise refusals.unknown_device(where, text, valid, why=why)
    return found


def _disk_of_file(topology: Topology, path: str, where: str) -> str:
    import os

    from numarun import sysfs

    try:
        dev = os.stat(path).st_dev
    except OSError as err:
        raise refusals.unknown_device(where, f"file:{path}", [], why=err.strerror) from None
    disk = sysfs.block_device_of(_live_root(topology), os.major(dev), os.minor(dev))
    if disk is None:
        raise refusals.unknown_device(
            where, f"file:{path}", [], why=f"its filesystem is on no block device ({dev:#x})"
        )
    return disk


def _interface_of_address(topology: Topology, address: str, where: str) -> str:
    from numarun import sysfs

    name = sysfs.interface_of_address(_live_root(topology), address)
    if name is None:
        raise refusals.unknown_device(
            where, f"ip:{address}", [], why="no interface here holds that local address"
        )
    return name


def _live_root(topology: Topology) -> sysfs.Root:
    """The sysfs root the topology was read from (``/`` for a saved snapshot)."""
    import os

    from numarun import sysfs

    return sysfs.Root(topology.source if os.path.isdir(topology.source) else "/")
