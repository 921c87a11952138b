"""Validation of saved topology snapshots (JSON written by ``numarun topology --save``).

A snapshot crosses a boundary (it may come from another host, another numarun version,
or a hand edit), so it is checked with pydantic before a :class:`~numarun.topology.Topology`
is built from it. This module is imported only when a snapshot is loaded, keeping
pydantic off the start-up path of commands that read the live machine.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from numarun.errors import TopologyError
from numarun.topology import SNAPSHOT_FORMAT, SNAPSHOT_VERSION


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class IdentityModel(_Strict):
    sys_vendor: str | None = None
    product_name: str | None = None
    numa_balancing: bool | None = None
    kernel: str | None = None


class AllowedModel(_Strict):
    cpus: list[int]
    mems: list[int]
    source: str = "snapshot"
    cpuset_cpus: list[int] | None = None  # older snapshots: the same as cpus
    cpuset_mems: list[int] | None = None
    cpuset_source: str | None = None


class NodeModel(_Strict):
    id: int
    cpus: list[int]
    memory_total_kb: int = 0
    memory_free_kb: int = 0
    distances: dict[int, int] = {}


class CpuModel(_Strict):
    id: int
    online: bool = True
    node: int | None = None
    package: int | None = None
    die: int | None = None
    cluster: int | None = None
    core_id: int | None = None
    core: int | None = None
    siblings: list[int] = []


class CoreModel(_Strict):
    index: int
    cpus: list[int]
    package: int | None = None
    node: int | None = None


class SnapshotModel(_Strict):
    format: str
    version: int
    source: str = "snapshot"
    identity: IdentityModel = IdentityModel()
    allowed: AllowedModel
    nodes: list[NodeModel]
    cpus: list[CpuModel]
    cores: list[CoreModel]

    @field_validator("format")
    @classmethod
    def _is_ours(cls, value: str) -> str:
        if value != SNAPSHOT_FORMAT:
            raise ValueError(f"format is {value!r}, expected {SNAPSHOT_FORMAT!r}")
        return value

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value > SNAPSHOT_VERSION:
            raise ValueError(f"version {value} is newer than this numarun reads")
        return value


def validate_snapshot(data: object, where: str) -> SnapshotModel:
    try:
        return SnapshotModel.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "top level"
        raise TopologyError(
            f"{where} is not a numarun topology snapshot: {loc}: {first['msg']}",
            "save one with 'numarun topology --save FILE'",
        ) from None
