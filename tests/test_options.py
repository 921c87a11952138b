"""One option vocabulary: the table, the fast parser and the typer application agree.

The typer application is the interface of every command; the fast paths (the prefix
form, topology, placement, numastat, migrate) are parsed without typer from the same table
(numarun.options). These tests fail when the two drift, and when one command accepts a
spelling another refuses.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer.main

from numarun import options
from numarun.cli import app
from numarun.errors import UsageError

from .conftest import REPO


def numarun(*args: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-m", "numarun", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200"),
        timeout=60,
        check=False,
    )


def _click(command: str) -> object:
    group = typer.main.get_command(app)
    return group if command == options.PREFIX else group.commands[command]  # type: ignore[attr-defined]


def _declared(command: str) -> dict[tuple[str, ...], str]:
    """Option names -> help as the typer application declares them for ``command``."""
    out = {}
    for param in _click(command).params:  # type: ignore[attr-defined]
        if param.param_type_name == "option":
            out[tuple(sorted(param.opts + param.secondary_opts))] = param.help
    return out


def _table(command: str) -> dict[tuple[str, ...], str]:
    out = {}
    for opt in options.options_of(command):
        if opt.key == "help":  # click's own help option, checked below
            continue
        names = opt.names + ((opt.negative,) if opt.negative else ())
        out[tuple(sorted(names))] = opt.help
    return out


@pytest.mark.parametrize("command", options.COMMANDS)
def test_typer_declares_exactly_the_tables_options(command: str) -> None:
    assert _declared(command) == _table(command)


def test_every_command_of_the_application_is_in_the_table() -> None:
    group = typer.main.get_command(app)
    assert set(group.commands) == set(options.COMMANDS) - {options.PREFIX}  # type: ignore[attr-defined]
    assert group.context_settings["help_option_names"] == list(options.BY_KEY["help"].names)


@pytest.mark.parametrize("command", [options.PREFIX, *options.FAST_COMMANDS])
def test_the_fast_parser_reads_every_name_typer_declares(command: str) -> None:
    for names in _declared(command):
        for name in names:
            opt = next(o for o in options.options_of(command) if name in (*o.names, o.negative))
            argv = [name, "1"] if opt.takes_value else [name]
            parsed = options.parse(command, argv)
            assert [o.key for o, _, _ in parsed.given] == [opt.key], name


def test_each_name_belongs_to_one_option_per_command() -> None:
    for command in options.COMMANDS:
        names = [n for o in options.options_of(command) for n in (*o.names, o.negative) if n]
        assert len(names) == len(set(names)), command


# -- exact names everywhere --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["topology", "--js"],
        ["placement", "--js", "1"],
        ["numastat", "--js"],
        ["migrate", "1", "--to", "0", "--js"],
        ["plan", "--js", "job.toml"],
        ["policies", "--js"],
        ["status", "--js"],
        ["--dry", "--", "true"],  # numarun's own option in the prefix form
        ["--cpu-node", "0", "--", "true"],
    ],
)
def test_numaruns_own_long_options_are_never_abbreviated(argv: list[str]) -> None:
    done = numarun(*argv)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("numarun: "), done.stderr
    assert "Traceback" not in done.stderr


def test_the_same_option_means_the_same_in_each_fast_command() -> None:
    for command in ("topology", "placement", "numastat", "migrate"):
        assert options.parse(command, ["--json"]).flag("json") is True
        assert options.parse(command, ["--root=/x"]).text("root") == "/x"
        with pytest.raises(UsageError, match="unknown option --jso"):
            options.parse(command, ["--jso"])


def test_positional_arguments_may_come_anywhere_but_not_in_the_prefix_form() -> None:
    parsed = options.parse("migrate", ["42", "--to", "1", "--json"])
    assert (parsed.operands, parsed.text("to"), parsed.flag("json")) == (["42"], "1", True)
    parsed = options.parse(options.PREFIX, ["-m", "1", "cmd", "--json"])
    assert parsed.operands == ["cmd", "--json"]


# -- help ---------------------------------------------------------------------------------


def test_help_shows_the_placement_options_and_h_is_help() -> None:
    long, short = numarun("--help"), numarun("-h")
    assert long.returncode == short.returncode == 0
    assert long.stdout == short.stdout
    for name in ("--membind", "-m", "--cpu-nodes", "--policy", "--per-rank", "--smt", "--all"):
        assert name in long.stdout, name
    assert "topology" in long.stdout and "placement" in long.stdout  # and the commands


@pytest.mark.parametrize("command", ["topology", "placement", "migrate", "plan"])
def test_help_of_each_command_comes_from_typer(command: str) -> None:
    long, short = numarun(command, "--help"), numarun(command, "-h")
    assert long.returncode == short.returncode == 0, long.stderr
    assert long.stdout == short.stdout
    assert f"numarun {command}" in long.stdout
    assert "--json" in long.stdout


def test_help_after_placement_options_is_the_same_help() -> None:
    assert numarun("-m", "0", "--help").stdout == numarun("--help").stdout


# -- start-up cost -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["-m", "0", "--", "true"], ["topology", "-H"], ["numastat"], ["--version"]]
)
def test_fast_paths_import_no_parser_library(argv: list[str]) -> None:
    done = numarun(*argv, flags=("-X", "importtime"))
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "numarun.options" in imported
    for heavy in ("argparse", "typer", "click", "typing", "dataclasses", "re", "numarun.cli"):
        assert heavy not in imported, f"{heavy} is imported by numarun {' '.join(argv)}"
