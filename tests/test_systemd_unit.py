"""examples/numarun-redis.service: a unit systemd accepts, with the README's advice in it.

``systemd-analyze verify`` loads the unit as systemd would and names every setting it cannot
parse; it also insists the ExecStart program exists, so the check runs on a copy whose
ExecStart names this checkout's numarun (the unit's /usr/local/bin path is the operator's).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

UNIT = REPO / "examples" / "numarun-redis.service"
INSTALLED = "/usr/local/bin/numarun"


def _settings(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def _verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    numarun = Path(sys.executable).with_name("numarun")
    if not numarun.exists():
        pytest.skip(f"no numarun entry point beside {sys.executable} (pip install -e .)")
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED, str(numarun)))
    return subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_unit_runs_numarun_as_its_main_process() -> None:
    settings = _settings(UNIT.read_text())
    assert settings["Type"] == "simple"
    assert settings["KillMode"] == "mixed"  # SIGTERM to numarun alone; it stops the workers
    assert int(settings["TimeoutStopSec"]) >= 60  # more than the spec's stop_timeout
    argv = settings["ExecStart"].split()
    assert argv[:2] == [INSTALLED, "run"]
    assert Path(argv[2]).name == "redis-per-node.toml"
    assert (REPO / "examples" / Path(argv[2]).name).exists()


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    done = _verify(tmp_path, UNIT.read_text())
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "" and done.stdout.strip() == "", done.stderr


def test_systemd_analyze_verify_would_catch_a_bad_setting(tmp_path: Path) -> None:
    done = _verify(tmp_path, UNIT.read_text().replace("KillMode=mixed", "KillMode=mixd"))
    assert "kill mode" in done.stderr.lower(), done.stderr
