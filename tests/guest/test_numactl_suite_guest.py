"""numactl's own regression scripts pass with numarun standing in for numactl (issue 11).

numactl's source package's test/ scripts (checkaffinity, checktopology, bind_range, regress)
are fetched on the host by numactl_suite.py, the same version as the installed numactl, and
run in the guests by checks_numactl_suite.py twice: with the real numactl and with a
``numactl`` that runs this checkout's numarun. Wherever numactl's run exits 0, numarun's must
too. A script that fails in the guest even with the real numactl cannot judge numarun there:
that is a skip, with numactl's own output as the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numactl_suite
import pytest

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport


def _scripts() -> Path:
    """numactl's test/ directory; when it cannot be fetched the test fails with the reason
    (skips with NUMARUN_GUEST=skip, as for a guest that cannot start)."""
    try:
        return numactl_suite.fetch()
    except numactl_suite.FetchError as exc:
        why = f"numactl's test scripts could not be fetched: {exc}"
        if os.environ.get("NUMARUN_GUEST", "").strip().lower() == "skip":
            pytest.skip(f"{why} (NUMARUN_GUEST=skip)")
        pytest.fail(why, pytrace=False)


def _tail(run: dict[str, Any], lines: int = 25) -> str:
    out = "\n".join(run["stdout"].splitlines()[-lines:])
    err = "\n".join(run["stderr"].splitlines()[-lines:])
    return f"--- stdout (tail) ---\n{out}\n--- stderr (tail) ---\n{err}"


def _judge(report: GuestReport, script: str) -> dict[str, Any]:
    _scripts()
    got = report.check(f"numactl_suite_{script}")
    assert "unavailable" not in got, got["unavailable"]
    assert "elsewhere" not in got, got["elsewhere"]
    theirs, ours = got["runs"]["numactl"], got["runs"]["numarun"]
    if theirs["rc"] != 0:
        pytest.skip(
            f"{script} exits {theirs['rc']} with the real numactl in the {report.shape.name} "
            f"guest, so it cannot judge numarun there:\n{_tail(theirs, 8)}"
        )
    assert ours["rc"] == 0, (
        f"numactl's {script} exits 0 with numactl but {ours['rc']} with numarun in the "
        f"{report.shape.name} guest\n{_tail(ours)}"
    )
    return got


def test_checkaffinity(guest_4n1c2t: GuestReport) -> None:
    """-C CPU and -N NODE, each checked by the CPU the command runs on and by --show."""
    _judge(guest_4n1c2t, "checkaffinity")


def test_checktopology(guest: GuestReport) -> None:
    """--hardware lists every node, and each node's CPUs as sysfs has them."""
    _judge(guest, "checktopology")


def test_bind_range(guest: GuestReport) -> None:
    """-a: only before the node and CPU options; -C outside the affinity only after -a."""
    got = _judge(guest, "bind_range")
    for step in ("check_arg_order", "check_physcpubind", "check_cpunodebind"):
        assert f"{step} PASSED" in got["runs"]["numarun"]["stdout"], _tail(got["runs"]["numarun"])


def test_regress(guest_2n2c2t: GuestReport) -> None:
    """memhog under -i, -m, -p, -l: numastat's counters show the pages where asked."""
    got = _judge(guest_2n2c2t, "regress")
    ours = got["runs"]["numarun"]
    assert "========SUCCESS" in ours["stdout"], _tail(ours)
    assert "=======FAILED" not in ours["stdout"], _tail(ours)


# -- the fetch, on the host (no guest) ----------------------------------------------------


def test_deb_src_sources_are_derived_from_the_systems(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: stable stable-updates\nComponents: main contrib\n"
        "Signed-By: /usr/share/keyrings/k.gpg\n\n"
        "Types: deb\nURIs: http://off.example/x\nSuites: s\nComponents: main\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.example/y\nSuites: s\nComponents: main\n"
    )
    one_line = tmp_path / "extra.list"
    one_line.write_text(
        "# deb http://commented.example/z s main\n"
        "deb [arch=amd64 signed-by=/k2.gpg] http://line.example/debian s2 main\n"
    )
    assert numactl_suite.source_entries([deb822, one_line]) == (
        "Types: deb-src\nURIs: http://mirror.example/debian\nSuites: stable stable-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/k.gpg\n\n"
        "Types: deb-src\nURIs: http://line.example/debian\nSuites: s2\nComponents: main\n"
        "Signed-By: /k2.gpg\n"
    )
    assert numactl_suite.source_entries([]) == ""


def test_the_fetched_scripts_are_numactls_and_match_the_installed_version() -> None:
    tests = _scripts()
    name, version = numactl_suite.installed_source()
    assert tests == numactl_suite.scripts_dir(version)
    assert name == "numactl"
    for script in numactl_suite.SCRIPTS:
        assert (tests / script).read_text().startswith("#!/bin/bash"), script
