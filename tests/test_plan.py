"""The planner against real machines, a c5n.18xlarge fixture, hwloc-distrib, and properties."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numarun.cpulist import format_list, parse_mask
from numarun.errors import NumarunError, UnknownResourceError, UnsuitableError
from numarun.placement.slots import plan_slots
from numarun.plan import Plan, plan_job, plan_process
from numarun.presets import list_presets
from numarun.spec import JobSpec, ProcessSpec, load_spec, parse_spec_text
from numarun.topology import Allowed, Core, Cpu, Identity, Node, Topology, read_topology
from tests.conftest import SNAPSHOTS, oracle
from tests.fakesysfs import c5n_18xlarge

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT_PARAMS = SNAPSHOTS or [
    pytest.param("none", marks=pytest.mark.skip(reason="../shared/topologies is absent"))
]


@pytest.fixture(scope="module")
def c5n(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return read_topology(c5n_18xlarge().write(tmp_path_factory.mktemp("c5n")))


def group(**keys: Any) -> ProcessSpec:
    return ProcessSpec.model_validate({"name": "g", "command": ["run", "{worker}"], **keys})


def workers_of(topology: Topology, **keys: Any) -> list[Any]:
    plan, _ = plan_process(topology, group(**keys))
    return list(plan.workers)


# --- the c5n.18xlarge fixture: exact answers ----------------------------------------------


def test_c5n_per_node(c5n: Topology) -> None:
    avoid = workers_of(c5n, smt="avoid", policy="bind")
    assert [(w.node, format_list(w.cpus), w.cores) for w in avoid] == [
        (0, "0-17", 18),
        (1, "18-35", 18),
    ]
    assert [sorted(w.memory.nodes) for w in avoid] == [[0], [1]]
    allow = workers_of(c5n, smt="allow")
    assert [format_list(w.cpus) for w in allow] == ["0-17,36-53", "18-35,54-71"]
    assert [w.memory.mode for w in allow] == ["default", "default"]


def test_c5n_counts_fill_cores_before_siblings(c5n: Topology) -> None:
    four = workers_of(c5n, workers=4, smt="avoid")
    assert [format_list(w.cpus) for w in four] == ["0-8", "9-17", "18-26", "27-35"]
    # 20 CPUs with smt = allow on an 18-core node: all 18 cores first, then 2 siblings.
    (w,) = workers_of(c5n, nodes="0", cpus_per_worker=20, smt="allow")
    assert format_list(w.cpus) == "0-17,36-37"
    assert w.cores == 18
    (w,) = workers_of(c5n, nodes="1", cpus_per_worker=4, smt="allow")
    assert format_list(w.cpus) == "18-21"  # siblings only when needed


def test_c5n_spanning_worker_takes_both_nodes(c5n: Topology) -> None:
    (w,) = workers_of(c5n, workers=1, policy="interleave")
    assert (w.node, w.nodes, len(w.cpus)) == (0, (0, 1), 72)
    assert sorted(w.memory.nodes) == [0, 1]


def test_c5n_templating_and_reserve(c5n: Topology) -> None:
    spec = parse_spec_text(
        '[[process]]\nname = "cache"\n'
        'command = ["redis-server", "--port", "70{worker}", "--dir", "/d/{name}/{node}"]\n'
        'smt = "avoid"\npolicy = "bind"\nreserve_cpus = "0"\n'
        'env = { CPUS = "{cpus}", MEM = "{mem_nodes}" }\nlogs = "/log/{name}.{worker}"\n',
        "job.toml",
    )
    plan = plan_job(c5n, spec)
    first, second = plan.processes[0].workers
    assert first.argv == ("redis-server", "--port", "700", "--dir", "/d/cache/0")
    assert second.argv[2] == "701"
    # CPU 0 is reserved; its sibling 36 is then the first usable thread of that core.
    assert format_list(first.cpus) == "1-17,36"
    assert first.env == {"CPUS": "1-17,36", "MEM": "0"}
    assert first.log == "/log/cache.0"


def test_c5n_errors_name_key_and_fix(c5n: Topology) -> None:
    spec = parse_spec_text(
        '[[process]]\nname = "a"\ncommand = ["x"]\nsmt = "avoid"\ncpus_per_worker = 20\n',
        "job.toml",
    )
    with pytest.raises(UnsuitableError) as caught:
        plan_job(c5n, spec)
    assert caught.value.message == (
        "job.toml:5: process[0].cpus_per_worker: cpus_per_worker = 20 but node 0 has 18 usable "
        "CPUs with smt = avoid (36 with smt = allow) — lower cpus_per_worker to 18 or set "
        'smt = "allow"'
    )
    spec = parse_spec_text('[[process]]\nname = "a"\ncommand = ["x"]\nnodes = "5"\n', "job.toml")
    with pytest.raises(UnknownResourceError) as unknown:
        plan_job(c5n, spec)
    assert unknown.value.message == (
        "job.toml:4: process[0].nodes: node 5 does not exist on this machine — valid nodes are 0-1"
    )
    assert unknown.value.exit_code == 4
    spec = parse_spec_text(
        '[[process]]\nname = "a"\ncommand = ["x"]\nworkers = 10\ncpus_per_worker = 4\n'
        'smt = "avoid"\n',
        "job.toml",
    )
    with pytest.raises(UnsuitableError, match=r"job.toml:4: process\[0\].workers: 10 workers"):
        plan_job(c5n, spec)


def test_c5n_warnings(c5n: Topology) -> None:
    w: list[str] = []
    plan_slots(c5n, 40, smt="avoid", warnings=w)
    assert any("40 workers on 36 cores: some workers share CPUs" in x for x in w)
    spec = parse_spec_text(
        '[[process]]\nname = "a"\ncommand = ["x"]\n[[process]]\nname = "b"\ncommand = ["y"]\n',
        "job.toml",
    )
    assert any("share CPUs" in x for x in plan_job(c5n, spec).warnings)


def test_plan_is_deterministic(c5n: Topology) -> None:
    spec = load_spec(REPO / "examples/mixed.toml")
    assert plan_job(c5n, spec) == plan_job(c5n, spec)


def test_cli_json_shape(c5n: Topology, tmp_path: Path) -> None:
    root = c5n_18xlarge().write(tmp_path / "m")
    job = tmp_path / "job.toml"
    job.write_text(
        '[[process]]\nname = "cache"\ncommand = ["redis-server", "--port", "70{worker}"]\n'
        'workers = "per-node"\nsmt = "avoid"\npolicy = "bind"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "numarun", "plan", str(job), "--json",
         "--topology", str(root)],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    data = json.loads(done.stdout)
    (process,) = data["processes"]
    assert process["name"] == "cache"
    first = process["workers"][0]
    assert first["index"] == 0 and first["node"] == 0
    assert first["cpus"] == list(range(18))
    assert first["memory"] == {"mode": "bind", "nodes": [0]}
    assert first["argv"][:3] == ["redis-server", "--port", "700"]
    table = subprocess.run(
        [sys.executable, "-m", "numarun", "plan", str(job), "--topology", str(root)],
        capture_output=True, text=True, cwd=REPO, check=True,
    ).stdout  # fmt: skip
    assert "0-17 (18 on 18 cores)" in table


# --- every example and every preset is planned ----------------------------------------------


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_examples_plan(path: Path, c5n: Topology) -> None:
    plan = plan_job(c5n, load_spec(path))
    assert all(p.workers for p in plan.processes)
    check_plan(c5n, plan)


def test_every_preset_plans(c5n: Topology) -> None:
    for preset, _ in list_presets():
        plan, _ = plan_process(c5n, group(policy=preset.name))
        assert plan.workers, preset.name
        assert all(w.memory.mode == preset.mode for w in plan.workers)


# --- every shared snapshot -----------------------------------------------------------------


def check_plan(topology: Topology, plan: Plan) -> None:
    for process in plan.processes:
        for w in process.workers:
            assert list(w.cpus) == sorted(set(w.cpus))
            for cpu in w.cpus:
                info = topology.cpus[cpu]
                assert info.online and cpu in topology.allowed.cpus
                assert info.node in w.nodes
            assert w.memory.nodes <= topology.allowed.mems


def core_groups(name: str, topology: Topology) -> dict[int, int]:
    """CPU -> physical core, from hwloc's view of the snapshot (the oracle)."""
    out = {}
    for index, core in enumerate(oracle(name, "hwloc")["cores"]):
        for pu in core["pus"]:
            out[pu] = index
    # hwloc leaves CPUs out where numarun keeps them (see test_topology): own core each.
    for cpu in topology.online_cpus() - out.keys():
        out[cpu] = -1 - cpu
    return out


@pytest.fixture
def snapshot(shared_snapshot: Callable[[str], Path], request: pytest.FixtureRequest) -> Topology:
    return read_topology(shared_snapshot(request.param))


@pytest.mark.parametrize("snapshot", SNAPSHOT_PARAMS, indirect=True)
@pytest.mark.parametrize("smt", ["avoid", "allow"])
def test_snapshot_invariants(snapshot: Topology, smt: str, request: pytest.FixtureRequest) -> None:
    name = request.node.callspec.params["snapshot"]
    cores = core_groups(name, snapshot)
    nodes = snapshot.nodes_with_cpus()
    # What the planner may use: CPUs a node lists (offline-cpu0-node0 has online CPUs of an
    # offline node, which no node lists).
    usable = frozenset(c for n in nodes for c in snapshot.usable_cpus(n))
    units = len({cores[c] for c in usable}) if smt == "avoid" else len(usable)
    for workers in ["per-node", "per-socket", 1, 2, len(nodes), len(nodes) + 1, units, units + 3]:
        spec = JobSpec(processes=(group(workers=workers, smt=smt, policy="bind"),))
        plan = plan_job(snapshot, spec)
        check_plan(snapshot, plan)
        planned = plan.processes[0].workers
        if smt == "avoid":
            for w in planned:
                if workers != units + 3:  # over-subscribed: reuse is the point
                    assert len({cores[c] for c in w.cpus}) == len(w.cpus), (workers, w)
        if workers == "per-node":
            assert [w.node for w in planned] == nodes
            for w in planned:
                assert w.nodes == (w.node,)
                assert set(w.cpus) <= snapshot.nodes[w.node].cpus
        if isinstance(workers, int):
            assert len(planned) == workers
            if workers >= len(nodes):  # one node per worker
                assert all(len(w.nodes) == 1 for w in planned)
            if workers <= units:  # never two workers on one unit while another is idle
                seen = [c for w in planned for c in w.cpus]
                assert len(seen) == len(set(seen))
            else:
                covered = {c for w in planned for c in w.cpus}
                assert covered == (
                    usable if smt == "allow" else {min(g) for g in _groups(cores, usable)}
                )


def _groups(cores: dict[int, int], usable: frozenset[int]) -> list[set[int]]:
    out: dict[int, set[int]] = {}
    for cpu in usable:
        out.setdefault(cores[cpu], set()).add(cpu)
    return list(out.values())


# hwloc-distrib N, with N the number of nodes with CPUs, against plan_slots(N, smt="allow"):
# hwloc splits N over its object tree in proportion to PU counts and, where it gets exactly
# one for an object, prints that object's whole cpuset; numarun's N >= nodes rule gives each
# node its largest-remainder share. They agree on every snapshot except these two, each for a
# reason we chose deliberately (the test asserts the exact difference, so a change on either
# side is noticed):
HWLOC_DIFFERS = {
    # CPU 4 is offline, so node 2 has one CPU. hwloc rounds cumulatively along its packages:
    # package 0 gets two workers (one per PU) and packages 1 and 2 share one, so a worker
    # spans nodes 1 and 2. numarun gives each node one worker (largest remainder), within it.
    "16amd64-8n2c-cpusets": (
        ["0-1", "2-3", "5", "6-7", "8-9", "10-11", "12-13", "14-15"],
        ["0", "1", "2-3,5", "6-7", "8-9", "10-11", "12-13", "14-15"],
    ),
    # Node 0 is offline but its CPUs 4-20 (even) are online: hwloc attaches them to the
    # machine and distributes them; numarun places only CPUs that a node lists.
    "offline-cpu0-node0": (["5,7,9,11,13,15,17,19"], ["4-20"]),
}


@pytest.mark.skipif(shutil.which("hwloc-distrib") is None, reason="hwloc-distrib not installed")
@pytest.mark.parametrize("name", SNAPSHOTS or ["none"])
def test_same_cpu_sets_as_hwloc_distrib(name: str, shared_snapshot: Callable[[str], Path]) -> None:
    root = shared_snapshot(name)
    real = read_topology(root)
    # --disallowed: hwloc's reading of the snapshot's cgroup differs from numarun's (it drops
    # nodes whose memory is not allowed), so compare on the whole machine, allowed = all.
    whole = Topology(
        nodes=real.nodes, cpus=real.cpus, cores=real.cores, identity=real.identity,
        source=real.source,
        allowed=Allowed(
            cpus=frozenset(real.cpus),
            mems=frozenset(real.nodes),
            source="all",
            cpuset_cpus=frozenset(real.cpus),
            cpuset_mems=frozenset(real.nodes),
            cpuset_source="whole machine",
        ),
    )  # fmt: skip
    count = len(whole.nodes_with_cpus())
    ours = sorted(
        (sorted(p.cpus) for p in plan_slots(whole, count, smt="allow", policy="local")),
    )
    out = subprocess.run(
        ["hwloc-distrib", "--input", str(root), "--disallowed", "--taskset", str(count)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    theirs = sorted(sorted(parse_mask(mask)) for mask in out)
    if name in HWLOC_DIFFERS:
        assert ([format_list(s) for s in ours], [format_list(s) for s in theirs]) == (
            HWLOC_DIFFERS[name]
        )
    else:
        assert ours == theirs


# --- properties over generated machines -----------------------------------------------------


@st.composite
def machines(draw: st.DrawFn) -> Topology:
    """Nodes with sparse ids, cores of 1-4 threads, offline and disallowed CPUs, memory-less
    and CPU-less nodes."""
    count = draw(st.integers(1, 4))
    ids = sorted(draw(st.sets(st.integers(0, 12), min_size=count, max_size=count)))
    cpus: dict[int, Cpu] = {}
    cores: list[Core] = []
    node_cpus: dict[int, set[int]] = {n: set() for n in ids}
    next_cpu = 0
    for node in ids:
        for _ in range(draw(st.integers(0, 5))):
            threads = draw(st.integers(1, 4))
            group = frozenset(range(next_cpu, next_cpu + threads))
            next_cpu += threads
            offline = draw(st.sets(st.sampled_from(sorted(group)), max_size=threads - 1))
            online = group - offline
            cores.append(Core(index=len(cores), cpus=online, package=node // 2, node=node))
            for cpu in sorted(group):
                cpus[cpu] = Cpu(
                    id=cpu, online=cpu in online, node=node, package=node // 2, die=None,
                    cluster=None, core_id=len(cores) - 1,
                    core=len(cores) - 1 if cpu in online else None,
                    siblings=online if cpu in online else frozenset({cpu}),
                )  # fmt: skip
                node_cpus[node].add(cpu)
    if not any(c.online for c in cpus.values()):
        cpus[next_cpu] = Cpu(
            id=next_cpu, online=True, node=ids[0], package=0, die=None, cluster=None,
            core_id=None, core=len(cores), siblings=frozenset({next_cpu}),
        )  # fmt: skip
        cores.append(Core(index=len(cores), cpus=frozenset({next_cpu}), package=0, node=ids[0]))
        node_cpus[ids[0]].add(next_cpu)
    online_ids = sorted(c for c in cpus if cpus[c].online)
    allowed = frozenset(draw(st.sets(st.sampled_from(online_ids), min_size=1)))
    memory = {n: draw(st.sampled_from([0, 1024, 4096])) for n in ids}
    if not any(memory.values()):
        memory[ids[-1]] = 1024
    nodes = {
        n: Node(
            id=n, cpus=frozenset(node_cpus[n]), memory_total_kb=memory[n],
            memory_free_kb=memory[n] // 2,
            distances={m: 10 if m == n else 10 + abs(m - n) * 3 for m in ids},
        )
        for n in ids
    }  # fmt: skip
    return Topology(
        nodes=nodes, cpus=dict(sorted(cpus.items())), cores=tuple(cores),
        allowed=Allowed(
            cpus=allowed,
            mems=frozenset(ids),
            source="test",
            cpuset_cpus=allowed,
            cpuset_mems=frozenset(ids),
            cpuset_source="test",
        ),
        identity=Identity(sys_vendor=None, product_name=None, numa_balancing=None, kernel=None),
        source="generated",
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(machines(), st.integers(1, 40), st.sampled_from(["avoid", "allow"]), st.data())
def test_slot_properties(topology: Topology, count: int, smt: str, data: st.DataObject) -> None:
    want = data.draw(st.one_of(st.none(), st.integers(1, 4)))
    try:
        slots = plan_slots(topology, count, smt=smt, cpus_per_slot=want, policy="bind")
    except NumarunError as err:
        assert want is not None, err  # only an explicit CPU count may not fit
        return
    assert slots == plan_slots(topology, count, smt=smt, cpus_per_slot=want, policy="bind")
    assert len(slots) == count
    nodes = topology.nodes_with_cpus()
    usable = frozenset(c for n in nodes for c in topology.usable_cpus(n))
    first_threads = {min(topology.cores[topology.cpus[c].core].cpus & usable) for c in usable}  # type: ignore[index]
    units = first_threads if smt == "avoid" else usable
    for slot in slots:
        assert slot.cpus and set(slot.cpus) <= usable
        assert {topology.cpus[c].node for c in slot.cpus} <= set(slot.nodes)
        if smt == "avoid":
            assert set(slot.cpus) <= first_threads
        if want is not None:
            assert len(slot.cpus) == want
            assert len(slot.nodes) == 1  # a counted worker stays within its node
        if count >= len(nodes):
            assert slot.nodes == (slot.node,)
        assert slot.memory.nodes and all(topology.nodes[n].has_memory for n in slot.memory.nodes)
    taken = [c for s in slots for c in s.cpus]
    if count <= len(units) and want is None:
        assert len(taken) == len(set(taken))  # nobody shares while a unit is idle
    if count >= len(units) and want is None:
        assert set(taken) == units  # every unit used once sharing starts
    if want is not None:
        assert len(taken) == len(set(taken))


def test_fewer_workers_than_nodes_group_the_nearest_nodes(tmp_path: Path) -> None:
    # Two pairs of near nodes (0-1 and 2-3 at 16), the pairs far apart (22): three workers
    # leave one pair together, never a far pair such as 1-2.
    from tests.fakesysfs import FakeMachine

    def dist(a: int, b: int) -> int:
        return 10 if a == b else 16 if a // 2 == b // 2 else 22

    machine = FakeMachine(
        nodes={n: [2 * n, 2 * n + 1] for n in range(4)},
        siblings=[(2 * n, 2 * n + 1) for n in range(4)],
        distances={a: {b: dist(a, b) for b in range(4)} for a in range(4)},
    )
    topo = read_topology(machine.write(tmp_path))
    slots = plan_slots(topo, 3)
    groups = sorted(sorted(s.nodes) for s in slots)
    assert groups == [[0, 1], [2], [3]]
    cores = [core for s in slots for core in topo.cores_of(s.cpus)]
    assert len(cores) == len(set(cores)) == 4  # every core used, none shared
