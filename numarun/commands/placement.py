"""``numarun placement``, ``numarun numastat`` and ``numarun migrate``: where pages really are.

All three are parsed by numarun.options' small parser and reached from
:mod:`numarun.__main__` without typer, like ``topology``: ``placement`` is measured
against ``numastat -p``, all three run in health checks, and typer's import alone costs
~70 ms (seconds in an emulated guest). The typer application registers the same commands,
from the same option table, for ``numarun --help``.
"""

from __future__ import annotations

import os
import sys
import time

from numarun.errors import CheckFailedError, ProcessError, UnknownResourceError, UsageError

TYPE_CHECKING = False  # typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import typer

    from numarun.numastat import NodeMemory
    from numarun.options import Parsed
    from numarun.procfs import NumaMapsReader
    from numarun.report import ProcessReport
    from numarun.topology import Topology

PLACEMENT_HELP = (
    "Show where a process's pages are, per node and kind of mapping, and judge them against "
    "the policy they were allocated under."
)
NUMASTAT_HELP = "Show memory use and allocator counters per node (numastat -m and -n)."
MIGRATE_HELP = "Move a process's pages to other nodes (migrate_pages) and show before and after."

MB = 1 << 20


def _parse(command: str, argv: list[str], operands: str, *, most: int | None) -> Parsed | None:
    """Options and positional arguments of ``command``; None when --help was shown."""
    from numarun.options import parse, show_help

    parsed = parse(command, argv)
    if parsed.wants_help:
        show_help(command)
        return None
    count = len(parsed.operands)
    if (operands and count == 0) or (most is not None and count > most):
        want = f"{command} {operands}" if operands else command
        raise UsageError(f"usage: numarun {want}", f"see 'numarun {command} --help'")
    return parsed


def run_placement(argv: list[str]) -> int:
    """The fast path: ``numarun placement ...`` without typer."""
    parsed = _parse("placement", argv, "PID-or-NAME...", most=None)
    if parsed is None:
        return 0
    watch = parsed.text("watch")
    return placement(
        parsed.operands,
        as_json=bool(parsed.flag("json")),
        watch=None if watch is None else _seconds(watch, "--watch"),
        check=bool(parsed.flag("check")),
        root=parsed.text("root") or "/",
    )


def _seconds(text: str, option: str) -> float:
    try:
        value = float(text) if text.isascii() else float("nan")
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{option} {text!r} is not a positive number of seconds", "e.g. --watch 2")
    return value


def run_numastat(argv: list[str]) -> int:
    """The fast path: ``numarun numastat ...`` without typer."""
    parsed = _parse("numastat", argv, "", most=0)
    if parsed is not None:
        show_numastat(as_json=bool(parsed.flag("json")), root=parsed.text("root") or "/")
    return 0


def run_migrate(argv: list[str]) -> int:
    """The fast path: ``numarun migrate PID --to NODES ...`` without typer."""
    parsed = _parse("migrate", argv, "PID --to NODES", most=1)
    if parsed is None:
        return 0
    to = parsed.text("to")
    if to is None:
        raise UsageError("migrate needs --to NODES", "e.g. numarun migrate PID --to 1")
    return migrate(
        parsed.operands[0],
        to,
        parsed.text("from_"),
        as_json=bool(parsed.flag("json")),
        root=parsed.text("root") or "/",
    )


# -- gathering -------------------------------------------------------------------------------


def resolve(targets: Iterable[str]) -> list[int]:
    """PIDs for ``targets``: numbers as given, names as :func:`numarun.processes.find` finds
    them (never numarun itself or its ancestors; a name that matches nothing is refused)."""
    from numarun import processes

    found: list[int] = []
    for target in targets:
        found.extend(p for p in processes.find(target) if p not in found)
    return found


def collect(
    pid: int,
    topology: Topology,
    memory: dict[int, NodeMemory],
    numa_maps: NumaMapsReader | None = None,
) -> ProcessReport:
    """Read one process and judge it; ``numa_maps``: its file, already being read ahead."""
    from numarun import numamaps, procfs, report

    if numa_maps is None:
        numa_maps = procfs.numa_maps_chunks(pid, ahead=True)
    try:
        cpus, mems = procfs.allowed(pid)
        name = procfs.name(pid)
        # Counted read by read: holding the whole file costs more page faults than the parse.
        summary = numamaps.summarize_chunks(numa_maps)
    finally:
        numa_maps.close()  # at its end already, unless a read above refused
    if not summary.mappings and not procfs.exists(pid):
        raise ProcessError(f"process {pid} exited while being read", "check the PID")
    threads = procfs.thread_cpus(pid)
    return report.build_report(
        pid,
        summary,
        cpu_to_node={c.id: c.node for c in topology.cpus.values()},
        cpus_allowed=cpus,
        mems_allowed=mems,
        thread_cpus=threads,
        free={n: m.free_bytes for n, m in memory.items()},
        total={n: m.total_bytes for n, m in memory.items()},
        name=name,
        tiering=report.tiering_of(topology),
        device=_device(pid),
    )


def _device(pid: int) -> tuple[str, int] | None:
    """The device numarun placed ``pid`` near (its environment says); None when unreadable."""
    from numarun import procfs
    from numarun.report import device_of

    try:
        return device_of(procfs.environ(pid))
    except ProcessError:  # another user's process: its environment is not ours to read
        return None


def placement(
    targets: list[str],
    *,
    as_json: bool = False,
    watch: float | None = None,
    check: bool = False,
    root: str = "/",
    out: Callable[[str], object] | None = None,
) -> int:
    """Report on every target once, or every ``watch`` seconds until interrupted."""
    write = out if out is not None else sys.stdout.write
    from numarun import numastat
    from numarun.topology import read_topology

    if watch is not None and watch <= 0:
        raise UsageError("--watch needs a positive number of seconds", "e.g. --watch 2")
    pids = resolve(targets)
    first = _read_ahead(pids)  # the kernel writes it while the topology is read
    try:
        topology = read_topology(root)
        while True:
            memory = numastat.machine(root)
            reports, exited = _gather(pids, topology, memory, first, check=check)
            first = None
            _write(reports, sorted(memory), as_json=as_json, watch=watch, write=write)
            if check:
                _judge(reports, exited)
            if watch is None:
                return 0
            if out is None:
                sys.stdout.flush()  # a pipe reader (watch | tee) sees each round as it comes
            time.sleep(watch)
            first = _read_ahead(pids)
    finally:
        if first is not None:
            first.close()


def _read_ahead(pids: list[int]) -> NumaMapsReader | None:
    """The first process's numa_maps, being read from now; None when it cannot be opened
    (collect opens it again and refuses it in its place)."""
    from numarun import procfs

    if not pids:
        return None
    try:
        return procfs.numa_maps_chunks(pids[0], ahead=True)
    except ProcessError:
        return None


def _write(
    reports: list[ProcessReport],
    memory_nodes: list[int],
    *,
    as_json: bool,
    watch: float | None,
    write: Callable[[str], object],
) -> None:
    """One round's reports, as JSON (a line a round under ``--watch``) or as text."""
    if as_json:
        from numarun import jsontext  # json itself imports re and enum: ms per run

        data = {"time": round(time.time(), 3), "processes": [_json(r) for r in reports]}
        write(jsontext.dumps(data, indent=None if watch else 1) + "\n")
    else:
        write("\n".join(render(r, memory_nodes) for r in reports))


def _gather(
    pids: list[int],
    topology: Topology,
    memory: dict[int, NodeMemory],
    first: NumaMapsReader | None,
    *,
    check: bool,
) -> tuple[list[ProcessReport], list[str]]:
    """Reports for the live processes; with ``check``, why each of the others failed.

    Without ``check`` a process that is gone is refused (exit 9) as before. With it, a
    process that is gone or a zombie fails the check (exit 10): a health check that
    passes for a dead service is worse than none. ``first``: the first PID's numa_maps,
    already being read; closed here whatever happens.
    """
    from numarun import processes

    reports: list[ProcessReport] = []
    exited: list[str] = []
    try:
        for index, pid in enumerate(pids):
            why = processes.exited(pid) if check else None
            if why is None:
                try:
                    ahead = first if index == 0 else None
                    reports.append(collect(pid, topology, memory, ahead))
                    continue
                except ProcessError:  # gone while being read; anything else stays a refusal
                    if not check or (why := processes.exited(pid)) is None:
                        raise
            exited.append(
                f"PID {pid} is gone (it exited, or never ran)"
                if why == "gone"
                else f"PID {pid} is a zombie (it exited and its parent has not reaped it)"
            )
    finally:
        if first is not None:
            first.close()
    return reports, exited


def _judge(reports: list[ProcessReport], exited: list[str]) -> None:
    """``--check``: refuse (exit 10) when any process is not placed as its policy asks."""
    failed = [r for r in reports if not r.ok]
    if not failed and not exited:
        return
    more = len(failed) + len(exited) - 1
    tail = f" (and {more} more)" if more else ""
    if exited:
        raise CheckFailedError(
            f"placement check failed: {exited[0]}, so it has no memory to judge{tail}",
            "restart the service (a zombie's parent must reap it); then check again",
        )
    worst = failed[0]
    reason = next(v.message for v in worst.verdicts if not v.ok)
    raise CheckFailedError(
        f"placement check failed for PID {worst.pid} ({worst.name}): {reason}{tail}",
        "move the memory (numarun migrate) or fix the policy the process starts with",
    )


def _json(report: ProcessReport) -> dict[str, object]:
    from numarun.report import to_json

    return to_json(report)


# -- drawing -----------------------------------------------------------------------------------


def _bar(percent: float, width: int = 20) -> str:
    fill = "█" if (sys.stdout.encoding or "").lower().startswith("utf") else "#"
    empty = "·" if fill == "█" else "."
    cells = round(percent / 100 * width)
    return fill * cells + empty * (width - cells)


def _mb(n: int) -> str:
    return f"{n / MB:,.2f}"


def render(report: ProcessReport, machine_nodes: list[int]) -> str:
    """The human table for one process."""
    from numarun import cpulist
    from numarun.numamaps import JUDGED_KINDS
    from numarun.report import share

    summary = report.summary
    kinds = summary.kind_bytes()
    all_bytes = summary.node_bytes()
    nodes = sorted(set(machine_nodes) | set(all_bytes))
    judged = report.judged_bytes()
    judged_total = sum(judged.values())
    lines = [
        f"PID {report.pid} ({report.name})  CPUs {cpulist.format_list(report.cpus_allowed)}"
        f" on {_nodes(report.cpu_nodes)}  mems {cpulist.format_list(report.mems_allowed)}"
        f"  {summary.mappings} mappings",
    ]
    head = f"{'MB':<20}" + "".join(f"{'Node ' + str(n):>12}" for n in nodes) + f"{'Total':>12}"
    lines += [head, "-" * len(head)]
    for kind, per_node in kinds.items():
        label = kind if kind in JUDGED_KINDS else f"{kind} (not judged)"
        lines.append(
            f"{label:<20}"
            + "".join(f"{_mb(per_node.get(n, 0)):>12}" for n in nodes)
            + f"{_mb(sum(per_node.values())):>12}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'Total':<20}"
        + "".join(f"{_mb(all_bytes.get(n, 0)):>12}" for n in nodes)
        + f"{_mb(sum(all_bytes.values())):>12}"
    )
    lines.append("")
    for n in nodes:
        pct = share(judged.get(n, 0), judged_total)
        lines.append(f"  node {n:<3} {_bar(pct)} {pct:5.1f}%  {_mb(judged.get(n, 0))} MB judged")
    threads = report.threads
    if threads:
        by_node: dict[int | None, int] = {}
        for _cpu, node in threads.values():
            by_node[node] = by_node.get(node, 0) + 1
        where = ", ".join(
            f"{count} on node {node}" if node is not None else f"{count} on an unknown node"
            for node, count in sorted(by_node.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
        )
        lines.append(f"  threads: {len(threads)} ({where}, by the CPU each last ran on)")
    for v in report.verdicts:
        lines.append(f"  {v.status.upper():<5} {v.policy}: {v.message}")
    if report.device is not None and report.device.message is not None:
        lines.append(f"  NOTE  {report.device.message}")
    return "\n".join(lines) + "\n"


def _nodes(nodes: Iterable[int]) -> str:
    from numarun.report import nodes_text

    found = list(nodes)
    return nodes_text(found) if found else "no known node"


# -- numarun numastat --------------------------------------------------------------------------


def _sysfs_root(root: str) -> None:
    """Refuse a ``--root`` that is no sysfs tree (exit 8), as ``topology --root`` does.

    numastat.machine reads a machine without node directories as a non-NUMA one, node 0
    with /proc/meminfo's memory: a mistyped root would otherwise print a plausible table.
    """
    from numarun import sysfs
    from numarun.errors import TopologyError

    fix = "point --root at a directory holding sys/ and proc/ (a sysfs snapshot)"
    if not os.path.isdir(root):
        raise TopologyError(f"--root {root} is not a directory", fix)
    fs = sysfs.Root(root)
    if not sysfs.cpu_ids(fs):
        raise TopologyError(
            f"--root {root} is not a sysfs tree: no CPUs under {fs.join(sysfs.CPU_DIR)}", fix
        )


def show_numastat(as_json: bool = False, root: str = "/") -> None:
    from numarun import numastat

    _sysfs_root(root)
    machine = numastat.machine(root)
    if as_json:
        from numarun import jsontext

        data = {
            "nodes": {
                str(n): {"meminfo_kb": m.meminfo, "counters_pages": m.counters}
                for n, m in machine.items()
            }
        }
        sys.stdout.write(jsontext.dumps(data) + "\n")
        return
    nodes = sorted(machine)
    head = f"{'':<16}" + "".join(f"{'Node ' + str(n):>14}" for n in nodes) + f"{'Total':>14}"
    lines = ["Per-node memory (MB):", head, "-" * len(head)]
    for row in numastat.MEMINFO_ROWS:
        values = [machine[n].meminfo.get(row) for n in nodes]
        if all(v is None for v in values):
            continue
        scale = 1 if row.startswith("HugePages") else 1024  # counts, not kB
        cells = [(v or 0) * scale for v in values]
        lines.append(
            f"{row:<16}"
            + "".join(f"{_amount(c, scale):>14}" for c in cells)
            + f"{_amount(sum(cells), scale):>14}"
        )
    if any(machine[n].counters for n in nodes):
        lines += ["", "Allocator counters (pages since boot):", head, "-" * len(head)]
        for row in numastat.COUNTERS:
            cells = [machine[n].counters.get(row, 0) for n in nodes]
            lines.append(f"{row:<16}" + "".join(f"{c:>14,}" for c in cells) + f"{sum(cells):>14,}")
    sys.stdout.write("\n".join(lines) + "\n")


def _amount(value: int, scale: int) -> str:
    return f"{value:,}" if scale == 1 else f"{value / MB:,.2f}"


# -- numarun migrate ---------------------------------------------------------------------------


def _node_set(text: str, option: str, topology: Topology) -> frozenset[int]:
    from numarun import cpulist

    try:
        nodes = cpulist.parse_list(text, limit=cpulist.MAX_NODES)
    except ValueError as err:
        raise UsageError(f"{option}: {err}", "give nodes as a list, e.g. 1 or 0-1") from None
    if not nodes:
        raise UsageError(f"{option} names no node", "give nodes as a list, e.g. 1 or 0-1")
    unknown = nodes - topology.nodes.keys()
    if unknown:
        raise UnknownResourceError(
            f"{option} names node {cpulist.format_list(unknown)}, which this machine does not "
            f"have (nodes: {cpulist.format_list(topology.nodes)})",
            "see 'numarun topology'",
        )
    return nodes


def migrate(
    target: str, to: str, from_: str | None = None, as_json: bool = False, root: str = "/"
) -> int:
    """Move a process's pages with migrate_pages and show the judged memory before and after."""
    from numarun import mempolicy, numastat
    from numarun.topology import read_topology

    pids = resolve([target])
    if len(pids) != 1:
        raise UsageError(
            f"{target!r} matches {len(pids)} processes ({', '.join(map(str, pids[:5]))})",
            "give one PID",
        )
    pid = pids[0]
    topology = read_topology(root)
    to_nodes = _node_set(to, "--to", topology)
    from_nodes = (
        _node_set(from_, "--from", topology)
        if from_ is not None
        else frozenset(topology.nodes) - to_nodes
    )
    before = collect(pid, topology, numastat.machine(root))
    started = time.perf_counter()
    left = mempolicy.migrate_pages(pid, from_nodes, to_nodes) if from_nodes else 0
    took = time.perf_counter() - started
    after = collect(pid, topology, numastat.machine(root))
    b, a = before.summary.node_bytes(), after.summary.node_bytes()
    nodes = sorted(set(b) | set(a) | set(topology.nodes))
    if as_json:
        from numarun import jsontext

        data = {
            "pid": pid,
            "from_nodes": sorted(from_nodes),
            "to_nodes": sorted(to_nodes),
            "pages_not_moved": left,
            "seconds": round(took, 3),
            "before": _json(before),
            "after": _json(after),
        }
        sys.stdout.write(jsontext.dumps(data) + "\n")
        return 0
    done = (
        f"moved pages from {_nodes(from_nodes)} to {_nodes(to_nodes)} in {took:.2f} s"
        if from_nodes
        else f"nothing to move: every node is in --to ({_nodes(to_nodes)})"
    )
    lines = [
        f"PID {pid} ({after.name}): {done}"
        + (f"; {left} pages could not be moved" if left else ""),
        f"{'MB':<8}{'before':>12}{'after':>12}",
    ]
    for n in nodes:
        lines.append(f"node {n:<3}{_mb(b.get(n, 0)):>12}{_mb(a.get(n, 0)):>12}")
    for v in after.verdicts:
        lines.append(f"  {v.status.upper():<5} {v.policy}: {v.message}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


# -- typer -----------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    import typer

    from numarun.options import typer_option

    @app.command("placement", help=PLACEMENT_HELP)
    def placement_command(
        targets: list[str] = typer.Argument(..., metavar="PID-or-NAME..."),  # noqa: B008
        as_json: bool = typer_option("json"),
        watch: float | None = typer_option("watch"),
        check: bool = typer_option("check"),
        root: str | None = typer_option("root"),
    ) -> None:
        code = placement(targets, as_json=as_json, watch=watch, check=check, root=root or "/")
        raise typer.Exit(code)

    @app.command("numastat", help=NUMASTAT_HELP)
    def numastat_command(
        as_json: bool = typer_option("json"),
        root: str | None = typer_option("root"),
    ) -> None:
        show_numastat(as_json=as_json, root=root or "/")

    @app.command("migrate", help=MIGRATE_HELP)
    def migrate_command(
        target: str = typer.Argument(..., metavar="PID"),
        to: str | None = typer_option("to"),
        from_: str | None = typer_option("from_"),
        as_json: bool = typer_option("json"),
        root: str | None = typer_option("root"),
    ) -> None:
        if to is None:
            raise UsageError("migrate needs --to NODES", "e.g. numarun migrate PID --to 1")
        raise typer.Exit(migrate(target, to, from_, as_json=as_json, root=root or "/"))
