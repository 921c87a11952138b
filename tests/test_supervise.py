"""The supervisor's loop: restarts with backoff, crash loops, stop, output, placement, state.

Restart timing runs on an injected :class:`FakeClock`: workers really run (``sh -c``), but a
wait for a backoff timer returns at once with the fake time moved on, so these tests do not
sleep through back-offs.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from numarun import procfs
from numarun.cpulist import format_list
from numarun.mempolicy import MemoryPolicy
from numarun.supervisor import (
    Backoff,
    CrashLoop,
    Event,
    FakeClock,
    JobSpec,
    LineSplitter,
    PrefixPrinter,
    QuietPrinter,
    Supervision,
    Supervisor,
    WorkerSpec,
)
from numarun.supervisor import state as statefile

SH = "/bin/sh"


def live_group_members(pgid: int, wait: float = 3.0) -> list[int]:
    """PIDs of processes in group ``pgid`` that are not zombies, after up to ``wait`` s.

    A killed grandchild is a zombie until init reaps it, and kill(2) still "finds" it.
    """
    import psutil

    deadline = time.monotonic() + wait
    while True:
        found = []
        for proc in psutil.process_iter(["status"]):
            try:
                if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(proc.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def rules(**kw: Any) -> Supervision:
    """A Supervision from flat keys: the backoff's and crash loop's by their own names."""
    backoff = Backoff(**{k: kw.pop(k) for k in ("initial", "max", "jitter") if k in kw})
    crash_loop = CrashLoop(**{k: kw.pop(k) for k in ("limit", "window") if k in kw})
    return Supervision(backoff=backoff, crash_loop=crash_loop, **kw)


def worker(
    name: str,
    script: str,
    *,
    index: int = 0,
    restart: Supervision | None = None,
    **kw: Any,
) -> WorkerSpec:
    base = restart or Supervision()
    changes = {k: kw.pop(k) for k in ("on_failure", "stop_signal", "stop_timeout") if k in kw}
    supervision = Supervision(**{**{f: getattr(base, f) for f in base._fields}, **changes})
    return WorkerSpec(
        name=name, index=index, argv=(SH, "-c", script), supervision=supervision, **kw
    )


def supervise(
    *workers: WorkerSpec, clock: FakeClock | None = None, **kw: object
) -> tuple[Supervisor, list[Event], QuietPrinter]:
    printer = QuietPrinter()
    sup = Supervisor(
        JobSpec("test", tuple(workers)),
        printer=printer,
        clock=clock or FakeClock(),
        rng=random.Random(7),
        state_dir=False,
        guardian=False,
        **kw,  # type: ignore[arg-type]
    )
    events = list(sup.events())
    return sup, events, printer


def kinds(events: list[Event], label: str) -> list[str]:
    return [e.kind for e in events if e.worker is not None and e.worker.label == label]


# -- backoff ----------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_without_jitter() -> None:
    backoff = Backoff(initial=0.5, max=4.0, jitter=0.0)
    rng = random.Random(1)
    assert [backoff.delay(n, rng.random()) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]


def test_jitter_stays_within_its_fraction_and_the_cap() -> None:
    backoff = Backoff(initial=1.0, max=8.0, jitter=0.25)
    rng = random.Random(3)
    for n in range(1, 6):
        base = min(8.0, 2.0 ** (n - 1))
        for _ in range(200):
            d = backoff.delay(n, rng.random())
            assert base * 0.75 <= d <= min(base * 1.25, 8.0)


# -- restarts ---------------------------------------------------------------------------


def test_a_crashing_worker_restarts_with_growing_delays_then_fails_as_a_crash_loop() -> None:
    rs = rules(
        restart="on-failure",
        initial=1.0,
        max=8.0,
        jitter=0.0,
        limit=5,
        window=100.0,
    )
    clock = FakeClock()
    sup, events, printer = supervise(worker("crash", "echo boom; exit 1", restart=rs), clock=clock)
    restarts = [e for e in events if e.kind == "restarting"]
    assert [e.delay for e in restarts] == [1.0, 2.0, 4.0, 8.0]
    # The fake clock jumped exactly those delays (and no others): no real waiting.
    assert clock.waits == [1.0, 2.0, 4.0, 8.0]
    exits = [e for e in events if e.kind == "exited"]
    assert len(exits) == 5 and all(e.status is not None and e.status.code == 1 for e in exits)
    # Each restart comes later than the last by the growing delay.
    spawns = [e.time for e in events if e.kind == "spawned"]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(spawns)]
    assert gaps == [1.0, 2.0, 4.0, 8.0]
    (failed,) = [e for e in events if e.kind == "failed"]
    assert failed.message == "exit status 1, crash loop: 5 exits within 100 s (crash_loop.limit 5)"
    assert events[-1].kind == "job-done"
    result = sup.result()
    assert not result.ok and result.exit_code == 11
    (w,) = sup.workers
    assert w.state == "failed" and w.starts == 5 and list(w.tail) == ["boom"] * 5
    err = result.error()
    assert err.exit_code == 11 and "\n" not in err.message
    assert err.message.startswith("1 worker failed: crash.0 exit status 1, crash loop")
    assert "crash.0: last output: boom" in printer.notes


def test_slow_crashes_outside_the_window_are_not_a_loop() -> None:
    # Exits further apart than the window never add up to the limit; the run only ends
    # because restart count is cut off here by a worker that succeeds on its 4th start.
    rs = rules(initial=10.0, max=10.0, jitter=0, limit=2, window=5)
    script = 'n=$(cat "$F" 2>/dev/null || echo 0); echo $((n+1)) > "$F"; [ "$n" -ge 3 ]'
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"numarun-slow-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        sup, events, _ = supervise(
            worker("slow", script, restart=rs, env={"F": str(tmp), "PATH": os.defpath})
        )
    finally:
        tmp.unlink(missing_ok=True)
    assert kinds(events, "slow.0").count("restarting") == 3
    assert sup.workers[0].state == "exited" and sup.result().ok


def test_restart_never_leaves_a_failed_worker_down() -> None:
    rs = rules(restart="never")
    sup, events, _ = supervise(
        worker("once", "exit 3", restart=rs),
        worker("other", "sleep 30", index=1, restart=rs),
    )
    assert kinds(events, "once.0") == ["spawned", "exited", "failed"]
    (failed,) = [e for e in events if e.kind == "failed"]
    assert failed.message == "exit status 3 (restart = never)"
    # on_failure = stop-job (the default): the other worker was stopped.
    assert kinds(events, "other.1") == ["spawned", "stopping", "exited", "done"]
    assert sup.workers[1].state == "stopped"
    assert sup.result().reason == "once.0 failed"
    assert sup.result().exit_code == 11


def test_on_failure_continue_keeps_the_others_running() -> None:
    rs = rules(restart="never")
    sup, events, _ = supervise(
        worker("bad", "exit 2", restart=rs, on_failure="continue"),
        worker("good", "sleep 0.3; exit 0", index=1, restart=rs),
    )
    assert sup.workers[0].state == "failed"
    assert kinds(events, "good.1") == ["spawned", "exited", "done"]
    assert sup.workers[1].state == "exited"
    assert sup.result().exit_code == 11


def test_on_failure_restarts_after_a_crash_but_not_after_success() -> None:
    rs = rules(restart="on-failure", jitter=0)
    sup, events, _ = supervise(worker("fine", "exit 0", restart=rs))
    assert kinds(events, "fine.0") == ["spawned", "exited", "done"]
    assert sup.result().ok and sup.result().exit_code == 0


def test_restart_always_restarts_even_after_success_and_loops_out() -> None:
    rs = rules(restart="always", jitter=0, limit=3, window=60)
    sup, events, _ = supervise(worker("again", "exit 0", restart=rs))
    assert kinds(events, "again.0").count("spawned") == 3
    assert sup.workers[0].state == "failed"


def test_a_killed_worker_is_reported_by_its_signal() -> None:
    rs = rules(restart="never")
    sup, events, _ = supervise(worker("segv", "kill -SEGV $$", restart=rs))
    (failed,) = [e for e in events if e.kind == "failed"]
    assert failed.message == "killed by SIGSEGV (restart = never)"
    assert sup.workers[0].last_status is not None
    assert sup.workers[0].last_status.shell_code == 128 + signal.SIGSEGV


def test_a_restarted_worker_returns_to_its_own_slot() -> None:
    cpus = frozenset({max(os.sched_getaffinity(0))})
    rs = rules(restart="on-failure", jitter=0, limit=3)
    script = 'grep -E "^(Cpus_allowed_list|Mems_allowed_list)" /proc/self/status; exit 1'
    _sup, _events, printer = supervise(
        worker("slot", script, restart=rs, cpus=cpus, memory=MemoryPolicy("bind", {0}))
    )
    lines = [t for (_label, _s, t) in printer.lines]
    assert lines.count(f"Cpus_allowed_list:\t{format_list(cpus)}") == 3


def test_a_command_that_cannot_start_is_refused_before_anything_runs() -> None:
    from numarun.errors import CommandNotFoundError

    sup = Supervisor(
        JobSpec(
            "t",
            (
                worker("ok", "sleep 30"),
                WorkerSpec("missing", 0, ("/nonexistent/prog",)),
            ),
        ),
        printer=QuietPrinter(),
        state_dir=False,
        guardian=False,
    )
    with pytest.raises(CommandNotFoundError) as info:
        sup.start()
    assert info.value.exit_code == 127
    assert "missing.0: /nonexistent/prog: command not found" in info.value.message
    # Every worker is checked before the first starts: the good one never ran.
    assert sup.workers[0].starts == 0 and sup.workers[0].instance is None


# -- stopping ---------------------------------------------------------------------------


class StopOnLine(QuietPrinter):
    """Asks the supervisor to stop once a worker has written ``line`` (it is set up then)."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.trigger = line
        self.supervisor: Supervisor | None = None

    def line(self, worker: WorkerSpec, stream: str, text: str) -> None:
        super().line(worker, stream, text)
        if text == self.trigger and self.supervisor is not None:
            self.supervisor.stop()


def test_stop_sends_the_stop_signal_to_the_group_then_sigkill_after_the_timeout() -> None:
    # The worker ignores SIGTERM, and so does a child it started: both must still die.
    script = "trap '' TERM; sleep 300 & echo up; wait"
    printer = StopOnLine("up")
    sup = Supervisor(
        JobSpec("t", (worker("stubborn", script, stop_timeout=0.3),)),
        printer=printer,
        state_dir=False,
        guardian=False,
    )
    printer.supervisor = sup
    seen: list[Event] = []
    t0 = time.monotonic()
    for event in sup.events():
        seen.append(event)
        if event.kind == "spawned":
            pid = event.pid
            assert pid is not None
    elapsed = time.monotonic() - t0
    assert [e.kind for e in seen if e.worker] == [
        "spawned",
        "stopping",
        "killed",
        "exited",
        "done",
    ]
    assert 0.3 <= elapsed < 5
    status = next(e.status for e in seen if e.kind == "exited")
    assert status is not None and status.signal == signal.SIGKILL
    assert sup.result().ok  # stopped on request: success
    assert live_group_members(pid) == []


def test_force_stop_kills_at_once() -> None:
    printer = StopOnLine("up")
    sup = Supervisor(
        JobSpec("t", (worker("w", "trap '' TERM; echo up; sleep 300", stop_timeout=60),)),
        printer=printer,
        state_dir=False,
        guardian=False,
    )
    printer.supervisor = sup
    t0 = time.monotonic()
    for event in sup.events():
        if event.kind == "stopping" and "SIGTERM" in event.message:
            sup.stop("again", force=True)
    assert time.monotonic() - t0 < 5
    assert sup.workers[0].state == "stopped"


def test_close_kills_and_reaps_when_the_caller_leaves_early() -> None:
    sup = Supervisor(
        JobSpec("t", (worker("w", "sleep 300"), worker("v", "sleep 300", index=1))),
        printer=QuietPrinter(),
        state_dir=False,
        guardian=False,
    )
    with sup:
        sup.start()
        pids = [w.pid for w in sup.workers]
    for pid in pids:
        assert pid is not None
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        assert not Path(f"/proc/{pid}").exists()


# -- output -----------------------------------------------------------------------------


def test_line_splitter_never_splits_or_joins_lines_whatever_the_chunks() -> None:
    data = b"alpha\nbeta gamma\n\nlast without newline"
    for size in (1, 2, 3, 7, 100):
        splitter = LineSplitter()
        lines: list[str] = []
        for i in range(0, len(data), size):
            lines += splitter.feed(data[i : i + size])
        lines += splitter.finish()
        assert lines == ["alpha", "beta gamma", "", "last without newline"]


def test_line_splitter_cuts_endless_lines_and_survives_bad_utf8() -> None:
    from numarun.supervisor.printer import MAX_LINE

    splitter = LineSplitter()
    out = splitter.feed(b"x" * (MAX_LINE * 2 + 5))
    assert [len(x) for x in out] == [MAX_LINE, MAX_LINE]
    assert splitter.feed(b"\xff\n") == ["xxxxx\ufffd"]


def test_two_chatty_workers_lines_are_never_spliced() -> None:
    rs = rules(restart="never")
    # Each writes 2000 lines of 300 bytes; pipes deliver them in arbitrary chunks.
    script = 'i=0; while [ $i -lt 2000 ]; do printf "%s-%0290d\\n" "$W" $i; i=$((i+1)); done'
    sup, _events, printer = supervise(
        worker("a", script, restart=rs, env={"W": "aaaa"}),
        worker("b", script, index=1, restart=rs, env={"W": "bbbb"}),
    )
    assert sup.result().ok
    for label, tag in (("a.0", "aaaa"), ("b.1", "bbbb")):
        mine = [t for (lab, _s, t) in printer.lines if lab == label]
        assert len(mine) == 2000
        assert all(t.startswith(tag + "-") and len(t) == 295 for t in mine)
        assert [int(t[5:]) for t in mine] == list(range(2000))


def test_prefix_printer_names_worker_index_and_node_and_colours_on_request() -> None:
    import io

    w0 = WorkerSpec("redis", 0, ("x",), node=0)
    w1 = WorkerSpec("redis", 11, ("x",), node=1)
    out, err = io.StringIO(), io.StringIO()
    p = PrefixPrinter([w0, w1], out=out, err=err, colour=False)
    p.line(w0, "stdout", "ready")
    p.line(w1, "stderr", "warn")
    p.note(w0, "started")
    assert out.getvalue() == "redis.0 n0  | ready\n"
    assert err.getvalue() == "redis.11 n1 | warn\nnumarun     | redis.0: started\n"
    coloured = io.StringIO()
    PrefixPrinter([w0], out=coloured, colour=True).line(w0, "stdout", "hi")
    assert coloured.getvalue().startswith("\033[") and coloured.getvalue().endswith(" hi\n")


def test_log_files_get_both_streams_and_feed_the_failure_tail(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "w.log"
    rs = rules(restart="never")
    sup, _events, printer = supervise(
        worker("logged", "echo out; echo err >&2; exit 4", restart=rs, log=str(log))
    )
    assert log.read_text().splitlines() == ["out", "err"]
    assert printer.lines == []
    assert list(sup.workers[0].tail) == ["out", "err"]


def test_stdin_is_dev_null_unless_asked(tmp_path: Path) -> None:
    rs = rules(restart="never")
    src = tmp_path / "in.txt"
    src.write_text("from a file\n")
    _sup, _events, printer = supervise(
        worker("null", "readlink /proc/self/fd/0; cat", restart=rs),
        worker("file", "cat", index=1, restart=rs, stdin=str(src)),
    )
    assert ("null.0", "stdout", "/dev/null") in printer.lines
    assert ("file.1", "stdout", "from a file") in printer.lines


# -- placement --------------------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _numa_maps_policies(pid: int) -> set[str]:
    return {line.split()[1] for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines()}


@pytest.mark.parametrize(
    ("cpus", "policy"),
    [
        (None, None),
        ("last", MemoryPolicy("bind", {0})),
        ("first", MemoryPolicy("interleave", {0})),
        ("all", MemoryPolicy("preferred", {0})),
    ],
)
def test_every_worker_runs_with_its_planned_cpus_and_memory_policy(
    cpus: str | None, policy: MemoryPolicy | None
) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    chosen = {
        None: None,
        "last": frozenset(allowed[-1:]),
        "first": frozenset(allowed[:1]),
        "all": frozenset(allowed),
    }[cpus]
    home = frozenset(os.sched_getaffinity(0))
    sup = Supervisor(
        JobSpec(
            "t",
            tuple(
                WorkerSpec("p", i, ("sleep", "30"), node=0, cpus=chosen, memory=policy)
                for i in range(3)
            ),
        ),
        printer=QuietPrinter(),
        state_dir=False,
        guardian=False,
    )
    with sup:
        sup.start()
        for w in sup.workers:
            assert w.pid is not None
            st = _status(w.pid)
            want = chosen if chosen is not None else home
            assert st["Cpus_allowed_list"] == format_list(want)
            assert _numa_maps_policies(w.pid) == {
                policy.numa_maps_word if policy is not None else "default"
            }
        # The supervisor's own thread is back where it was.
        assert frozenset(os.sched_getaffinity(0)) == home
        from numarun.mempolicy import get_mempolicy

        assert get_mempolicy() == MemoryPolicy("default")


# -- state file -------------------------------------------------------------------------


def test_the_state_file_lists_workers_while_running_and_is_removed_on_exit(
    tmp_path: Path,
) -> None:
    sup = Supervisor(
        JobSpec("statejob", (worker("s", "sleep 30", cpus=frozenset({0}), node=0),)),
        printer=QuietPrinter(),
        state_dir=str(tmp_path / "rt"),
        guardian=False,
    )
    path = tmp_path / "rt" / "statejob.json"
    for event in sup.events():
        if event.kind == "spawned" and event.pid is not None:
            # start() wrote the file once the whole batch of workers was started.
            data = json.loads(path.read_text())
            assert data["job"] == "statejob" and data["state"] == "running"
            assert data["supervisor"]["pid"] == os.getpid()
            assert data["supervisor"]["start_ticks"] == procfs.start_ticks(os.getpid())
            (w,) = data["workers"]
            assert (w["name"], w["index"], w["pid"], w["cpus"]) == ("s", 0, event.pid, "0")
            assert (w["state"], w["node"], w["starts"]) == ("running", 0, 1)
            assert (tmp_path / "rt").stat().st_mode & 0o777 == 0o700
            assert path.stat().st_mode & 0o777 == 0o600
            assert statefile.list_jobs(str(tmp_path / "rt")).jobs[0][1].job == "statejob"
            sup.stop()
    assert not path.exists()


def test_a_second_job_of_the_same_name_is_refused(tmp_path: Path) -> None:
    from numarun.errors import JobRunningError

    rt = str(tmp_path)
    first = Supervisor(
        JobSpec("dup", (worker("a", "sleep 30"),)),
        printer=QuietPrinter(),
        state_dir=rt,
        guardian=False,
    )
    with first:
        first.start()
        second = Supervisor(
            JobSpec("dup", (worker("a", "sleep 30"),)),
            printer=QuietPrinter(),
            state_dir=rt,
            guardian=False,
        )
        with pytest.raises(JobRunningError, match="already running") as info:
            second.start()
        assert info.value.exit_code == 14
        assert second.workers[0].starts == 0


def test_stale_state_files_of_dead_supervisors_are_dropped(tmp_path: Path) -> None:
    ghost = statefile.JobState(
        job="ghost",
        source=None,
        state="running",
        supervisor=statefile.SupervisorState(pid=2**22 - 5, start_ticks=1, started=0.0),
        workers=(),
    )
    statefile.write_state(str(tmp_path / "ghost.json"), ghost)
    assert statefile.list_jobs(str(tmp_path)) == statefile.Listing(jobs=())
    assert not (tmp_path / "ghost.json").exists()


def test_job_names_that_cannot_be_file_names_are_refused() -> None:
    from numarun.errors import UsageError

    for bad in ("../x", "a/b", "", ".hidden", "x" * 101, "job\n"):
        with pytest.raises(UsageError):
            statefile.state_path(bad, "/tmp")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_output_events_carry_each_line_in_order_when_asked() -> None:
    rs = rules(restart="never")
    sup = Supervisor(
        JobSpec("t", (worker("talk", "echo one; echo two >&2; echo three", restart=rs),)),
        printer=QuietPrinter(),
        state_dir=False,
        guardian=False,
        output_events=True,
    )
    lines = [(e.stream, e.message) for e in sup.events() if e.kind == "output"]
    assert [m for _s, m in lines if _s == "stdout"] == ["one", "three"]
    assert ("stderr", "two") in lines


def test_a_reader_that_leaves_does_not_bring_the_supervisor_down() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    out = os.fdopen(write_end, "w")
    w = WorkerSpec("w", 0, ("x",))
    printer = PrefixPrinter([w], out=out, err=out, colour=False)
    printer.line(w, "stdout", "nobody reads this")  # EPIPE: dropped, not raised
    printer.note(w, "nor this")
    with pytest.raises(OSError):
        out.close()  # the buffered text still fails to flush; only the printer forgives


def test_a_planned_spec_becomes_worker_slots_with_its_supervision_keys() -> None:
    from numarun.plan import plan_job
    from numarun.spec import parse_spec_text
    from numarun.supervisor.fromplan import job_from_plan
    from numarun.topology import read_topology

    spec = parse_spec_text(
        """
[[process]]
name = "db"
command = ["postgres", "-p", "54{worker}"]
workers = 2
policy = "bind"
restart = "always"
backoff = { initial = 1, max = 20, jitter = 0 }
crash_loop = { limit = 3, window = 30 }
on_failure = "continue"
stop_signal = "INT"
stop_timeout = 60
logs = "/var/log/db/{worker}.log"
env = { ROLE = "db{worker}" }
""",
        "/etc/numarun/pg.toml",
    )
    job = job_from_plan(plan_job(read_topology(), spec))
    assert job.name == "pg" and job.source == "/etc/numarun/pg.toml"
    assert [w.label for w in job.workers] == ["db.0", "db.1"]
    w = job.workers[1]
    assert w.argv == ("postgres", "-p", "541")
    assert w.memory is not None and w.memory.mode == "bind"
    assert w.cpus and w.node == 0
    assert w.supervision == rules(
        restart="always",
        initial=1,
        max=20,
        jitter=0,
        limit=3,
        window=30,
        on_failure="continue",
        stop_signal="SIGINT",
        stop_timeout=60,
    )
    assert w.supervision.signum == signal.SIGINT
    assert w.log == "/var/log/db/1.log" and w.stdin == "null"
    assert w.env is not None and w.env["ROLE"] == "db1" and "PATH" in w.env
