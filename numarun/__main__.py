"""Entry point: ``numarun`` and ``python -m numarun``.

Two paths, chosen by the first argument, because start-up time is part of the product:

* the *prefix form* (``numarun --membind 1 -- cmd``, ``numarun -H``, ``numarun --show``)
  and ``numarun topology`` are parsed by small argparse front ends that import only what
  they use: a prefix runs before every wrapped command, and typer alone costs ~70 ms;
* every other subcommand goes to the typer application in :mod:`numarun.cli`.

Either way a :class:`~numarun.errors.NumarunError` becomes one line on stderr and the
error's exit code, never a traceback.
"""

from __future__ import annotations

import sys

# Options that typer's application answers itself rather than the prefix form.
_APP_OPTIONS = frozenset({"--help", "--version", "--install-completion", "--show-completion"})


def _is_prefix_form(argv: list[str]) -> bool:
    return bool(argv) and argv[0].startswith("-") and argv[0] not in _APP_OPTIONS


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    from numarun.errors import NumarunError

    try:
        if _is_prefix_form(args):
            from numarun.commands.prefix import run_prefix

            return run_prefix(args)
        if args[:1] == ["topology"] and "--help" not in args:
            from numarun.commands.topology import run_topology

            return run_topology(args[1:])
        if args[:1] == ["placement"] and "--help" not in args:
            from numarun.commands.placement import run_placement  # measured against numastat

            return run_placement(args[1:])
        from numarun.cli import run_app

        return run_app(args)
    except NumarunError as err:
        print(f"numarun: {err.message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `numarun topology | head`: the reader left; say nothing, like coreutils.
        sys.stderr.close()
        return 141


if __name__ == "__main__":
    sys.exit(main())
