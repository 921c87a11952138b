"""Issue 6 on a real multi-node kernel: ``numarun placement`` / ``numastat`` / ``migrate``
judged against processes whose pages numarun itself placed (check: ``placement_live`` in
checks_placement.py, one run per guest shape).

Oracles: the policy each holder was launched under, the kernel's own numa_hit counters, and
Debian's ``numastat -p`` on the same live process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport

MiB = 1 << 20
COUNTERS = ["interleave_hit", "local_node", "numa_foreign", "numa_hit", "numa_miss", "other_node"]


def _ok(run: dict[str, Any], rc: int = 0) -> None:
    assert run["rc"] == rc, f"numarun {run['args']} exited {run['rc']}: {run.get('stderr')}"


def _process(placement: dict[str, Any], pid: int) -> dict[str, Any]:
    """The one process of a ``placement PID --json --check`` run, which must exit 0."""
    _ok(placement["run"])
    assert placement["data"] is not None, placement["run"]
    (proc,) = placement["data"]
    assert proc["pid"] == pid, proc
    return proc  # type: ignore[no-any-return]


def _judged_share(proc: dict[str, Any], node: int) -> float:
    """Share of the judged memory on ``node`` (nodes: {"N": [bytes, judged_bytes]})."""
    return int(proc["nodes"].get(str(node), [0, 0])[1]) / int(proc["judged_bytes"])


def _describe(proc: dict[str, Any]) -> str:
    return f"nodes {proc['nodes']}; verdicts {[v['message'] for v in proc['verdicts']]}"


def test_placement_membind_passes_check(guest: GuestReport) -> None:
    """Launched with ``--membind 1``, 256 MiB touched: >= 99% of the judged memory on node 1,
    verdict pass, ``placement PID --json --check`` exits 0."""
    got = guest.check("placement_live")["membind"]
    holder = got["holder"]
    assert holder["pid"] == holder["popen_pid"], holder  # numarun execs: the same process
    proc = _process(got["placement"], holder["pid"])
    assert proc["judged_bytes"] >= 256 * MiB, _describe(proc)
    assert _judged_share(proc, 1) >= 0.99, _describe(proc)
    assert proc["ok"] and proc["status"] == "pass", _describe(proc)
    (verdict,) = proc["verdicts"]
    assert verdict["policy"] == "bind:1" and verdict["status"] == "pass", verdict
    assert verdict["judged_bytes"] >= 256 * MiB, verdict


def test_placement_interleave_even_split(guest: GuestReport) -> None:
    """Launched with ``--interleave`` over every node: each node within 5% of an even share
    of the judged memory, verdict pass, ``placement PID --json --check`` exits 0."""
    got = guest.check("placement_live")["interleave"]
    nodes = got["nodes"]
    assert nodes == list(range(guest.shape.nodes))
    proc = _process(got["placement"], got["holder"]["pid"])
    assert proc["judged_bytes"] >= 256 * MiB, _describe(proc)
    even = 1 / len(nodes)
    for node in nodes:
        assert abs(_judged_share(proc, node) - even) <= 0.05 * even, _describe(proc)
    assert proc["ok"] and proc["status"] == "pass", _describe(proc)
    (verdict,) = proc["verdicts"]
    assert verdict["policy"] == f"interleave:0-{nodes[-1]}", verdict
    assert verdict["status"] == "pass" and verdict["expected_nodes"] == f"0-{nodes[-1]}", verdict


def test_placement_migrate_then_check_fails(guest: GuestReport) -> None:
    """Bound to node 0: ``placement --check`` exits 0; ``migrate --from 0 --to 1 --json``
    exits 0 and its after-report has >= 99% of the anonymous memory on node 1; then
    ``placement --check`` exits 10 with one ``numarun: `` line, memory outside bind:0."""
    got = guest.check("placement_live")["migrate"]
    pid = got["holder"]["pid"]
    before = got["placement_before"]
    _ok(before)
    assert before["stdout"].lstrip().startswith("PASS  bind:0:"), before

    moved = got["migrate"]
    _ok(moved["run"])
    data = moved["data"]
    assert data is not None, moved["run"]
    assert data["pid"] == pid and data["from_nodes"] == [0] and data["to_nodes"] == [1], data
    assert int(data["before"]["anon"].get("0", 0)) >= 256 * MiB, data["before"]
    assert data["before"]["ok"], data["before"]
    anon = {int(n): int(b) for n, b in data["after"]["anon"].items()}
    assert anon.get(1, 0) >= 256 * MiB, anon
    assert anon.get(1, 0) / sum(anon.values()) >= 0.99, (anon, data["pages_not_moved"])
    assert not data["after"]["ok"], data["after"]["verdicts"]

    after = got["placement_after"]
    _ok(after, 10)
    err = after.get("stderr", "")
    assert err.startswith("numarun: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err  # one line
    assert "Traceback" not in err, err
    assert f"PID {pid}" in err and "outside bind to node 0" in err and "node 1" in err, err
    assert after["stdout"].lstrip().startswith("FAIL  bind:0:"), after


def test_numastat_lists_nodes_and_counts_the_bound_pages(guest: GuestReport) -> None:
    """``numarun numastat --json`` lists every node with every counter, its numa_hit lies
    between the kernel's before and after, and node 1's grew across the ``--membind 1``
    holder by at least one allocation per (huge) page of its 256 MiB."""
    got = guest.check("placement_live")
    numastat = got["numastat"]
    _ok(numastat["run"])
    nodes = numastat["data"]
    assert nodes is not None, numastat["run"]
    assert sorted(nodes, key=int) == [str(n) for n in range(guest.shape.nodes)], nodes
    before, after = got["kernel_numa_hit_before"], got["kernel_numa_hit_after"]
    for node, entry in nodes.items():
        assert entry["counters"] == COUNTERS, entry
        assert entry["mem_total_kb"] > 0, entry
        assert before[node] <= entry["numa_hit"] <= after[node], (node, before, entry, after)
    # One allocation may bring in a whole transparent huge page (THP "always" in the guest).
    thp = got["thp"]
    largest = thp["hpage_pmd_size"] if thp["enabled"] == "always" else got["page_size"]
    grew = nodes["1"]["numa_hit"] - before["1"]
    assert grew >= got["hold_mb"] * MiB // largest, (grew, thp)


def test_placement_totals_match_numastat_p(guest: GuestReport) -> None:
    """Per node, ``placement --json`` bytes agree with Debian's ``numastat -p PID`` Total
    row (MB, two decimals) on the same live, idle process."""
    got = guest.check("placement_live")
    for case in ("membind", "interleave"):
        entry = got[case]
        proc = _process(entry["placement"], entry["holder"]["pid"])
        numastat = entry["numastat_p"]
        _ok(numastat["run"])
        total = numastat["total_mb"]
        assert numastat["nodes"] == list(range(guest.shape.nodes)), numastat
        assert len(total) == len(numastat["nodes"]) + 1, numastat  # per node, then the sum
        theirs = dict(zip(numastat["nodes"], total, strict=False))
        ours = {int(n): v[0] / MiB for n, v in proc["nodes"].items()}
        for node in set(theirs) | set(ours):
            # 0.005 MB of numastat's rounding; the rest for the holder's stack or heap
            # changing by a page or two between the two reads.
            assert abs(ours.get(node, 0.0) - theirs.get(node, 0.0)) <= 0.1, (case, ours, theirs)
        assert abs(sum(ours.values()) - total[-1]) <= 0.1, (case, ours, total)
