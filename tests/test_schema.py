"""The topology's one schema: JSON written from the records, snapshots read and checked by it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numarun.errors import TopologyError
from numarun.topology import (
    Allowed,
    Core,
    Cpu,
    Node,
    Topology,
    from_dict,
    load_topology,
    read_topology,
)
from numarun.value import DecodeError, Value, decode, encode, layout
from tests.conftest import REPO
from tests.fakesysfs import FakeMachine, c5n_18xlarge


def _snapshot(tmp_path: Path) -> dict[str, Any]:
    topo = read_topology(
        FakeMachine(nodes={0: [0, 1], 1: [2, 3]}, siblings=[(0, 1), (2, 3)]).write(tmp_path)
    )
    return topo.to_dict()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["nodes"][1].__setitem__("cpus", [2, "x"]),
            "nodes[1].cpus: expected a list of integers",
        ),
        (
            lambda d: d["nodes"][0].__setitem__("cpus", "0-1"),
            "nodes[0].cpus: expected a list of integers",
        ),
        (
            lambda d: d["cpus"][3].__setitem__("online", "yes"),
            "cpus[3].online: expected true or false",
        ),
        (
            lambda d: d["cpus"][0].__setitem__("node", 1.5),
            "cpus[0].node: expected an integer or null",
        ),
        (
            lambda d: d["nodes"][0].__setitem__("distances", {"x": 10}),
            "nodes[0].distances: expected an object of integers by number",
        ),
        (
            lambda d: d["nodes"][0]["distances"].__setitem__("1", None),
            "nodes[0].distances.1: expected an integer",
        ),
        (lambda d: d["allowed"].pop("mems"), "allowed.mems: missing"),
        (lambda d: d.__setitem__("identity", []), "identity: expected an object"),
        (lambda d: d["nodes"].append(dict(d["nodes"][0])), "nodes[2]: id 0 appears twice"),
        (lambda d: d.__setitem__("cores", {}), "cores: expected a list of objects"),
        (lambda d: d["cpus"][0].__setitem__("id", True), "cpus[0].id: expected an integer"),
    ],
)
def test_a_bad_value_is_named_in_one_line(tmp_path: Path, edit: Any, message: str) -> None:
    data = _snapshot(tmp_path)
    edit(data)
    with pytest.raises(TopologyError) as caught:
        from_dict(data, where="snap.json")
    assert str(caught.value).startswith(f"snapshot snap.json: {message} — ")
    assert "\n" not in str(caught.value)


def test_format_and_version_are_checked(tmp_path: Path) -> None:
    data = _snapshot(tmp_path)
    with pytest.raises(TopologyError, match="not a numarun topology snapshot"):
        from_dict({**data, "format": "hwloc"})
    with pytest.raises(TopologyError, match="version 99 is not one this numarun reads"):
        from_dict({**data, "version": 99})
    with pytest.raises(TopologyError, match="not a numarun topology snapshot"):
        from_dict([data])


def test_old_snapshot_without_cpuset_sets_loads_with_the_allowed_sets(tmp_path: Path) -> None:
    data = _snapshot(tmp_path)
    for key in ("cpuset_cpus", "cpuset_mems", "cpuset_source"):
        del data["allowed"][key]
    data["allowed"]["cpus"] = [0, 1]
    topo = from_dict(data)
    assert topo.allowed.cpuset_cpus == {0, 1} and topo.allowed.cpuset_mems == {0, 1}
    assert topo.allowed.cpuset_source == topo.allowed.source


def test_computed_keys_are_written_and_ignored_on_reading(tmp_path: Path) -> None:
    data = _snapshot(tmp_path)
    node = data["nodes"][0]
    assert list(node) == [
        "id", "cpus", "has_cpus", "has_memory", "memory_total_kb", "memory_free_kb",
        "allowed_cpus", "allowed_memory", "distances", "tier", "access",
    ]  # fmt: skip
    assert list(data)[:3] == ["format", "version", "source"]
    assert "notes" not in data  # written only when a file was read as hwloc reads it
    data["nodes"][0]["has_cpus"] = "nonsense"  # computed: not read back
    assert from_dict(data) == from_dict(_snapshot(tmp_path))


def test_minimal_hand_written_snapshot_takes_the_defaults() -> None:
    topo = from_dict(
        {
            "format": "numarun-topology",
            "version": 1,
            "allowed": {"cpus": [0, 1], "mems": [0]},
            "nodes": [{"id": 0, "cpus": [0, 1]}],
            "cpus": [{"id": 1, "core": 0}, {"id": 0, "core": 0}],
            "cores": [{"index": 0, "cpus": [0, 1]}],
        }
    )
    assert list(topo.cpus) == [0, 1]  # keyed and sorted by id
    assert topo.nodes[0].memory_total_kb == 0 and topo.cpus[0].online
    assert topo.source == "snapshot" and topo.identity.kernel is None


def test_a_new_field_is_one_line() -> None:
    class Tiered(Value):
        id: int
        tier: int | None = None

    class Machine(Value):
        nodes: dict[int, Tiered]
        weighted_interleave: dict[int, int] = {}  # noqa: RUF012

    machine = Machine(nodes={3: Tiered(id=3, tier=1)}, weighted_interleave={3: 2})
    data = encode(machine)
    assert data == {"nodes": [{"id": 3, "tier": 1}], "weighted_interleave": {"3": 2}}
    assert decode(Machine, json.loads(json.dumps(data))) == machine
    assert decode(Machine, {"nodes": [{"id": 3}]}) == Machine(nodes={3: Tiered(id=3)})
    with pytest.raises(DecodeError, match=r"nodes\[0\].tier: expected an integer or null"):
        decode(Machine, {"nodes": [{"id": 3, "tier": "fast"}]})


def test_layout_orders_computes_and_omits() -> None:
    class Point(Value):
        x: int
        y: int
        label: str = ""
        _json = layout("y sum", sum=lambda p, _root: p.x + p.y, omit_default="label")

    assert list(encode(Point(x=1, y=2)).items()) == [("y", 2), ("sum", 3), ("x", 1)]
    assert encode(Point(x=1, y=2, label="a"))["label"] == "a"


def test_replace_keeps_the_other_fields() -> None:
    allowed = Allowed(cpus=frozenset({0, 1, 2}), mems=frozenset({0}), source="cgroup v2 /job")
    narrowed = allowed.replace(cpus=frozenset({1}))
    assert narrowed.cpus == {1} and narrowed.cpuset_cpus == {0, 1, 2}
    assert narrowed.mems == {0} and narrowed.cpuset_source == "cgroup v2 /job"


def test_bad_snapshot_from_the_command_line(tmp_path: Path) -> None:
    data = c5n_18xlarge()
    topo = read_topology(data.write(tmp_path / "root"))
    doc = topo.to_dict()
    doc["nodes"][1]["cpus"] = "lots"
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(doc))
    done = subprocess.run(
        [sys.executable, "-m", "numarun", "topology", "--topology", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 8
    assert done.stderr == (
        f"numarun: snapshot {path}: nodes[1].cpus: expected a list of integers"
        " — save one with 'numarun topology --save FILE'\n"
    )
    assert isinstance(load_topology(tmp_path / "root"), Topology)


def test_equal_records_hash_alike_whatever_the_set_order() -> None:
    # Two equal frozensets may iterate in different orders (insertion history decides
    # among colliding hashes); records holding them must still hash alike.
    a = frozenset([8, 16, 0])
    b = frozenset([0, 16, 8])
    assert a == b
    first = Allowed(cpus=a, mems=frozenset({0}), source="s")
    second = Allowed(cpus=b, mems=frozenset({0}), source="s")
    assert first == second and hash(first) == hash(second)
    node = Node(id=0, cpus=a, distances={0: 10, 1: 20})
    assert hash(node) == hash(Node(id=0, cpus=b, distances={1: 20, 0: 10}))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["cpus"][0].__setitem__("node", 7),
            "CPUs 0 are on nodes 7, which are not in nodes",
        ),
        (lambda d: d["nodes"][0]["cpus"].append(9), "node 0 lists CPUs 9, which are not in cpus"),
        (lambda d: d["cores"].reverse(), "cores[0] has index 1"),
        (
            lambda d: d["cpus"][2].__setitem__("core", 5),
            "CPUs 2 are on cores that are not in cores",
        ),
    ],
)
def test_a_snapshot_that_contradicts_itself_is_refused(
    tmp_path: Path, edit: Any, message: str
) -> None:
    data = _snapshot(tmp_path)
    edit(data)
    with pytest.raises(TopologyError, match=f"contradicts itself: {re.escape(message)}"):
        from_dict(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**12) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    path=st.lists(
        st.sampled_from(
            [
                "nodes",
                "cpus",
                "cores",
                "allowed",
                "identity",
                0,
                1,
                "id",
                "cpus",
                "distances",
                "online",
                "node",
                "core",
                "mems",
            ]
        ),
        max_size=3,
    ),
    value=_json,
)
def test_any_edit_of_a_snapshot_is_read_or_refused_in_one_line(path: list[Any], value: Any) -> None:
    data = json.loads(SAMPLE)
    target = data
    try:
        for key in path[:-1]:
            target = target[key]
        if path:
            target[path[-1]] = value
        else:
            data = value
    except (KeyError, IndexError, TypeError):
        return
    try:
        from_dict(data)
    except TopologyError as err:
        assert "\n" not in str(err)


SAMPLE = json.dumps(
    Topology(
        allowed=Allowed(cpus=frozenset({0, 1}), mems=frozenset({0})),
        nodes={0: Node(id=0, cpus=frozenset({0, 1}), distances={0: 10})},
        cpus={c: Cpu(id=c, node=0, core=0, siblings=frozenset({0, 1})) for c in (0, 1)},
        cores=(Core(index=0, cpus=frozenset({0, 1}), node=0),),
    ).to_dict()
)
