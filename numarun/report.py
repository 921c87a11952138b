"""Judge where a process's pages are against the policy they were allocated under.

Input is plain data, so tests need no live machine: a :class:`~numarun.numamaps.Summary`
(bytes per node per (policy, kind)), the CPUs the process may run on, a CPU -> node map
(``Topology.cpus[c].node``, or any ``Mapping[int, int]``), and per node free and total
memory (``nodeN/meminfo``).

What is judged
    Anonymous memory, heap, stacks, shared memory (``/dev/shm``, SysV, memfd, shared
    anonymous) and hugetlb pages: memory the kernel allocated for the process under its
    policy. **File-backed page cache is shown but not judged**: a file's pages stay on the
    node where whoever read it first cached them, whatever this process's policy says (a
    private file mapping whose every page is a private copy counts as anonymous; see
    :mod:`numarun.numamaps`).

The rules, one verdict per policy found in numa_maps (usually one)
    ``bind:N``
        Every judged page on N. Binding is a guarantee, so there is no tolerance: any page
        elsewhere (allocated before the policy was applied, say) fails the verdict.
    ``interleave:N``
        Nothing outside N, and each node of N within ``interleave_points`` (5) percentage
        points of an even share (100/|N| percent). Judged only from ``interleave_min_bytes``
        (4 MiB) of judged memory up: below that, rounding of a few pages decides.
    ``weighted-interleave:N``
        Nothing outside N, and each node n of N within ``interleave_points`` of its share by
        the weights in force, ``w_n / sum(w)`` over N (a node without a weight counts 1, the
        kernel's default); the report shows expected against actual. Where the weights in
        force are unknown, only "nothing outside N" is judged.
    ``preferred:N`` / ``preferred-many:N``
        On N while N had room. Memory elsewhere is accepted when it is at most
        ``spill_share`` (1 %) of the judged memory, or when every preferred node is now
        short of memory (free below ``low_free_share``, 3 %, of its size): the kernel falls
        back when a node is full. Free memory now stands in for free memory then.
    ``default`` / ``local``
        Like preferred, with the nodes of the CPUs the process may run on as the preferred
        set (``default`` allocates on the node of the CPU that faults, ``local`` likewise).

Demotion
    With ``/sys/kernel/mm/numa/demotion_enabled`` true, reclaim moves cold pages to a lower
    memory tier whatever the policy says. Pages of a bind or interleave policy found only
    on nodes of a lower tier than every node of N are reported as demoted, naming the
    setting, and pass: the kernel did as it was configured to.

Near a device
    A process placed near a device (a per-gpu worker, ``near = ...``, ``--nodes gpu:N`` or
    ``netdev:...``: numarun tells it ``NUMARUN_DEVICE`` and ``NUMARUN_DEVICE_NODE`` in its
    environment) gets a note, not a verdict, when more than ``spill_share`` of its judged
    memory is on nodes other than the device's: copies to the device then cross nodes.

Verdicts are ``pass``, ``fail``, or ``skip`` (nothing or too little to judge, or no data to
judge with); a report passes when none of its verdicts fails.
"""

from __future__ import annotations

from numarun import cpulist
from numarun.numamaps import JUDGED_KINDS, KINDS, Policy, Summary
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from numarun.topology import Topology

PASS, FAIL, SKIP = "pass", "fail", "skip"

MiB = 1 << 20


class Rules(Value):
    """The tolerances the verdicts use (see the module docstring)."""

    interleave_points: float = 5.0
    interleave_min_bytes: int = 4 * MiB
    spill_share: float = 0.01
    low_free_share: float = 0.03


DEFAULT_RULES = Rules()


class Verdict(Value):
    """The judgement of the memory allocated under one policy."""

    policy: Policy
    status: str  # PASS, FAIL or SKIP
    expected: frozenset[int]  # the nodes the policy (or the CPUs) point at
    node_bytes: dict[int, int]  # judged bytes per node
    message: str

    @property
    def judged_bytes(self) -> int:
        return sum(self.node_bytes.values())

    @property
    def off_bytes(self) -> int:
        """Judged bytes outside ``expected``."""
        return sum(b for n, b in self.node_bytes.items() if n not in self.expected)

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def __repr__(self) -> str:
        return f"Verdict({self.status} {self.policy}: {self.message})"


# -- wording ---------------------------------------------------------------------------------


def size(n: int) -> str:
    """Bytes as people read them, in 1024-based units like numastat: ``312 MB``, ``2.1 GB``."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            break
        value /= 1024
    if unit in ("B", "kB") or value >= 100:
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}"


def nodes_text(nodes: Iterable[int]) -> str:
    found = sorted(set(nodes))
    return ("node " if len(found) == 1 else "nodes ") + cpulist.format_list(found)


def share(part: int, whole: int) -> float:
    """Percent, 0 for an empty whole."""
    return 100.0 * part / whole if whole else 0.0


# -- rules -------------------------------------------------------------------------------------


def judge(
    policy: Policy,
    node_bytes: Mapping[int, int],
    *,
    cpu_nodes: frozenset[int] = frozenset(),
    free: Mapping[int, int] | None = None,
    total: Mapping[int, int] | None = None,
    rules: Rules = DEFAULT_RULES,
    tiering: Tiering | None = None,
) -> Verdict:
    """Judge ``node_bytes`` (judged memory per node) against ``policy``.

    ``cpu_nodes`` are the nodes of the CPUs the process may run on (for default and local);
    ``free`` and ``total`` are bytes per node, for "had room" (missing: assume it had);
    ``tiering`` the weights in force, tiers and demotion (None: unknown).
    """
    placed = {n: b for n, b in node_bytes.items() if b > 0}
    judged = sum(placed.values())
    mode = policy.mode
    if mode in ("default", "local"):
        expected = cpu_nodes
        aim = f"{mode} policy, the {nodes_text(cpu_nodes)} its CPUs are on"
    else:
        expected = policy.nodes
        aim = f"{mode} to {nodes_text(policy.nodes)}"

    def verdict(status: str, message: str) -> Verdict:
        return Verdict(
            policy=policy, status=status, expected=expected, node_bytes=placed, message=message
        )

    if judged == 0:
        return verdict(SKIP, "no memory allocated under this policy")
    if not expected:
        return verdict(SKIP, f"cannot tell where {policy} memory belongs (no nodes known)")
    off = {n: b for n, b in placed.items() if n not in expected}
    off_bytes = sum(off.values())
    on_text = (
        f"{share(judged - off_bytes, judged):.1f}% of {size(judged)} on {nodes_text(expected)}"
    )
    off_text = f"{size(off_bytes)} of {size(judged)} on {nodes_text(off)}, outside {aim}"

    if mode in ("bind", "interleave", "weighted-interleave") and off_bytes:
        demoted = _demotion(off, expected, tiering)
        return verdict(PASS, f"{off_text}: {demoted}") if demoted else verdict(FAIL, off_text)

    if mode == "bind" or (mode == "weighted-interleave" and tiering is None):
        unjudged = "; the weights in force are unknown" if mode != "bind" else ""
        return verdict(PASS, f"all {size(judged)} on {nodes_text(expected)} ({aim}){unjudged}")

    if mode in ("interleave", "weighted-interleave"):
        if judged < rules.interleave_min_bytes:
            return verdict(SKIP, f"only {size(judged)} interleaved, too little to judge the spread")
        weights = tiering.weights if tiering is not None and mode != "interleave" else {}
        status, message = _spread(expected, placed, judged, weights, aim=aim, rules=rules)
        return verdict(status, message)

    if mode in ("preferred", "preferred-many", "default", "local"):
        if not off_bytes:
            return verdict(PASS, f"all {size(judged)} on {nodes_text(expected)} ({aim})")
        if off_bytes <= rules.spill_share * judged:
            return verdict(PASS, f"{on_text}; {size(off_bytes)} spilled elsewhere ({aim})")
        roomy = _nodes_with_room(expected, free, total, rules)
        if not roomy:
            return verdict(
                PASS,
                f"{off_text}, but {nodes_text(expected)} {'is' if len(expected) == 1 else 'are'}"
                " short of free memory, so the kernel fell back",
            )
        room = ", ".join(f"{size(free[n])} free on node {n}" for n in sorted(roomy) if free)
        return verdict(
            FAIL, f"{off_text}, although there is room ({room or 'free memory unknown'})"
        )

    # A mode this numarun does not know: report the placement, judge nothing.
    return verdict(SKIP, f"policy {policy.text!r} is not one numarun judges; {on_text}")


class Tiering(Value):
    """What the kernel does with tiered memory, for the verdicts: from the topology."""

    weights: dict[int, int] = {}  # noqa: RUF012 - weighted-interleave weights in force
    tiers: dict[int, int] = {}  # noqa: RUF012 - node -> memory tier (lower is faster)
    demotion: bool = False  # /sys/kernel/mm/numa/demotion_enabled


def tiering_of(topology: Topology) -> Tiering:
    """The topology's weights in force (none before Linux 6.9), tiers and demotion flag."""
    found = topology.weighted_interleave
    return Tiering(
        weights=found.weights if found is not None else {},
        tiers={n.id: n.tier for n in topology.nodes.values() if n.tier is not None},
        demotion=bool(topology.demotion_enabled),
    )


def _spread(
    expected: frozenset[int],
    placed: Mapping[int, int],
    judged: int,
    weights: Mapping[int, int],
    *,
    aim: str,
    rules: Rules,
) -> tuple[str, str]:
    """Each node's share against its expected one: even, or w_n / sum(w) by ``weights``."""
    # A node the kernel keeps no weight for counts 1 (its default); no weights: even.
    node_weight = {n: weights.get(n, 1) for n in expected}
    total = sum(node_weight.values())
    aims = {n: 100.0 * w / total for n, w in node_weight.items()}
    actual = {n: share(placed.get(n, 0), judged) for n in expected}
    worst = max(sorted(expected), key=lambda n: abs(actual[n] - aims[n]))
    if weights:  # weighted interleave: expected against actual, node by node
        ratio = ":".join(str(node_weight[n]) for n in sorted(expected))
        spread = ", ".join(
            f"node {n} {actual[n]:.1f}% (expected {aims[n]:.1f}%)" for n in sorted(expected)
        )
        how, by = f"by weights {ratio}", f" by weights {ratio}"
    else:
        spread = ", ".join(f"{actual[n]:.1f}% on node {n}" for n in sorted(expected))
        how, by = "evenly", ""
    if abs(actual[worst] - aims[worst]) > rules.interleave_points:
        return FAIL, (
            f"node {worst} holds {actual[worst]:.1f}% of {size(judged)}, {aim}{by} expects "
            f"{aims[worst]:.1f}% ± {rules.interleave_points:g} ({spread})"
        )
    return PASS, f"{size(judged)} spread {how}: {spread}"


def _demotion(off: Mapping[int, int], expected: frozenset[int], tiering: Tiering | None) -> str:
    """Why pages outside ``expected`` are the kernel's demotion, or "" when they are not."""
    if tiering is None or not tiering.demotion:
        return ""
    tiers = tiering.tiers
    if not all(n in tiers for n in (*off, *expected)):
        return ""
    lowest_expected = max(tiers[n] for n in expected)
    if not all(tiers[n] > lowest_expected for n in off):
        return ""
    found = ", ".join(f"node {n} tier {tiers[n]}" for n in sorted(off))
    return (
        f"demoted to a lower tier ({found}) by the kernel, as "
        "/sys/kernel/mm/numa/demotion_enabled = true asks"
    )


def _nodes_with_room(
    nodes: frozenset[int],
    free: Mapping[int, int] | None,
    total: Mapping[int, int] | None,
    rules: Rules,
) -> frozenset[int]:
    if free is None:
        return nodes  # unknown: assume room, so an unexplained spill is not excused
    roomy = set()
    for node in nodes:
        node_free = free.get(node)
        node_total = (total or {}).get(node)
        if node_free is None:
            roomy.add(node)
        elif node_total:
            if node_free >= rules.low_free_share * node_total:
                roomy.add(node)
        elif node_free > 0:
            roomy.add(node)
    return frozenset(roomy)


# -- near a device ----------------------------------------------------------------------------


class DeviceNote(Value):
    """The device a process runs near, and how much of its memory is on other nodes."""

    device: str  # "gpu 0 (0000:41:00.0)"
    node: int  # the device's node
    elsewhere: dict[int, int]  # judged bytes per node other than the device's
    share: float  # of the judged memory, 0 to 1
    noted: bool  # more than spill_share elsewhere

    @property
    def message(self) -> str | None:
        if not self.noted:
            return None
        where = ", ".join(f"{size(b)} on node {n}" for n, b in sorted(self.elsewhere.items()))
        return (
            f"{self.share:.0%} of the memory is not on node {self.node} of {self.device}, "
            f"the device it runs near ({where}): copies to the device cross nodes"
        )


def device_note(device: str, node: int, judged: Mapping[int, int], rules: Rules) -> DeviceNote:
    """How much of ``judged`` (bytes per node) is off the device's node, and whether to say so."""
    elsewhere = {n: b for n, b in judged.items() if n != node and b}
    part = share(sum(elsewhere.values()), sum(judged.values())) / 100
    return DeviceNote(
        device=device, node=node, elsewhere=elsewhere, share=part, noted=part > rules.spill_share
    )


def device_of(env: Mapping[str, str]) -> tuple[str, int] | None:
    """The device numarun placed a process near, from its environment; None when none."""
    from numarun.placement import DEVICE_ENV, DEVICE_NODE_ENV

    node = env.get(DEVICE_NODE_ENV, "")
    if DEVICE_ENV not in env or not (node.isascii() and node.isdigit()):
        return None
    return env[DEVICE_ENV], int(node)


# -- a whole process ---------------------------------------------------------------------------


class ProcessReport(Value):
    """Everything ``numarun placement`` says about one process."""

    pid: int
    name: str
    summary: Summary
    cpus_allowed: frozenset[int]
    mems_allowed: frozenset[int]
    cpu_nodes: frozenset[int]
    threads: dict[int, tuple[int, int | None]]  # tid -> (last CPU, its node)
    verdicts: list[Verdict]
    device: DeviceNote | None = None  # placed near a device: where its memory is

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def status(self) -> str:
        if not self.ok:
            return FAIL
        return PASS if any(v.status == PASS for v in self.verdicts) else SKIP

    def judged_bytes(self) -> dict[int, int]:
        return self.summary.node_bytes(JUDGED_KINDS)

    def file_bytes(self) -> dict[int, int]:
        return self.summary.node_bytes(["file"])


def build_report(
    pid: int,
    summary: Summary,
    *,
    cpu_to_node: Mapping[int, int | None],
    cpus_allowed: frozenset[int],
    mems_allowed: frozenset[int] = frozenset(),
    thread_cpus: Mapping[int, int] | None = None,
    free: Mapping[int, int] | None = None,
    total: Mapping[int, int] | None = None,
    name: str = "",
    rules: Rules = DEFAULT_RULES,
    tiering: Tiering | None = None,
    device: tuple[str, int] | None = None,
) -> ProcessReport:
    """Judge every policy in ``summary`` and gather the rest of the report.

    ``tiering`` (:func:`tiering_of` the topology) lets weighted interleave be judged by the
    weights in force and demoted pages be named; without it neither is. ``device`` (name,
    node; :func:`device_of`) is the device the process runs near, for the note.
    """
    cpu_nodes = frozenset(node for c in cpus_allowed if (node := cpu_to_node.get(c)) is not None)
    per_policy: dict[Policy, dict[int, int]] = {}
    for (policy, kind), group in summary.groups.items():
        if kind not in JUDGED_KINDS:
            continue
        bucket = per_policy.setdefault(policy, {})
        for node, count in group.node_bytes.items():
            bucket[node] = bucket.get(node, 0) + count
    verdicts = [
        judge(p, b, cpu_nodes=cpu_nodes, free=free, total=total, rules=rules, tiering=tiering)
        for p, b in sorted(per_policy.items(), key=lambda item: -sum(item[1].values()))
    ]
    if not verdicts:
        verdicts = [
            Verdict(
                policy=Policy(mode="default", nodes=frozenset(), flags=frozenset(), text="default"),
                status=SKIP,
                expected=cpu_nodes,
                node_bytes={},
                message="no anonymous memory to judge (a zombie, a kernel thread, or only "
                "file pages)",
            )
        ]
    threads = {tid: (cpu, cpu_to_node.get(cpu)) for tid, cpu in sorted((thread_cpus or {}).items())}
    return ProcessReport(
        pid=pid,
        name=name,
        summary=summary,
        cpus_allowed=cpus_allowed,
        mems_allowed=mems_allowed,
        cpu_nodes=cpu_nodes,
        threads=threads,
        verdicts=verdicts,
        device=None
        if device is None
        else device_note(*device, summary.node_bytes(JUDGED_KINDS), rules),
    )


def _judged(summary: Summary) -> dict[int, int]:
    return summary.node_bytes(JUDGED_KINDS)


def to_json(report: ProcessReport) -> dict[str, object]:
    """The report as JSON-ready data (fields documented in the man page)."""
    judged = report.judged_bytes()
    all_bytes = report.summary.node_bytes()
    judged_total = sum(judged.values())
    nodes = sorted(set(all_bytes) | report.cpu_nodes)
    return {
        "pid": report.pid,
        "name": report.name,
        "status": report.status,
        "ok": report.ok,
        "cpus_allowed": cpulist.format_list(report.cpus_allowed),
        "mems_allowed": cpulist.format_list(report.mems_allowed),
        "cpu_nodes": cpulist.format_list(report.cpu_nodes),
        "mappings": report.summary.mappings,
        "total_bytes": report.summary.total_bytes,
        "judged_bytes": judged_total,
        "nodes": {
            str(n): {
                "bytes": all_bytes.get(n, 0),
                "judged_bytes": judged.get(n, 0),
                "file_bytes": report.file_bytes().get(n, 0),
                "judged_share": round(share(judged.get(n, 0), judged_total), 2),
            }
            for n in nodes
        },
        "kinds": {
            kind: {str(n): b for n, b in sorted(per_node.items())}
            for kind, per_node in report.summary.kind_bytes().items()
            if kind in KINDS
        },
        "policies": [
            {
                "policy": str(g.policy),
                "kernel": g.policy.text,
                "kind": g.kind,
                "mappings": g.mappings,
                "nodes": {str(n): b for n, b in sorted(g.node_bytes.items())},
            }
            for g in sorted(
                report.summary.groups.values(), key=lambda g: (str(g.policy), KINDS.index(g.kind))
            )
        ],
        "verdicts": [
            {
                "policy": str(v.policy),
                "status": v.status,
                "expected_nodes": cpulist.format_list(v.expected),
                "judged_bytes": v.judged_bytes,
                "off_bytes": v.off_bytes,
                "nodes": {str(n): b for n, b in sorted(v.node_bytes.items())},
                "message": v.message,
            }
            for v in report.verdicts
        ],
        "threads": [
            {"tid": tid, "cpu": cpu, "node": node} for tid, (cpu, node) in report.threads.items()
        ],
        "device": _device_json(report.device),
    }


def _device_json(note: DeviceNote | None) -> dict[str, object] | None:
    if note is None:
        return None
    return {
        "name": note.device,
        "node": note.node,
        "elsewhere_bytes": {str(n): b for n, b in sorted(note.elsewhere.items())},
        "elsewhere_share": round(note.share, 4),
        "note": note.message,
    }
