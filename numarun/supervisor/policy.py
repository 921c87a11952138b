"""The restart policy: one definition for the job spec, the plan, its JSON and the supervisor.

A process group's supervision keys (``restart``, ``backoff``, ``crash_loop``, ``on_failure``,
``stop_signal``, ``stop_timeout``) are validated here into a :class:`Supervision` record,
once: :mod:`numarun.spec` calls :meth:`Supervision.from_dict` on the keys a user wrote,
:class:`numarun.plan.ProcessPlan` carries the record, ``numarun plan --json`` prints its
:meth:`~Supervision.to_dict`, and the supervisor reads it from each
:class:`~numarun.supervisor.model.WorkerSpec`. Names, defaults, bounds and the words of
every refusal live here and nowhere else.

Durations are bounded by :data:`MAX_SECONDS` (a day): a longer wait is a typo, and the
kernel's waits cannot hold much more (``epoll_wait`` takes milliseconds in an ``int``, about
24 days), so ``stop_timeout = 1e9`` is refused at load instead of crashing the supervisor.

This module is on ``numarun plan``'s path and stays cheap: no dataclasses, typing or re.
"""

from __future__ import annotations

import math

from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Literal

    RestartMode = Literal["always", "on-failure", "never"]
    OnFailure = Literal["stop-job", "continue"]

RESTART_MODES = ("always", "on-failure", "never")
ON_FAILURE = ("stop-job", "continue")
#: The keys of a ``[[process]]`` table that this module owns, in the JSON's order.
KEYS = ("restart", "backoff", "crash_loop", "on_failure", "stop_signal", "stop_timeout")
MAX_SECONDS = 86400.0
MAX_CRASH_LIMIT = 1_000_000
#: Each consecutive restart waits this many times longer than the one before.
BACKOFF_FACTOR = 2.0

#: What to write instead, per key: the "fix" half of a refusal.
HINTS = {
    "restart": 'write restart = "always", "on-failure" or "never"',
    "backoff": "write backoff = { initial = 0.5, max = 30, jitter = 0.1 } (seconds; jitter 0-1)",
    "crash_loop": "write crash_loop = { limit = 5, window = 60 } (restarts within seconds)",
    "on_failure": 'write on_failure = "stop-job" or on_failure = "continue"',
    "stop_signal": 'write stop_signal = "SIGTERM" (or another signal name)',
    "stop_timeout": "write stop_timeout = 10 (seconds)",
}


class PolicyError(ValueError):
    """A supervision value that cannot be used: where (``("backoff", "max")``), what, fix."""

    def __init__(self, path: tuple[str, ...], problem: str, fix: str | None = None) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix if fix is not None else HINTS.get(path[0], "")
        super().__init__(f"{'.'.join(path)}: {problem}")


class Backoff(Value):
    """The wait before a restart: ``initial`` doubling up to ``max``, spread by ``± jitter``."""

    initial: float = 0.5
    max: float = 30.0
    jitter: float = 0.1  # a fraction of the wait, so that workers do not restart in step

    def delay(self, n: int, draw: float) -> float:
        """The wait before the ``n``-th consecutive restart; ``draw`` is uniform in [0, 1)."""
        # The exponent is capped: a worker restarted for days must not overflow the float.
        exponent = min(max(0, n - 1), 60)
        base = min(self.max, self.initial * BACKOFF_FACTOR**exponent)
        if self.jitter:
            base *= 1.0 + self.jitter * (2.0 * draw - 1.0)
        return max(0.0, min(base, self.max))

    def to_dict(self) -> dict[str, float]:
        return {"initial": self.initial, "max": self.max, "jitter": self.jitter}


class CrashLoop(Value):
    """A worker that exits ``limit`` times within ``window`` seconds fails (0: no limit)."""

    limit: int = 5
    window: float = 60.0

    def to_dict(self) -> dict[str, float]:
        return {"limit": self.limit, "window": self.window}


class Supervision(Value):
    """How a process group's workers are restarted and stopped.

    The count of consecutive restarts (hence the backoff) starts again once an instance has
    stayed up for ``crash_loop.window`` seconds. ``stop_signal`` is a signal's name.
    """

    restart: RestartMode = "on-failure"
    backoff: Backoff = Backoff()
    crash_loop: CrashLoop = CrashLoop()
    on_failure: OnFailure = "stop-job"  # what the job does when a worker fails
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0  # seconds from the stop signal to SIGKILL

    @property
    def signum(self) -> int:
        import signal

        return int(signal.Signals[signal_name(self.stop_signal)])

    def to_dict(self) -> dict[str, Any]:
        """The ``supervision`` object of ``numarun plan --json``."""
        return {
            "restart": self.restart,
            "backoff": self.backoff.to_dict(),
            "crash_loop": self.crash_loop.to_dict(),
            "on_failure": self.on_failure,
            "stop_signal": self.stop_signal,
            "stop_timeout": self.stop_timeout,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Supervision:
        """Validate the supervision keys given (the rest take their defaults).

        Raises :class:`PolicyError` naming the key. Unknown keys are the caller's to refuse
        at the top level (a job spec has other keys); inside tables they are refused here.
        """
        out: dict[str, Any] = {}
        if "restart" in data:
            out["restart"] = _choice(("restart",), data["restart"], RESTART_MODES)
        if "on_failure" in data:
            out["on_failure"] = _choice(("on_failure",), data["on_failure"], ON_FAILURE)
        if "stop_signal" in data:
            out["stop_signal"] = signal_name(data["stop_signal"])
        if "stop_timeout" in data:
            out["stop_timeout"] = _seconds(("stop_timeout",), data["stop_timeout"], zero=True)
        if "backoff" in data:
            out["backoff"] = _backoff(data["backoff"])
        if "crash_loop" in data:
            out["crash_loop"] = _crash_loop(data["crash_loop"])
        return cls(**out)


def signal_name(value: object) -> str:
    """``"term"``, ``"SIGTERM"`` or ``15`` -> ``"SIGTERM"``; anything else is refused."""
    import signal

    path = ("stop_signal",)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value).name
        except ValueError:
            raise PolicyError(path, f"{value} is not a signal number") from None
    if not isinstance(value, str):
        raise PolicyError(path, f"must be a string, not {_type_word(value)}")
    name = value.strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in signal.Signals.__members__:
        raise PolicyError(
            path,
            f"unknown signal {value!r}",
            _did_you_mean(name, list(signal.Signals.__members__), HINTS["stop_signal"]),
        )
    return name


def _backoff(value: object) -> Backoff:
    table = _table(("backoff",), value, ("initial", "max", "jitter"))
    default = Backoff()
    initial = _seconds(("backoff", "initial"), table.get("initial", default.initial))
    top = _seconds(("backoff", "max"), table.get("max", default.max))
    jitter = _number(("backoff", "jitter"), table.get("jitter", default.jitter))
    if not 0.0 <= jitter <= 1.0:
        raise PolicyError(("backoff", "jitter"), f"jitter = {jitter:g} is not between 0 and 1")
    if top < initial:
        raise PolicyError(("backoff", "max"), f"max = {top:g} is less than initial = {initial:g}")
    return Backoff(initial=initial, max=top, jitter=jitter)


def _crash_loop(value: object) -> CrashLoop:
    table = _table(("crash_loop",), value, ("limit", "window"))
    default = CrashLoop()
    limit = table.get("limit", default.limit)
    path = ("crash_loop", "limit")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise PolicyError(path, f"must be an integer, not {_type_word(limit)}")
    if limit < 1:
        raise PolicyError(path, "must be greater than or equal to 1")
    if limit > MAX_CRASH_LIMIT:
        raise PolicyError(path, f"limit = {limit} is more than {MAX_CRASH_LIMIT}")
    window = _seconds(("crash_loop", "window"), table.get("window", default.window))
    return CrashLoop(limit=limit, window=window)


def _table(path: tuple[str, ...], value: object, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(path, f"must be a table, not {_type_word(value)}")
    for key in value:
        if key not in keys:
            raise PolicyError((*path, str(key)), f"unknown key '{key}'", _did_you_mean(key, keys))
    return value


def _number(path: tuple[str, ...], value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyError(path, f"must be a number, not {_type_word(value)}")
    number = float(value)
    if math.isnan(number):
        raise PolicyError(path, "nan is not a number of seconds")
    return number


def _seconds(path: tuple[str, ...], value: object, *, zero: bool = False) -> float:
    """A duration in (0, MAX_SECONDS], or [0, MAX_SECONDS] with ``zero``."""
    number = _number(path, value)
    if zero and number < 0:
        raise PolicyError(path, "must be greater than or equal to 0")
    if not zero and number <= 0:
        raise PolicyError(path, "must be greater than 0")
    if number > MAX_SECONDS:
        key = path[-1]
        raise PolicyError(
            path,
            f"{key} = {number:g} s is longer than a day ({MAX_SECONDS:g} s)",
            f"write {key} in seconds, at most {MAX_SECONDS:g}",
        )
    return number


def _choice(path: tuple[str, ...], value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise PolicyError(path, f"must be a string, not {_type_word(value)}")
    if value not in choices:
        expected = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise PolicyError(path, f"invalid value {value!r} (expected {expected})")
    return value


def _did_you_mean(word: str, known: tuple[str, ...] | list[str], otherwise: str = "") -> str:
    from difflib import get_close_matches

    close = get_close_matches(word, known, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return otherwise or f"keys are {', '.join(known)}"


def _type_word(value: object) -> str:
    # TOML's words for its types, as the rest of the spec's messages use them.
    from numarun.presets import _toml_type

    return _toml_type(value)
