"""The restart policy: one record from the spec's keys to the plan's JSON and the supervisor.

What a user notices: the keys they write keep their meaning and their JSON, and a value the
supervisor could not honour (a stop timeout of 30 years, an infinite backoff) is refused
when the spec is loaded, in one line that names the key, not by a crash while stopping.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from numarun.errors import SpecError
from numarun.spec import parse_spec_text
from numarun.supervisor.policy import Backoff, CrashLoop, PolicyError, Supervision

REPO = Path(__file__).resolve().parent.parent

GROUP = '[[process]]\nname = "db"\ncommand = ["sleep", "1"]\nworkers = 1\n'


def refusal(line: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec_text(GROUP + line + "\n", "job.toml")
    assert caught.value.exit_code == 3
    message = caught.value.message
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("stop_timeout = 1e9", "job.toml:5: process[0].stop_timeout: stop_timeout = 1e+09 s is"),
        ("stop_timeout = inf", "process[0].stop_timeout: stop_timeout = inf s is longer than"),
        ("stop_timeout = nan", "process[0].stop_timeout: nan is not a number of seconds"),
        ("stop_timeout = true", "process[0].stop_timeout: must be a number, not a boolean"),
        ("backoff = { max = 1e300 }", "process[0].backoff.max: max = 1e+300 s is longer than"),
        ("backoff = { initial = inf, max = inf }", "process[0].backoff.initial: initial = inf"),
        ("backoff = { jitter = 2 }", "process[0].backoff.jitter: jitter = 2 is not between 0"),
        ("backoff = 3", "process[0].backoff: must be a table, not an integer"),
        ("crash_loop = { window = 1e12 }", "process[0].crash_loop.window: window = 1e+12 s"),
        ("crash_loop = { limit = 99999999999999999999 }", "crash_loop.limit: limit = 9999"),
        ("crash_loop = { limit = 2.5 }", "crash_loop.limit: must be an integer, not a float"),
        ("crash_loop = { limt = 2 }", "unknown key 'limt' — did you mean 'limit'?"),
        ("stop_signal = 99", "process[0].stop_signal: 99 is not a signal number"),
        ("supervision = { restart = 'never' }", "process[0].supervision: unknown key"),
    ],
)
def test_supervision_values_the_supervisor_cannot_honour_are_refused_at_load(
    line: str, expected: str
) -> None:
    assert expected in refusal(line)


def test_a_bad_supervision_key_in_defaults_is_reported_where_it_was_written() -> None:
    text = "[defaults]\nstop_timeout = 1e9\n\n" + GROUP
    with pytest.raises(SpecError, match=r"job.toml:2: defaults.stop_timeout: "):
        parse_spec_text(text, "job.toml")


def test_the_spec_keys_become_one_record_that_the_plan_prints_as_before(tmp_path: Path) -> None:
    spec = tmp_path / "pg.toml"
    spec.write_text(
        GROUP
        + 'restart = "always"\nbackoff = { initial = 1, max = 20, jitter = 0 }\n'
        + 'crash_loop = { limit = 3, window = 30 }\non_failure = "continue"\n'
        + 'stop_signal = "int"\nstop_timeout = 60\n'
    )
    (group,) = parse_spec_text(spec.read_text(), str(spec)).processes
    assert group.supervision == Supervision(
        restart="always",
        backoff=Backoff(initial=1.0, max=20.0, jitter=0.0),
        crash_loop=CrashLoop(limit=3, window=30.0),
        on_failure="continue",
        stop_signal="SIGINT",
        stop_timeout=60.0,
    )
    shown = subprocess.run(
        [sys.executable, "-m", "numarun", "plan", "--json", str(spec)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    (process,) = json.loads(shown.stdout)["processes"]
    # The JSON's keys, shape and number types are those numarun plan --json always had.
    assert process["supervision"] == {
        "restart": "always",
        "backoff": {"initial": 1.0, "max": 20.0, "jitter": 0.0},
        "crash_loop": {"limit": 3, "window": 30.0},
        "on_failure": "continue",
        "stop_signal": "SIGINT",
        "stop_timeout": 60.0,
    }
    assert all(isinstance(v, float) for v in process["supervision"]["backoff"].values())


def test_defaults_round_trip_through_the_json() -> None:
    default = Supervision()
    assert Supervision.from_dict(default.to_dict()) == default
    assert default.to_dict()["crash_loop"] == {"limit": 5, "window": 60.0}


def test_the_record_is_validated_wherever_it_is_read_not_only_in_specs() -> None:
    with pytest.raises(PolicyError) as caught:
        Supervision.from_dict({"backoff": {"initial": 5, "max": 1}})
    assert caught.value.path == ("backoff", "max")
    assert caught.value.problem == "max = 1 is less than initial = 5"


def test_backoff_doubles_is_capped_and_never_overflows() -> None:
    backoff = Backoff(initial=0.5, max=4.0, jitter=0.0)
    assert [backoff.delay(n, 0.0) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert Backoff(initial=1.0, max=86400.0, jitter=0.0).delay(10**9, 0.0) == 86400.0
