"""Job specs and presets: every error shape is one line with file, line, key and a fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from numarun import presets
from numarun.errors import SpecError
from numarun.spec import load_spec, parse_spec_text

REPO = Path(__file__).resolve().parent.parent

CACHE = """\
[[process]]
name = "cache"
command = ["redis-server", "--port", "70{worker}"]
workers = "per-node"
smt = "avoid"
policy = "bind"
"""


def error_of(text: str, name: str = "job.toml") -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec_text(text, name)
    message = caught.value.message
    assert "\n" not in message
    return message


def test_the_fixed_shape_loads() -> None:
    spec = parse_spec_text(CACHE, "job.toml")
    (group,) = spec.processes
    assert group.name == "cache"
    assert group.command == ("redis-server", "--port", "70{worker}")
    assert (group.workers, group.smt, group.mode) == ("per-node", "avoid", "bind")
    rules = group.supervision
    assert (rules.restart, rules.stop_signal, rules.stop_timeout) == ("on-failure", "SIGTERM", 10)


def test_unknown_key_suggests_the_right_one() -> None:
    text = CACHE.replace('policy = "bind"', 'polcy = "bind"')
    assert error_of(text) == (
        "job.toml:6: process[0].polcy: unknown key 'polcy' — did you mean 'policy'?"
    )


def test_error_names_the_right_group_and_line() -> None:
    text = CACHE + '\n[[process]]\nname = "db"\ncommand = ["pg"]\npolicy = "interlave"\n'
    assert error_of(text) == (
        "job.toml:11: process[1].policy: unknown policy 'interlave' — did you mean 'interleave'?"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "workers = true",
            "process[0].workers: must be 'per-node' or 'per-socket' or 'per-gpu' or a count",
        ),
        ('workers = "pernode"', "invalid value 'pernode' — did you mean 'per-node'?"),
        ("workers = 0", "workers = 0 must be at least 1"),
        ('smt = "never"', "process[0].smt: invalid value 'never'"),
        ('cpus_per_worker = "most"', "process[0].cpus_per_worker: invalid value 'most'"),
        ("stop_timeout = -1", "process[0].stop_timeout: must be greater than or equal to 0"),
        ('stop_signal = "TREM"', "unknown signal 'TREM' — did you mean 'SIGTERM'?"),
        ('restart = "sometimes"', "process[0].restart: invalid value 'sometimes'"),
        ('on_failure = "panic"', "process[0].on_failure: invalid value 'panic'"),
        ("env = { A = true }", "process[0].env.A: must be a string, not a boolean"),
        ("cwd = 3", "process[0].cwd: must be a string, not an integer"),
        ('reserve_cpus = "0-"', "process[0].reserve_cpus: not a CPU list"),
        ('nodes = "0-"', "process[0].nodes: nodes '0-' is not a node list"),
        ('memory_nodes = "x"', "process[0].memory_nodes"),
        ("backoff = { initial = 0 }", "process[0].backoff.initial: must be greater than 0"),
        ("backoff = { initail = 1 }", "unknown key 'initail' — did you mean 'initial'?"),
        ("backoff = { initial = 5, max = 1 }", "max = 1 is less than initial = 5"),
        ("crash_loop = { limit = 0 }", "process[0].crash_loop.limit: must be greater than"),
        ("mode = 'bind'", "process[0].mode: unknown key 'mode'"),
    ],
)
def test_bad_values(line: str, expected: str) -> None:
    key = line.split("=", maxsplit=1)[0].strip()
    kept = [row for row in CACHE.splitlines() if row.split("=", maxsplit=1)[0].strip() != key]
    text = "\n".join([*kept, line]) + "\n"
    message = error_of(text)
    assert expected in message
    assert message.startswith("job.toml:")
    assert " — " in message  # every error carries a fix


def test_command_string_needs_shell() -> None:
    text = CACHE.replace('["redis-server", "--port", "70{worker}"]', '"redis-server"')
    assert error_of(text) == (
        "job.toml:3: process[0].command: command is a string but shell is not true — write an "
        'argv list, command = ["prog", "arg"], or add shell = true'
    )
    spec = parse_spec_text(text.replace("name =", "shell = true\nname ="), "job.toml")
    assert spec.processes[0].command == "redis-server"


def test_placeholder_typo() -> None:
    text = CACHE.replace("70{worker}", "70{wroker}")
    assert "unknown placeholder {wroker} — did you mean {worker}?" in error_of(text)
    # Shell and other braces are not placeholders.
    spec = parse_spec_text(CACHE.replace("70{worker}", "${HOME}/{print $1}"), "x.toml")
    assert spec.processes[0].command[2] == "${HOME}/{print $1}"


def test_missing_and_duplicate() -> None:
    assert error_of('[[process]]\nname = "a"\n') == (
        'job.toml:1: process[0]: missing key \'command\' — add command = ["prog", "--flag"]'
    )
    assert "no [[process]] table" in error_of('[defaults]\nsmt = "avoid"\n')
    assert "already the name of process[0]" in error_of(CACHE + "\n" + CACHE)
    assert "unknown top-level key 'proces' — did you mean 'process'?" in error_of("[proces]\n")


def test_defaults_are_merged_and_their_errors_point_at_defaults() -> None:
    text = '[defaults]\nsmt = "avoid"\nenv = { A = "1" }\n' + CACHE.replace(
        'smt = "avoid"', 'env = { B = "2" }'
    )
    group = parse_spec_text(text, "j.toml").processes[0]
    assert group.smt == "avoid"
    assert group.env == {"A": "1", "B": "2"}
    assert error_of('[defaults]\nsmt = "sometimes"\n' + CACHE.replace('smt = "avoid"\n', "")) == (
        "job.toml:2: defaults.smt: invalid value 'sometimes' (expected 'avoid' or 'allow') — "
        'write smt = "avoid" or smt = "allow"'
    )


def test_memory_nodes_with_a_nodeless_mode_is_the_engines_refusal() -> None:
    # Not a spec error (3): the placement engine refuses it with the prefix form's words and
    # code (6); see tests/test_refusals.py.
    text = CACHE.replace('policy = "bind"', 'policy = "local"\nmemory_nodes = "0"')
    assert parse_spec_text(text, "job.toml").processes[0].memory_nodes == "0"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[[process]]\nname = "a\n', "job.toml:2:10: TOML syntax error"),
        ('[[process]]\nname = "a"\ncommand = ["x",\n', "job.toml:3:16: TOML syntax error"),
        ("[[process]]\nname = 1 2\n", "job.toml:2:10: TOML syntax error"),
    ],
)
def test_toml_syntax_errors_give_line_and_column(text: str, where: str) -> None:
    message = error_of(text)
    assert message.startswith(where)
    assert "fix the TOML at line" in message


def test_preset_fills_what_the_group_leaves_out() -> None:
    text = '[[process]]\nname = "pg"\ncommand = ["postgres"]\npolicy = "database"\nsmt = "avoid"\n'
    group = parse_spec_text(text, "j.toml").processes[0]
    assert (group.mode, group.preset, group.workers, group.memory_nodes) == (
        "interleave",
        "database",
        1,
        "all",
    )
    assert group.smt == "avoid"  # the group's own value wins


def test_user_presets_shadow_shipped_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "database.toml").write_text('mode = "bind"\ndescription = "mine"\n')
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/broken.toml").write_text('mode = "bnid"\n')
    monkeypatch.setenv(presets.ENV_PATH, f"{tmp_path}:/nonexistent")
    found = presets.find_preset("database")
    assert found is not None and found.mode == "bind" and found.source == "$NUMARUN_POLICY_PATH"
    listed = {p.name: (p, shadows) for p, shadows in presets.list_presets()}
    assert listed["database"][1] == [str(Path(presets.shipped_dir()) / "database.toml")]
    with pytest.raises(SpecError, match=r"broken.toml:1: mode: unknown memory policy mode 'bnid'"):
        presets.load_preset(str(tmp_path / "elsewhere/broken.toml"))
    assert presets.find_preset("../etc/passwd") is None


def test_shipped_presets_are_valid_and_documented() -> None:
    names = {p.name for p, _ in presets.list_presets() if p.source == "shipped"}
    assert {"bind", "interleave", "preferred", "local", "database", "latency"} <= names
    for path in sorted(Path(presets.shipped_dir()).glob("*.toml")):
        preset = presets.load_preset(str(path))
        assert preset.description, path
        assert preset.reason, path


def test_every_example_loads() -> None:
    examples = sorted((REPO / "examples").glob("*.toml"))
    assert len(examples) >= 3
    for path in examples:
        assert load_spec(path).processes


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "numarun", *args], capture_output=True, text=True, cwd=REPO
    )


def test_cli_bad_file_exit_3_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "job.toml"
    for text in ("x = [\n", CACHE.replace("policy", "polcy"), '[[process]]\nname = "a"\n'):
        bad.write_text(text)
        done = run_cli("plan", str(bad))
        assert done.returncode == 3, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith(f"numarun: {bad}:")
        assert len(done.stderr.strip().splitlines()) == 1
    done = run_cli("plan", str(tmp_path / "absent.toml"))
    assert done.returncode == 3
    assert "does not exist" in done.stderr


# -- [watch] (issue 14) ------------------------------------------------------------------------


def test_watch_table_defaults_and_given_values() -> None:
    assert parse_spec_text(CACHE, "job.toml").watch is None  # no table: nothing sampled
    spec = parse_spec_text("[watch]\n" + CACHE, "job.toml")
    assert spec.watch is not None
    assert spec.watch.to_dict() == {
        "interval": 10.0,
        "threshold": 0.9,
        "remediate": "off",
        "migrate_rate_mbps": 64.0,
    }
    given = '[watch]\ninterval = 2\nthreshold = 0.8\nremediate = "migrate"\n'
    spec = parse_spec_text(given + "migrate_rate_mbps = 16\n" + CACHE, "job.toml")
    assert spec.watch is not None
    assert spec.watch.to_dict() == {
        "interval": 2.0,
        "threshold": 0.8,
        "remediate": "migrate",
        "migrate_rate_mbps": 16.0,
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("interval = 0", "job.toml:2: watch.interval: interval = 0 is outside 0.1 to 86400"),
        ('interval = "10"', "job.toml:2: watch.interval: must be a number, not a string"),
        ("threshold = 1.5", "job.toml:2: watch.threshold: threshold = 1.5 is not a share"),
        ("threshold = true", "job.toml:2: watch.threshold: must be a number, not a boolean"),
        ('remediate = "move"', "job.toml:2: watch.remediate: invalid value 'move'"),
        ("migrate_rate_mbps = 0", "job.toml:2: watch.migrate_rate_mbps: migrate_rate_mbps = 0"),
        ("intervl = 3", "job.toml:2: watch.intervl: unknown key 'intervl' — did you mean 'inte"),
    ],
)
def test_watch_table_refusals(line: str, expected: str) -> None:
    assert error_of(f"[watch]\n{line}\n" + CACHE).startswith(expected)


def test_watch_must_be_a_table() -> None:
    assert error_of("watch = 3\n" + CACHE) == (
        "job.toml:1: watch: must be a table, not an integer — write [watch] with interval, "
        "threshold, remediate, migrate_rate_mbps"
    )
