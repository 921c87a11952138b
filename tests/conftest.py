"""Fixtures shared by the whole suite.

The real machines' sysfs snapshots live beside the project in ``../shared/topologies``
(never copied in). :func:`shared_snapshot` unpacks one into a per-session temporary
folder the first time a test asks for it; tests skip with a reason when ``../shared`` is
absent, so the project's own tests still stand alone.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_TOPOLOGIES = Path(
    os.environ.get("NUMARUN_SHARED_TOPOLOGIES", REPO.parent / "shared" / "topologies")
)
ORACLE = SHARED_TOPOLOGIES / "oracle"


def shared_snapshot_names() -> list[str]:
    if not SHARED_TOPOLOGIES.is_dir():
        return []
    return sorted(p.name.removesuffix(".tar.bz2") for p in SHARED_TOPOLOGIES.glob("*.tar.bz2"))


SNAPSHOTS = shared_snapshot_names()


def need_shared() -> None:
    if not SNAPSHOTS:
        pytest.skip(f"no shared topology snapshots at {SHARED_TOPOLOGIES} (../shared is absent)")


@pytest.fixture(scope="session")
def shared_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``shared_snapshot(NAME)`` -> the unpacked root of that snapshot."""
    cache: dict[str, Path] = {}

    def unpack(name: str) -> Path:
        need_shared()
        if name not in cache:
            dest = tmp_path_factory.mktemp("topo")
            with tarfile.open(SHARED_TOPOLOGIES / f"{name}.tar.bz2") as tar:
                if hasattr(tarfile, "tar_filter"):  # Python >= 3.11.4 and backports
                    tar.extractall(dest, filter="tar")
                else:
                    tar.extractall(dest)  # trusted test data
            cache[name] = dest / name
        return cache[name]

    return unpack


def oracle(name: str, kind: str) -> Any:
    """What an independent tool said of a snapshot: ``hwloc``, ``hwloc-allowed`` (JSON),
    ``numactl-hardware``, ``lscpu``, ``distances`` (text)."""
    path = ORACLE / f"{name}.{kind}{'.json' if kind.startswith('hwloc') else '.txt'}"
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else text
