"""``numarun topology``: show the machine's NUMA layout, save or print it as JSON.

Parsed with argparse rather than typer: this command is often scripted and is measured
against ``lstopo`` (typer's import alone costs ~70 ms here). The typer application
registers the same command for ``numarun --help`` and ``numarun topology --help``.
"""

from __future__ import annotations

import argparse
import os
import sys

from numarun.errors import UsageError

TYPE_CHECKING = False  # keep typing off the start-up path

if TYPE_CHECKING:
    import typer

DESCRIPTION = "Show the NUMA topology: nodes, cores and SMT siblings, memory, distances."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"topology: {message}", "see 'numarun topology --help'")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="numarun topology", description=DESCRIPTION, add_help=False)
    p.add_argument("--topology", "--root", dest="source", metavar="FILE-or-DIR")
    p.add_argument("--json", action="store_true")
    p.add_argument("--save", metavar="FILE")
    p.add_argument("--hardware", "-H", action="store_true")
    p.add_argument("--color", dest="colour", action="store_true", default=None)
    p.add_argument("--no-color", dest="colour", action="store_false")
    return p


def run_topology(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    show(
        source=args.source,
        as_json=args.json,
        save=args.save,
        hardware=args.hardware,
        colour=args.colour,
    )
    return 0


def show(
    source: str | None = None,
    as_json: bool = False,
    save: str | None = None,
    hardware: bool = False,
    colour: bool | None = None,
) -> None:
    from numarun.topology import load_topology, save_snapshot

    topology = load_topology(source)
    if save is not None:
        try:
            save_snapshot(topology, save)
        except OSError as err:
            raise UsageError(
                f"cannot write {save}: {err.strerror}", "choose a writable path"
            ) from None
        print(f"saved the topology of {topology.source} to {save}", file=sys.stderr)
        return
    if as_json:
        import json

        json.dump(topology.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    from numarun import render

    if hardware:
        sys.stdout.write(render.render_hardware(topology))
        return
    try:
        width = os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        width = 80
    sys.stdout.write(
        render.render_drawing(
            topology, colour=render.use_colour(sys.stdout, colour), width=min(width, 120)
        )
    )


def register(app: typer.Typer) -> None:
    import typer

    @app.command("topology", help=DESCRIPTION)
    def topology_command(
        source: str | None = typer.Option(
            None,
            "--topology",
            "--root",
            metavar="FILE-or-DIR",
            help="A saved snapshot or a sysfs root to read instead of this machine.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the whole model as JSON."),
        save: str | None = typer.Option(None, "--save", metavar="FILE", help="Save a snapshot."),
        hardware: bool = typer.Option(
            False, "--hardware", "-H", help="Print in numactl --hardware's format."
        ),
        colour: bool | None = typer.Option(
            None, "--color/--no-color", help="Colour (default: on a terminal, unless NO_COLOR)."
        ),
    ) -> None:
        show(source, as_json, save, hardware, colour)
