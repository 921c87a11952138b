"""Output that cannot be written: every command, as coreutils would end.

Each command runs four times at once: with stdout readable (it succeeds and prints, so the
other three are not failing for some other reason), with stdout closed (``>&-``), on
``/dev/full``, and into a pipe whose reader has already gone (``| head -c0``). The last
three end with one ``numarun: write error: ...`` line (exit 1), or silently with 141 for the
pipe; never a traceback. ``numarun run`` instead keeps supervising its workers.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from numarun import output
from numarun.supervisor.model import WorkerSpec
from numarun.supervisor.printer import PrefixPrinter
from tests.fakesysfs import c5n_18xlarge

REPO = Path(__file__).resolve().parent.parent

SPEC = """
[[process]]
name = "web"
command = ["true"]
workers = 2
"""

# What each kind of sink makes of a command that prints: (exit status, stderr).
SINKS = {
    "closed": (1, "numarun: write error: Bad file descriptor\n"),
    "full": (1, "numarun: write error: No space left on device\n"),
    "pipe": (output.EXIT_PIPE, ""),
}


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = c5n_18xlarge().write(tmp_path_factory.mktemp("machine"))
    (root / "job.toml").write_text(SPEC)
    (root / "rt").mkdir(mode=0o700)
    return root


@pytest.fixture(scope="module")
def sleeper() -> Iterator[int]:
    child = subprocess.Popen(["sleep", "300"])
    yield child.pid
    child.kill()
    child.wait()


def _commands(root: Path, pid: int) -> dict[str, list[str]]:
    r = str(root)
    return {
        "topology": ["topology", "--root", r],
        "topology --json": ["topology", "--json", "--root", r],
        "topology -H": ["topology", "--hardware", "--root", r],
        "topology --help": ["topology", "--help"],
        "-H": ["-H", "--root", r],
        "--show": ["--show"],
        "--dry-run": ["--root", r, "-m", "1", "--dry-run", "--", "true"],
        "--explain": ["--root", r, "-N", "0", "--explain", "--", "true"],
        "plan": ["plan", "--topology", r, f"{r}/job.toml"],
        "plan --json": ["plan", "--json", "--topology", r, f"{r}/job.toml"],
        "policies": ["policies"],
        "policies --json": ["policies", "--json"],
        "status": ["status"],
        "status --json": ["status", "--json"],
        "placement": ["placement", str(pid), "--root", r],
        "placement --json": ["placement", str(pid), "--json", "--root", r],
        "placement --help": ["placement", "--help"],
        "numastat": ["numastat", "--root", r],
        "numastat --json": ["numastat", "--json", "--root", r],
        "migrate --help": ["migrate", "--help"],
        "run --help": ["run", "--help"],
        "stop --help": ["stop", "--help"],
        "--help": ["--help"],
        "help (no arguments)": [],
        "--version": ["--version"],
    }


COMMANDS = list(_commands(Path("/"), 1))


def _start(argv: list[str], sink: str, root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(root / "rt")}
    command = [sys.executable, "-m", "numarun", *argv]
    if sink == "closed":  # the shell's >&-: descriptor 1 is not open at all
        command = ["sh", "-c", 'exec "$@" >&-', "sh", *command]
    stdout: int | io.TextIOWrapper
    if sink == "full":
        stdout = open("/dev/full", "w")  # noqa: SIM115 - closed right after the start
    elif sink == "pipe":
        reader, stdout = os.pipe()
        os.close(reader)  # the reader left before the first write
    else:
        stdout = subprocess.PIPE
    try:
        return subprocess.Popen(
            command, stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=env, text=True, cwd="/",
        )  # fmt: skip
    finally:
        if isinstance(stdout, int) and stdout != subprocess.PIPE:
            os.close(stdout)
        elif not isinstance(stdout, int):
            stdout.close()


@pytest.mark.parametrize("name", COMMANDS)
def test_output_that_cannot_be_written_ends_in_one_line(
    name: str, machine: Path, sleeper: int
) -> None:
    argv = _commands(machine, sleeper)[name]
    runs = {sink: _start(argv, sink, machine) for sink in ("readable", *SINKS)}
    done = {sink: (p, *p.communicate(timeout=120)) for sink, p in runs.items()}
    proc, out, err = done.pop("readable")
    assert proc.returncode == 0 and out.strip(), (name, err)
    for sink, (proc, _out, err) in done.items():
        assert (proc.returncode, err) == SINKS[sink], (name, sink)


def test_a_closed_stdout_stays_closed_for_the_command_it_runs(tmp_path: Path) -> None:
    # numarun holds descriptor 1 on /dev/null so that nothing it opens takes that number,
    # close-on-exec: the command sees what numarun was given, as under numactl.
    seen = tmp_path / "seen"
    probe = (
        "import os, sys\n"
        "try:\n    os.fstat(1); state = 'open'\nexcept OSError:\n    state = 'closed'\n"
        "open(sys.argv[1], 'w').write(state)\n"
    )
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "numarun", "--",
         sys.executable, "-c", probe, str(seen)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert seen.read_text() == "closed"


def test_a_broken_stderr_does_not_change_the_outcome() -> None:
    # A warning or refusal that cannot be shown is dropped; the exit status still tells.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    numarun = [sys.executable, "-m", "numarun"]
    with open("/dev/full", "w") as full:
        warned = [*numarun, "-b", "--", "true"]  # -b without bind: a warning, then true
        ok = subprocess.run(warned, stderr=full, env=env, timeout=60, check=False)
        refused = subprocess.run([*numarun, "-m", "999", "--", "true"], stderr=full, env=env)
    assert (ok.returncode, refused.returncode) == (0, 4)


# -- the supervisor ----------------------------------------------------------------------------

CHATTY = """
[[process]]
name = "chat"
shell = true
command = "while true; do echo line {worker}; sleep 0.02; done"
workers = 2
stop_timeout = 2
"""


class _Failing(io.StringIO):
    def __init__(self, errno_: int) -> None:
        super().__init__()
        self.errno = errno_

    def write(self, text: str) -> int:
        raise OSError(self.errno, os.strerror(self.errno))


WORKER = WorkerSpec(name="web", index=0, argv=("true",), node=1)


@pytest.mark.parametrize(
    ("lost", "errno_", "said"),
    [
        ("stdout", 32, "cannot write to stdout (Broken pipe)"),
        ("stdout", 28, "cannot write to stdout (No space left on device)"),
        ("stderr", 5, "cannot write to stderr (Input/output error)"),
    ],
)
def test_the_printer_drops_a_lost_stream_and_says_so_once(
    lost: str, errno_: int, said: str
) -> None:
    good = io.StringIO()
    bad = _Failing(errno_)
    out, err = (bad, good) if lost == "stdout" else (good, bad)
    printer = PrefixPrinter([WORKER], out=out, err=err, colour=False)
    for _ in range(3):
        printer.line(WORKER, "stdout", "to stdout")
        printer.line(WORKER, "stderr", "to stderr")
        printer.note(WORKER, "a note")
    lines = good.getvalue().splitlines()
    assert sum(said in line for line in lines) == 1, lines
    kept = "to stderr" if lost == "stdout" else "to stdout"
    assert sum(kept in line for line in lines) == 3


def _env(runtime: Path) -> dict[str, str]:
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "NO_COLOR": "1",
            "PYTHONPATH": str(REPO)}  # fmt: skip


def _workers(pid: int, count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [
            p
            for p in psutil.Process(pid).children()
            if p.name() == "sh" and "numarun-guardian" not in p.cmdline()  # the guardian is sh too
        ]
        if len(found) == count:
            return found
        time.sleep(0.05)
    raise AssertionError("the workers did not start")


@pytest.mark.parametrize("lost", ["stdout", "stderr"])
def test_run_keeps_its_workers_when_its_output_goes_away(tmp_path: Path, lost: str) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    spec = tmp_path / "chat.toml"
    spec.write_text(CHATTY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "numarun", "run", str(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=_env(runtime),
    )  # fmt: skip
    try:
        closing, other = (
            (proc.stdout, proc.stderr) if lost == "stdout" else (proc.stderr, proc.stdout)
        )
        assert closing is not None and other is not None
        closing.readline()
        closing.close()  # `numarun run job.toml | head -1`, or a terminal that went away
        workers = _workers(proc.pid, 2)
        time.sleep(1.0)  # long enough for many lines to fail
        assert proc.poll() is None, "the supervisor died"
        assert all(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
        assert _workers(proc.pid, 2) == workers  # the same ones: none was restarted
        proc.send_signal(signal.SIGTERM)
        rest = other.read().decode()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rest.count(f"cannot write to {lost}") == 1, rest
    assert "Traceback" not in rest
