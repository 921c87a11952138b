"""``numarun [placement options] -- CMD [ARGS...]``: the prefix form, numactl's spellings too.

This runs before every wrapped command, so it imports only what it uses: no argparse
(~13 ms), typer or pydantic. The options are numarun.options' table, read by its
getopt_long-style parser as numactl reads them (``-m 1``, ``-m1``, ``--membind=1``,
``-lN1``, ``--phys=3``); like numactl it stops at ``--`` or at the first word that is not
an option, which starts the command. Options numactl accepts and ignores (``-b`` without
a bind policy, a command after ``-s`` or ``-H``) get a warning line, not a refusal.
"""

from __future__ import annotations

import os
import sys

from numarun.errors import UsageError
from numarun.nodespec import parse_spec
from numarun.placement.prefix import Request
from numarun.placement.resolve import MEMORY_WORDS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from numarun.placement.prefix import LaunchPlan
    from numarun.topology import Topology

# numactl's policy options (table keys, numarun.options) and the mode each sets.
_POLICY_OPTIONS: dict[str, str] = {
    "membind": "bind",
    "interleave": "interleave",
    "preferred": "preferred",
    "preferred_many": "preferred-many",
    "weighted_interleave": "weighted-interleave",
}
# The job spec's memory words --nodes takes besides node specs (its "all" is one already).
NODE_WORDS = tuple(word for word in MEMORY_WORDS if word != "all")
# Mode flag switches and the flag each adds.
_FLAG_OPTIONS: dict[str, str] = {
    "static_nodes": "static-nodes",
    "relative_nodes": "relative-nodes",
    "balancing": "numa-balancing",
}
# Switches that only set an attribute of the same name on _Options.
_PLAIN_SWITCHES = frozenset(
    {"show", "hardware", "dry_run", "explain", "help", "version", "whole_machine", "cpu_compress"}
)


class _Options:
    """The prefix form's parse: the engine's :class:`~numarun.launch.Request` and the rest.

    ``whole_machine`` is numactl's ``-a``/``--all`` (specs count every node and CPU, not
    only the cpuset's), passed on as ``Request.whole_machine``;
    ``cpu_compress`` is numactl's ``--cpu-compress`` (``--hardware`` prints ranges);
    ``warnings`` are lines for options numactl ignores, printed before anything runs.
    """

    __slots__ = (
        "cpu_compress",
        "dry_run",
        "explain",
        "hardware",
        "help",
        "last_nodes",
        "preset",
        "request",
        "root",
        "show",
        "topology",
        "version",
        "warnings",
        "whole_machine",
    )

    def __init__(self) -> None:
        self.request = Request()
        self.show = False
        self.hardware = False
        self.dry_run = False
        self.explain = False
        self.help = False
        self.version = False
        self.whole_machine = False
        self.cpu_compress = False
        self.topology: str | None = None
        self.root: str | None = None
        self.preset: str | None = None
        self.last_nodes: str | None = None  # the text `same` stands for, as in numactl
        self.warnings: list[str] = []


def _set_mode(opts: _Options, mode: str, option: str) -> None:
    request = opts.request
    if request.mode is not None and (request.mode != mode or request.mode_option != option):
        raise UsageError(
            f"{request.mode_option} and {option} both set the memory policy",
            "give one memory policy",
        )
    request.mode = mode
    request.mode_option = option


def _set_nodes(opts: _Options, value: str, option: str) -> None:
    """A node spec, or for ``--nodes`` one of the spec's memory words (``local+cpuless``)."""
    request = opts.request
    given = request.nodes.text if request.nodes is not None else request.node_word
    if given is not None:
        raise UsageError(
            f"{request.nodes_option} {given} and {option} {value} both name memory nodes",
            "give the memory nodes once",
        )
    request.nodes_option = option
    if option == "--nodes" and value.strip() in NODE_WORDS:
        request.node_word = value.strip()
    else:
        request.nodes = parse_spec(value, option, "node")


def _node_text(opts: _Options, value: str, option: str) -> str:
    """``same`` is the previous node option's nodes (numactl's numactl_parse_nodestring)."""
    if value.strip() != "same":
        opts.last_nodes = value
        return value
    if opts.last_nodes is None:
        raise UsageError(
            f"{option} same: no node option comes before it",
            f"give the nodes first, e.g. --membind=1 {option} same",
        )
    return opts.last_nodes


def _count(value: str, option: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 6):
        raise UsageError(f"{option} {value!r} is not a number", f"give {option} N")
    return int(value)


def _take(opts: _Options, key: str, option: str, value: str) -> None:  # noqa: PLR0912
    # One branch per value option of the table: a dispatch, clearer flat than split.
    from numarun.mempolicy import canonical_mode

    request = opts.request
    if key in _POLICY_OPTIONS:  # a numactl policy option: mode and nodes at once
        value = _node_text(opts, value, option)
        _set_mode(opts, _POLICY_OPTIONS[key], option)
        if key == "preferred":
            spec = parse_spec(value, option, "node")
            if spec.everything or spec.invert or len(spec.items) != 1:
                raise UsageError(
                    f"{option} takes one node, not {value!r}",
                    "use -P/--preferred-many for several nodes",
                )
        _set_nodes(opts, value, option)
    elif key == "policy":
        try:
            mode = canonical_mode(value)
        except ValueError:
            if opts.preset is not None:
                raise UsageError("--policy given twice", "give one policy") from None
            opts.preset = value  # applied after all options, see _apply_preset
            return
        _set_mode(opts, mode, option)
    elif key == "nodes":
        _set_nodes(opts, _node_text(opts, value, option), option)
    elif key == "cpu_nodes":
        value = _node_text(opts, value, option)
        if request.cpu_nodes is not None:
            raise UsageError(f"{option} given twice", "give the CPU nodes once")
        request.cpu_nodes = parse_spec(value, option, "node")
        request.cpu_nodes_option = option
    elif key == "cpus":
        if request.cpus is not None:
            raise UsageError(f"{option} given twice", "give the CPUs once")
        request.cpus = parse_spec(value, option, "CPU")
        request.cpus_option = option
    elif key == "smt":
        if value not in ("avoid", "allow"):
            raise UsageError(f"--smt {value!r} is not avoid or allow", "use --smt avoid or allow")
        request.smt = value
    elif key == "fallback":
        try:
            request.fallback = canonical_mode(value)
        except ValueError as err:
            raise UsageError(f"--fallback: {err}", "name a memory policy mode") from None
    elif key in ("rank", "ranks"):
        if getattr(request, key) is not None:
            raise UsageError(f"{option} given twice", f"give {option} once")
        setattr(request, key, _count(value, option))
        request.per_rank = True
    elif key == "topology":
        opts.topology = value
    elif key == "root":
        opts.root = value


def _apply_preset(opts: _Options, name: str) -> None:
    """``--policy NAME`` that is not a mode: a preset from the search path (numarun.presets).

    Applied after every option is read, so that explicit options win whatever their order:
    the preset gives the mode (a conflicting explicit mode is refused), the memory nodes
    when none were named, and ``smt`` when ``--smt`` was not given.
    """
    from numarun import presets
    from numarun.mempolicy import MODES

    preset = presets.find_preset(name)
    if preset is None:
        names = presets.preset_names()
        raise UsageError(
            f"--policy {name!r} is neither a memory policy mode nor a preset",
            f"modes are {', '.join(MODES)}"
            + (f"; presets are {', '.join(names)}" if names else ""),
        )
    request = opts.request
    _set_mode(opts, preset.mode, f"--policy {name}")
    request.preset = name
    if request.nodes is None and request.node_word is None and preset.memory_nodes is not None:
        if preset.memory_nodes in MEMORY_WORDS:
            request.node_word = preset.memory_nodes
            request.nodes_option = f"preset {name} memory_nodes"
        else:
            request.nodes = parse_spec(preset.memory_nodes, f"preset {name} memory_nodes")
            request.nodes_option = f"preset {name} memory_nodes"
    if request.smt is None and preset.smt is not None:
        request.smt = preset.smt


def parse_args(argv: list[str]) -> _Options:
    """Parse the prefix form's arguments (numarun.options); the command is everything after."""
    from numarun.options import PREFIX, parse

    parsed = parse(PREFIX, argv)
    opts = _Options()
    for opt, name, value in parsed.given:
        if isinstance(value, str):
            _take(opts, opt.key, name, value)
        else:
            _switch(opts, opt.key, name)
    opts.request.command = parsed.operands
    if opts.preset is not None:
        _apply_preset(opts, opts.preset)
    _ignore_as_numactl_does(opts)
    opts.request.whole_machine = opts.whole_machine
    return opts


def _switch(opts: _Options, key: str, option: str) -> None:
    if key == "whole_machine":
        _all_comes_first(opts, option)
    if key == "localalloc":
        _set_mode(opts, "local", option)
    elif key in _FLAG_OPTIONS:
        opts.request.flags.add(_FLAG_OPTIONS[key])
    elif key == "per_rank":
        opts.request.per_rank = True
    elif key == "per_gpu":
        opts.request.per_rank = opts.request.per_gpu = True
    elif key in _PLAIN_SWITCHES:
        setattr(opts, key, True)


def _all_comes_first(opts: _Options, option: str) -> None:
    """numactl applies each node and CPU option as it reads it, so -a changes only those
    after it, and numactl refuses it after one (its check_all_parse; its test bind_range
    expects that): refused alike rather than silently applied to options before it."""
    request = opts.request
    for spec, name in (
        (request.nodes, request.nodes_option),
        (request.cpu_nodes, request.cpu_nodes_option),
        (request.cpus, request.cpus_option),
    ):
        if spec is not None:
            raise UsageError(
                f"{option} comes after {name} {spec.text}; it must come before every node "
                "and CPU option, as in numactl",
                f"put {option} first: numarun {option} {name} {spec.text} ...",
            )


def _ignore_as_numactl_does(opts: _Options) -> None:
    """Options numactl accepts and ignores: a warning each, and numarun goes on, since what
    numactl does is what drop-in scripts expect."""
    request = opts.request
    bind = request.mode == "bind" or (request.mode is None and request.nodes is not None)
    if "numa-balancing" in request.flags and not bind:
        request.flags.discard("numa-balancing")
        opts.warnings.append(
            "-b/--balancing applies to a bind policy (-m NODES) only; ignored, as numactl does"
        )
    if request.command and (opts.show or opts.hardware):
        shown = "--show" if opts.show else "--hardware"
        opts.warnings.append(
            f"{shown} prints and exits, so {request.command[0]} is not run, as with numactl"
        )
        request.command = []
    if opts.cpu_compress and not opts.hardware:
        opts.warnings.append("--cpu-compress only changes --hardware's output; ignored")


def _topology(opts: _Options) -> Topology:
    if opts.topology is not None and opts.root is not None:
        raise UsageError("--topology and --root both name a machine", "give one")
    if opts.topology is not None:
        from numarun.topology import load_topology

        return load_topology(opts.topology)
    from numarun.topology import read_topology

    # The PCI devices cost a few files each: read only when a node is named by one (or
    # --per-gpu gives each rank its GPU).
    named = (opts.request.nodes, opts.request.cpu_nodes)
    devices = opts.request.per_gpu or any(s is not None and s.device is not None for s in named)
    return read_topology(opts.root or "/", devices=devices)


def run_prefix(argv: list[str]) -> int:  # noqa: PLR0912
    # The prefix form's few modes (help, version, -H, -s, --dry-run, run) in order of precedence.
    """Run the prefix form. Returns an exit status, or does not return (the command ran)."""
    opts = parse_args(argv)
    request = opts.request
    if opts.help:  # the typer application is the interface, its help included
        from numarun.cli import run_app

        return run_app(["--help"])
    if opts.version:
        from numarun import __version__

        print(f"numarun {__version__}")
        return 0
    for warning in opts.warnings:
        print(f"numarun: warning: {warning}", file=sys.stderr)
    if opts.hardware:
        from numarun.render import render_hardware

        sys.stdout.write(render_hardware(_topology(opts), cpu_compress=opts.cpu_compress))
        return 0

    from numarun.launch import apply_plan, exec_command
    from numarun.placement.prefix import describe

    topology = _topology(opts)
    if opts.show:
        plan = _plan(opts, topology, need_command=False)
        apply_plan(plan)
        sys.stdout.write(show_text(topology))
        return 0
    plan = _plan(opts, topology, need_command=True)
    if request.per_rank and not (opts.dry_run or opts.explain):
        # One line per rank when the launcher had bound it; the planner's warnings are
        # the same in every rank, so local rank 0 alone prints them.
        if plan.notice:
            print(plan.notice, file=sys.stderr)
        if plan.warnings and plan.rank == 0:
            for warning in plan.warnings:
                print(f"numarun: {warning}", file=sys.stderr)
    elif plan.warnings and not (opts.dry_run or opts.explain):
        for warning in plan.warnings:
            print(f"numarun: {warning}", file=sys.stderr)
    if opts.dry_run or opts.explain:
        note = _probe(plan, live=opts.topology is None and opts.root is None)
        text = describe(plan, explain=opts.explain)
        if note:
            text += "\n" + note
        print(text)
        return 0
    apply_plan(plan)
    assert plan.executable is not None
    exec_command(plan.executable, plan.command)
    return 127  # not reached: exec_command replaces the process or raises


def _plan(opts: _Options, topology: Topology, *, need_command: bool) -> LaunchPlan:
    request = opts.request
    root = opts.root or "/"
    if not request.per_rank:
        from numarun.placement.prefix import plan_prefix

        def chooser(topology: Topology, candidates: Sequence[int]) -> tuple[int, str]:
            # Imported only when numarun must choose a node: most runs name theirs.
            from numarun.placement.choose import by_free_memory, live_load

            return by_free_memory(live_load(root))(topology, candidates)

        return plan_prefix(request, topology, chooser=chooser, need_command=need_command)
    from numarun.placement.rank import launcher_room, plan_rank

    # A snapshot (--topology) has no cgroup to read, so "already bound" cannot be told.
    room = launcher_room(topology, root) if opts.topology is None else None
    return plan_rank(request, topology, os.environ, room=room, need_command=need_command)


def _probe(plan: LaunchPlan, *, live: bool) -> str | None:
    """For --dry-run: would the kernel take the policy, or need the fallback?

    On the live machine the policy is applied to this thread and restored, which also
    finds seccomp filters. Checked against a snapshot, the nodes need not exist here, so
    only the running kernel's version is consulted.
    """
    if plan.policy is None:
        return None
    from numarun.mempolicy import ModeUnsupportedError, fallback_policy, kernel_lacks, probe

    try:
        if live:
            probe(plan.policy)
        else:
            for feature in (plan.policy.mode, *sorted(plan.policy.flags)):
                needed = kernel_lacks(feature)
                if needed is not None:
                    raise ModeUnsupportedError(feature, needed, refused=False)
    except ModeUnsupportedError as err:
        if plan.fallback is None:
            raise
        replacement = fallback_policy(plan.policy, plan.fallback)
        if live:
            probe(replacement)
        return f"note: {err.problem}; would use {replacement} instead (--fallback)"
    return None


def show_text(topology: Topology | None = None) -> str:
    """The calling thread's policy and affinity in ``numactl --show``'s layout.

    Field by field as numactl prints them (trailing spaces included, so its parsers keep
    working); numarun adds ``policy flags:`` and ``interleave weights:`` lines at the end
    when they apply.
    """
    from numarun import mempolicy

    policy = mempolicy.get_mempolicy()
    allowed = mempolicy.mems_allowed()
    cpus = sorted(os.sched_getaffinity(0))
    nodes = sorted(policy.nodes)

    def spaced(items: list[int]) -> str:
        return "".join(f"{x} " for x in items)

    lines = [f"policy: {policy.mode}"]
    first = str(nodes[0]) if nodes else ""
    if policy.mode in ("interleave", "weighted-interleave"):
        nxt = mempolicy.interleave_next_node()
        shown = str(nxt) if nxt is not None else first
        lines.append(f"preferred node: {shown} (interleave next)")
        lines.append(f"interleavemask: {spaced(nodes)}")
        lines.append(f"interleavenode: {shown}")
    elif policy.mode == "preferred-many":
        lines.append(f"preferred node: {first} (preferred-many)")
    elif policy.mode in ("bind", "preferred"):
        lines.append(f"preferred node: {first}")
    else:
        lines.append("preferred node: current")
    run_nodes: list[int] = []
    if topology is not None:
        run_nodes = sorted({n for c in cpus if (n := topology.node_of(c)) is not None})
    lines.append(f"physcpubind: {spaced(cpus)}")
    lines.append(f"cpubind: {spaced(run_nodes)}")
    lines.append(f"nodebind: {spaced(run_nodes)}")
    membind = nodes if policy.mode == "bind" else sorted(allowed)
    lines.append(f"membind: {spaced(membind)}")
    lines.append(f"preferred: {spaced(nodes)}")
    if policy.flags:
        lines.append(f"policy flags: {' '.join(sorted(policy.flags))}")
    if policy.mode == "weighted-interleave":
        weights = mempolicy.interleave_weights()
        lines.append(
            "interleave weights: " + " ".join(f"{n}={w}" for n, w in weights.items() if n in nodes)
        )
    return "\n".join(lines) + "\n"
