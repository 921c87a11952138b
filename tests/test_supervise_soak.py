"""Soak: a short-lived worker restarted over and over leaks nothing.

1,000 restarts of ``true`` (restart = always, no backoff, no crash limit) under one
supervisor with its guardian: after a warm-up, open file descriptors, zombie children and
the supervisor's resident memory must not grow. ``bench/supervisor_bench.py --soak N``
runs the same check for longer.
"""

from __future__ import annotations

import os
import random
import time

from numarun.supervisor import (
    Backoff,
    CrashLoop,
    JobSpec,
    NullPrinter,
    Supervision,
    Supervisor,
    WorkerSpec,
)

RESTARTS = 1000
WARMUP = 100


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def zombies(current: int | None = None) -> int:
    """Children of this process that exited and were never reaped.

    ``current`` (the instance just started, which may already have exited and be waiting
    for the loop to reap it) is not counted.
    """
    me = str(os.getpid())
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and fields[1] == me and int(entry) != current:
            count += 1
    return count


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def soak(restarts: int, warmup: int) -> dict[str, float]:
    """Run the soak; return the measurements (also used by the benchmark)."""
    rs = Supervision(
        restart="always", backoff=Backoff(initial=0.0, jitter=0.0), crash_loop=CrashLoop(limit=0)
    )
    job = JobSpec("soak", (WorkerSpec("blink", 0, ("/bin/true",), supervision=rs),))
    sup = Supervisor(job, printer=NullPrinter(), rng=random.Random(1), state_dir=False)
    seen = 0
    before: dict[str, float] = {}
    t0 = time.monotonic()
    for event in sup.events():
        if event.kind != "spawned":
            continue
        seen += 1
        if seen == warmup:
            before = {"fds": open_fds(), "zombies": zombies(event.pid), "rss_kb": rss_kb()}
            t0 = time.monotonic()
        if seen == warmup + restarts:
            after = {"fds": open_fds(), "zombies": zombies(event.pid), "rss_kb": rss_kb()}
            elapsed = time.monotonic() - t0
            sup.stop()
    assert sup.result().ok
    return {
        "restarts": restarts,
        "seconds": elapsed,
        "fds_before": before["fds"],
        "fds_after": after["fds"],
        "zombies_before": before["zombies"],
        "zombies_after": after["zombies"],
        "rss_kb_before": before["rss_kb"],
        "rss_kb_after": after["rss_kb"],
        "fds_end": open_fds(),
    }


def test_a_thousand_restarts_leak_no_fds_zombies_or_memory() -> None:
    fds_start = open_fds()
    m = soak(RESTARTS, WARMUP)
    # Measured at the same point of a cycle (a fresh instance just started): identical.
    assert m["fds_after"] == m["fds_before"]
    assert m["zombies_after"] == m["zombies_before"] == 0
    # A leak of even 100 bytes per restart would show as ~100 kB; allow allocator noise.
    assert m["rss_kb_after"] - m["rss_kb_before"] < 64, m
    # And after the job, every descriptor it opened is closed (pipes, pidfds, guardian).
    assert m["fds_end"] == fds_start
