"""Node and CPU specs as numactl reads them: syntax, resolution, and their errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from numarun.cpulist import format_list
from numarun.errors import NotAllowedError, UnknownResourceError, UsageError
from numarun.nodespec import parse_spec, resolve

EXISTING = frozenset(range(8))
ALLOWED = frozenset({1, 2, 3, 5})


def nodes(text: str, existing: frozenset[int] = EXISTING, allowed: frozenset[int] = ALLOWED):
    return resolve(parse_spec(text), existing=existing, allowed=allowed)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", {1, 2, 3, 5}),
        ("ALL", {1, 2, 3, 5}),
        ("1", {1}),
        ("0-3", {0, 1, 2, 3}),  # explicit ids come back as named; the caller checks allowed
        ("0,2", {0, 2}),
        ("1-3,5", {1, 2, 3, 5}),
        ("!1", {2, 3, 5}),  # all (allowed) but 1
        ("!1-2", {3, 5}),
        ("+0", {1}),  # the first allowed node
        ("+1-2", {2, 3}),
        ("+3", {5}),
        ("!+0", {2, 3, 5}),
        ("0-7:2/4", {0, 1, 4, 5}),  # the kernel's stride form is a superset numactl lacks
        (" 2 ", {2}),
        # libnuma reads numbers with strtoul(s, 0): 0x3 is node 3 (not a mask), 07 is 7
        ("0x3", {3}),
        ("0x1-0x3", {1, 2, 3}),
        ("+0x1", {2}),
        ("07", {7}),
    ],
)
def test_resolves_like_numactl(text: str, expected: set[int]) -> None:
    assert nodes(text) == frozenset(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "x",
        "1-",
        "3-1",
        "1,,2",
        "-1",
        "!",
        "+",
        "!all",
        "1 2",
        "0x",
        "0xg",
        "٠",
        "1٣",
        "1_0",
        "+-1",
        "010",
        "08",
    ],
)
def test_bad_syntax_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_spec(text, "--membind")
    assert "--membind" in err.value.message
    assert err.value.exit_code == 2
    assert "\n" not in err.value.message


@pytest.mark.parametrize("text", ["netdev:eth0", "pci:0000:3b:00.0", "file:/", "ip:1.2.3.4"])
def test_numactl_named_sources_name_a_device(text: str) -> None:
    # resolved against the topology's devices: tests/test_devices.py
    assert parse_spec(text).device == text


def test_unknown_node_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownResourceError) as err:
        nodes("9")
    assert err.value.exit_code == 4
    assert err.value.message == (
        "--nodes: node 9 does not exist on this machine — valid nodes are 0-7"
    )


def test_unknown_nodes_are_all_named_even_when_inverted() -> None:
    with pytest.raises(UnknownResourceError, match="nodes 9-10 do not exist"):
        nodes("!9-10")


def test_relative_position_past_the_allowed_set() -> None:
    with pytest.raises(NotAllowedError) as err:
        nodes("+4")
    assert err.value.exit_code == 5
    assert "+4 is past the end of the 4 node(s)" in err.value.message
    assert "1-3,5" in err.value.message


def test_sparse_node_ids() -> None:
    existing = frozenset({0, 8, 250, 251})
    assert nodes("+1", existing, existing) == {8}
    assert nodes("!0", existing, existing) == {8, 250, 251}
    assert nodes("250-251", existing, existing) == {250, 251}


def test_cpu_wording() -> None:
    spec = parse_spec("64", "--physcpubind", "CPU")
    with pytest.raises(UnknownResourceError, match="--physcpubind: CPU 64 does not exist"):
        resolve(
            spec,
            existing=frozenset(range(4)),
            allowed=frozenset(range(4)),
            kind="CPU",
            option="--physcpubind",
        )


# -- properties ----------------------------------------------------------------------------

id_sets = st.frozensets(st.integers(min_value=0, max_value=63), min_size=1, max_size=20)


@given(id_sets)
def test_list_text_round_trips(ids: frozenset[int]) -> None:
    assert nodes(format_list(ids), frozenset(range(64)), frozenset(range(64))) == ids


@given(id_sets, id_sets)
def test_inversion_complements_within_the_allowed_set(
    named: frozenset[int], allowed: frozenset[int]
) -> None:
    everything = frozenset(range(64))
    inverted = nodes("!" + format_list(named), everything, allowed)
    assert inverted == allowed - named
    assert inverted | (named & allowed) == allowed
    assert not inverted & named


@given(id_sets, st.data())
def test_relative_positions_pick_the_nth_allowed(
    allowed: frozenset[int], data: st.DataObject
) -> None:
    ordered = sorted(allowed)
    positions = data.draw(
        st.frozensets(st.integers(min_value=0, max_value=len(ordered) - 1), min_size=1)
    )
    got = nodes("+" + format_list(positions), frozenset(range(64)), allowed)
    assert got == frozenset(ordered[p] for p in positions)
    assert got <= allowed


@given(st.text(max_size=12))
def test_parse_never_raises_anything_but_usage_error(text: str) -> None:
    try:
        spec = parse_spec(text)
    except UsageError as err:
        assert "\n" not in err.message
        return
    assert spec.everything or spec.items or spec.device is not None  # "gpu:0" names a device
