"""The typer application: every subcommand except the fast paths in :mod:`numarun.__main__`.

Each command lives in its own module under :mod:`numarun.commands` and registers itself
with ``register(app)``; this module only assembles them. Commands stay thin: they parse
options, call the library, and print.
"""

from __future__ import annotations

import importlib

import typer

# Modules under numarun.commands that add commands to the application, in help order.
COMMAND_MODULES: tuple[str, ...] = ("topology", "placement", "plan", "run")

app = typer.Typer(
    name="numarun",
    help=(
        "NUMA placement launcher and workload supervisor.\n\n"
        "Prefix form: numarun PLACEMENT-OPTIONS -- CMD ARGS... (see man numarun)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from numarun import __version__

        typer.echo(f"numarun {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """NUMA placement launcher and workload supervisor."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"numarun.commands.{_name}").register(app)


def run_app(argv: list[str]) -> int:
    """Run the typer application on ``argv``; return its exit status."""
    try:
        app(args=argv, prog_name="numarun")
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
