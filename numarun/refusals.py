"""The refusal catalogue: every condition numarun refuses, with one wording and one exit code.

A mistake reads the same and ends with the same status wherever it is made: in the prefix
form (``numarun -m 3 -- cmd``), in a job spec (``memory_nodes = "3"``), or for a rank
(``numarun --per-rank -N 3 -- cmd``). Each front end passes only *where* the mistake is (the
option as the user typed it, or the spec's ``file:line: process[0].key``); the words and the
exit code come from here. The man page's EXIT STATUS section is rendered from
:data:`CATALOGUE` (``python -m numarun.refusals``), and a test keeps the two equal.

The exit codes themselves belong to the error classes in :mod:`numarun.errors`.
"""

from __future__ import annotations

from numarun.cpulist import format_list
from numarun.errors import (
    CheckFailedError,
    CommandNotExecutableError,
    CommandNotFoundError,
    JobRunningError,
    KernelRefusedError,
    NotAllowedError,
    NumarunError,
    ProcessError,
    SpecError,
    StateDirError,
    StopTimeoutError,
    SupervisorError,
    TopologyError,
    UnknownResourceError,
    UnsuitableError,
    UsageError,
    WorkerPathError,
    WriteError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: (exit code, what it means, the conditions that end with it), in the order of the man page.
CATALOGUE: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (0, "Success.", ()),
    (
        WriteError.exit_code,
        "Output could not be written (a closed standard output, a full disk): one line, "
        "numarun: write error: ...",
        (),
    ),
    (
        UsageError.exit_code,
        "Usage: the command line cannot be read.",
        (
            "an unknown option, a missing or malformed value",
            "two options that set the same thing differently",
            "no command after the placement options",
            "no rank information for --per-rank",
            "a numarun watch interval, count or threshold that is not a positive number or "
            "a fraction 0-1, or a PID that is not a number",
            "--metrics in a directory that does not exist, --metrics-listen on an address "
            "that cannot be listened on",
        ),
    ),
    (
        SpecError.exit_code,
        "A job spec or preset file is malformed or invalid (file, line and key named).",
        (),
    ),
    (
        UnknownResourceError.exit_code,
        "A node, CPU or rank that does not exist on this machine.",
        (
            "unknown node",
            "unknown CPU",
            "a rank past the number of ranks",
            "a device name (netdev:, pci:, block:, file:, ip:, gpu:) this machine has no "
            "such device for",
        ),
    ),
    (
        NotAllowedError.exit_code,
        "A node or CPU outside what this process may use: the cgroup's cpuset, or, for "
        "choices numarun makes itself and for ranks, the inherited CPU affinity (each "
        "message names which).",
        (
            "memory node outside the cpuset's memory nodes",
            "CPU outside the cpuset",
            "a CPU of numactl's -C/--physcpubind outside the inherited affinity (without -a)",
            "the CPUs of a node outside the cpuset",
            "a +N position past the allowed set",
        ),
    ),
    (
        UnsuitableError.exit_code,
        "Exists and is allowed but cannot serve as asked.",
        (
            "a memory-less node for memory",
            "a CPU-less node, or one whose CPUs are all offline, for CPUs",
            "an offline CPU",
            "an empty CPU set (options with nothing in common, everything reserved)",
            "preferred with several nodes; a node-less mode (local, default) with nodes",
            "no allowed node with memory, or none with both CPUs and memory to choose",
            "more workers or ranks than usable CPUs, or a cpus_per_worker that does not fit",
            "weights from bandwidth where a memory node has no HMAT bandwidth figure",
            "workers = per-gpu (or --per-gpu) where no GPU is on the nodes the workers may use",
            "--per-gpu with more local ranks than GPUs, or for ranks their launcher bound",
        ),
    ),
    (
        KernelRefusedError.exit_code,
        "The kernel refused: a seccomp filter or security module, no NUMA support, a mode "
        "or flag newer than the running kernel.",
        (
            "numarun weights on a kernel without weighted interleave (before Linux 6.9)",
            "numarun weights --set or --reset without root, or a weight the kernel refuses",
        ),
    ),
    (
        TopologyError.exit_code,
        "The topology (sysfs, or a snapshot) cannot be read or is malformed.",
        (),
    ),
    (
        ProcessError.exit_code,
        "A process or job that is gone, matches nothing, or belongs to another user.",
        (
            "no running job of that name (numarun status, numarun stop)",
            "a PID that does not exist, or whose memory map this user cannot read",
        ),
    ),
    (
        CheckFailedError.exit_code,
        "numarun placement --check found memory that does not match its policy.",
        (),
    ),
    (
        SupervisorError.exit_code,
        "A supervised job failed: workers crashed past their crash-loop limit, or exited "
        "unsuccessfully with nothing to restart them.",
        (),
    ),
    (
        WorkerPathError.exit_code,
        "A path a worker needs cannot be used; checked for every worker before the first "
        "starts, so nothing was started.",
        (
            "a cwd that does not exist or is not a directory",
            "a log file that cannot be created or appended to",
            "a stdin file that does not exist or cannot be read",
        ),
    ),
    (
        StateDirError.exit_code,
        "numarun's state directory cannot be used: a symbolic link, another user's, "
        "writable by others, not a directory, or its parent is missing.",
        (),
    ),
    (
        JobRunningError.exit_code,
        "A job of that name is already running (numarun run --name gives another).",
        (),
    ),
    (
        StopTimeoutError.exit_code,
        "numarun stop waited --timeout seconds and the job is still stopping (it goes on "
        "stopping; numarun stop again keeps waiting).",
        (),
    ),
    (
        CommandNotExecutableError.exit_code,
        "The command exists but cannot be executed (a directory, no execute permission).",
        (),
    ),
    (CommandNotFoundError.exit_code, "The command was not found (on the worker's PATH).", ()),
    (
        141,
        "The reader of standard output went away (a closed pipe): numarun stops silently, as "
        "coreutils do (128 + SIGPIPE).",
        (),
    ),
)


def man_exit_status() -> str:
    """The EXIT STATUS section's body, in roff, as ``man/numarun.1`` carries it."""
    lines = [
        "In the prefix form the exit status is the command's own once it runs. Before that, "
        "and for",
        "every other command:",
    ]
    for code, meaning, conditions in CATALOGUE:
        lines += [".TP", f".B {code}", _roff(meaning)]
        for condition in conditions:
            lines += [".br", _roff(f"\\(bu {condition}")]
    return "\n".join(lines) + "\n"


def _roff(text: str) -> str:
    return text.replace("-", "\\-").replace("\\\\-", "\\-")


def _ids(kind: str, ids: Iterable[int]) -> str:
    items = sorted(ids)
    return f"{kind}{'s' if len(items) > 1 else ''} {format_list(items)}"


def _are(kind: str, ids: Iterable[int]) -> str:
    items = sorted(ids)
    return f"{_ids(kind, items)} {'are' if len(items) > 1 else 'is'}"


def _or_none(ids: Iterable[int]) -> str:
    return format_list(ids) or "none"


# --- exit 2 and 9: numarun watch ------------------------------------------------------------


def not_seconds(where: str, option: str, text: str) -> NumarunError:
    return UsageError(
        f"{where}: {option} {text!r} is not a positive number of seconds", f"e.g. {option} 2"
    )


def not_count(where: str, option: str, text: str) -> NumarunError:
    return UsageError(
        f"{where}: {option} {text!r} is not a positive whole number", f"e.g. {option} 5"
    )


def not_fraction(where: str, option: str, text: str) -> NumarunError:
    return UsageError(
        f"{where}: {option} {text!r} is not a fraction between 0 and 1",
        f"e.g. {option} 0.3 or {option} 30%",
    )


def not_pid(where: str, text: str) -> NumarunError:
    return UsageError(
        f"{where}: {text!r} is not a process id",
        "give PIDs as numbers (pgrep NAME finds them)",
    )


def no_process(where: str, pid: int) -> NumarunError:
    return ProcessError(
        f"{where}: process {pid} does not exist (it may have exited)", "check the PID"
    )


# --- exit 4: does not exist ------------------------------------------------------------------


def unknown(where: str, kind: str, ids: Iterable[int], valid: Iterable[int]) -> NumarunError:
    items = sorted(ids)
    verb = "do" if len(items) > 1 else "does"
    return UnknownResourceError(
        f"{where}: {_ids(kind, items)} {verb} not exist on this machine",
        f"valid {kind}s are {_or_none(valid)}",
    )


def unknown_device(
    where: str, text: str, valid: Iterable[str], *, why: str | None = None
) -> NumarunError:
    """A device name that matches no device; ``why`` says what was found instead."""
    names = sorted(valid)
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    kind = text.partition(":")[0]
    return UnknownResourceError(
        f"{where} {text}: " + (why or f"no such {_DEVICE_WORDS.get(kind, 'device')} here"),
        f"devices here: {shown}" if names else "numarun topology lists the devices",
    )


_DEVICE_WORDS = {
    "netdev": "network interface with a PCI device",
    "pci": "PCI device (bridges are not listed)",
    "block": "block device with a PCI device",
    "gpu": "GPU",
}


# --- exit 5: outside what this process may use ------------------------------------------------


def past_allowed(
    where: str, text: str, kind: str, position: int, allowed: list[int]
) -> NumarunError:
    return NotAllowedError(
        f"{where} {text}: position +{position} is past the end of the {len(allowed)} "
        f"{kind}(s) this process may use ({_or_none(allowed)})",
        f"count from +0 up to +{len(allowed) - 1}" if allowed else f"allow some {kind}s",
    )


def memory_outside(
    where: str, nodes: Iterable[int], allowed: Iterable[int], source: str
) -> NumarunError:
    return _outside(
        where, _are("node", nodes), "memory nodes", allowed, source=source, knob="cpuset.mems"
    )


def cpus_outside(
    where: str, cpus: Iterable[int], allowed: Iterable[int], source: str
) -> NumarunError:
    return _outside(where, _are("CPU", cpus), "CPUs", allowed, source=source, knob="cpuset.cpus")


def cpus_outside_affinity(
    where: str, cpus: Iterable[int], inherited: Iterable[int], affinity: str
) -> NumarunError:
    """numactl's -C without -a: libnuma checks the CPUs against the inherited affinity."""
    return NotAllowedError(
        f"{where}: {_are('CPU', cpus)} outside {affinity}, and {where} keeps to it, as "
        "numactl's does",
        f"choose from {_or_none(inherited)}, or put -a first (numactl's --all), or use --cpus, "
        "which may widen the affinity within the cpuset",
    )


def _outside(
    where: str, subject: str, what: str, allowed: Iterable[int], *, source: str, knob: str
) -> NumarunError:
    return NotAllowedError(
        f"{where}: {subject} outside the {what} this process may use: {source} allows only "
        f"{_or_none(allowed)}",
        f"choose from {_or_none(allowed)}, or widen {knob} of the cgroup",
    )


def node_cpus_outside(
    where: str, node: int, cpus: Iterable[int], nodes_ok: Iterable[int], source: str
) -> NumarunError:
    return NotAllowedError(
        f"{where}: the CPUs of node {node} ({_or_none(cpus)}) are outside the CPUs this "
        f"process may use ({source})",
        f"choose from nodes {_or_none(nodes_ok)}",
    )


# --- exit 6: cannot serve -------------------------------------------------------------------


def memoryless(where: str, nodes: Iterable[int], usable: Iterable[int]) -> NumarunError:
    items = sorted(nodes)
    have = "have" if len(items) > 1 else "has"
    return UnsuitableError(
        f"{where}: {_ids('node', items)} {have} no memory, so no pages can be placed there",
        f"choose nodes with memory: {_or_none(usable)}",
    )


def cpuless(where: str, node: int, with_cpus: Iterable[int]) -> NumarunError:
    return UnsuitableError(
        f"{where}: node {node} has no CPUs (a memory-only node)",
        f"nodes with usable CPUs are {_or_none(with_cpus)}",
    )


def node_offline(
    where: str, node: int, cpus: Iterable[int], with_cpus: Iterable[int]
) -> NumarunError:
    return UnsuitableError(
        f"{where}: every CPU of node {node} ({_or_none(cpus)}) is offline",
        "bring one online (/sys/devices/system/cpu/cpuN/online) or choose from nodes "
        f"{_or_none(with_cpus)}",
    )


def cpu_offline(where: str, cpus: Iterable[int], usable: Iterable[int]) -> NumarunError:
    items = sorted(cpus)
    return UnsuitableError(
        f"{where}: {_are('CPU', items)} offline",
        f"bring it online (echo 1 > /sys/devices/system/cpu/cpu{items[0]}/online) or choose "
        f"from {_or_none(usable)}",
    )


def no_cpus(where: str, usable: Iterable[int]) -> NumarunError:
    return UnsuitableError(
        f"{where}: leaves no CPU to run on", f"usable CPUs are {_or_none(usable)}"
    )


def preferred_several(where: str, nodes: Iterable[int]) -> NumarunError:
    return UnsuitableError(
        f"{where}: memory policy preferred takes one node, not {_or_none(nodes)}",
        "use preferred-many for several nodes, or name one node",
    )


def nodeless_with_nodes(where: str, mode: str, text: str) -> NumarunError:
    return UnsuitableError(
        f"{where}: memory policy {mode} takes no nodes, but {text} was given",
        "drop the nodes, or use bind, preferred or interleave",
    )


def no_memory_allowed(where: str, source: str) -> NumarunError:
    return UnsuitableError(
        f"{where}: no node with memory is allowed to this process", f"check {source}"
    )


def no_gpus(
    where: str, *, nodes: Iterable[int] | None = None, asked: str = 'workers = "per-gpu"'
) -> NumarunError:
    """``workers = "per-gpu"`` (or ``--per-gpu``) with no GPU, or none on the ``nodes`` the
    workers may use."""
    what = f"{where}: {asked}" if where != asked else where
    if nodes is None:
        return UnsuitableError(
            f"{what} but this machine has no GPU (PCI class 0x03 or 0x12)",
            "use per-node or a count (numarun topology lists the devices)"
            if asked.startswith("workers")
            else "use --per-rank without --per-gpu (numarun topology lists the devices)",
        )
    return UnsuitableError(
        f"{what} but no GPU is on nodes {_or_none(nodes)}, which the "
        f"{'workers' if asked.startswith('workers') else 'ranks'} may use",
        "widen nodes or the CPU affinity (numarun topology shows each GPU's node)",
    )


def gpu_ranks_bound(rank: int, cpus: Iterable[int]) -> NumarunError:
    """``--per-gpu`` for a rank its launcher bound: its GPU's node is numarun's to choose."""
    return UnsuitableError(
        f"--per-gpu: local rank {rank} was already bound by its launcher to CPUs "
        f"{format_list(cpus)}, but --per-gpu places each rank on its GPU's node",
        "start the ranks unbound (srun --cpu-bind=none, mpirun --bind-to none)",
    )


def ranks_past_gpus(size: int, size_from: str, gpus: Iterable[str]) -> NumarunError:
    """``--per-gpu`` with more local ranks than GPUs: a rank would have none."""
    listed = list(gpus)
    return UnsuitableError(
        f"--per-gpu: {size} ranks on this host ({size_from}) but {len(listed)} GPU"
        f"{'s' if len(listed) != 1 else ''} for them ({', '.join(listed)}): a rank would "
        "have none",
        f"start at most {len(listed)} ranks per host (srun --ntasks-per-node, mpirun "
        "--map-by ppr:N:node), or use --per-rank alone",
    )


def nothing_to_choose(where: str) -> NumarunError:
    return UnsuitableError(
        f"{where}: no node has both CPUs and memory that this process may use, so numarun "
        "cannot choose one",
        "name the memory nodes (see numarun --hardware)",
    )


# --- tiered memory: weighted-interleave weights ------------------------------------------


def no_bandwidth(where: str, node: int | None) -> NumarunError:
    subject = f"node {node} has" if node is not None else "no memory node has"
    return UnsuitableError(
        f"{where}: {subject} no HMAT bandwidth figure (nodeN/access0/initiators/"
        "read_bandwidth; the firmware gives none)",
        "use --set measured (numarun probe's figures), or give them, such as --set 0=5,2=2",
    )


def no_weighted_interleave(kernel: str | None) -> NumarunError:
    return KernelRefusedError(
        f"this kernel ({kernel or 'release unknown'}) has no weighted interleave: "
        "/sys/kernel/mm/mempolicy/weighted_interleave is missing (Linux 6.9+)",
        "boot Linux 6.9 or newer, or spread pages evenly with --interleave",
    )


def weights_need_root() -> NumarunError:
    return KernelRefusedError(
        "writing weighted-interleave weights needs root (the files under "
        "/sys/kernel/mm/mempolicy/weighted_interleave are root's)",
        "run it as root, such as with sudo",
    )


def weight_refused(node: int | None, weight: int | None, reason: str) -> NumarunError:
    what = f"weight {weight} for node {node}" if node is not None else "auto mode"
    return KernelRefusedError(
        f"the kernel refused {what} ({reason}); the weights are as they were",
        "check the node has memory (numarun topology) and the weight is 1-255",
    )


def metrics_listen(text: str, reason: str) -> NumarunError:
    return UsageError(
        f"--metrics-listen {text}: {reason}",
        "give [HOST]:PORT with a free port, such as --metrics-listen 127.0.0.1:9464",
    )


def metrics_file(path: str, reason: str) -> NumarunError:
    return UsageError(
        f"--metrics {path}: {reason}",
        "give a file in an existing directory you may write, such as "
        "/var/lib/node_exporter/textfile/JOB.prom",
    )


if __name__ == "__main__":  # python -m numarun.refusals: the man page's EXIT STATUS body
    import sys

    sys.stdout.write(man_exit_status())
