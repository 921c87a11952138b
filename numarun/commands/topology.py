"""``numarun topology``: show the machine's NUMA layout, save or print it as JSON.

Parsed by numarun.options' small parser rather than typer: this command is often scripted
and is measured against ``lstopo`` (typer's import alone costs ~70 ms here). The typer
application registers the same command, from the same option table, for
``numarun --help`` and ``numarun topology --help``.
"""

from __future__ import annotations

import os
import sys

from numarun.errors import UsageError

TYPE_CHECKING = False  # keep typing off the start-up path

if TYPE_CHECKING:
    import typer

DESCRIPTION = "Show the NUMA topology: nodes, cores and SMT siblings, memory, distances."


def run_topology(argv: list[str]) -> int:
    """The fast path: ``numarun topology ...`` without typer."""
    from numarun.options import parse, show_help

    parsed = parse("topology", argv)
    if parsed.wants_help:
        return show_help("topology")
    if parsed.operands:
        raise UsageError(
            f"topology takes no arguments (got {parsed.operands[0]!r})",
            "see 'numarun topology --help'",
        )
    show(
        source=_source(parsed.text("topology"), parsed.text("root")),
        as_json=bool(parsed.flag("json")),
        save=parsed.text("save"),
        hardware=bool(parsed.flag("hardware")),
        colour=parsed.flag("colour"),
        cpu_compress=bool(parsed.flag("cpu_compress")),
    )
    return 0


def _source(topology: str | None, root: str | None) -> str | None:
    if topology is not None and root is not None:
        raise UsageError("topology: --topology and --root both name a machine", "give one")
    return topology if topology is not None else root


def show(
    source: str | None = None,
    *,
    as_json: bool = False,
    save: str | None = None,
    hardware: bool = False,
    colour: bool | None = None,
    cpu_compress: bool = False,
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
        from numarun import jsontext  # json itself imports re and enum: ms per run

        sys.stdout.write(jsontext.dumps(topology.to_dict()) + "\n")
        return
    from numarun import render

    if hardware:
        sys.stdout.write(render.render_hardware(topology, cpu_compress=cpu_compress))
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
    from numarun.options import typer_option

    @app.command("topology", help=DESCRIPTION)
    def topology_command(
        *,
        topology: str | None = typer_option("topology"),
        root: str | None = typer_option("root"),
        as_json: bool = typer_option("json"),
        save: str | None = typer_option("save"),
        hardware: bool = typer_option("hardware"),
        cpu_compress: bool = typer_option("cpu_compress"),
        colour: bool | None = typer_option("colour"),
    ) -> None:
        show(
            _source(topology, root),
            as_json=as_json,
            save=save,
            hardware=hardware,
            colour=colour,
            cpu_compress=cpu_compress,
        )
