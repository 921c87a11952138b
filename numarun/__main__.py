"""Entry point: ``numarun`` and ``python -m numarun``.

Two paths, chosen by the first argument, because start-up time is part of the product:

* the *prefix form* (``numarun --membind 1 -- cmd``, ``numarun -H``, ``numarun --show``),
  ``topology``, ``placement``, ``numastat`` and ``migrate`` are parsed by the small
  getopt_long-style parser of :mod:`numarun.options` and import only what they use: a
  prefix runs before every wrapped command, and typer alone costs ~70 ms;
* every other subcommand, and ``--help`` everywhere, goes to the typer application in
  :mod:`numarun.cli`, whose options come from the same table.

Either way a :class:`~numarun.errors.NumarunError` becomes one line on stderr and the
error's exit code, never a traceback.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs ms at start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable

# Commands parsed by numarun.options' parser, without typer: measured against lstopo and
# numastat, run in health checks and scripts. Their typer twins serve `--help`.
_FAST_COMMANDS = {
    "topology": ("topology", "run_topology"),
    "placement": ("placement", "run_placement"),
    "numastat": ("placement", "run_numastat"),
    "migrate": ("placement", "run_migrate"),
}


def _is_prefix_form(argv: list[str]) -> bool:
    # `numarun --help` and `numarun --version` too: the prefix parser hands --help to typer.
    return bool(argv) and argv[0].startswith("-")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    return guarded(lambda: _dispatch(args))


def guarded(command: Callable[[], int]) -> int:
    """Run ``command`` as numarun runs every command; its exit status.

    Also the entry of the supervisor that ``numarun run`` hands its job to
    (:mod:`numarun.supervisor.handoff`), so that its refusals read alike.
    """
    from numarun import output
    from numarun.errors import NumarunError

    # Output that cannot be written (>&-, >/dev/full, a reader that left) ends in one line
    # or, for a closed pipe, silence, with a non-zero status: see numarun.output.
    guard = output.install()
    try:
        code = command()
    except output.StreamFailed:
        code = 1  # the guard reads the failure from the descriptor and reports it
    except NumarunError as err:
        try:
            sys.stdout.flush()  # what was printed before the refusal comes first
        except (OSError, ValueError, AttributeError):
            pass
        output.say(f"numarun: {err.message}")
        return guard.close(err.exit_code, refused=True)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # A stdout that is not numarun's own descriptor (an embedding's): silence too.
        code = output.EXIT_PIPE
    return guard.close(code)


def _dispatch(args: list[str]) -> int:
    from numarun.options import HelpRequested

    try:
        if _is_prefix_form(args):
            from numarun.commands.prefix import run_prefix

            return run_prefix(args)
        fast = _FAST_COMMANDS.get(args[0]) if args else None
        if fast is not None:
            module, function = fast
            # __import__, not importlib.import_module: importlib imports warnings (~0.4 ms)
            run: Callable[[list[str]], int] = getattr(
                __import__(f"numarun.commands.{module}", fromlist=[function]), function
            )
            code = run(args[1:])
            _finished_lean.append(True)
            return code
    except HelpRequested as asked:  # a fast path's --help: typer prints it, from the table
        args = asked.argv
    from numarun.cli import run_app

    return run_app(args)


# Set when a fast command has run to its end (not when it handed --help to typer).
_finished_lean: list[bool] = []


def run_and_exit() -> None:
    """The ``numarun`` command: :func:`main`, then the exit.

    A fast command that has finished, its output flushed, ends at once (``os._exit``):
    the interpreter's teardown, freeing every object and module one by one (~2 ms of a
    ``numarun topology``), does nothing that such a command needs; it starts no thread
    and registers nothing to run at exit. Every other command exits as usual.
    """
    code = main()
    if _finished_lean:
        import os

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                code = code or 1  # the guard has already said why, when it could
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run_and_exit()
