"""Verdicts on tiered memory: weighted interleave by the weights in force, demotion named."""

from __future__ import annotations

from pathlib import Path

import pytest

from numarun.numamaps import parse_policy
from numarun.report import FAIL, PASS, Tiering, judge, tiering_of
from numarun.topology import read_topology
from tests.fakesysfs import two_sockets_with_cxl

MB = 1 << 20
FIVE_TWO = Tiering(weights={0: 5, 1: 5, 2: 2, 3: 2}, tiers={0: 4, 1: 4, 2: 35, 3: 35})


def _judge(policy: str, placed: dict[int, int], tiering: Tiering | None) -> tuple[str, str]:
    found = judge(parse_policy(policy), placed, cpu_nodes=frozenset({0}), tiering=tiering)
    return found.status, found.message


def test_pages_in_the_weights_ratio_pass_and_show_expected_against_actual() -> None:
    status, message = _judge("weighted interleave:0,2", {0: 730 * MB, 2: 294 * MB}, FIVE_TWO)
    assert status == PASS
    assert "by weights 5:2" in message
    assert "node 0 71.3% (expected 71.4%)" in message and "node 2 28.7% (expected 28.6%)" in message


def test_even_pages_under_5_2_weights_fail() -> None:
    status, message = _judge("weighted interleave:0,2", {0: 512 * MB, 2: 512 * MB}, FIVE_TWO)
    assert status == FAIL
    assert "node 0 holds 50.0% of 1.0 GB" in message and "expects 71.4% ± 5" in message


def test_within_five_points_passes_and_past_fails() -> None:
    assert _judge("weighted interleave:0,2", {0: 685 * MB, 2: 339 * MB}, FIVE_TWO)[0] == PASS
    assert _judge("weighted interleave:0,2", {0: 660 * MB, 2: 364 * MB}, FIVE_TWO)[0] == FAIL


def test_shares_are_over_the_policys_nodes_only() -> None:
    # weights 5:5:2:2 machine-wide; a policy over 1,3 expects 5/7 and 2/7 of its pages.
    status, _ = _judge("weighted interleave:1,3", {1: 730 * MB, 3: 294 * MB}, FIVE_TWO)
    assert status == PASS


def test_a_node_without_a_weight_counts_one() -> None:
    tiering = Tiering(weights={0: 3})
    assert _judge("weighted interleave:0-1", {0: 768 * MB, 1: 256 * MB}, tiering)[0] == PASS


def test_unknown_weights_judge_only_the_nodes() -> None:
    status, message = _judge("weighted interleave:0,2", {0: 512 * MB, 2: 512 * MB}, None)
    assert status == PASS and "weights in force are unknown" in message


@pytest.mark.parametrize("demotion", [True, False])
def test_bound_pages_on_a_lower_tier_are_demoted_when_demotion_is_on(demotion: bool) -> None:
    tiering = FIVE_TWO.replace(demotion=demotion)
    status, message = _judge("bind:0", {0: 900 * MB, 2: 124 * MB}, tiering)
    if demotion:
        assert status == PASS
        assert "demoted to a lower tier (node 2 tier 35)" in message
        assert "/sys/kernel/mm/numa/demotion_enabled" in message
    else:
        assert status == FAIL and "demoted" not in message


def test_pages_on_another_dram_node_are_never_demotion() -> None:
    status, message = _judge("bind:0", {0: 900 * MB, 1: 124 * MB}, FIVE_TWO.replace(demotion=True))
    assert status == FAIL and "demoted" not in message


def test_tiering_from_the_topology(tmp_path: Path) -> None:
    machine, tiering = two_sockets_with_cxl()
    tiering.weights = {0: 5, 1: 5, 2: 2, 3: 2}
    tiering.write(machine.write(tmp_path))
    found = tiering_of(read_topology(tmp_path))
    assert found == Tiering(
        weights={0: 5, 1: 5, 2: 2, 3: 2}, tiers={0: 4, 1: 4, 2: 35, 3: 35}, demotion=True
    )
