"""Fixtures of the guest suite: one QEMU boot per shape for the whole session.

Each shape's guest runs ``inguest.py`` once, which performs every registered check and prints
one JSON object; tests receive a :class:`GuestReport` and assert on ``report.check(name)``::

    def test_something(guest_2n2c2t: GuestReport) -> None:     # the 2-node guest
        assert guest_2n2c2t.check("touch_membind")["pages"]["1"] > 0

    def test_every_shape(guest: GuestReport) -> None:           # runs once per shape
        assert guest.check("numactl_hardware")["available"] == guest.shape.nodes

Boots of all the shapes the selected tests need start together on first use (they run
side by side, one host CPU each under TCG). ``guest`` runs a test in each general shape
(2n2c2t, 4n1c2t); ``guest_tier2n`` is the Linux 6.12 HMAT + CXL + PCI-device guest, which
runs only the checks registered for it.

Selection and policy (environment variable NUMARUN_GUEST):
- guest tests carry the ``guest`` marker and run when asked for: ``pytest tests/guest``,
  ``pytest -m guest`` or NUMARUN_GUEST=run; a plain ``pytest`` deselects them so the
  ordinary suite stays fast and needs no qemu;
- when the guest cannot start (no qemu, no kernel) they FAIL with the reason, unless
  NUMARUN_GUEST=skip, which makes them skip with that reason instead.
NUMARUN_GUEST_TIMEOUT bounds each guest run in seconds (default 1500).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numactl_suite  # noqa: E402
import numavm  # noqa: E402  (needs HERE on sys.path)
from inguest import RESULT_PREFIX  # noqa: E402

SHAPE_NAMES = tuple(numavm.SHAPES)  # ("2n2c2t", "4n1c2t", "tier2n")
# The shapes the `guest` fixture runs every general test in; tier2n (6.12, HMAT, CPU-less
# nodes, PCI devices) runs only its own checks and tests (guest_tier2n).
GENERAL_SHAPES = tuple(name for name, shape in numavm.SHAPES.items() if shape.general)


def _policy() -> str:
    return os.environ.get("NUMARUN_GUEST", "").strip().lower()


@dataclasses.dataclass
class GuestReport:
    """The results of one guest boot: every in-guest check's result, by name."""

    shape: numavm.Shape
    checks: dict[str, dict[str, Any]]
    result: numavm.GuestResult  # stdout (the JSON), stderr, boot_seconds, accel, ...
    inguest_seconds: float
    plugin_errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def check(self, name: str) -> dict[str, Any]:
        """The result dict of check ``name``; fails the test, with the guest's traceback,
        when the check raised or did not run."""
        entry = self.checks.get(name)
        if entry is None:
            broken = "".join(
                f"\nimport of {mod} failed in the guest:\n{tb}"
                for mod, tb in self.plugin_errors.items()
            )
            pytest.fail(
                f"check {name!r} did not run in the {self.shape.name} guest "
                f"(not registered in inguest.py / checks_*.py, min_nodes > "
                f"{self.shape.nodes}, or shapes= names others); ran: "
                f"{', '.join(self.checks)}{broken}",
                pytrace=False,
            )
        if "error" in entry:
            pytest.fail(
                f"guest check {name!r} raised in the {self.shape.name} guest:\n{entry['error']}",
                pytrace=False,
            )
        result: dict[str, Any] = entry["result"]
        return result


class _UnavailableError(Exception):
    """Carries a reason: the guest could not start here (fail, or skip on request)."""


class GuestPool:
    """Boots each wanted shape once, in background threads, and hands out the reports."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.timeout = float(os.environ.get("NUMARUN_GUEST_TIMEOUT", "1500"))
        self._lock = threading.Lock()
        self._futures: dict[str, concurrent.futures.Future[GuestReport]] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, len(SHAPE_NAMES)), thread_name_prefix="numavm"
        )
        self._setup_errors: dict[numavm.Kernel, str] = {}  # a kernel that could not be set up
        self._setup_done = False
        self._guest_env: dict[str, str] = {}  # what the host prepared for the checks

    def _setup(self) -> None:
        # Once, before any thread boots: fetching the kernel may take half a minute.
        if self._setup_done:
            return
        self._setup_done = True
        # Each wanted shape's kernel; a missing 6.12 kernel fails only tier2n's tests.
        for name in sorted(self.wanted) or ["2n2c2t"]:
            kernel = numavm.get_shape(name).kernel
            if kernel in self._setup_errors:
                continue
            try:
                numavm.setup(kernel=kernel)
            except numavm.GuestUnavailableError as exc:
                self._setup_errors[kernel] = str(exc)
        # numactl's own test scripts: fetched on the host (the guest has no network); when
        # they cannot be, their tests fail (or skip) with numactl_suite.fetch()'s reason.
        with contextlib.suppress(numactl_suite.FetchError):
            self._guest_env[numactl_suite.ENV_DIR] = str(numactl_suite.fetch())

    def _boot(self, shape: numavm.Shape) -> GuestReport:
        if shape.kernel in self._setup_errors:
            raise _UnavailableError(self._setup_errors[shape.kernel])
        # The project's interpreter by its real path (a pyenv shim would cost ~13 s in the
        # guest); the checkout first on sys.path so checks exercise this tree's numarun.
        argv = [sys.executable, str(HERE / "inguest.py"), "--shape", shape.name]
        env = dict(os.environ) | self._guest_env
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        try:
            res = numavm.boot_and_run(shape, argv, self.timeout, env=env, cwd=str(REPO))
        except numavm.GuestUnavailableError as exc:
            raise _UnavailableError(str(exc)) from exc
        for line in res.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                data = json.loads(line[len(RESULT_PREFIX) :])
                return GuestReport(
                    shape, data["checks"], res, data["seconds"], data.get("plugin_errors", {})
                )
        why = "timed out" if res.timed_out else f"exited {res.returncode}"
        raise numavm.GuestError(
            f"inguest.py in the {shape.name} guest {why} without results "
            f"(boot {res.boot_seconds}s, {res.accel}).\n--- stderr ---\n{res.stderr[-4000:]}"
            f"\n--- stdout ---\n{res.stdout[-2000:]}"
        )

    def report(self, name: str) -> GuestReport:
        shape = numavm.get_shape(name)
        with self._lock:
            self._setup()
            for wanted in sorted(self.wanted | {shape.name}):
                if wanted not in self._futures:
                    self._futures[wanted] = self._executor.submit(
                        self._boot, numavm.get_shape(wanted)
                    )
            future = self._futures[shape.name]
        # Decide outside the except blocks: a pytest.fail raised inside one would print the
        # whole exception chain, burying the one line that says what is missing.
        unavailable = broken = ""
        try:
            return future.result()
        except _UnavailableError as exc:
            unavailable = str(exc)
        except numavm.GuestError as exc:
            broken = str(exc)
        if broken:
            pytest.fail(f"QEMU NUMA guest {shape.name} failed: {broken}", pytrace=False)
        if _policy() == "skip":
            pytest.skip(f"QEMU NUMA guest unavailable: {unavailable} (NUMARUN_GUEST=skip)")
        pytest.fail(
            f"QEMU NUMA guest unavailable: {unavailable}\n"
            "Install: apt-get install qemu-system-x86 busybox-static kmod; then "
            "`python tests/guest/numavm.py --setup`. "
            "Set NUMARUN_GUEST=skip to skip guest tests instead.",
            pytrace=False,
        )

    def summary(self) -> list[str]:
        lines = []
        for name, fut in sorted(self._futures.items()):
            if fut.done() and not fut.exception():
                rep = fut.result()
                r = rep.result
                lines.append(
                    f"{name}: {r.accel}, boot {r.boot_seconds:.1f}s, checks "
                    f"{rep.inguest_seconds:.1f}s, guest wall {r.wall_seconds:.1f}s, "
                    f"{r.attempts} boot(s)"
                )
            elif fut.done():
                lines.append(f"{name}: failed: {str(fut.exception()).splitlines()[0]}")
        return lines

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


_WANTED_KEY = pytest.StashKey[set[str]]()
_DESELECTED_KEY = pytest.StashKey[int]()
_POOL: GuestPool | None = None


def _in_guest_dir(path: Path) -> bool:
    return path.resolve() == HERE or HERE in path.resolve().parents


def _asked_for(config: pytest.Config) -> bool:
    """True when this run explicitly asked for guest tests."""
    if _policy() in ("run", "1", "yes"):
        return True
    markexpr = config.getoption("markexpr", "") or ""
    if re.search(r"(?<!not )\bguest\b", markexpr):
        return True
    base = config.invocation_params.dir
    for arg in config.invocation_params.args:
        if arg.startswith("-"):
            continue
        path = Path(arg.split("::", 1)[0])
        if _in_guest_dir(path if path.is_absolute() else base / path):
            return True
    return False


@pytest.hookimpl(tryfirst=True)  # before -m filtering, which needs our marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    guest_items = [item for item in items if _in_guest_dir(Path(item.path))]
    for item in guest_items:
        item.add_marker(pytest.mark.guest)
    if guest_items and not _asked_for(config):
        config.hook.pytest_deselected(items=guest_items)
        kept = set(map(id, guest_items))
        items[:] = [item for item in items if id(item) not in kept]
        config.stash[_DESELECTED_KEY] = len(guest_items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The shapes to boot: those of the guest tests left after -k, -m and --deselect (a
    boot costs minutes; a test deselected by keyword must not start one)."""
    wanted: set[str] = set()
    for item in session.items:
        if not _in_guest_dir(Path(item.path)):
            continue
        callspec = getattr(item, "callspec", None)
        for fixture in getattr(item, "fixturenames", ()):
            if fixture == "guest" and callspec is not None and "guest" in callspec.params:
                wanted.add(str(callspec.params["guest"]))
            elif fixture.startswith("guest_") and fixture[6:] in SHAPE_NAMES:
                wanted.add(fixture[6:])
    session.config.stash[_WANTED_KEY] = wanted


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if n := config.stash.get(_DESELECTED_KEY, 0):
        terminalreporter.write_line(
            f"{n} QEMU guest tests deselected: run `pytest tests/guest` "
            "(or -m guest, or NUMARUN_GUEST=run) to include them"
        )
    if _POOL is not None and (lines := _POOL.summary()):
        terminalreporter.section("numarun QEMU guests")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def guest_pool(request: pytest.FixtureRequest) -> Iterator[GuestPool]:
    global _POOL  # noqa: PLW0603  (read by pytest_terminal_summary)
    _POOL = GuestPool(request.config.stash.get(_WANTED_KEY, set()))
    yield _POOL
    _POOL.close()


@pytest.fixture(scope="session")
def guest_reports(guest_pool: GuestPool) -> Callable[[str], GuestReport]:
    """Any shape by name, e.g. ``guest_reports("3n2c1t")`` (booted on first use)."""
    return guest_pool.report


@pytest.fixture(scope="session", params=GENERAL_SHAPES)
def guest(request: pytest.FixtureRequest, guest_pool: GuestPool) -> GuestReport:
    """Each general shape in turn (not tier2n): tests using it run once per shape."""
    return guest_pool.report(str(request.param))


@pytest.fixture(scope="session")
def guest_2n2c2t(guest_pool: GuestPool) -> GuestReport:
    """2 nodes x 2 cores x 2 threads, 512 MiB per node: CPUs 0-3 on node 0, 4-7 on node 1."""
    return guest_pool.report("2n2c2t")


@pytest.fixture(scope="session")
def guest_4n1c2t(guest_pool: GuestPool) -> GuestReport:
    """4 nodes x 1 core x 2 threads, 512 MiB per node: CPUs 2i, 2i+1 on node i."""
    return guest_pool.report("4n1c2t")


@pytest.fixture(scope="session")
def guest_tier2n(guest_pool: GuestPool) -> GuestReport:
    """Linux 6.12 with ACPI HMAT: CPU nodes 0 (CPUs 0-1) and 1 (CPUs 2-3), CPU-less nodes 2
    (near 0) and 3 (near 1), 512 MiB each; a display device on each CPU node, eth0 and vda
    on node 1 (numavm.TIER2N)."""
    return guest_pool.report("tier2n")
