"""``numarun [placement options] -- CMD [ARGS...]``: the prefix form, numactl's spellings too.

This runs before every wrapped command, so it imports only what it uses: no argparse
(~13 ms), typer or pydantic. The option parser is a small getopt-style loop that accepts
what numactl's ``getopt_long`` accepts for the options both share (``-m 1``, ``-m1``,
``--membind 1``, ``--membind=1``), and like numactl it stops at ``--`` or at the first word
that is not an option, which starts the command.
"""

from __future__ import annotations

import os
import sys

from numarun.errors import UsageError
from numarun.nodespec import parse_spec
from numarun.placement.prefix import Request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from numarun.placement.prefix import LaunchPlan
    from numarun.topology import Topology

# Options that take a value, to the request field each sets. numactl's spellings map
# onto numarun's own: -m/--membind is --policy bind --nodes, and so on.
_VALUE_OPTIONS: dict[str, str] = {
    "--policy": "policy",
    "--nodes": "nodes",
    "--cpu-nodes": "cpu_nodes",
    "--cpus": "cpus",
    "--smt": "smt",
    "--fallback": "fallback",
    "--topology": "topology",
    "--root": "root",
    "-m": "bind",
    "--membind": "bind",
    "-i": "interleave",
    "--interleave": "interleave",
    "-p": "preferred",
    "--preferred": "preferred",
    "-P": "preferred-many",
    "--preferred-many": "preferred-many",
    "-w": "weighted-interleave",
    "--weighted-interleave": "weighted-interleave",
    "-N": "cpu_nodes",
    "--cpunodebind": "cpu_nodes",
    "-c": "cpu_nodes",  # numactl's deprecated --cpubind
    "--cpubind": "cpu_nodes",
    "-C": "cpus",
    "--physcpubind": "cpus",
    "--rank": "rank",
    "--ranks": "ranks",
}

_SWITCHES: dict[str, str] = {
    "-l": "local",
    "--localalloc": "local",
    "-s": "show",
    "--show": "show",
    "-H": "hardware",
    "--hardware": "hardware",
    "--dry-run": "dry_run",
    "--explain": "explain",
    "--per-rank": "per_rank",
    "--static-nodes": "static-nodes",
    "--relative-nodes": "relative-nodes",
    "-b": "numa-balancing",
    "--balancing": "numa-balancing",
    "-h": "help",
    "--help": "help",
}

# numactl options numarun does not implement, refused by name rather than misread.
_NUMACTL_ONLY = frozenset(
    {
        "-a", "--all", "-t", "--strict", "-S", "--shm", "-f", "--file", "-L", "--length",
        "-o", "--offset", "-M", "--shmmode", "-I", "--shmid", "-T", "--touch", "-u",
        "--huge", "-d", "--dump", "-D", "--dump-nodes", "-V", "--verify",
    }
)  # fmt: skip

USAGE = """\
usage: numarun [placement options] [--] CMD [ARGS...]
       numarun --show | --hardware

memory policy:
  --policy MODE|PRESET    default, local, bind, interleave, preferred, preferred-many,
                          weighted-interleave, or a preset name
  --nodes SPEC            memory nodes for the policy (bind if --policy is not given)
  --fallback MODE         use MODE when the kernel lacks the requested mode
  --static-nodes, --relative-nodes, -b/--balancing    mode flags
  -m/--membind SPEC, -i/--interleave SPEC, -p/--preferred NODE,
  -P/--preferred-many SPEC, -w/--weighted-interleave SPEC, -l/--localalloc
CPUs:
  --cpu-nodes SPEC, -N/--cpunodebind SPEC    run on the CPUs of these nodes
  --cpus SPEC, -C/--physcpubind SPEC         run on these CPUs
  --smt avoid|allow        avoid: one thread per physical core
ranks (one numarun per rank, started by mpirun, mpiexec or srun):
  --per-rank               plan the local ranks over this host (numarun plan's rules) and
                           take this rank's slot; rank and size from Open MPI, MPICH/Hydra
                           or Slurm variables (a rank the launcher bound stays within it)
  --rank I, --ranks N      this process's local rank and the number of local ranks
                           (imply --per-rank; win over the launcher's variables)
other:
  --dry-run, --explain     print what would be applied (and why); run nothing
  --topology FILE|DIR, --root DIR            check against a snapshot instead
  -s/--show, -H/--hardware
SPEC: all, 1, 0-3, 0,2, !1 (all but 1), +0 (the first allowed)
"""


class _Options:
    __slots__ = (
        "dry_run",
        "explain",
        "hardware",
        "help",
        "preset",
        "request",
        "root",
        "show",
        "topology",
    )

    def __init__(self) -> None:
        self.request = Request()
        self.show = False
        self.hardware = False
        self.dry_run = False
        self.explain = False
        self.help = False
        self.topology: str | None = None
        self.root: str | None = None
        self.preset: str | None = None


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
    request = opts.request
    if request.nodes is not None:
        raise UsageError(
            f"{request.nodes_option} {request.nodes.text} and {option} {value} both name "
            "memory nodes",
            "give the memory nodes once",
        )
    request.nodes = parse_spec(value, option, "node")
    request.nodes_option = option


def _take(opts: _Options, field: str, option: str, value: str) -> None:
    from numarun.mempolicy import MODES, canonical_mode

    request = opts.request
    if field in MODES:  # a numactl policy option: mode and nodes at once
        _set_mode(opts, field, option)
        if field == "preferred":
            spec = parse_spec(value, option, "node")
            if spec.everything or spec.invert or len(spec.items) != 1:
                raise UsageError(
                    f"{option} takes one node, not {value!r}",
                    "use -P/--preferred-many for several nodes",
                )
        _set_nodes(opts, value, option)
    elif field == "policy":
        try:
            mode = canonical_mode(value)
        except ValueError:
            if opts.preset is not None:
                raise UsageError("--policy given twice", "give one policy") from None
            opts.preset = value  # applied after all options, see _apply_preset
            return
        _set_mode(opts, mode, option)
    elif field == "nodes":
        _set_nodes(opts, value, option)
    elif field == "cpu_nodes":
        if request.cpu_nodes is not None:
            raise UsageError(f"{option} given twice", "give the CPU nodes once")
        request.cpu_nodes = parse_spec(value, option, "node")
        request.cpu_nodes_option = option
    elif field == "cpus":
        if request.cpus is not None:
            raise UsageError(f"{option} given twice", "give the CPUs once")
        request.cpus = parse_spec(value, option, "CPU")
        request.cpus_option = option
    elif field == "smt":
        if value not in ("avoid", "allow"):
            raise UsageError(f"--smt {value!r} is not avoid or allow", "use --smt avoid or allow")
        request.smt = value
    elif field == "fallback":
        try:
            request.fallback = canonical_mode(value)
        except ValueError as err:
            raise UsageError(f"--fallback: {err}", "name a memory policy mode") from None
    elif field in ("rank", "ranks"):
        try:
            number = int(value)
        except ValueError:
            raise UsageError(f"{option} {value!r} is not a number", f"give {option} N") from None
        if getattr(request, field) is not None:
            raise UsageError(f"{option} given twice", f"give {option} once")
        setattr(request, field, number)
        request.per_rank = True
    elif field == "topology":
        opts.topology = value
    elif field == "root":
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
    if request.nodes is None and preset.memory_nodes is not None:
        if preset.memory_nodes in ("all", "local", "local+cpuless"):
            request.preset_nodes = preset.memory_nodes
        else:
            request.nodes = parse_spec(preset.memory_nodes, f"preset {name} memory_nodes")
            request.nodes_option = f"preset {name} memory_nodes"
    if request.smt is None and preset.smt is not None:
        request.smt = preset.smt


def parse_args(argv: list[str]) -> _Options:
    """Parse the prefix form's arguments; the command is everything after them."""
    opts = _Options()
    request = opts.request
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            request.command = argv[i + 1 :]
            break
        if not arg.startswith("-") or arg == "-":
            request.command = argv[i:]
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            attached = bool(eq)
        else:
            name, value = arg[:2], arg[2:]
            if value.startswith("="):
                value = value[1:]
            attached = bool(arg[2:])
        if name in _VALUE_OPTIONS:
            if not attached:
                if i + 1 >= len(argv) or argv[i + 1] == "--":
                    raise UsageError(f"{name} needs a value", "see numarun --help")
                i += 1
                value = argv[i]
            _take(opts, _VALUE_OPTIONS[name], name, value)
        elif name in _SWITCHES:
            if attached:
                raise UsageError(f"{name} takes no value (got {arg!r})", f"write {name} alone")
            _switch(opts, _SWITCHES[name], name)
        elif name in _NUMACTL_ONLY:
            raise UsageError(
                f"{name} is a numactl option numarun does not implement",
                "use numactl for shared-memory and file policies",
            )
        else:
            raise UsageError(f"unknown option {name}", "see numarun --help")
        i += 1
    if opts.preset is not None:
        _apply_preset(opts, opts.preset)
    return opts


def _switch(opts: _Options, what: str, option: str) -> None:
    if what == "local":
        _set_mode(opts, "local", option)
    elif what in ("static-nodes", "relative-nodes", "numa-balancing"):
        opts.request.flags.add(what)
    elif what == "show":
        opts.show = True
    elif what == "hardware":
        opts.hardware = True
    elif what == "dry_run":
        opts.dry_run = True
    elif what == "explain":
        opts.explain = True
    elif what == "per_rank":
        opts.request.per_rank = True
    elif what == "help":
        opts.help = True


def _topology(opts: _Options) -> Topology:
    if opts.topology is not None and opts.root is not None:
        raise UsageError("--topology and --root both name a machine", "give one")
    if opts.topology is not None:
        from numarun.topology import load_topology

        return load_topology(opts.topology)
    from numarun.topology import read_topology

    return read_topology(opts.root or "/")


def run_prefix(argv: list[str]) -> int:
    """Run the prefix form. Returns an exit status, or does not return (the command ran)."""
    opts = parse_args(argv)
    request = opts.request
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    if opts.hardware:
        if request.command:
            raise UsageError("--hardware takes no command", "drop the command, or --hardware")
        from numarun.render import render_hardware

        sys.stdout.write(render_hardware(_topology(opts)))
        return 0

    from numarun.launch import apply_plan, exec_command
    from numarun.placement.prefix import describe

    topology = _topology(opts)
    if opts.show:
        if request.command:
            raise UsageError("--show takes no command", "drop the command, or --show")
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
    from numarun.placement.choose import by_free_memory, live_load
    from numarun.placement.prefix import plan_prefix
    from numarun.placement.rank import launcher_room, plan_rank

    request = opts.request
    root = opts.root or "/"
    if not request.per_rank:
        chooser = by_free_memory(live_load(root))
        return plan_prefix(request, topology, chooser=chooser, need_command=need_command)
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
