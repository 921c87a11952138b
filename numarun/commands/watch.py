"""``numarun watch [PID...]``: the live view of nodes, balancing, jobs' workers and issues.

Thin: options are read and refused here (through :mod:`numarun.refusals`); the frames are
:mod:`numarun.monitor`'s. On a terminal each frame replaces the last (clear and redraw);
otherwise frames are appended, so ``numarun watch | tee log`` keeps them all. The first
frame comes after two readings 0.25 s apart, so that it has CPU utilisation and rates.
"""

from __future__ import annotations

import sys
import time

from numarun import refusals

TYPE_CHECKING = False
if TYPE_CHECKING:
    import typer

    from numarun.watch import Thresholds

WHERE = "watch"
FIRST_GAP = 0.25  # seconds between the two readings of the first frame
CLEAR = "\x1b[H\x1b[2J"

WATCH_HELP = (
    "Show per node memory used and free, CPU utilisation, the allocator's hit/miss counters "
    "and the NUMA balancing counters (changes per interval); each running numarun job's "
    "workers' locality against their memory policy's nodes; the given PIDs' locality "
    "against their own policy's nodes (or their CPUs' nodes, for default policy); and the "
    "issues the thresholds find. Refreshed every --interval seconds until Ctrl-C. --once "
    "prints one sample, its CPU utilisation measured between two readings 0.25 s apart. "
    "See man numarun, WATCHING."
)


def _seconds(option: str, text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise refusals.not_seconds(WHERE, option, text) from None
    if not 0 < value < float("inf"):
        raise refusals.not_seconds(WHERE, option, text)
    return value


def _count(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise refusals.not_count(WHERE, option, text)
    return int(text)


def _fraction(option: str, text: str | None, default: float) -> float:
    if text is None:
        return default
    word, percent = text.removesuffix("%"), text.endswith("%")
    try:
        value = float(word) / (100 if percent else 1)
    except ValueError:
        raise refusals.not_fraction(WHERE, option, text) from None
    if not 0 <= value <= 1:
        raise refusals.not_fraction(WHERE, option, text)
    return value


def _pids(targets: list[str], root: str) -> list[int]:
    from numarun import procfs

    out = []
    for text in targets:
        if not (text.isascii() and text.isdigit()) or int(text) <= 0:
            raise refusals.not_pid(WHERE, text)
        pid = int(text)
        if not procfs.exists(pid, f"{root.rstrip('/')}/proc"):
            raise refusals.no_process(WHERE, pid)
        out.append(pid)
    return out


def thresholds(
    memory_imbalance: str | None, cpu_imbalance: str | None, threshold: str | None
) -> Thresholds:
    from numarun.watch import Thresholds

    default = Thresholds()
    return Thresholds(
        memory_imbalance=_fraction(
            "--memory-imbalance", memory_imbalance, default.memory_imbalance
        ),
        cpu_imbalance=_fraction("--cpu-imbalance", cpu_imbalance, default.cpu_imbalance),
        locality=_fraction("--threshold", threshold, default.locality),
    )


def watch(
    targets: list[str],
    *,
    interval: str | None = None,
    once: bool = False,
    count: str | None = None,
    as_json: bool = False,
    limits: Thresholds | None = None,
    root: str = "/",
    state_dir: str | None = None,
) -> int:
    """Print frames until ``count`` (1 with ``once``) or Ctrl-C; the exit status."""
    from numarun.monitor import Monitor, render_text, to_json

    every = _seconds("--interval", interval, 2.0)
    left = _count("--count", count)
    left = 1 if once else left
    monitor = Monitor(_pids(targets, root), limits, root=root, state_dir=state_dir)
    redraw = not as_json and sys.stdout.isatty()
    try:
        monitor.prime()
        time.sleep(FIRST_GAP)
        while True:
            started = time.monotonic()
            frame = monitor.frame()
            if as_json:
                import json

                text = json.dumps(to_json(frame), indent=1 if left == 1 else None) + "\n"
            else:
                text = (CLEAR if redraw else "") + render_text(frame) + ("" if redraw else "\n")
            sys.stdout.write(text)
            sys.stdout.flush()  # each frame as it comes, to a terminal or a pipe
            if left is not None:
                left -= 1
                if left == 0:
                    return 0
            time.sleep(max(0.0, every - (time.monotonic() - started)))
    except KeyboardInterrupt:  # Ctrl-C: the way to stop watching
        return 130


def register(app: typer.Typer) -> None:
    import typer

    from numarun.options import typer_option

    @app.command("watch", help=WATCH_HELP)
    def watch_command(
        targets: list[str] | None = typer.Argument(  # noqa: B008
            None, metavar="PID", help="Processes to follow (default: jobs' workers only)."
        ),
        *,  # typer passes options by name
        interval: str | None = typer_option("interval"),
        once: bool = typer_option("once"),
        count: str | None = typer_option("count"),
        as_json: bool = typer_option("json"),
        memory_imbalance: str | None = typer_option("memory_imbalance"),
        cpu_imbalance: str | None = typer_option("cpu_imbalance"),
        threshold: str | None = typer_option("threshold"),
        root: str | None = typer_option("root"),
    ) -> None:
        limits = thresholds(memory_imbalance, cpu_imbalance, threshold)
        raise typer.Exit(
            watch(
                targets or [],
                interval=interval,
                once=once,
                count=count,
                as_json=as_json,
                limits=limits,
                root=root or "/",
            )
        )
