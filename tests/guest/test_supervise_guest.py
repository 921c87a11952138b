"""Issues 7 and 3 on a real multi-node kernel: ``numarun plan JOB --json`` and ``numarun run
JOB`` in the QEMU guests (check: checks_supervise.py, one job of three process groups).

Oracles: the guest's sysfs (each node's CPUs, each CPU's SMT siblings) for the plan; the
kernel's view of each live worker (``/proc/PID/status``, ``/proc/PID/numa_maps``) for the
run; ``/proc`` again after SIGTERM for what is left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inguest import parse_cpulist

if TYPE_CHECKING:  # conftest is pytest's to import; only the type is needed here
    from conftest import GuestReport

MiB = 1 << 20


def _job(guest: GuestReport) -> dict[str, Any]:
    return guest.check("supervise_job")


def _plan(res: dict[str, Any], name: str) -> list[dict[str, Any]]:
    plan = res["plan"]
    assert plan["rc"] == 0, f"numarun plan exited {plan['rc']}: {plan['stderr']}{plan['stdout']}"
    by_name = {p["name"]: p["workers"] for p in plan["processes"]}
    assert list(by_name) == ["bound", "spread", "inter"], by_name
    return by_name[name]  # type: ignore[no-any-return]


def _nodes(res: dict[str, Any]) -> dict[int, list[int]]:
    return {int(n): cpus for n, cpus in res["sysfs"]["nodes"].items()}


def _core(res: dict[str, Any], cpu: int) -> tuple[int, ...]:
    """The physical core of ``cpu``: its SMT sibling set, from the guest's sysfs."""
    return tuple(res["sysfs"]["siblings"][str(cpu)])


def _ready(res: dict[str, Any], label: str) -> dict[str, Any]:
    assert res["ready_count"] == res["expected_workers"], (
        f"{res['ready_count']}/{res['expected_workers']} workers ready after "
        f"{res['ready_seconds']} s (numarun exited: {res['supervisor_exited_early']})\n"
        f"stdout: {res['stdout_tail']}\nstderr: {res['stderr_tail']}"
    )
    return res["workers"][label]  # type: ignore[no-any-return]


def _cpulist(cpus: list[int]) -> str:
    """[0, 1, 2, 4] -> "0-2,4", the kernel's Mems_allowed_list / numa_maps form."""
    parts: list[str] = []
    for cpu in sorted(cpus):
        if parts and int(parts[-1].rpartition("-")[2]) == cpu - 1:
            parts[-1] = f"{parts[-1].partition('-')[0]}-{cpu}"
        else:
            parts.append(str(cpu))
    return ",".join(parts)


# -- issue 7: the plan ---------------------------------------------------------------------


def test_plan_per_node_bind(guest: GuestReport) -> None:
    """``workers = "per-node"``, ``smt = "avoid"``, ``policy = "bind"``: one worker per node,
    its CPUs in its node, one per physical core and every core of the node, memory bound to
    the node, the command templated with its node and CPUs."""
    res = _job(guest)
    nodes = _nodes(res)
    workers = _plan(res, "bound")
    assert [w["node"] for w in workers] == sorted(nodes), workers
    assert [w["index"] for w in workers] == list(range(len(nodes))), workers
    for w in workers:
        node, cpus = w["node"], w["cpus"]
        assert cpus == sorted(cpus), w
        assert set(cpus) <= set(nodes[node]), f"worker {w['index']}: {cpus} not in node {node}"
        cores = [_core(res, c) for c in cpus]
        assert len(set(cores)) == len(cpus), f"two CPUs of one core in {cpus}: {cores}"
        assert set(cores) == {_core(res, c) for c in nodes[node]}, f"cores of node {node} left"
        assert w["memory"] == {"mode": "bind", "nodes": [node]}, w
        assert w["argv_tail"][0] == str(node), w["argv_tail"]  # {node}
        assert parse_cpulist(w["argv_tail"][1]) == cpus, w["argv_tail"]  # {cpus}


def test_plan_count_spread_on_distinct_cores(guest: GuestReport) -> None:
    """``workers = N`` (N = the guest's physical cores) with ``smt = "avoid"``: every worker
    on its own core, within one node, spread evenly over the (equal) nodes."""
    res = _job(guest)
    nodes = _nodes(res)
    workers = _plan(res, "spread")
    assert len(workers) == res["spread"], workers
    cores = []
    for w in workers:
        assert w["cpus"], w
        assert set(w["cpus"]) <= set(nodes[w["node"]]), w
        assert len({_core(res, c) for c in w["cpus"]}) == len(w["cpus"]), w
        cores.extend(_core(res, c) for c in w["cpus"])
        assert w["memory"] == {"mode": "bind", "nodes": [w["node"]]}, w
    assert len(set(cores)) == len(cores), f"workers share a core: {workers}"
    per_node = {n: sum(w["node"] == n for w in workers) for n in nodes}
    assert len(set(per_node.values())) == 1, f"uneven spread {per_node}"


def test_plan_four_workers_one_per_node(guest_4n1c2t: GuestReport) -> None:
    """On 4 nodes x 1 core x 2 threads, ``workers = 4``: one worker per node, one CPU each."""
    workers = _plan(_job(guest_4n1c2t), "spread")
    assert sorted(w["node"] for w in workers) == [0, 1, 2, 3], workers
    assert all(len(w["cpus"]) == 1 for w in workers), workers


def test_plan_interleave_all(guest: GuestReport) -> None:
    res = _job(guest)
    (w,) = _plan(res, "inter")
    assert w["memory"] == {"mode": "interleave", "nodes": sorted(_nodes(res))}, w


# -- issue 3: the running job ---------------------------------------------------------------


def test_run_per_node_workers_placed(guest: GuestReport) -> None:
    """Each per-node worker, once it has touched its memory: the kernel shows its planned
    CPUs, its task policy ``bind:<node>`` on every mapping, and >= 99% of its touched pages
    on its node. It is numarun's child, leads its own session, has stdin on /dev/null."""
    res = _job(guest)
    all_nodes = _cpulist(sorted(_nodes(res)))
    expected_pages = res["bound_mb"] * MiB // res["page"]
    for planned in _plan(res, "bound"):
        node = planned["node"]
        got = _ready(res, f"bound.{planned['index']}")
        assert got["tag"] == f"bound.{planned['index']} n{node}", got
        assert parse_cpulist(got["cpus_allowed"]) == planned["cpus"], (planned, got)
        assert got["affinity"] == planned["cpus"], got  # what the worker itself sees
        # set_mempolicy, not a cpuset: the cpuset's memory nodes stay the machine's.
        assert got["mems_allowed"] == all_nodes, got
        assert got["policies"] == [f"bind:{node}"], got  # the task policy, on every mapping
        assert got["total"] >= expected_pages, got
        assert got["pages"].get(str(node), 0) / got["total"] >= 0.99, got
        assert got["templated"][0] == str(node), got["templated"]  # {node}
        assert parse_cpulist(got["templated"][1]) == planned["cpus"], got["templated"]  # {cpus}
        assert got["ppid"] == res["supervisor_pid"], got
        pgid, sid, child_pgid = got["ids"]
        assert pgid == sid == got["pid"], got  # its own session and process group
        assert child_pgid == got["pid"], got  # the grandchild is in the worker's group
        assert got["stdin"] == "/dev/null", got


def test_run_spread_workers_placed(guest: GuestReport) -> None:
    """The N workers: each confined to its one planned core's CPU, memory bound to its node."""
    res = _job(guest)
    for planned in _plan(res, "spread"):
        got = _ready(res, f"spread.{planned['index']}")
        assert parse_cpulist(got["cpus_allowed"]) == planned["cpus"], got
        assert got["policies"] == [f"bind:{planned['node']}"], got
        assert got["templated"][0] == str(planned["node"]), got


def test_run_interleaved_worker_even(guest: GuestReport) -> None:
    """``policy = "interleave"``, ``memory_nodes = "all"``: the worker's touched pages are
    spread over every node, each within 5% of an even share."""
    res = _job(guest)
    nodes = sorted(_nodes(res))
    got = _ready(res, "inter.0")
    assert got["policies"] == [f"interleave:{_cpulist(nodes)}"], got
    assert got["total"] >= res["inter_mb"] * MiB // res["page"], got
    even = got["total"] / len(nodes)
    for node in nodes:
        assert abs(got["pages"].get(str(node), 0) - even) <= 0.05 * even, got


def test_run_state_file(guest: GuestReport) -> None:
    """While the job runs its state file is owner-only and lists every worker's PID and
    placement; the supervisor's children are its workers and its guardian."""
    res = _job(guest)
    state = res["state_file"]
    assert state["exists"] and "error" not in state, state
    assert (state["mode"], state["dir_mode"]) == ("0o600", "0o700"), state
    assert state["job"] == "numarun-guest-supervise" and state["state"] == "running", state
    assert state["supervisor_pid"] == res["supervisor_pid"], state
    pids = {label: w[0] for label, w in state["workers"].items()}
    assert pids == {label: w["pid"] for label, w in res["workers"].items()}, state
    assert {w[1] for w in state["workers"].values()} == {"running"}, state
    for planned in _plan(res, "bound"):
        _pid, _state, cpus, memory = state["workers"][f"bound.{planned['index']}"]
        assert parse_cpulist(cpus) == planned["cpus"], state
        assert memory == f"bind:{planned['node']}", state
    assert sorted(res["supervisor_children"]) == sorted([*pids.values(), state["guardian_pid"]])


def test_sigterm_stops_everything(guest: GuestReport) -> None:
    """SIGTERM to ``numarun run``: exit 0, no worker, grandchild or guardian left (zombies
    included), the state file removed."""
    res = _job(guest)
    stop = res["stop"]
    assert stop["rc"] == 0, f"numarun run exited {stop['rc']}: {res['stderr_tail']}"
    assert stop["left"] == [], stop
    assert stop["workers_left"] == {} and stop["children_left"] == {}, stop
    assert stop["guardian"] and stop["guardian_left"] is None, stop
    assert stop["state_file_left"] is False, stop
