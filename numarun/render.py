"""Views of a :class:`~numarun.topology.Topology` for people and for numactl's parsers.

Every view is rendered from the one model, like hwloc's text, XML and drawing views:

* :func:`render_drawing`: a box per node, CPUs grouped by physical core so SMT siblings
  sit together, memory, the distance matrix, the machine's identity and warnings;
* :func:`render_hardware`: ``numactl --hardware``'s exact layout, for scripts;
* :func:`warnings`: the lines that flag what a placement would trip on.

JSON is :meth:`Topology.to_dict`.
"""

from __future__ import annotations

import os

from numarun import cpulist

TYPE_CHECKING = False  # typing costs ms at start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

    from numarun.topology import Device, Node, Topology

# SGR codes; used only when colour is on.
_BOLD, _DIM, _CYAN, _YELLOW, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[36m", "\x1b[33m", "\x1b[0m"
_GREEN = "\x1b[32m"


def use_colour(stream: TextIO, choice: bool | None = None) -> bool:
    """Colour when asked, else on a terminal unless ``NO_COLOR`` is set (no-color.org)."""
    if choice is not None:
        return choice
    return "NO_COLOR" not in os.environ and stream.isatty()


def _size(kb: int) -> str:
    """``kB`` as a short human size: 370.5 GiB, 512 MiB."""
    mib = kb / 1024
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def _painter(on: bool) -> Callable[[str, str], str]:
    """``paint(text, code)``: the text in that SGR colour when colour is on, else as it is."""
    if not on:
        return lambda text, _code: text
    return lambda text, code: f"{code}{text}{_RESET}"


def warnings(topology: Topology) -> list[str]:
    """What a placement on this machine would trip on, one sentence each."""
    out: list[str] = []
    offline = topology.offline_cpus()
    if offline:
        out.append(f"CPUs {cpulist.format_list(offline)} are offline; nothing is placed on them")
    cpuless, memless, empty = [], [], []
    for node in topology.nodes.values():
        has_cpus = topology.has_cpus(node.id)
        if not has_cpus and node.has_memory:
            cpuless.append(node.id)
        elif has_cpus and not node.has_memory:
            memless.append(node.id)
        elif not has_cpus:
            empty.append(node.id)
    if cpuless:
        out.append(
            f"{_nodes(cpuless)} memory but no CPUs (CXL, HBM or GPU memory): "
            "usable for bind and interleave, never a worker's home"
        )
    if memless:
        out.append(
            f"{_nodes(memless)} CPUs but no memory: "
            "their CPUs allocate from the nearest node with memory"
        )
    if empty:
        out.append(f"{_nodes(empty)} neither online CPUs nor memory")
    allowed = topology.allowed
    all_cpus = topology.online_cpus()
    all_mems = frozenset(topology.nodes)
    if not all_cpus <= allowed.cpus or not all_mems <= allowed.mems:
        cpus = cpulist.format_list(allowed.cpus & all_cpus) or "none"
        mems = cpulist.format_list(allowed.mems & all_mems) or "none"
        out.append(
            f"this process may use only CPUs {cpus} and memory nodes {mems} ({allowed.source})"
        )
    out.extend(topology.notes)  # files read leniently, as hwloc reads them
    if topology.identity.numa_balancing_mode == 2:
        out.append(
            "NUMA balancing is in memory-tiering mode (2): the kernel promotes hot pages from "
            "lower tiers, away from their placement (sysctl kernel.numa_balancing=0 turns it off)"
        )
    elif topology.identity.numa_balancing:
        out.append(
            "automatic NUMA balancing is on: the kernel may move pages and tasks away from "
            "their placement (sysctl kernel.numa_balancing=0 turns it off)"
        )
    out.extend(_weight_warnings(topology))
    return out


def _weight_warnings(topology: Topology) -> list[str]:
    """Equal interleave weights on nodes of unequal bandwidth: what 6.9-6.15 kernels keep."""
    weighted = topology.weighted_interleave
    if weighted is None or weighted.auto:
        return []
    bandwidths = {
        n.id: n.access.read_bandwidth_mbps
        for n in topology.nodes.values()
        if n.access is not None and n.access.read_bandwidth_mbps and n.id in weighted.weights
    }
    if len(set(bandwidths.values())) > 1 and len({weighted.weights[n] for n in bandwidths}) == 1:
        return [
            "weighted interleave weights are all equal though the nodes' bandwidths differ "
            "(numarun weights --set bandwidth sets them in proportion)"
        ]
    return []


def _nodes(ids: list[int]) -> str:
    return f"node {ids[0]} has" if len(ids) == 1 else f"nodes {cpulist.format_list(ids)} have"


def render_drawing(topology: Topology, *, colour: bool = False, width: int = 80) -> str:
    """A compact picture of the machine for a person."""
    paint = _painter(colour)
    lines: list[str] = []
    ident = topology.identity
    who = " ".join(x for x in (ident.sys_vendor, ident.product_name) if x) or "machine"
    facts = [f"{len(topology.nodes)} NUMA node{'s' if len(topology.nodes) != 1 else ''}"]
    facts.append(f"{len(topology.cores)} cores, {len(topology.online_cpus())} CPUs online")
    if ident.kernel:
        facts.append(f"kernel {ident.kernel}")
    if ident.numa_balancing is not None:
        facts.append(
            f"NUMA balancing {_balancing(ident.numa_balancing_mode, on=ident.numa_balancing)}"
        )
    lines.append(paint(who, _BOLD) + ": " + ", ".join(facts))

    inner = max(40, width - 4)
    for node in topology.nodes.values():
        usable = topology.usable_cpus(node.id)
        online = [c for c in sorted(node.cpus) if topology.cpus[c].online]
        cores = topology.cores_of(online)
        mem = (
            f"{_size(node.memory_total_kb)} ({_size(node.memory_free_kb)} free)"
            if node.has_memory
            else "no memory"
        )
        if node.id not in topology.allowed.mems and node.has_memory:
            mem += ", not allowed"
        cpus = f"{len(online)} CPUs on {len(cores)} cores" if online else "no CPUs"
        title = f" node {node.id} ── {mem} ── {cpus} "
        lines.append(
            "╭─" + paint(title, _BOLD + _CYAN) + "─" * max(1, inner - len(title) - 1) + "╮"
        )
        cells = [_core_cell(topology, group, usable, paint) for group in cores.values()]
        cells += [paint(f"x{c}", _DIM) for c in sorted(node.cpus) if not topology.cpus[c].online]
        for row in _wrap(cells, inner - 1):
            lines.append("│ " + row)
        memory_line = _tier_line(node)
        if memory_line:
            lines.append("│ " + paint(memory_line, _DIM))
        devices = _device_cells(topology, node.id, paint)
        for row in _wrap(devices, inner - 1) if devices else ():
            lines.append("│ " + row)
        lines.append("╰" + "─" * inner + "╯")
    homeless = _device_cells(topology, None, paint)
    if homeless:  # hwloc hangs these on the machine: the firmware gives no node
        lines.append("devices on no known node: " + " ".join(homeless))
    legend = "cores as [siblings]; (n) not allowed here; xn offline"
    lines.append(paint(legend, _DIM))
    lines.append("")
    lines.append("distances:")
    lines.extend(_matrix(topology, indent="  "))
    lines.extend(_tiering_lines(topology))
    notes = warnings(topology)
    if notes:
        lines.append("")
        lines.extend(paint(f"warning: {w}", _YELLOW) for w in notes)
    return "\n".join(lines) + "\n"


def _balancing(mode: int | None, *, on: bool) -> str:
    """``kernel.numa_balancing`` in words: 2 is memory tiering (promotion from slow tiers)."""
    words = {0: "off", 1: "on", 2: "tiering", 3: "on+tiering"}
    return words.get(mode, "on" if on else "off") if mode is not None else ("on" if on else "off")


def _gbps(mbps: int | None) -> str:
    return f"{mbps / 1000:.1f} GB/s" if mbps is not None else "? GB/s"


def _tier_line(node: Node) -> str:
    """``tier 35 · read 8.0 GB/s 250 ns, write 8.0 GB/s 300 ns from node 0`` (what is known)."""
    parts = [f"tier {node.tier}"] if node.tier is not None else []
    access = node.access
    if access is not None:
        figures = []
        for way in ("read", "write"):
            bandwidth = getattr(access, f"{way}_bandwidth_mbps")
            latency = getattr(access, f"{way}_latency_ns")
            if bandwidth is not None or latency is not None:
                ns = f" {latency} ns" if latency is not None else ""
                figures.append(f"{way} {_gbps(bandwidth)}{ns}")
        if figures:
            near = access.initiators
            source = f" from {_nodes_word(sorted(near))}" if near else ""
            parts.append(", ".join(figures) + source)
    return " · ".join(parts)


def _nodes_word(ids: list[int]) -> str:
    return f"node{'s' if len(ids) > 1 else ''} {cpulist.format_list(ids)}"


def _tiering_lines(topology: Topology) -> list[str]:
    """The machine-wide tiering settings: interleave weights, demotion."""
    out = []
    weighted = topology.weighted_interleave
    if weighted is not None:
        weights = " ".join(f"{n}:{w}" for n, w in weighted.weights.items()) or "none"
        mode = ""
        if weighted.auto is not None:
            mode = " (auto: the kernel's, from HMAT)" if weighted.auto else " (set by hand)"
        out.append(f"weighted interleave: weights {weights}{mode}")
    if topology.demotion_enabled is not None:
        state = "on" if topology.demotion_enabled else "off"
        out.append(f"demotion to lower tiers: {state} (/sys/kernel/mm/numa/demotion_enabled)")
    return ["", *out] if out else []


def _device_cells(
    topology: Topology, node: int | None, paint: Callable[[str, str], str]
) -> list[str]:
    """The node's GPUs, NICs and disks as lstopo shows them under it, and a count of the rest."""
    here = [d for d in topology.devices if d.node == node]
    shown = [d for d in here if d.gpu is not None or d.names]
    cells = [paint(d.label(), _GREEN) for d in sorted(shown, key=_shown_order)]
    others = len(here) - len(shown)
    if others:
        cells.append(paint(f"+{others} other PCI device{'s' if others > 1 else ''}", _DIM))
    return cells


def _shown_order(device: Device) -> tuple[int, int, str]:
    """GPUs by index, then NICs and disks by address."""
    return (0, device.gpu, device.pci) if device.gpu is not None else (1, 0, device.pci)


def _core_cell(
    topology: Topology,
    group: frozenset[int],
    usable: frozenset[int],
    paint: Callable[[str, str], str],
) -> str:
    parts = [str(c) if c in usable else f"({c})" for c in sorted(group)]
    text = "[" + " ".join(parts) + "]" if len(group) > 1 else parts[0]
    return text if group & usable else paint(text, _DIM)


def _visible_len(text: str) -> int:
    out, skip = 0, False
    for ch in text:
        if ch == "\x1b":
            skip = True
        elif skip and ch == "m":
            skip = False
        elif not skip:
            out += 1
    return out


def _wrap(cells: list[str], width: int) -> list[str]:
    rows: list[str] = []
    current: list[str] = []
    used = 0
    for cell in cells:
        size = _visible_len(cell) + (1 if current else 0)
        if current and used + size > width:
            rows.append(" ".join(current))
            current, used = [], 0
            size = _visible_len(cell)
        current.append(cell)
        used += size
    if current:
        rows.append(" ".join(current))
    return rows or ["(none)"]


def _matrix(topology: Topology, indent: str = "") -> list[str]:
    ids = list(topology.nodes)
    cells = [str(i) for i in ids] + [
        str(d) for n in topology.nodes.values() for d in n.distances.values()
    ]
    w = max(3, *(len(c) for c in cells)) + 1
    label = max(4, *(len(str(i)) + 1 for i in ids))
    rows = [indent + "node".rjust(label) + "".join(f"{i:>{w}}" for i in ids)]
    for a in ids:
        dist = "".join(f"{topology.distance(a, b):>{w}}" for b in ids)
        rows.append(indent + f"{a}:".rjust(label) + dist)
    return rows


def render_hardware(topology: Topology, *, cpu_compress: bool = False) -> str:
    """The facts in ``numactl --hardware``'s layout, so its parsers keep working.

    CPUs are the node's online CPUs (numactl on kernels without ``cpu/online`` also lists
    offline ones); distances are numarun's reading (numactl misreads some edited tables).
    ``cpu_compress`` prints them as ``numactl --cpu-compress`` does: ranges, then the count.
    """
    ids = list(topology.nodes)
    out = [f"available: {len(ids)} nodes ({cpulist.format_list(ids)})"]
    for node in topology.nodes.values():
        online = [c for c in sorted(node.cpus) if topology.cpus[c].online]
        if cpu_compress:
            ranges = cpulist.format_list(online).replace(",", ", ")
            out.append(f"node {node.id} cpus:{' ' if ranges else ''}{ranges} ({len(online)})")
        else:
            out.append(f"node {node.id} cpus:" + "".join(f" {c}" for c in online))
        out.append(f"node {node.id} size: {node.memory_total_kb // 1024} MB")
        out.append(f"node {node.id} free: {node.memory_free_kb // 1024} MB")
    out.append("node distances:")
    # numactl prints with printf("% 3d "): a sign space, then width 3.
    out.append("node " + "".join(f"{i: 3d} " for i in ids))
    for a in ids:
        out.append(f"{a: 3d}: " + "".join(f"{topology.distance(a, b): 3d} " for b in ids))
    return "\n".join(out) + "\n"
