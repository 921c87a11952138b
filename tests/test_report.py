"""The verdict rules, table-driven, on plain data (no live machine)."""

from __future__ import annotations

import pytest

from numarun.numamaps import parse_policy, summarize
from numarun.report import FAIL, PASS, SKIP, Rules, build_report, judge, size, to_json

MB = 1 << 20
GB = 1 << 30
FREE = {0: 40 * GB, 1: 40 * GB}
TOTAL = {0: 64 * GB, 1: 64 * GB}
FULL = {0: 40 * GB, 1: 100 * MB}  # node 1 is short of memory

# policy, bytes per node, nodes of the CPUs it may use, free per node, expected status, words
CASES = [
    ("bind:1", {1: 2 * GB}, {0}, FREE, PASS, "all 2.0 GB on node 1"),
    ("bind:1", {1: 1800 * MB, 0: 312 * MB}, {0}, FREE, FAIL,
     "312 MB of 2.1 GB on node 0, outside bind to node 1"),
    ("bind:1", {1: 2 * GB, 0: 4096}, {1}, FREE, FAIL, "4 kB of 2.0 GB on node 0"),
    ("bind:0-1", {0: GB, 1: GB}, {0}, FREE, PASS, "on nodes 0-1"),
    ("bind=static:1", {1: GB}, {0}, FREE, PASS, ""),
    ("interleave:0-1", {0: 512 * MB, 1: 512 * MB}, {0}, FREE, PASS,
     "50.0% on node 0, 50.0% on node 1"),
    ("interleave:0-1", {0: 540 * MB, 1: 484 * MB}, {0}, FREE, PASS, "spread evenly"),
    ("interleave:0-1", {0: 600 * MB, 1: 424 * MB}, {0}, FREE, FAIL, "node 0 holds 58.6%"),
    ("interleave:0-1", {0: 1 * GB}, {0}, FREE, FAIL, "node 0 holds 100.0%"),
    ("interleave:0-1", {0: 1 * MB, 1: 0}, {0}, FREE, SKIP, "too little"),
    ("interleave:0-1", {0: GB, 1: GB, 2: 200 * MB}, {0}, FREE, FAIL,
     "on node 2, outside interleave"),
    ("interleave:0-3", {0: GB, 1: GB, 2: GB, 3: GB}, {0}, FREE, PASS, "25.0% on node 3"),
    ("weighted interleave:0-1", {0: 3 * GB, 1: GB}, {0}, FREE, PASS, ""),
    ("weighted interleave:0-1", {0: GB, 2: GB}, {0}, FREE, FAIL, "outside weighted-interleave"),
    ("prefer:1", {1: 2 * GB}, {0}, FREE, PASS, "all 2.0 GB on node 1"),
    ("prefer:1", {1: GB, 0: GB}, {0}, FREE, FAIL, "there is room (40.0 GB free on node 1)"),
    ("prefer:1", {1: GB, 0: GB}, {0}, FULL, PASS, "short of free memory"),
    ("prefer:1", {1: 1000 * MB, 0: 5 * MB}, {0}, FREE, PASS, "spilled elsewhere"),
    ("prefer (many):0-1", {0: GB, 1: GB}, {0}, FREE, PASS, ""),
    ("default", {0: GB}, {0}, FREE, PASS, "all 1.0 GB on node 0 (default policy"),
    ("default", {0: GB, 1: GB}, {0}, FREE, FAIL, "1.0 GB of 2.0 GB on node 1, outside default"),
    ("default", {0: GB, 1: GB}, {0, 1}, FREE, PASS, ""),
    ("default", {0: GB, 1: GB}, {1}, {0: GB, 1: 0}, PASS, "short of free memory"),
    ("local", {1: GB}, {1}, FREE, PASS, ""),
    ("local", {0: GB}, {1}, FREE, FAIL, "outside local"),
    ("default", {}, {0}, FREE, SKIP, "no memory"),
    ("default", {0: GB}, set(), FREE, SKIP, "cannot tell"),
    ("futuremode:1", {1: GB}, {0}, FREE, SKIP, "not one numarun judges"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[4]}-{i}" for i, c in enumerate(CASES)])
def test_rules(
    case: tuple[str, dict[int, int], set[int], dict[int, int], str, str],
) -> None:
    policy, node_bytes, cpu_nodes, free, status, words = case
    verdict = judge(
        parse_policy(policy),
        node_bytes,
        cpu_nodes=frozenset(cpu_nodes),
        free=free,
        total=TOTAL,
    )
    assert verdict.status == status, verdict.message
    assert words in verdict.message
    assert verdict.ok == (status != FAIL)


def test_off_bytes_are_counted() -> None:
    v = judge(parse_policy("bind:1"), {0: 312 * MB, 1: 1800 * MB})
    assert (v.off_bytes, v.judged_bytes, v.expected) == (312 * MB, 2112 * MB, frozenset({1}))


def test_unknown_free_memory_does_not_excuse_a_spill() -> None:
    v = judge(parse_policy("prefer:1"), {0: GB, 1: GB}, free=None)
    assert v.status == FAIL


def test_rules_are_adjustable() -> None:
    loose = Rules(interleave_points=10.0)
    v = judge(parse_policy("interleave:0-1"), {0: 600 * MB, 1: 424 * MB}, rules=loose)
    assert v.status == PASS


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (4096, "4 kB"), (312 * MB, "312 MB"), (2150 * MB, "2.1 GB"), (15 * MB, "15.0 MB")],
)
def test_size(n: int, text: str) -> None:
    assert size(n) == text


MAPS = """\
55d000100000 default heap anon=100 dirty=100 N0=100 kernelpagesize_kB=4
7f0000000000 bind:1 anon=1000 dirty=1000 N1=900 N0=100 kernelpagesize_kB=4
7f0000300000 default file=/usr/lib/x.so mapped=5000 N1=5000 kernelpagesize_kB=4
7ffc00000000 default stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4
"""


def test_report_judges_each_policy_and_ignores_page_cache() -> None:
    report = build_report(
        42,
        summarize(MAPS),
        cpu_to_node={0: 0, 1: 0, 2: 1, 3: 1},
        cpus_allowed=frozenset({0, 1}),
        thread_cpus={42: 1, 43: 3},
        free=FREE,
        total=TOTAL,
        name="job",
    )
    by_policy = {str(v.policy): v for v in report.verdicts}
    assert by_policy["bind:1"].status == FAIL
    assert "outside bind to node 1" in by_policy["bind:1"].message
    # The file's 20 MB on node 1 are page cache: not judged against the default policy.
    assert by_policy["default"].status == PASS
    assert not report.ok and report.status == FAIL
    assert report.threads == {42: (1, 0), 43: (3, 1)}
    data = to_json(report)
    assert data["status"] == "fail"
    nodes = data["nodes"]
    assert isinstance(nodes, dict)
    assert nodes["1"]["file_bytes"] == 5000 * 4096
    assert nodes["1"]["judged_bytes"] == 900 * 4096
    assert data["threads"] == [{"tid": 42, "cpu": 1, "node": 0}, {"tid": 43, "cpu": 3, "node": 1}]


def test_report_of_a_process_without_memory_is_skipped() -> None:
    report = build_report(7, summarize(""), cpu_to_node={0: 0}, cpus_allowed=frozenset({0}))
    assert report.ok and report.status == SKIP
