"""The typer application: the interface of every command, the prefix form's help included.

Each command lives in its own module under :mod:`numarun.commands` and registers itself
with ``register(app)``; this module only assembles them. Every option, here and there, is
built from its entry in :mod:`numarun.options` (names, metavar, help), the table the fast
paths in :mod:`numarun.__main__` parse with; so ``numarun --help`` lists the prefix form's
placement options, grouped as in the table, though typer never parses the prefix form.
"""

from __future__ import annotations

import importlib
import inspect

import typer

from numarun.options import PREFIX, options_of, typer_option

# Modules under numarun.commands that add commands to the application, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "topology",
    "placement",
    "plan",
    "run",
    "watch",
    "weights",
    "probe",
)

HELP = (
    "NUMA placement launcher and workload supervisor.\n\n"
    "Prefix form: numarun [OPTIONS] [--] CMD [ARGS...] runs CMD placed by the options "
    "below (numactl's spellings too); the commands below report, plan and supervise. "
    "Long options are never abbreviated, except numactl's own in the prefix form. "
    "See man numarun."
)

app = typer.Typer(
    name="numarun",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from numarun import __version__

        typer.echo(f"numarun {__version__}")
        raise typer.Exit()


def _root(**_placement: object) -> None:
    """NUMA placement launcher and workload supervisor."""


def _prefix_signature() -> inspect.Signature:
    """The root's parameters: the prefix form's options from the table, for its help.

    They are declared on the application's callback, so typer renders them with the
    commands; the prefix form itself is parsed by numarun.options without typer.
    """
    params = []
    for opt in options_of(PREFIX):
        if opt.key == "help":  # click's own
            continue
        extra = {"callback": _print_version, "is_eager": True} if opt.key == "version" else {}
        params.append(
            inspect.Parameter(
                opt.key,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer_option(opt.key, panel=True, **extra),
                annotation=str | None if opt.takes_value else bool,
            )
        )
    return inspect.Signature(params, return_annotation=None)


_root.__signature__ = _prefix_signature()  # type: ignore[attr-defined]
_root.__annotations__ = {p.name: p.annotation for p in _root.__signature__.parameters.values()}  # type: ignore[attr-defined]
app.callback()(_root)

for _name in COMMAND_MODULES:
    importlib.import_module(f"numarun.commands.{_name}").register(app)


def _click_error() -> type[Exception]:
    try:  # typer 0.22+ carries its own copy of click
        from typer._click.exceptions import ClickException

        return ClickException
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click.exceptions import ClickException as OlderClickException

        return OlderClickException  # type: ignore[no-any-return,unused-ignore]


def run_app(argv: list[str]) -> int:
    """Run the typer application on ``argv``; return its exit status.

    click's own refusals (an unknown option, a missing argument) become one
    ``numarun: PROBLEM — FIX`` line and exit 2, like every other refusal.
    """
    from numarun.errors import UsageError

    error = _click_error()
    try:
        code = app(args=argv, prog_name="numarun", standalone_mode=False)
    except error as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # plain `numarun`: the help, as asked
            print(err.format_message())  # type: ignore[attr-defined]
            return 0
        ctx = getattr(err, "ctx", None)
        where = ctx.command_path if ctx is not None else "numarun"
        problem = err.format_message().rstrip(".")  # type: ignore[attr-defined]
        command = where.removeprefix("numarun").strip()
        raise UsageError(
            f"{command + ': ' if command else ''}{problem[:1].lower()}{problem[1:]}",
            f"see '{where} --help'",
        ) from None
    except SystemExit as done:
        code = done.code
    return code if isinstance(code, int) else (0 if code is None else 1)
