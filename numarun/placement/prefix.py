"""The prefix form's placement: what ``numarun [options] -- CMD`` will apply, and why.

:func:`plan_prefix` is a short composition over the engine: the CPUs the options name
(:mod:`.resolve`, checked against the cpuset, so they may widen the inherited affinity), the
memory nodes (named, a preset's word, the nodes of those CPUs, or a node numarun chooses
within the inherited affinity), then the two rules that make numarun's own spelling safe:

* **CPUs follow memory.** ``--policy bind|preferred|preferred-many --nodes N`` without a CPU
  option runs the command on the CPUs of N's nodes: threads next to their memory. numactl's
  spellings (``-m``, ``--membind``, ``-p``, ``-P``, ``-i``, ``-w``) keep numactl's meaning and
  leave the CPUs alone, with one warning when memory is bound away from them.
* ``--smt avoid`` keeps one thread per physical core of whatever CPUs were chosen.

Nothing is changed: :mod:`numarun.launch` applies the result.
"""

from __future__ import annotations

from numarun import refusals
from numarun.cpulist import format_list
from numarun.errors import UsageError
from numarun.mempolicy import NODELESS_MODES, MemoryPolicy, canonical_mode
from numarun.placement import resolve
from numarun.placement.bounds import bounds_of
from numarun.placement.cores import one_per_core
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from numarun.nodespec import Spec
    from numarun.placement.bounds import Bounds
    from numarun.placement.choose import Chooser
    from numarun.topology import Device, Topology

#: Options in numarun's own spelling: with them, the CPUs follow the memory nodes.
OWN_SPELLINGS = ("--policy", "--nodes")
#: numactl's names of the CPU option: CPUs within the inherited affinity unless -a.
NUMACTL_CPU_SPELLINGS = ("-C", "--physcpubind")
#: Modes whose memory is meant to be near the threads that use it.
NEAR_MODES = ("bind", "preferred", "preferred-many")


class Request:
    """What the user asked for, parsed but not yet checked against a machine.

    A builder the option parser fills in: ``mode`` is a canonical mode name or None (no
    memory policy asked for); ``preset`` the preset it came from, whose ``memory_nodes`` word
    (``all``, ``local``, ``local+cpuless``) is kept in ``node_word`` when it is not a node
    spec; ``nodes``, ``cpu_nodes`` and ``cpus`` are parsed specs or None; the ``*_option``
    fields name the option each came from, for messages and for the spelling rules (``-m``
    keeps numactl's meaning, ``--nodes`` numarun's). ``--nodes local`` and ``--nodes
    local+cpuless`` are words too, the spec's ``memory_nodes`` words: they go to
    ``node_word``, with ``nodes_option`` naming ``--nodes``. ``whole_machine`` is numactl's ``-a``.
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
        "node_word",
        "nodes",
        "nodes_option",
        "per_gpu",
        "per_rank",
        "preset",
        "rank",
        "ranks",
        "smt",
        "whole_machine",
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
        self.node_word: str | None = None  # "all", "local" or "local+cpuless" (preset, --nodes)
        self.fallback: str | None = None
        self.flags: set[str] = set()
        self.command: list[str] = []
        self.per_rank = False  # --per-rank (or --rank/--ranks): see numarun.placement.rank
        self.per_gpu = False  # --per-gpu: local rank i gets GPU i (implies per_rank)
        self.rank: int | None = None
        self.ranks: int | None = None
        self.whole_machine = False


class LaunchPlan(Value):
    """What will be applied: a memory policy (or None), a CPU set (or None), and why.

    ``reasons`` are sentences for ``--explain``; ``warnings`` go to stderr before the
    command runs; ``executable`` is the resolved command (None without one, as for
    ``--show``). ``heading``, ``rank`` and ``notice`` are ``--per-rank``'s. ``env`` is set
    in the command's environment: the device it runs near (``--nodes gpu:0``), its GPU.
    """

    policy: MemoryPolicy | None
    cpus: frozenset[int] | None
    fallback: str | None = None
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    executable: str | None = None
    heading: tuple[str, ...] = ()
    rank: int | None = None
    notice: str | None = None
    env: dict[str, str] = {}  # noqa: RUF012 - variables the command gets (near a device)


def checked_mode(request: Request, reasons: list[str]) -> tuple[str | None, frozenset[str]]:
    """The memory policy mode asked for (None: leave it alone) and its flags, checked."""
    mode = request.mode
    named = request.nodes.text if request.nodes is not None else _typed_word(request)
    if mode is None and named is not None:
        mode = "bind"
        reasons.append(f"memory policy bind: {request.nodes_option} was given without --policy")
    if mode is None and request.flags:
        raise UsageError(
            f"mode flag {sorted(request.flags)[0]} needs a memory policy",
            "add --policy bind (or interleave, preferred, ...) and --nodes",
        )
    if mode in NODELESS_MODES and named is not None:
        raise refusals.nodeless_with_nodes(
            request.mode_option, mode, f"{request.nodes_option} {named}"
        )
    if request.fallback is not None and mode is None:
        raise UsageError("--fallback needs a memory policy", "add --policy MODE")
    return mode, frozenset(request.flags)


def requested_cpus(
    request: Request, topology: Topology, bounds: Bounds, reasons: list[str]
) -> frozenset[int] | None:
    """The CPUs ``--cpu-nodes`` and ``--cpus`` name (both: their intersection), or None."""
    found: list[frozenset[int]] = []
    if request.cpu_nodes is not None:
        spec, option = request.cpu_nodes, request.cpu_nodes_option
        nodes, cpus = resolve.cpu_nodes(spec, option, topology, bounds, bounds.cpus)
        reasons.append(
            f"CPUs {format_list(cpus)}: the usable CPUs of node(s) {format_list(nodes)} from "
            f"{option} {spec.text}"
        )
        found.append(cpus)
    if request.cpus is not None:
        # numactl's spelling keeps to the inherited affinity, as numactl does; --cpus widens.
        keep = request.cpus_option in NUMACTL_CPU_SPELLINGS
        cpus = resolve.cpus(request.cpus, request.cpus_option, topology, bounds, keep_affinity=keep)
        reasons.append(f"CPUs {format_list(cpus)}: from {request.cpus_option} {request.cpus.text}")
        found.append(cpus)
    if not found:
        return None
    common = frozenset.intersection(*found)
    if not common:
        raise refusals.no_cpus(f"{request.cpus_option} and {request.cpu_nodes_option}", bounds.cpus)
    if len(found) > 1:
        reasons.append(f"CPUs {format_list(common)}: both CPU options together")
    return common


def _implicit_nodes(
    request: Request,
    mode: str,
    topology: Topology,
    bounds: Bounds,
    *,
    cpus: frozenset[int] | None,
    chooser: Chooser,
    notes: tuple[list[str], list[str]],
) -> tuple[frozenset[int], int | None]:
    """Memory nodes for a policy given without nodes, and the node numarun chose (or None)."""
    reasons, warnings = notes
    word = request.node_word
    where = _word_source(request)
    if word == "all" or (word is None and cpus is None and mode.endswith("interleave")):
        nodes = resolve.policy_nodes(
            topology, bounds, mode=mode, word="all", home=0, worker_nodes=(), where=where,
            warn=warnings.append,
        )  # fmt: skip
        reasons.append(f"memory nodes {format_list(nodes)}: every allowed node with memory")
        return frozenset(nodes), None
    chosen: int | None = None
    if cpus is not None:
        local = resolve.nodes_of(topology, cpus)
        home = local[0]
    else:
        candidates = [
            n
            for n in resolve.memory_nodes(topology, bounds)
            if topology.nodes[n].cpus & bounds.inherited
        ]
        if not candidates:
            raise refusals.nothing_to_choose(where)
        home, why = chooser(topology, candidates)
        reasons.append(f"{why}, within {bounds.affinity}")
        local, chosen = [home], home
    nodes = resolve.policy_nodes(
        topology, bounds, mode=mode, word=word or "local", home=home, worker_nodes=local,
        where=where, warn=warnings.append,
    )  # fmt: skip
    origin = f"{where} asks for {word}" if word else "the nodes of the CPUs"
    reasons.append(f"memory nodes {format_list(nodes)}: {origin}")
    return frozenset(nodes), chosen


def _typed_word(request: Request) -> str | None:
    """``--nodes local+cpuless`` (or ``local``) as typed; None for a preset's word."""
    return request.node_word if request.nodes_option == "--nodes" else None


def _word_source(request: Request) -> str:
    """Where the memory word came from: ``--nodes``, a preset, or the policy option."""
    if _typed_word(request) is not None:
        return "--nodes"
    return f"--policy {request.preset}" if request.preset else request.mode_option


def _cpus_follow_memory(
    request: Request,
    mode: str,
    *,
    nodes: frozenset[int],
    topology: Topology,
    bounds: Bounds,
    notes: tuple[list[str], list[str]],
) -> frozenset[int] | None:
    """The CPUs for memory nodes named in numarun's spelling, or a warning for numactl's."""
    reasons, warnings = notes
    if mode not in NEAR_MODES:
        return None
    if request.nodes_option in OWN_SPELLINGS or request.mode_option.startswith("--policy"):
        with_cpus = [n for n in sorted(nodes) if topology.nodes[n].cpus & bounds.cpus]
        if not with_cpus:  # CPU-less memory (CXL, HBM): run next to it
            near = resolve.nodes_with_cpus(topology, bounds.cpus)
            if not near:
                return None
            with_cpus = [topology.nearest(min(nodes), near)[0]]
        cpus = frozenset().union(*(resolve.node_cpus(topology, n, bounds.cpus) for n in with_cpus))
        reasons.append(
            f"CPUs {format_list(cpus)}: the usable CPUs of node(s) {format_list(with_cpus)}, so "
            "the command runs next to its memory (numarun's --nodes; numactl's -m leaves CPUs)"
        )
        return cpus
    away = bounds.inherited - frozenset().union(*(topology.nodes[n].cpus for n in nodes))
    if away and mode == "bind":
        nodes_text = format_list(nodes)
        warnings.append(
            f"warning: memory is bound to node {nodes_text} but the command may run on CPUs "
            f"{format_list(away)} of other nodes, whose threads would read it remotely — add "
            f"-N {nodes_text}, or write --policy bind --nodes {nodes_text}"
        )
    return None


def plan_prefix(
    request: Request,
    topology: Topology,
    *,
    chooser: Chooser | None = None,
    need_command: bool = True,
) -> LaunchPlan:
    """Check ``request`` against ``topology`` and decide what to apply; change nothing."""
    bounds = bounds_of(topology, whole_machine=request.whole_machine)
    reasons: list[str] = []
    if request.whole_machine:
        reasons.append(
            "-a: all, ! and + count every node and CPU of the machine; the kernel keeps those "
            f"{bounds.cpuset} allows"
        )
    warnings: list[str] = []
    notes = (reasons, warnings)
    request, env = device_nodes(request, topology, bounds, notes)
    mode, flags = checked_mode(request, reasons)
    cpus = requested_cpus(request, topology, bounds, reasons)
    nodes = named_nodes(request, topology, bounds, reasons)
    if request.preset is not None:
        reasons.append(f"memory policy {mode}: from preset {request.preset}")
    if mode is not None and mode not in NODELESS_MODES:
        chosen: int | None = None
        if nodes is None:
            nodes, chosen = _implicit_nodes(
                request,
                mode,
                topology,
                bounds,
                cpus=cpus,
                chooser=chooser or _default_chooser,
                notes=notes,
            )
        if cpus is None and chosen is not None:
            # numarun chose the node itself: run there too, within the inherited affinity.
            cpus = resolve.node_cpus(topology, chosen, bounds.inherited)
            reasons.append(
                f"CPUs {format_list(cpus)}: the usable CPUs of node {chosen}, so the "
                "command runs where its memory is"
            )
        elif cpus is None and request.nodes is not None and "relative-nodes" not in flags:
            # (relative nodes are positions the kernel maps: no CPUs to follow them to)
            cpus = _cpus_follow_memory(
                request, mode, nodes=nodes, topology=topology, bounds=bounds, notes=notes
            )
    policy = _policy(request, mode, nodes, flags)
    if request.smt == "avoid":
        pool = cpus if cpus is not None else bounds.inherited
        cpus = one_per_core(topology, pool)
        reasons.append(
            f"CPUs {format_list(cpus)}: --smt avoid keeps one thread per physical core of "
            f"{format_list(pool)}"
        )
    if cpus is not None and not cpus:
        raise refusals.no_cpus("the CPU options", bounds.cpus)
    return LaunchPlan(
        policy=policy,
        cpus=cpus,
        fallback=fallback_mode(request, policy),
        reasons=tuple(reasons + warnings),
        warnings=tuple(warnings),
        command=tuple(request.command),
        executable=command_executable(request, need_command),
        env=env,
    )


def _default_chooser(topology: Topology, candidates: Sequence[int]) -> tuple[int, str]:
    from numarun.placement.choose import by_free_memory  # only when a node is chosen

    return by_free_memory()(topology, candidates)


def _relative_positions(
    spec: Spec, option: str, bounds: Bounds, reasons: list[str]
) -> frozenset[int]:
    """``--relative-nodes``: positions within the cpuset's allowed nodes, which the kernel maps
    (and remaps when the cpuset changes). They name no node by number, so they are not
    checked against the machine; ``all`` is every position, and ``!``/``+`` mean nothing."""
    if spec.invert or spec.relative:
        raise UsageError(
            f"{option} {spec.text}: with --relative-nodes the nodes are already positions",
            "write the positions themselves (0, 1-2), or drop --relative-nodes",
        )
    items = frozenset(range(len(bounds.mems))) if spec.everything else spec.items
    reasons.append(
        f"memory nodes {format_list(items)}: positions within the allowed set "
        f"({format_list(bounds.mems)}), mapped by the kernel (relative-nodes)"
    )
    return items


def device_nodes(
    request: Request, topology: Topology, bounds: Bounds, notes: tuple[list[str], list[str]]
) -> tuple[Request, dict[str, str]]:
    """The request with node specs naming a device (``-N netdev:eth0``) made node numbers,
    and the environment that tells the command the device (:func:`resolve.device_env`).

    A copy: the same request is planned once per rank with ``--per-rank``.
    """
    specs = {"nodes": request.nodes_option, "cpu_nodes": request.cpu_nodes_option}
    if not any(getattr(request, key) is not None and getattr(request, key).device for key in specs):
        return request, {}
    copy = Request()
    for key in Request.__slots__:
        setattr(copy, key, getattr(request, key))
    copy.flags = set(request.flags)
    reasons, warnings = notes
    found: list[Device] = []
    for key, option in specs.items():
        spec = getattr(request, key)
        if spec is not None:
            setattr(
                copy,
                key,
                resolve.device_spec(
                    spec, option, topology, bounds.cpus, reasons=reasons,
                    warn=lambda text: warnings.append(f"warning: {text}"), found=found,
                ),
            )  # fmt: skip
    return copy, resolve.device_env(found[0])  # --nodes's device first: memory near it


def named_nodes(
    request: Request, topology: Topology, bounds: Bounds, reasons: list[str]
) -> frozenset[int] | None:
    """The memory nodes named by an option or a preset, checked; None when none were."""
    spec = request.nodes
    if spec is None:
        return None
    option = request.nodes_option
    if "relative-nodes" in request.flags:
        return _relative_positions(spec, option, bounds, reasons)
    nodes = resolve.named_memory_nodes(spec, option, topology, bounds)
    reasons.append(f"memory nodes {format_list(nodes)}: from {option} {spec.text}")
    return nodes


def _policy(
    request: Request, mode: str | None, nodes: frozenset[int] | None, flags: frozenset[str]
) -> MemoryPolicy | None:
    if mode is None:
        return None
    if mode == "preferred" and nodes is not None and len(nodes) > 1:
        raise refusals.preferred_several(request.nodes_option, nodes)
    try:
        return MemoryPolicy(mode, () if mode in NODELESS_MODES else (nodes or ()), set(flags))
    except ValueError as err:
        raise UsageError(str(err), "see numarun(1), MEMORY POLICY") from None


def fallback_mode(request: Request, policy: MemoryPolicy | None) -> str | None:
    if request.fallback is None or policy is None:
        return None
    fallback = canonical_mode(request.fallback)
    if fallback not in NODELESS_MODES and not policy.nodes:
        raise UsageError(
            f"--fallback {fallback} needs nodes, but the policy has none",
            "use --fallback local or default",
        )
    return fallback


def command_executable(request: Request, need_command: bool) -> str | None:
    if not need_command:
        return None
    if not request.command:
        raise UsageError(
            "no command to run", "put it after the options: numarun [options] -- CMD [ARGS]"
        )
    from numarun.executable import find_executable

    return find_executable(request.command[0])


def describe(plan: LaunchPlan, *, explain: bool) -> str:
    """The ``--dry-run`` / ``--explain`` text."""
    import shlex

    lines: list[str] = list(plan.heading)
    if plan.policy is not None:
        line = f"memory policy: {plan.policy}"
        if plan.fallback:
            line += f" (fallback {plan.fallback})"
        lines.append(line)
    else:
        lines.append("memory policy: unchanged (inherited)")
    lines.append(f"cpus: {format_list(plan.cpus)}" if plan.cpus is not None else "cpus: unchanged")
    lines.extend(f"env: {name}={value}" for name, value in sorted(plan.env.items()))
    if plan.command:
        lines.append(f"command: {shlex.join(plan.command)}")
        if plan.executable and plan.executable != plan.command[0]:
            lines.append(f"executable: {plan.executable}")
    if explain and plan.reasons:
        lines.append("why:")
        lines.extend(f"  - {reason}" for reason in plan.reasons)
    return "\n".join(lines)
