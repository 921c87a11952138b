"""The supervisor's sense of time, injected so that tests drive restarts without sleeping.

The supervisor never sleeps: it waits in ``select`` for the first of output, a child's
exit, a signal, or its next timer (a restart after backoff, a stop deadline). Both the
"now" and that wait go through a clock, like honcho's injected clock: :class:`RealClock`
for use, :class:`FakeClock` for tests, which jumps straight to the next timer whenever
nothing is ready, so a test of five back-offs of up to 30 s runs in milliseconds.
"""

from __future__ import annotations

import selectors
import time
from typing import Protocol

Ready = list[tuple[selectors.SelectorKey, int]]


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""

    def wall(self) -> float:
        """Seconds since the epoch, for the state file and messages."""

    def select(self, selector: selectors.BaseSelector, timeout: float | None) -> Ready:
        """Wait up to ``timeout`` seconds (None: for ever) for ``selector``'s files."""


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def select(self, selector: selectors.BaseSelector, timeout: float | None) -> Ready:
        return selector.select(timeout)


class FakeClock:
    """A clock that only moves when the supervisor would wait for a timer.

    Real events (output, exits, signals) are still waited for in real time when no timer
    is due, since a test's worker really has to run; but a wait *for a timer* returns after
    at most ``grace`` real seconds with the fake time moved to the deadline. The grace lets
    what is already under way (a worker exiting on its stop signal) happen first, as it
    would in the real time the timer stands for.
    """

    def __init__(self, start: float = 1000.0, grace: float = 0.05) -> None:
        self.t = start
        self.grace = grace
        self.waits: list[float] = []  # every timer wait, for tests of the backoff

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def select(self, selector: selectors.BaseSelector, timeout: float | None) -> Ready:
        if timeout is None:
            return selector.select(None)
        ready = selector.select(min(timeout, self.grace))
        if ready:
            return ready
        self.waits.append(timeout)
        self.t += timeout
        return []
