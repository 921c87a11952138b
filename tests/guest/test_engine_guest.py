"""The one placement engine (issue 11) on a real multi-node kernel with SMT siblings.

Results come from checks_engine.py: each command's own report of its CPUs
(/proc/self/status) and of its 8 MiB (/proc/self/numa_maps) after numarun exec'd into it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from test_ranks_guest import _cpus

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport


def _probe(got: dict[str, Any]) -> dict[str, Any]:
    assert got["run"]["rc"] == 0, got["run"]["stderr"]
    probe: dict[str, Any] = got["probe"]
    assert probe is not None, got
    return probe


def _bound_to(probe: dict[str, Any], node: int) -> None:
    words = probe["policy"].split(":")
    assert words[0] == "bind" and _cpus(words[1]) == {node}, probe
    pages = {int(n): p for n, p in probe["pages"].items()}
    assert sum(pages.values()) >= 2048 and set(pages) == {node}, probe


def test_own_spelling_runs_one_thread_per_core_of_the_memory_node(guest: GuestReport) -> None:
    got = guest.check("engine_own_spelling_follows_memory")
    probe, node = _probe(got), got["node"]
    shape = guest.shape
    first_threads = set(shape.node_cpus(node)[:: shape.threads])
    assert _cpus(probe["cpus"]) == first_threads, probe
    _bound_to(probe, node)


def test_numactl_spelling_leaves_the_cpus_and_warns(guest: GuestReport) -> None:
    got = guest.check("engine_numactl_spelling_leaves_cpus")
    probe, node = _probe(got), got["node"]
    assert _cpus(probe["cpus"]) == set(range(guest.shape.cpus)), probe
    _bound_to(probe, node)
    assert f"memory is bound to node {node} but the command may run on" in got["run"]["stderr"]


def test_explicit_nodes_widen_a_taskset_affinity(guest: GuestReport) -> None:
    got = guest.check("engine_taskset_is_widened")
    probe = _probe(got)
    assert _cpus(probe["cpus"]) == set(guest.shape.node_cpus(got["node"])), probe


def test_numarun_chooses_within_a_taskset_affinity(guest: GuestReport) -> None:
    probe = _probe(guest.check("engine_taskset_bounds_own_choice"))
    assert _cpus(probe["cpus"]) <= {0, 1}, probe
    _bound_to(probe, 0)
