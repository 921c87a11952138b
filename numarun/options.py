"""Every option of every numarun command, defined once, and the small parser that reads them.

:data:`OPTIONS` is a plain table: each :class:`Opt` has its names, whether it takes a value
(``metavar``) or is a switch, its help, and the commands that accept it (``prefix`` is the
prefix form, ``numarun [options] -- CMD``). Two readers use it:

* :func:`parse`, a getopt_long-style loop for the paths that must start fast (the prefix
  form, ``topology``, ``placement``, ``numastat``, ``migrate``): no argparse, no typer;
* :func:`typer_option`, which builds the ``typer.Option`` of a table entry, so the typer
  application (the interface of every command, ``--help`` included) declares the same
  names and help. tests/test_options.py fails when the two drift.

numarun's own long options are matched exactly, in every command: no abbreviations. Only
in the prefix form, numactl's long options are also matched as numactl's ``getopt_long``
matches them, by any unambiguous prefix of a name in numactl's option table
(``--phys=3``, ``--inter=all``), because drop-in scripts use them.

This module is imported before every wrapped command: plain classes and tuples only.
"""

from __future__ import annotations

from numarun.errors import UsageError

TYPE_CHECKING = False  # typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any, NoReturn

PREFIX = "prefix"
FAST_COMMANDS = ("topology", "placement", "numastat", "migrate")
TYPER_COMMANDS = ("plan", "policies", "run", "status", "stop", "watch", "weights", "probe")
COMMANDS = (PREFIX, *FAST_COMMANDS, *TYPER_COMMANDS)
_ALL = COMMANDS

# Help panels of `numarun --help`, in the order they are shown.
POLICY, CPUS, NUMACTL, RANKS, OTHER = (
    "Memory policy",
    "CPUs",
    "numactl spellings",
    "Ranks (one numarun per rank, under mpirun, mpiexec or srun)",
    "Other",
)


_UNSET = object()


class Opt:
    """One option: ``names`` as typed (long and short), ``metavar`` None for a switch.

    ``key`` is the attribute a parse fills; ``negative`` is the ``--no-`` twin of a switch
    that typer shows as ``--color/--no-color``; ``default`` is the value when not given.
    """

    __slots__ = ("commands", "default", "group", "help", "key", "metavar", "names", "negative")

    def __init__(
        self,
        key: str,
        names: tuple[str, ...],
        metavar: str | None,
        help: str,
        commands: tuple[str, ...],
        *,
        group: str | None = None,
        default: object = _UNSET,
        negative: str | None = None,
    ) -> None:
        self.key = key
        self.names = names
        self.metavar = metavar
        self.help = help
        self.commands = commands
        self.group = group
        # Switches default to off, values to "not given"; a tri-state switch says None.
        self.default = (None if metavar else False) if default is _UNSET else default
        self.negative = negative

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None

    def __repr__(self) -> str:
        return f"Opt({'/'.join(self.names)})"


_SPEC = "SPEC"
OPTIONS: tuple[Opt, ...] = (
    # -- the prefix form: memory policy
    Opt("policy", ("--policy",), "MODE|PRESET", "default, local, bind, interleave, preferred, "
        "preferred-many, weighted-interleave, or a preset name (numarun policies).",
        (PREFIX,), group=POLICY),
    Opt("nodes", ("--nodes",), _SPEC, "The policy's memory nodes (bind when --policy is not "
        "given): a node spec, local, or local+cpuless (the CPU node and its own CPU-less "
        "CXL/HBM nodes).", (PREFIX,), group=POLICY),
    Opt("fallback", ("--fallback",), "MODE", "Use MODE, with the same nodes, when the kernel "
        "lacks the requested mode or flag.", (PREFIX,), group=POLICY),
    Opt("static_nodes", ("--static-nodes",), None, "Mode flag MPOL_F_STATIC_NODES: the nodes "
        "are never remapped when the cpuset changes.", (PREFIX,), group=POLICY),
    Opt("relative_nodes", ("--relative-nodes",), None, "Mode flag MPOL_F_RELATIVE_NODES: node "
        "numbers are positions within the cpuset's nodes.", (PREFIX,), group=POLICY),
    Opt("balancing", ("-b", "--balancing"), None, "With bind: NUMA balancing may move pages "
        "between the bound nodes (Linux 5.12+); without bind numactl ignores it, and numarun "
        "warns and goes on.", (PREFIX,), group=POLICY),
    # -- CPUs
    Opt("cpu_nodes", ("--cpu-nodes", "-N", "--cpunodebind", "-c", "--cpubind"), _SPEC,
        "Run on the online, allowed CPUs of these nodes (-c/--cpubind: numactl's old name).",
        (PREFIX,), group=CPUS),
    Opt("cpus", ("--cpus", "-C", "--physcpubind"), _SPEC, "Run on these CPUs (with --cpu-nodes: "
        "the CPUs both name).", (PREFIX,), group=CPUS),
    Opt("smt", ("--smt",), "avoid|allow", "avoid: one hardware thread per physical core; "
        "allow (the default): all of them.", (PREFIX,), group=CPUS),
    # -- numactl's spellings: numactl's meaning exactly
    Opt("membind", ("-m", "--membind"), _SPEC, "Bind memory to these nodes (--policy bind "
        "--nodes SPEC, but the CPUs stay as they are, as with numactl).", (PREFIX,),
        group=NUMACTL),
    Opt("interleave", ("-i", "--interleave"), _SPEC, "Interleave memory over these nodes.",
        (PREFIX,), group=NUMACTL),
    Opt("preferred", ("-p", "--preferred"), "NODE", "Prefer this one node for memory.",
        (PREFIX,), group=NUMACTL),
    Opt("preferred_many", ("-P", "--preferred-many"), _SPEC, "Prefer these nodes for memory "
        "(Linux 5.15+).", (PREFIX,), group=NUMACTL),
    Opt("weighted_interleave", ("-w", "--weighted-interleave"), _SPEC, "Interleave memory "
        "over these nodes by the system's weights (Linux 6.9+).", (PREFIX,), group=NUMACTL),
    Opt("localalloc", ("-l", "--localalloc"), None, "Allocate on the node the thread runs on "
        "(--policy local).", (PREFIX,), group=NUMACTL),
    Opt("whole_machine", ("-a", "--all"), None, "Let all, ! and + in node and CPU specs count "
        "every node and CPU of the machine, not only the cpuset's.", (PREFIX,), group=NUMACTL),
    # -- ranks
    Opt("per_rank", ("--per-rank",), None, "Plan the local ranks over this host and take this "
        "rank's slot (rank and size from Open MPI, MPICH/Hydra or Slurm).", (PREFIX,),
        group=RANKS),
    Opt("per_gpu", ("--per-gpu",), None, "One local rank per GPU, as Slurm's "
        "--gpu-bind=closest with a GPU a task: local rank i gets GPU i, on the GPU's node "
        "(the node's CPUs split between its GPUs), and CUDA_VISIBLE_DEVICES or "
        "ROCR_VISIBLE_DEVICES unless set (implies --per-rank).", (PREFIX,), group=RANKS),
    Opt("rank", ("--rank",), "I", "This process's local rank (implies --per-rank).", (PREFIX,),
        group=RANKS),
    Opt("ranks", ("--ranks",), "N", "The number of local ranks (implies --per-rank).",
        (PREFIX,), group=RANKS),
    # -- other, and the other commands
    Opt("dry_run", ("--dry-run",), None, "Print the policy, CPUs and command that would run; "
        "run nothing.", (PREFIX,), group=OTHER),
    Opt("explain", ("--explain",), None, "As --dry-run, and say why.", (PREFIX,), group=OTHER),
    Opt("show", ("-s", "--show"), None, "Print the policy and CPU affinity in numactl --show's "
        "layout, after applying the other options.", (PREFIX,), group=OTHER),
    Opt("hardware", ("-H", "--hardware"), None, "Print the machine in numactl --hardware's "
        "layout.", (PREFIX, "topology"), group=OTHER),
    Opt("cpu_compress", ("--cpu-compress",), None, "With --hardware: print each node's CPUs as "
        "ranges and their count, as numactl --cpu-compress does.", (PREFIX, "topology"),
        group=OTHER),
    Opt("topology", ("--topology",), "FILE-or-DIR", "Use a saved snapshot or a sysfs root "
        "instead of this machine.", (PREFIX, "topology", "plan"), group=OTHER),
    Opt("root", ("--root",), "DIR", "Read sys/ and proc/ under DIR instead of /.",
        (PREFIX, "topology", "placement", "numastat", "migrate", "weights", "watch"),
        group=OTHER),
    Opt("json", ("--json",), None, "Print JSON instead of text (fields: man numarun).",
        ("topology", "placement", "numastat", "migrate", "plan", "policies", "status",
         "watch", "weights", "probe")),
    Opt("save", ("--save",), "FILE", "Save a snapshot of the topology to FILE.", ("topology",)),
    Opt("colour", ("--color",), None, "Colour (default: on a terminal, unless NO_COLOR).",
        ("topology", "run"), default=None, negative="--no-color"),
    Opt("watch", ("--watch",), "SECONDS", "Report again every SECONDS until Ctrl-C.",
        ("placement",)),
    Opt("check", ("--check",), None, "Exit 10 when a verdict fails (for scripts, health "
        "checks).", ("placement",)),
    Opt("to", ("--to",), "NODES", "Nodes to move pages to.", ("migrate",)),
    Opt("from_", ("--from",), "NODES", "Nodes to move pages from (default: all others).",
        ("migrate",)),
    Opt("name", ("--name",), "NAME", "The job's name for status and stop (default: FILE's "
        "stem).", ("run",)),
    Opt("metrics", ("--metrics",), "FILE", "Write Prometheus metrics to FILE after every "
        "sample, atomically (node_exporter's textfile collector); samples with the spec's "
        "[watch] table, or its defaults.", ("run",)),
    Opt("metrics_listen", ("--metrics-listen",), "[HOST]:PORT", "Serve Prometheus metrics "
        "on http://HOST:PORT/metrics (HOST 127.0.0.1 unless given; [::1]:PORT for IPv6).",
        ("run",)),
    Opt("verdict", ("--verdict",), None, "Judge each worker's memory placement.", ("status",),
        default=True, negative="--no-verdict"),
    Opt("now", ("--now",), None, "Kill the workers at once (SIGKILL).", ("stop",)),
    Opt("timeout", ("--timeout",), "SECONDS", "How long to wait for the job to end.",
        ("stop",), default=60.0),
    Opt("set_weights", ("--set",), "bandwidth|measured|N=W,...", "Write weighted-interleave "
        "weights (root): bandwidth, in proportion to each node's HMAT read bandwidth; "
        "measured, to the bandwidth numarun probe measures; or the given ones, such as "
        "0=5,2=2; all or none.", ("weights",)),
    Opt("reset_weights", ("--reset",), None, "Give the weights back to the kernel: auto where "
        "it has that (Linux 6.16+), else 1 on every node (root).", ("weights",)),
    Opt("probe_size", ("--size",), "BYTES", "Buffer per measurement, such as 64M or 1G "
        "(default 64M).", ("probe",)),
    Opt("probe_threads", ("--threads",), "N", "At most N threads per CPU node (default: one "
        "per physical core).", ("probe",)),
    Opt("interval", ("--interval",), "SECONDS", "Sample every SECONDS (default 2).",
        ("watch",)),
    Opt("once", ("--once",), None, "Print one sample and exit (its CPU utilisation is "
        "measured over 0.25 s, between two readings).", ("watch",)),
    Opt("count", ("--count",), "N", "Print N samples and exit.", ("watch",)),
    Opt("memory_imbalance", ("--memory-imbalance",), "FRACTION", "Flag nodes whose shares "
        "of memory in use are more than FRACTION apart (default 0.30; 30% works too).",
        ("watch",)),
    Opt("cpu_imbalance", ("--cpu-imbalance",), "FRACTION", "Flag nodes whose CPU "
        "utilisation is more than FRACTION apart (default 0.20).", ("watch",)),
    Opt("threshold", ("--threshold",), "FRACTION", "Flag a process with less than FRACTION "
        "of its judged memory on its home nodes (default 0.90).", ("watch",)),
    Opt("version", ("--version",), None, "Print the version.", (PREFIX,), group=OTHER),
    # click's own help option in the typer application; the fast parser hands it to typer.
    Opt("help", ("-h", "--help"), None, "Show this message and exit.", _ALL),
)  # fmt: skip

BY_KEY: dict[str, Opt] = {o.key: o for o in OPTIONS}

# numactl's long options (numactl.c's `opts` table), each with whether it takes a value:
# the names the prefix form matches by unambiguous prefix, as numactl's getopt_long does.
NUMACTL_LONG: dict[str, bool] = {
    "all": False, "interleave": True, "weighted-interleave": True, "preferred": True,
    "preferred-many": True, "cpubind": True, "cpunodebind": True, "physcpubind": True,
    "membind": True, "show": False, "localalloc": False, "balancing": False,
    "hardware": False, "shm": True, "file": True, "offset": True, "length": True,
    "strict": False, "shmmode": True, "dump": False, "dump-nodes": False, "shmid": True,
    "huge": False, "touch": False, "cpu-compress": False, "verify": False, "version": False,
}  # fmt: skip

# numactl's shared-memory and file options, with their short letters: refused by name.
NUMACTL_REFUSED: dict[str, str] = {
    "--shm": "-S", "--file": "-f", "--offset": "-o", "--length": "-L", "--strict": "-t",
    "--shmmode": "-M", "--dump": "-d", "--dump-nodes": "-D", "--shmid": "-I",
    "--huge": "-u", "--touch": "-T", "--verify": "-V",
}  # fmt: skip
_REFUSED_SHORT = {short: long for long, short in NUMACTL_REFUSED.items()}

_INDEX: dict[str, dict[str, tuple[Opt, object]]] = {}


def options_of(command: str) -> list[Opt]:
    """The table's entries for ``command``, in table order."""
    return [o for o in OPTIONS if command in o.commands]


def _index(command: str) -> dict[str, tuple[Opt, object]]:
    """Name -> (entry, the value a switch sets) for ``command``; built once per process."""
    found = _INDEX.get(command)
    if found is None:
        found = {}
        for opt in options_of(command):
            for name in opt.names:
                found[name] = (opt, True)
            if opt.negative is not None:
                found[opt.negative] = (opt, False)
        _INDEX[command] = found
    return found


def _refuse_numactl(name: str) -> UsageError:
    return UsageError(
        f"{name} is numactl's shared-memory and file option, which numarun does not implement",
        "run numactl itself for shared-memory segments and files",
    )


def _see(command: str) -> str:
    return "see numarun --help" if command == PREFIX else f"see 'numarun {command} --help'"


def _where(command: str) -> str:
    return "" if command == PREFIX else f"{command}: "


def _long(command: str, name: str) -> tuple[Opt, object, str]:
    """The entry for a long option ``name``: exact, or (prefix form) a numactl abbreviation."""
    index = _index(command)
    hit = index.get(name)
    if hit is not None:
        return hit[0], hit[1], name
    if command == PREFIX and name[2:]:
        word = name[2:]
        # An exact name wins over the longer names it begins (--shm, not --shmid).
        matches = (
            [word] if word in NUMACTL_LONG else [n for n in NUMACTL_LONG if n.startswith(word)]
        )
        if len(matches) > 1:
            raise UsageError(
                f"option {name} is ambiguous: it could be " + ", ".join(f"--{m}" for m in matches),
                "write the option name in full",
            )
        if matches:
            full = "--" + matches[0]
            if full in NUMACTL_REFUSED:
                raise _refuse_numactl(full)
            opt, value = index[full]
            return opt, value, full
    if name in NUMACTL_REFUSED and command == PREFIX:
        raise _refuse_numactl(name)
    raise UsageError(f"{_where(command)}unknown option {name}", _see(command))


class Parsed:
    """What :func:`parse` found: ``given`` in order, as (entry, name as typed, value), and the
    ``operands`` (the command, in the prefix form; the positional arguments otherwise)."""

    __slots__ = ("given", "operands")

    def __init__(self) -> None:
        self.given: list[tuple[Opt, str, object]] = []
        self.operands: list[str] = []

    def values(self) -> dict[str, object]:
        """Key -> value for every option of the command: the last one given wins."""
        out: dict[str, object] = {}
        for opt, _name, value in self.given:
            out[opt.key] = value
        return out

    @property
    def wants_help(self) -> bool:
        return any(opt.key == "help" for opt, _, _ in self.given)

    def text(self, key: str) -> str | None:
        """The value of option ``key`` (the last given), or None."""
        value = self.values().get(key)
        return value if isinstance(value, str) else None

    def flag(self, key: str) -> bool | None:
        """True or False for a switch given (``--color``, ``--no-color``), None if not."""
        value = self.values().get(key)
        return value if isinstance(value, bool) else None


class HelpRequested(Exception):  # noqa: N818 - a request, not an error
    """``--help`` on a fast path: :func:`numarun.__main__.main` hands ``argv`` to the typer
    application, which prints the help from the same table (raised rather than called, so
    that this table never imports the CLI built on it)."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.argv = argv


def show_help(command: str) -> NoReturn:
    """``--help`` on a fast path: the typer application prints it, from the same table."""
    raise HelpRequested(["--help"] if command == PREFIX else [command, "--help"])


def _value(command: str, name: str, argv: list[str], i: int) -> str:
    if i + 1 >= len(argv) or argv[i + 1] == "--":
        raise UsageError(f"{_where(command)}{name} needs a value", _see(command))
    return argv[i + 1]


def _shorts(command: str, argv: list[str], i: int, parsed: Parsed) -> int:
    """A cluster of short options (``-lN1``, ``-bm1``) as getopt reads it; returns the new i."""
    arg = argv[i]
    index = _index(command)
    j = 1
    while j < len(arg):
        name = "-" + arg[j]
        hit = index.get(name)
        if hit is None:
            if command == PREFIX and name in _REFUSED_SHORT:
                raise _refuse_numactl(f"{name}/{_REFUSED_SHORT[name]}")
            raise UsageError(f"{_where(command)}unknown option {name} (in {arg!r})", _see(command))
        opt, const = hit
        rest = arg[j + 1 :]
        if not opt.takes_value:
            if rest.startswith("="):
                raise UsageError(
                    f"{_where(command)}{name} takes no value (got {arg!r})", f"write {name} alone"
                )
            parsed.given.append((opt, name, const))
            j += 1
            continue
        if rest:
            # getopt takes the rest of the word as the value; "-m=1" is numarun's own leniency.
            parsed.given.append((opt, name, rest[1:] if rest.startswith("=") else rest))
            return i
        parsed.given.append((opt, name, _value(command, name, argv, i)))
        return i + 1
    return i


def parse(command: str, argv: list[str]) -> Parsed:
    """Read ``argv`` for ``command`` by the table.

    The prefix form stops at ``--`` or at the first word that is not an option (the
    command starts there), as numactl does; the other commands take positional arguments
    anywhere, as typer does, and stop only at ``--``. Values may be attached
    (``--nodes=1``, ``-m1``) or the next word; switches take no value.
    """
    parsed = Parsed()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            parsed.operands.extend(argv[i + 1 :])
            break
        if arg == "-" or not arg.startswith("-"):
            if command == PREFIX:
                parsed.operands.extend(argv[i:])
                break
            parsed.operands.append(arg)
        elif arg.startswith("--"):
            name, eq, attached = arg.partition("=")
            opt, const, full = _long(command, name)
            if not opt.takes_value:
                if eq:
                    raise UsageError(
                        f"{_where(command)}{full} takes no value (got {arg!r})",
                        f"write {full} alone",
                    )
                parsed.given.append((opt, full, const))
            elif eq:
                parsed.given.append((opt, full, attached))
            else:
                parsed.given.append((opt, full, _value(command, name, argv, i)))
                i += 1
        else:
            i = _shorts(command, argv, i, parsed)
        i += 1
    return parsed


# -- typer ----------------------------------------------------------------------------------


def typer_option(key: str, *, panel: bool = False, **extra: Any) -> Any:
    """The ``typer.Option`` of table entry ``key``: its names, metavar, help and default.

    ``panel`` groups it under the entry's help panel (the prefix form's groups).
    """
    import typer

    opt = BY_KEY[key]
    names = opt.names
    if opt.negative is not None:
        names = (f"{names[0]}/{opt.negative}", *names[1:])
    settings: dict[str, Any] = {"help": opt.help, **extra}
    if opt.metavar is not None:
        settings["metavar"] = opt.metavar
    if panel and opt.group is not None:
        settings["rich_help_panel"] = opt.group
    return typer.Option(opt.default, *names, **settings)
