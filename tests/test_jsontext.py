"""numarun's JSON writer writes what ``json.dumps`` writes, byte for byte.

``numarun topology --json``, ``placement --json`` and saved snapshots are written by
:mod:`numarun.jsontext` (``json`` itself costs its decoder's ``re`` and ``enum`` at start-up);
scripts that compare the text, and every JSON reader, must see no difference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from numarun import jsontext
from numarun.topology import read_topology
from tests.conftest import SNAPSHOTS, need_shared

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
data = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        | st.dictionaries(
            st.integers() | st.booleans() | st.none() | st.floats(), inner, max_size=3
        )
    ),
    max_leaves=30,
)


@given(data, st.sampled_from([None, 1, 2]))
def test_any_json_data_is_written_as_json_writes_it(value: object, indent: int | None) -> None:
    assert jsontext.dumps(value, indent) == json.dumps(value, indent=indent)


def test_special_floats_and_escapes() -> None:
    for value in (math.nan, math.inf, -math.inf, -0.0, 1e300, 'é\n"\\\x00\u2028', [], {}):
        assert jsontext.dumps([value, {"k": value}]) == json.dumps([value, {"k": value}], indent=1)


def test_what_json_refuses_it_refuses() -> None:
    for value in ([{1, 2}], {(1, 2): "a tuple key"}, {"k": object()}):
        with pytest.raises(TypeError):
            json.dumps(value)
        with pytest.raises(TypeError):
            jsontext.dumps(value)


@pytest.mark.parametrize("name", SNAPSHOTS or ["(none)"])
def test_each_real_topology_is_written_as_json_writes_it(
    name: str, shared_snapshot: Callable[[str], Path]
) -> None:
    need_shared()
    data = read_topology(shared_snapshot(name)).to_dict()
    assert jsontext.dumps(data) == json.dumps(data, indent=1)
    assert json.loads(jsontext.dumps(data)) == json.loads(json.dumps(data))
