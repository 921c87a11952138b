"""Plan, check, apply and exec: the machinery behind ``numarun [placement] -- CMD``.

The launcher works in three strictly ordered stages, so that a refusal never leaves
anything half done and never runs the command:

1. :func:`make_plan` turns a :class:`Request` into a :class:`Plan` against a
   :class:`~numarun.topology.Topology`: node and CPU specs are resolved, every node and
   CPU is checked to exist, to be allowed by the cgroup/cpuset, to be online and to have
   memory where memory is asked for, and the command is looked up on ``PATH``. Nothing is
   changed; every refusal is one :class:`~numarun.errors.NumarunError`.
2. :func:`apply_plan` sets the memory policy of the calling thread (the only thread of a
   prefix launch), with the requested fallback when the kernel lacks the mode, then the CPU
   affinity. The memory policy goes first: it is the call most likely to be refused (by a
   seccomp filter or an old kernel), and refusing before the affinity is changed keeps
   "nothing touched" true for the common failures.
3. :func:`exec_command` replaces this process with the command: same PID, same
   environment, and the command's own exit status. Both the memory policy and the CPU
   affinity survive ``execve``.

The topology used for the checks may come from a snapshot (``--topology``/``--root``) so
that the refusals can be tested against other machines; the system calls always act on
the live one.
"""

from __future__ import annotations

import os
import sys

from numarun.cpulist import format_list
from numarun.errors import (
    CommandNotExecutableError,
    CommandNotFoundError,
    KernelRefusedError,
    NotAllowedError,
    UnsuitableError,
    UsageError,
)
from numarun.mempolicy import NODELESS_MODES, MemoryPolicy, canonical_mode
from numarun.nodespec import Spec, resolve

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from numarun.topology import Topology

#: Free memory within this fraction of the best node's counts as a tie when numarun
#: chooses a node itself: free memory moves by more than this between two reads.
TIE_FRACTION = 0.02


class Request:
    """What the user asked for, parsed but not yet checked against a machine.

    ``mode`` is a canonical mode name or None (no memory policy asked for); ``preset`` the
    preset it came from, whose ``memory_nodes`` word (``all``, ``local``, ``local+cpuless``)
    is kept in ``preset_nodes`` when it is not a node spec; ``nodes``,
    ``cpu_nodes`` and ``cpus`` are parsed specs or None; the ``*_option`` fields name the
    option each came from, for messages (``--membind`` reads better than ``--nodes`` when
    the user typed ``--membind``).
    """

    __slots__ = (
        "command",
        "cpu_nodes",
        "cpu_nodes_option",
        "cpus",
        "cpus_option",
        "fallback",
        "flags",
        "mode",
        "mode_option",
        "nodes",
        "nodes_option",
        "per_rank",
        "preset",
        "preset_nodes",
        "rank",
        "ranks",
        "smt",
    )

    def __init__(self) -> None:
        self.mode: str | None = None
        self.mode_option = "--policy"
        self.nodes: Spec | None = None
        self.nodes_option = "--nodes"
        self.cpu_nodes: Spec | None = None
        self.cpu_nodes_option = "--cpu-nodes"
        self.cpus: Spec | None = None
        self.cpus_option = "--cpus"
        self.smt: str | None = None  # None: allow (the default), not chosen explicitly
        self.preset: str | None = None
        self.preset_nodes: str | None = None  # a preset's "all", "local" or "local+cpuless"
        self.fallback: str | None = None
        self.flags: set[str] = set()
        self.command: list[str] = []
        # --per-rank (or --rank/--ranks): place this process as one rank of several, see
        # make_rank_plan; rank and ranks are the explicit values, None to ask the launcher.
        self.per_rank = False
        self.rank: int | None = None
        self.ranks: int | None = None


class Plan:
    """What will be applied: a memory policy (or None), a CPU set (or None), and why.

    ``reasons`` are human sentences for ``--explain``; ``executable`` is the resolved path
    of the command (None when there is no command, as with ``--show``).
    """

    __slots__ = (
        "command",
        "cpus",
        "executable",
        "fallback",
        "heading",
        "notice",
        "policy",
        "rank",
        "reasons",
        "warnings",
    )

    def __init__(self) -> None:
        self.policy: MemoryPolicy | None = None
        self.cpus: frozenset[int] | None = None
        self.fallback: str | None = None
        self.reasons: list[str] = []
        self.command: list[str] = []
        self.executable: str | None = None
        # --per-rank only: lines printed first by describe (rank, slot); a one-line notice
        # for stderr (the launcher had bound the rank already); the planner's warnings.
        self.heading: list[str] = []
        self.rank: int | None = None  # the local rank, with --per-rank
        self.notice: str | None = None
        self.warnings: list[str] = []


# -- planning -----------------------------------------------------------------------------


def _source(topology: Topology) -> str:
    return topology.allowed.source or "/proc/self/status"


def _memory_nodes(request: Request, topology: Topology, plan: Plan) -> frozenset[int] | None:
    """The memory nodes named explicitly, checked; None when none were named."""
    spec = request.nodes
    if spec is None:
        return None
    option = request.nodes_option
    allowed = topology.allowed.mems
    existing = frozenset(topology.nodes)
    nodes = resolve(spec, existing=existing, allowed=allowed, option=option, kind="node")
    with_memory = frozenset(topology.nodes_with_memory(allowed_only=False))
    if "relative-nodes" in request.flags and not spec.everything:
        # Positions in the cpuset's allowed set, mapped by the kernel (and remapped when
        # the cpuset changes): they name no node by number, so there is nothing to check.
        plan.reasons.append(
            f"memory nodes {format_list(spec.items)}: positions within the allowed set "
            f"({format_list(allowed)}), mapped by the kernel (relative-nodes)"
        )
        return spec.items
    if spec.everything or spec.invert:
        # Implicit sets leave memory-less nodes out instead of refusing them: the user
        # did not name them.
        nodes &= with_memory
    else:
        memless = sorted(nodes - with_memory)
        if memless:
            usable = sorted(with_memory & allowed)
            raise UnsuitableError(
                f"{option}: node {format_list(memless)} has no memory, so no pages can be "
                f"placed there",
                f"choose nodes with memory: {format_list(usable) or 'none allowed'}",
            )
        outside = sorted(nodes - allowed)
        if outside:
            raise NotAllowedError(
                f"{option}: node {format_list(outside)} is outside the memory nodes this "
                f"process may use: its cgroup/cpuset allows only {format_list(allowed) or 'none'} "
                f"(read from {_source(topology)})",
                f"choose from {format_list(allowed & with_memory) or 'none'}, or widen "
                "cpuset.mems of the cgroup",
            )
    if not nodes:
        raise UnsuitableError(
            f"{option} {spec.text} leaves no node with memory that this process may use",
            f"allowed memory nodes are {format_list(allowed & with_memory) or 'none'}",
        )
    plan.reasons.append(f"memory nodes {format_list(nodes)}: from {option} {spec.text}")
    return nodes


def _cpus_of_nodes(request: Request, topology: Topology, plan: Plan) -> frozenset[int] | None:
    spec = request.cpu_nodes
    if spec is None:
        return None
    option = request.cpu_nodes_option
    existing = frozenset(topology.nodes)
    with_cpus = frozenset(n for n in topology.nodes if topology.usable_cpus(n))
    nodes = resolve(spec, existing=existing, allowed=with_cpus, option=option, kind="node")
    if not (spec.everything or spec.invert):
        for node in sorted(nodes):
            if topology.usable_cpus(node):
                continue
            listed = topology.nodes[node].cpus
            online = frozenset(c for c in listed if c in topology.cpus and topology.cpus[c].online)
            if not listed:
                raise UnsuitableError(
                    f"{option}: node {node} has no CPUs (a memory-only node)",
                    f"nodes with CPUs are {format_list(with_cpus) or 'none'}",
                )
            if not online:
                raise UnsuitableError(
                    f"{option}: every CPU of node {node} ({format_list(listed)}) is offline",
                    "bring one online (/sys/devices/system/cpu/cpuN/online) or choose from "
                    f"nodes {format_list(with_cpus) or 'none'}",
                )
            raise NotAllowedError(
                f"{option}: the CPUs of node {node} ({format_list(online)}) are outside this "
                "process's allowed CPUs: its cgroup/cpuset allows "
                f"{format_list(topology.allowed.cpus) or 'none'} (read from {_source(topology)})",
                f"choose from nodes {format_list(with_cpus) or 'none'}",
            )
    cpus = frozenset().union(*(topology.usable_cpus(n) for n in nodes))
    plan.reasons.append(
        f"CPUs {format_list(cpus) or 'none'}: the usable CPUs of node(s) "
        f"{format_list(nodes)} from {option} {spec.text}"
    )
    return cpus


def _explicit_cpus(request: Request, topology: Topology, plan: Plan) -> frozenset[int] | None:
    spec = request.cpus
    if spec is None:
        return None
    option = request.cpus_option
    existing = frozenset(topology.cpus)
    usable = topology.usable_cpus()
    cpus = resolve(spec, existing=existing, allowed=usable, option=option, kind="CPU")
    if not (spec.everything or spec.invert):
        offline = sorted(c for c in cpus if not topology.cpus[c].online)
        if offline:
            first = offline[0]
            raise UnsuitableError(
                f"{option}: CPU {format_list(offline)} is offline",
                f"bring it online (echo 1 > /sys/devices/system/cpu/cpu{first}/online) or "
                f"choose from {format_list(usable) or 'none'}",
            )
        outside = sorted(cpus - topology.allowed.cpus)
        if outside:
            raise NotAllowedError(
                f"{option}: CPU {format_list(outside)} is outside this process's allowed CPUs: "
                f"its cgroup/cpuset allows {format_list(topology.allowed.cpus) or 'none'} "
                f"(read from {_source(topology)})",
                f"choose from {format_list(usable) or 'none'}, or widen cpuset.cpus",
            )
    plan.reasons.append(f"CPUs {format_list(cpus) or 'none'}: from {option} {spec.text}")
    return cpus


def node_load(topology: Topology, root: str = "/", interval: float = 0.02) -> dict[int, float]:
    """Each node's CPU busy fraction (0..1) over its usable CPUs, from ``/proc/stat``.

    On the live machine two reads ``interval`` seconds apart give the current load; for a
    snapshot root, whose clock cannot be read twice, the one read gives the average since
    boot. Nodes whose CPUs are not in the file get 0.0.
    """
    first = _read_cpu_times(root)
    if root in ("/", "") and interval > 0:
        import time

        time.sleep(interval)
        second = _read_cpu_times(root)
        sample = {
            cpu: (second[cpu][0] - first[cpu][0], second[cpu][1] - first[cpu][1])
            for cpu in second
            if cpu in first
        }
    else:
        sample = first
    out: dict[int, float] = {}
    for node in topology.nodes:
        busy = total = 0
        for cpu in topology.usable_cpus(node):
            if cpu in sample:
                busy += sample[cpu][0]
                total += sample[cpu][1]
        out[node] = busy / total if total else 0.0
    return out


def _read_cpu_times(root: str) -> dict[int, tuple[int, int]]:
    """``cpuN`` lines of ``/proc/stat`` as (busy, total) jiffies."""
    out: dict[int, tuple[int, int]] = {}
    try:
        with open(os.path.join(root, "proc/stat"), encoding="ascii") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *fields = line.split()
                if not name[3:].isdigit():
                    continue
                values = [int(v) for v in fields]
                idle = sum(values[3:5])  # idle + iowait
                out[int(name[3:])] = (sum(values) - idle, sum(values))
    except (OSError, ValueError):
        return {}
    return out


def choose_node(
    topology: Topology, plan: Plan, *, root: str = "/", among: frozenset[int] | None = None
) -> int:
    """The allowed node with CPUs and memory that has the most free memory.

    Nodes within :data:`TIE_FRACTION` of the best free memory are tied; the tie goes to
    the least loaded node (see :func:`node_load`), then the lowest id. Appends the why to
    ``plan.reasons``.
    """
    candidates = [
        n
        for n in topology.nodes
        if n in topology.allowed.mems
        and topology.nodes[n].memory_total_kb > 0
        and topology.usable_cpus(n)
        and (among is None or n in among)
    ]
    if not candidates:
        raise UnsuitableError(
            "no node has both CPUs and memory that this process may use, so numarun "
            "cannot choose one",
            "name the memory nodes with --nodes (see numarun --hardware)",
        )
    free = {n: topology.nodes[n].memory_free_kb for n in candidates}
    best_free = max(free.values())
    tied = [n for n in candidates if free[n] >= best_free * (1 - TIE_FRACTION)]
    if len(tied) == 1:
        chosen = tied[0]
        others = ", ".join(f"node {n} {free[n] // 1024} MiB" for n in candidates if n != chosen)
        plan.reasons.append(
            f"chose node {chosen}: the most free memory ({free[chosen] // 1024} MiB) of the "
            "allowed nodes with CPUs" + (f" ({others})" if others else "")
        )
        return chosen
    load = node_load(topology, root)
    chosen = min(tied, key=lambda n: (load.get(n, 0.0), n))
    shown = ", ".join(
        f"node {n} {free[n] // 1024} MiB free, {load.get(n, 0.0):.0%} busy" for n in tied
    )
    plan.reasons.append(
        f"chose node {chosen}: nodes {format_list(tied)} tie on free memory (within "
        f"{TIE_FRACTION:.0%}), and it has the least CPU load ({shown})"
    )
    return chosen


def make_plan(
    request: Request, topology: Topology, *, root: str = "/", need_command: bool = True
) -> Plan:
    """Check ``request`` against ``topology`` and decide what to apply; change nothing."""
    plan = Plan()
    mode, flags = _checked_mode(request, plan)
    cpus_from_nodes = _cpus_of_nodes(request, topology, plan)
    explicit_cpus = _explicit_cpus(request, topology, plan)
    cpus: frozenset[int] | None = None
    if cpus_from_nodes is not None and explicit_cpus is not None:
        cpus = cpus_from_nodes & explicit_cpus
        if not cpus:
            raise UnsuitableError(
                f"{request.cpus_option} {request.cpus.text if request.cpus else ''} and "
                f"{request.cpu_nodes_option} "
                f"{request.cpu_nodes.text if request.cpu_nodes else ''} have no CPU in common",
                "give CPUs that belong to the chosen nodes, or only one of the two options",
            )
        plan.reasons.append(f"CPUs {format_list(cpus)}: both CPU options together")
    else:
        cpus = cpus_from_nodes if cpus_from_nodes is not None else explicit_cpus

    nodes = _memory_nodes(request, topology, plan)
    if request.preset is not None:
        plan.reasons.append(f"memory policy {mode}: from preset {request.preset}")
    if mode is not None and mode not in NODELESS_MODES and nodes is None:
        word = request.preset_nodes
        if word == "all":
            nodes = frozenset(topology.nodes_with_memory(allowed_only=True))
            plan.reasons.append(
                f"memory nodes {format_list(nodes) or 'none'}: preset {request.preset} asks "
                "for every allowed node with memory"
            )
        else:
            nodes = _implicit_nodes(mode, topology, plan, cpus, root)
        if word == "local+cpuless" and mode != "preferred":
            # The nearest CPU-less memory node (CXL, HBM) to the local node, as the
            # planner does for memory_nodes = "local+cpuless".
            cpuless = [
                n
                for n in topology.nodes_with_memory(allowed_only=True)
                if not topology.nodes[n].cpus
            ]
            if cpuless and nodes:
                nearest = topology.nearest(min(nodes), cpuless)[0]
                nodes |= {nearest}
                plan.reasons.append(
                    f"memory nodes {format_list(nodes)}: preset {request.preset} adds the "
                    f"nearest CPU-less memory node, {nearest}"
                )
        if cpus is None and word != "all" and len(nodes) == 1:
            # numarun chose this node itself (no CPU option to derive it from): run the
            # command there too, or its memory would be remote from its threads.
            cpus = topology.usable_cpus(min(nodes))
            plan.reasons.append(
                f"CPUs {format_list(cpus)}: the usable CPUs of node {min(nodes)}, so the "
                "command runs where its memory is"
            )

    if mode is not None:
        if mode == "preferred" and nodes is not None and len(nodes) > 1:
            raise UsageError(
                f"{request.mode_option}: preferred takes one node but "
                f"{request.nodes_option} names {format_list(nodes)}",
                "use --policy preferred-many for several nodes, or name one node",
            )
        try:
            plan.policy = MemoryPolicy(mode, nodes or (), flags)
        except ValueError as err:
            raise UsageError(str(err), "see numarun(1), MEMORY POLICY") from None
        if request.fallback is not None:
            plan.fallback = canonical_mode(request.fallback)
            if plan.fallback not in NODELESS_MODES and not plan.policy.nodes:
                raise UsageError(
                    f"--fallback {plan.fallback} needs nodes, but the policy has none",
                    "use --fallback local or default",
                )

    if request.smt == "avoid":
        pool = cpus if cpus is not None else topology.usable_cpus()
        kept = one_per_core(topology, pool)
        plan.reasons.append(
            f"CPUs {format_list(kept) or 'none'}: --smt avoid keeps one thread per physical "
            f"core of {format_list(pool) or 'none'}"
        )
        cpus = kept
    if cpus is not None and not cpus:
        raise UnsuitableError(
            "the CPU options leave no CPU to run on",
            f"usable CPUs are {format_list(topology.usable_cpus()) or 'none'}",
        )
    plan.cpus = cpus
    plan.command = list(request.command)
    if need_command:
        if not request.command:
            raise UsageError(
                "no command to run", "put it after the options: numarun [options] -- CMD [ARGS]"
            )
        plan.executable = find_executable(request.command[0])
    return plan


# -- one rank of several (--per-rank) -------------------------------------------------------


def launcher_room(topology: Topology, root: str = "/") -> frozenset[int]:
    """The CPUs a launcher could have bound this process to: what its cgroup allows.

    ``topology.allowed`` is the CPU affinity (``Cpus_allowed_list``) within the cpuset
    cgroup; this is the cgroup's online CPUs alone, whatever the affinity, less the kernel's
    isolated CPUs (``isolcpus=``), which no process has by default and so no launcher took
    away. A rank whose usable CPUs are fewer than this was bound by its launcher.
    """
    from numarun import sysfs
    from numarun.topology import read_cgroup_cpuset

    found = read_cgroup_cpuset(root)
    room = topology.online_cpus()
    if found is not None and found[0] is not None:
        room &= found[0]
    isolated = sysfs.Root(root).read_list("sys/devices/system/cpu/isolated")
    return room - isolated if isolated else room


def make_rank_plan(
    request: Request,
    topology: Topology,
    env: Mapping[str, str],
    *,
    room: frozenset[int] | None = None,
    need_command: bool = True,
) -> Plan:
    """Plan this process as one rank of several on this host (``--per-rank``); change nothing.

    The rank and the number of ranks come from ``env`` or the request (numarun.ranks). All
    ranks plan the same N slots over the usable CPUs with :func:`numarun.plan.plan_slots`
    (within ``--cpus``/``--cpu-nodes`` when given) and each takes its own slot.

    Already bound: when the CPUs this process may run on (``topology.allowed``, its affinity
    within the cgroup) are fewer than its cgroup allows (``room``, see :func:`launcher_room`),
    the launcher bound the rank itself (``mpirun --bind-to``, ``srun --cpu-bind``).
    numarun then plans this rank alone within the CPUs it was given (``--smt`` and the memory
    policy apply within them) instead of re-planning all N over the host: the launcher's
    binding is this rank's share, and numarun cannot know the others' without talking to
    them. ``plan.notice`` says so, for stderr. ``room`` None (a snapshot, whose cgroup is
    unknown) turns the check off.
    """
    from numarun.plan import node_cores, plan_slots
    from numarun.ranks import discover

    info = discover(env, request.rank, request.ranks)
    plan = Plan()
    plan.rank = info.rank
    plan.heading.append(
        f"rank: {info.rank} of {info.size} on this host ({info.launcher}: {info.rank_from}, "
        f"{info.size_from})"
    )
    plan.reasons.append(info.describe())
    mode, flags = _checked_mode(request, plan)
    smt = request.smt or "allow"

    given = topology.usable_cpus()
    host = given if room is None else room | given
    bound = given < host
    pool = given
    by_nodes = _cpus_of_nodes(request, topology, plan)
    by_cpus = _explicit_cpus(request, topology, plan)
    for restricted in (by_nodes, by_cpus):
        if restricted is not None:
            pool = pool & restricted
    if not pool:
        raise UnsuitableError(
            "the CPU options leave no CPU for the ranks",
            f"usable CPUs are {format_list(given) or 'none'}",
        )
    nodes = _memory_nodes(request, topology, plan)

    # A size larger than the CPUs: ranks would share CPUs (cores, with --smt avoid).
    room = host if bound else pool
    cores = [c for n in topology.nodes for c in node_cores(_within(topology, room), n)]
    units = len(cores) if smt == "avoid" else sum(len(c) for c in cores)
    if info.size > units:
        what = "physical cores (--smt avoid)" if smt == "avoid" else "usable CPUs"
        threads = sum(len(c) for c in cores)
        raise UnsuitableError(
            f"--per-rank: {info.size} ranks on this host ({info.size_from}) but only {units} "
            f"{what} to place them on ({format_list(room)}): ranks would share CPUs",
            "use --smt allow"
            if smt == "avoid" and info.size <= threads
            else "start fewer ranks per host, or widen the cpuset",
        )

    warnings: list[str] = []
    policy_mode = mode if mode is not None else "default"
    word = request.preset_nodes if nodes is None else None
    if bound:
        where = _within(topology, pool)
        slot = plan_slots(
            where, 1, smt=smt, policy=policy_mode, memory_nodes=word, warnings=warnings
        )[0]
        plan.notice = (
            f"numarun: rank {info.rank} of {info.size} was already bound by its launcher to CPUs "
            f"{format_list(given)} (its cpuset allows {format_list(host)}); placing it within "
            f"them: CPUs {format_list(slot.cpus)} — start the ranks unbound (mpirun --bind-to "
            "none, srun --cpu-bind=none) to let numarun plan all of them"
        )
        plan.heading.append(
            f"slot: within the launcher's binding {format_list(given)}: node(s) "
            f"{format_list(slot.nodes)}, CPUs {format_list(slot.cpus)} ({_cores(slot.cores)})"
        )
        plan.reasons.append(
            f"already bound: this process may run on CPUs {format_list(given)} only, fewer than "
            f"its cpuset allows ({format_list(host)}), so its launcher placed it; numarun works "
            "within those CPUs as one slot instead of re-planning every rank"
        )
    else:
        where = topology if pool == given else _within(topology, pool)
        slots = plan_slots(
            where, info.size, smt=smt, policy=policy_mode, memory_nodes=word, warnings=warnings
        )
        slot = slots[info.rank]
        plan.heading.append(
            f"slot: {info.rank} of {info.size}: node(s) {format_list(slot.nodes)}, CPUs "
            f"{format_list(slot.cpus)} ({_cores(slot.cores)})"
        )
        plan.reasons.append(
            f"slot {info.rank}: {info.size} slots planned over CPUs {format_list(pool)} "
            f"({_source(topology)}) with smt {smt}, as `numarun plan` would (one node per rank "
            "when ranks equal nodes, in proportion otherwise, cores before SMT siblings); "
            "every rank computes the same plan"
        )
    plan.warnings = warnings
    plan.reasons.extend(warnings)
    plan.cpus = frozenset(slot.cpus)

    if mode is not None:
        chosen = nodes if nodes is not None else slot.memory.nodes
        if nodes is None and mode not in NODELESS_MODES:
            plan.reasons.append(
                f"memory nodes {format_list(chosen)}: "
                + (f"preset {request.preset} asks for {word}" if word else "the slot's own")
            )
        if mode == "preferred" and len(chosen) > 1:
            raise UsageError(
                f"{request.mode_option}: preferred takes one node but "
                f"{request.nodes_option} names {format_list(chosen)}",
                "use --policy preferred-many for several nodes, or name one node",
            )
        try:
            plan.policy = MemoryPolicy(mode, () if mode in NODELESS_MODES else chosen, flags)
        except ValueError as err:
            raise UsageError(str(err), "see numarun(1), MEMORY POLICY") from None
        if request.preset is not None:
            plan.reasons.append(f"memory policy {mode}: from preset {request.preset}")
        if request.fallback is not None:
            plan.fallback = canonical_mode(request.fallback)
            if plan.fallback not in NODELESS_MODES and not plan.policy.nodes:
                raise UsageError(
                    f"--fallback {plan.fallback} needs nodes, but the policy has none",
                    "use --fallback local or default",
                )
    plan.command = list(request.command)
    if need_command:
        if not request.command:
            raise UsageError(
                "no command to run", "put it after the options: numarun [options] -- CMD [ARGS]"
            )
        plan.executable = find_executable(request.command[0])
    return plan


def _cores(count: int) -> str:
    return f"{count} core" if count == 1 else f"{count} cores"


def _within(topology: Topology, cpus: frozenset[int]) -> Topology:
    """``topology`` with ``cpus`` allowed instead: the planner then plans within them.

    The source stays the cgroup's: a refusal about memory nodes must still name it.
    """
    from numarun.topology import Allowed, Topology

    allowed = topology.allowed
    return Topology(
        nodes=topology.nodes,
        cpus=topology.cpus,
        cores=topology.cores,
        allowed=Allowed(cpus=cpus, mems=allowed.mems, source=allowed.source),
        identity=topology.identity,
        source=topology.source,
    )


def _checked_mode(request: Request, plan: Plan) -> tuple[str | None, set[str]]:
    """The memory policy mode asked for (None: leave it alone) and its flags, checked."""
    mode = request.mode
    flags = set(request.flags)
    if mode is None and request.nodes is not None:
        mode = "bind"
        plan.reasons.append(
            f"memory policy bind: {request.nodes_option} was given without --policy"
        )
    if mode is None and flags:
        raise UsageError(
            f"mode flag {sorted(flags)[0]} needs a memory policy",
            "add --policy bind (or interleave, preferred, ...) and --nodes",
        )
    if mode is not None and mode in NODELESS_MODES and request.nodes is not None:
        raise UsageError(
            f"memory policy {mode} takes no nodes but {request.nodes_option} "
            f"{request.nodes.text} was given",
            f"drop {request.nodes_option}, or use --policy bind/preferred/interleave",
        )
    if request.fallback is not None and mode is None:
        raise UsageError("--fallback needs a memory policy", "add --policy MODE")
    return mode, flags


def _implicit_nodes(
    mode: str, topology: Topology, plan: Plan, cpus: frozenset[int] | None, root: str
) -> frozenset[int]:
    """Memory nodes for a policy given without nodes."""
    with_memory = frozenset(topology.nodes_with_memory(allowed_only=True))
    if cpus is not None:
        local = frozenset(n for c in cpus if (n := topology.node_of(c)) is not None)
        nodes = local & with_memory
        if nodes:
            if mode == "preferred" and len(nodes) > 1:
                nodes = frozenset({choose_node(topology, plan, root=root, among=nodes)})
            else:
                plan.reasons.append(
                    f"memory nodes {format_list(nodes)}: the nodes of the chosen CPUs"
                )
            return nodes
    if mode in ("interleave", "weighted-interleave"):
        if not with_memory:
            raise UnsuitableError(
                "no node with memory is allowed to this process",
                f"check cpuset.mems ({_source(topology)})",
            )
        plan.reasons.append(
            f"memory nodes {format_list(with_memory)}: {mode} without --nodes spreads over "
            "every allowed node with memory"
        )
        return with_memory
    return frozenset({choose_node(topology, plan, root=root)})


def one_per_core(topology: Topology, cpus: frozenset[int]) -> frozenset[int]:
    """The lowest-numbered CPU of ``cpus`` on each physical core (``--smt avoid``)."""
    by_core: dict[object, int] = {}
    for cpu in sorted(cpus):
        info = topology.cpus.get(cpu)
        key: object = info.core if info is not None and info.core is not None else ("cpu", cpu)
        by_core.setdefault(key, cpu)
    return frozenset(by_core.values())


# -- the command --------------------------------------------------------------------------


def find_executable(name: str) -> str:
    """Resolve ``name`` the way ``execvp`` does; refuse with exit 127 or 126 before anything.

    A name with a slash is used as it is; otherwise each ``PATH`` directory is tried in
    order and the first executable regular file wins. A file that exists but cannot be
    executed gives 126 only when nothing later on ``PATH`` can be.
    """
    if not name:
        raise CommandNotFoundError("the command name is empty", "give a command after --")
    if "/" in name:
        candidates = [name]
    else:
        path = os.environ.get("PATH", os.defpath)
        candidates = [os.path.join(d or ".", name) for d in path.split(os.pathsep)]
    denied: str | None = None
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o040000:  # a directory
            denied = denied or candidate
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied is not None:
        what = "a directory" if os.path.isdir(denied) else "not executable"
        raise CommandNotExecutableError(
            f"{name} is {what}" if denied == name else f"{name}: {denied} is {what}",
            "chmod +x it, or run it through its interpreter (sh FILE, python3 FILE)",
        )
    where = "" if "/" in name else " on PATH"
    raise CommandNotFoundError(
        f"{name}: command not found{where}", "check the spelling, or give its full path"
    )


def exec_command(executable: str, argv: list[str]) -> None:
    """Replace this process with ``argv`` (run from ``executable``); returns only by raising.

    Like ``execvp(3)``, a file the kernel cannot run (``ENOEXEC``: a script without a
    ``#!`` line) is run by ``/bin/sh``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(executable, argv)
    except OSError as err:
        if err.errno == 8:  # ENOEXEC
            _exec_or_return("/bin/sh", ["sh", executable, *argv[1:]])
        if err.errno == 2:
            raise CommandNotFoundError(
                f"{argv[0]}: {executable} vanished or its interpreter is missing ({err.strerror})",
                "check the #! line of the script",
            ) from None
        raise CommandNotExecutableError(
            f"{argv[0]}: cannot execute {executable}: {err.strerror}",
            "check its permissions and format (is it built for this machine?)",
        ) from None


def _exec_or_return(executable: str, argv: list[str]) -> None:
    """``execv`` that returns, rather than raises, when it fails (the caller reports)."""
    try:
        os.execv(executable, argv)
    except OSError:
        return


# -- applying -----------------------------------------------------------------------------


def apply_plan(plan: Plan, *, warn: bool = True) -> MemoryPolicy | None:
    """Set the memory policy, then the CPU affinity, of the calling thread.

    Returns the memory policy in force (the fallback's, when it was used, which is then
    reported on stderr unless ``warn`` is false).
    """
    applied: MemoryPolicy | None = None
    if plan.policy is not None:
        from numarun.mempolicy import apply_with_fallback

        applied, reason = apply_with_fallback(plan.policy, plan.fallback)
        if reason is not None and warn:
            print(
                f"numarun: {reason.problem}; using {applied} instead (--fallback)",
                file=sys.stderr,
            )
    if plan.cpus is not None:
        set_affinity(plan.cpus)
    return applied


def set_affinity(cpus: frozenset[int]) -> None:
    """``sched_setaffinity`` on this process, errors translated."""
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as err:
        if err.errno == 22:  # EINVAL: no CPU of the set is both online and allowed
            raise NotAllowedError(
                f"the kernel refused CPU affinity {format_list(cpus)} (EINVAL): none of those "
                "CPUs is online and allowed by this process's cpuset",
                "check numarun --show and the cgroup's cpuset.cpus",
            ) from None
        if err.errno == 1:
            raise KernelRefusedError(
                f"the kernel refused sched_setaffinity (EPERM) for CPUs {format_list(cpus)}: "
                "a seccomp filter or security module blocks it",
                "allow sched_setaffinity, or leave out the CPU options",
            ) from None
        raise KernelRefusedError(
            f"sched_setaffinity failed: {err.strerror} (errno {err.errno})"
        ) from None


# -- describing ---------------------------------------------------------------------------


def describe(plan: Plan, *, explain: bool) -> str:
    """The ``--dry-run`` / ``--explain`` text."""
    lines: list[str] = list(plan.heading)
    import shlex

    if plan.policy is not None:
        line = f"memory policy: {plan.policy}"
        if plan.fallback:
            line += f" (fallback {plan.fallback})"
        lines.append(line)
    else:
        lines.append("memory policy: unchanged (inherited)")
    lines.append(f"cpus: {format_list(plan.cpus)}" if plan.cpus is not None else "cpus: unchanged")
    if plan.command:
        lines.append(f"command: {shlex.join(plan.command)}")
        if plan.executable and plan.executable != plan.command[0]:
            lines.append(f"executable: {plan.executable}")
    if explain and plan.reasons:
        lines.append("why:")
        lines.extend(f"  - {reason}" for reason in plan.reasons)
    return "\n".join(lines)
