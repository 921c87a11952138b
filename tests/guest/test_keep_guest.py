"""Issue 14 on a real multi-node kernel: ``[watch]`` brings moved pages home and gives a
worker other CPUs of its node when one of its CPUs goes offline (check: checks_keep.py).

Oracles: the job's metrics file (what ``--metrics`` promises), the worker's
``/proc/PID/numa_maps`` (where the kernel says its pages are) and every thread's
``Cpus_allowed_list`` (``/proc/PID/task/*/status``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inguest import parse_cpulist

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport


def _keep(guest: GuestReport) -> dict[str, Any]:
    res = guest.check("keep_job")
    assert res.get("rc") == 0, f"numarun run ended {res.get('rc')}: {res.get('stderr_tail')}"
    return res


def _why(res: dict[str, Any]) -> str:
    """What numarun said, for a failing assertion's message."""
    return f"kernel {res.get('kernel')}; numarun said: " + " / ".join(res.get("notes", []))


def _share(pages: dict[str, int], node: str) -> float:
    total = sum(pages.values())
    return pages.get(node, 0) / total if total else 0.0


def test_moved_pages_come_back_and_are_counted(guest_2n2c2t: GuestReport) -> None:
    res = _keep(guest_2n2c2t)
    drift = res["drift"]
    assert res["first"] == {"keep.0": 1.0, "keep.1": 1.0}, res["first"]  # local at the start
    assert _share(drift["pages_before"], "0") >= 0.99, drift["pages_before"]
    # migratepages moved them: the kernel's count, then the metrics' locality falls.
    assert drift["migratepages"]["rc"] == 0, drift["migratepages"]
    assert _share(drift["pages_moved"], "1") >= 0.99, drift["pages_moved"]
    assert drift["low"] is not None and drift["low"] < 0.5, drift
    # Back within a few intervals: at least 90 % by the metrics and by numa_maps, one move.
    assert drift["back"] >= 0.9, f"{drift}; {_why(res)}"
    # "A few intervals", counted in samples: one more below the threshold makes the drift
    # and the move, the next shows it back (numarun samples less often than the interval
    # where a sample costs more than its CPU budget, as under emulation: it says so).
    assert drift["back_samples"] <= 4, f"{drift}; {_why(res)}"
    assert _share(drift["pages_after"], "0") >= 0.9, drift["pages_after"]
    assert drift["remediations"] == 1.0, drift
    assert drift["other_remediations"] == 0.0, drift  # worker 1 was never touched
    notes = "\n".join(res["notes"])
    assert "keep.0: drift: " in notes and "keep.0: remediation: moved " in notes, notes
    assert "from node 1 to node 0 with migrate_pages" in notes, notes


def test_an_offline_cpu_is_replaced_on_every_thread_and_given_back(
    guest_2n2c2t: GuestReport,
) -> None:
    res = _keep(guest_2n2c2t)
    hot = res["hotplug"]
    node0 = set(res["node_cpus"]["0"])
    planned, cpu = hot["planned"], hot["cpu"]
    assert cpu in planned and len(planned) == 2, hot
    before = hot["before"]
    assert len(before) >= 2, before  # the worker's main thread and its second thread
    assert all(parse_cpulist(c) == planned for c in before.values()), before
    # Offline: every thread on the same new CPUs, as many as planned, of its node, not cpuN.
    offline = hot["offline"]
    assert set(offline) == set(before), offline
    lists = {tuple(parse_cpulist(c)) for c in offline.values()}
    assert len(lists) == 1, offline
    (given,) = lists
    assert len(given) == len(planned) and cpu not in given and set(given) <= node0, (
        f"{hot}; {_why(res)}"
    )
    # smt = "avoid": one thread per physical core (the guest's sysfs says which are siblings).
    cores = {tuple(res["siblings"][str(c)]) for c in given}
    assert len(cores) == len(given), (given, res["siblings"])
    # Online again: the planned CPUs, on every thread.
    assert hot["online"] == before, f"{hot}; {_why(res)}"
    notes = "\n".join(res["notes"])
    assert f"CPUs {cpu} of its " in notes and "its planned CPUs are back" in notes, notes
