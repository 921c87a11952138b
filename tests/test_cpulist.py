"""The list and mask formats, both ways, against the kernel's own spellings."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from numarun import cpulist

sets = st.frozensets(st.integers(min_value=0, max_value=1100), max_size=80)


@given(sets)
def test_list_round_trip(cpus: frozenset[int]) -> None:
    assert cpulist.parse_list(cpulist.format_list(cpus)) == cpus


@given(sets)
def test_mask_round_trip(cpus: frozenset[int]) -> None:
    assert cpulist.parse_mask(cpulist.format_mask(cpus)) == cpus


@given(sets)
def test_list_is_compact(cpus: frozenset[int]) -> None:
    text = cpulist.format_list(cpus)
    # no two items could merge: every range boundary is a real gap
    items = [tuple(int(x) for x in part.split("-")) for part in text.split(",") if part]
    for (*_, end), (start, *_) in itertools.pairwise(items):
        assert start > end + 1


@given(
    st.integers(0, 200),
    st.integers(0, 200),
    st.integers(1, 16),
    st.integers(1, 16),
)
def test_stride_matches_the_kernel_definition(lo: int, span: int, used: int, group: int) -> None:
    used = min(used, group)
    hi = lo + span
    expect = {n for n in range(lo, hi + 1) if (n - lo) % group < used}
    assert cpulist.parse_list(f"{lo}-{hi}:{used}/{group}") == expect


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("", set()),
        ("0", {0}),
        ("0-3,8", {0, 1, 2, 3, 8}),
        ("0-31:2/4", {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29}),
        ("0-3\n\x00", {0, 1, 2, 3}),  # old kernels pad with a NUL
        (" 5 , 7 ", {5, 7}),
    ],
)
def test_list_examples(text: str, expect: set[int]) -> None:
    assert cpulist.parse_list(text) == expect


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("00000000,0000000f", {0, 1, 2, 3}),
        ("1,00000000", {32}),
        ("0xff", set(range(8))),
        ("00000000", set()),
    ],
)
def test_mask_examples(text: str, expect: set[int]) -> None:
    assert cpulist.parse_mask(text) == expect


@pytest.mark.parametrize("bad", ["a", "1-", "3-1", "1,,2", "0-7:0/4", "0-7:5/4", "0-7:2", "-1"])
def test_bad_lists_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match=r"number|range|reversed|stride|empty"):
        cpulist.parse_list(bad)


@given(st.text(max_size=40))
def test_garbage_never_crashes(text: str) -> None:
    for parse in (cpulist.parse_list, cpulist.parse_mask):
        try:
            parse(text)
        except ValueError:
            pass


def test_format_examples() -> None:
    assert cpulist.format_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert cpulist.format_mask({0, 33}) == "00000002,00000001"
    assert cpulist.format_mask(set()) == "00000000"
