"""What `pip install .` ships: every package of the source tree, and the presets."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_every_package_is_shipped() -> None:
    # An installed numarun once lacked numarun.commands: the editable install used by the
    # tests hid it, since it reads the source tree.
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "numarun").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert config["package-dir"]["numarun.policies"] == "policies"
    assert list(Path(REPO / "policies").glob("*.toml")), "no shipped presets"


def test_the_built_wheel_runs(tmp_path: Path) -> None:
    """Build the wheel as `pip install .` would, unpack it, run commands from it alone."""
    import subprocess
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("numarun-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert "numarun/py.typed" in names
    assert "numarun/commands/prefix.py" in names
    assert "numarun/policies/bind.toml" in names
    # The numarun command: bin/numarun, its first line for pip to point at the interpreter.
    (script,) = [n for n in names if n.endswith(".data/scripts/numarun")]
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read(script).startswith(b"#!python\n")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    for argv in (["topology", "--json"], ["policies"], ["-m", "0", "--", "true"]):
        done = subprocess.run(
            [sys.executable, "-m", "numarun", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, (argv, done.stderr)
        assert (
            str(site)
            in subprocess.run(
                [sys.executable, "-c", "import numarun; print(numarun.__file__)"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
            ).stdout
        )
