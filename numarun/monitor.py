"""The live view of ``numarun watch``: one frame of the machine, its jobs and given processes.

A :class:`Monitor` takes a :class:`Frame` at each call: every node's sample
(:class:`numarun.watch.Sampler`), the NUMA balancing counters, the locality of each worker
of every running numarun job (read from the jobs' state files, home nodes from each
worker's planned memory policy) and of each process given by PID (home nodes read from the
process: :func:`numarun.watch.process_locality`), and the issues the thresholds find.
Counters are cumulative in the kernel; a frame also carries their change since the frame
before (the first frame: since :meth:`Monitor.prime`'s reading).

:func:`to_json` is what ``--json`` prints; :func:`render_text` the terminal view.
"""

from __future__ import annotations

import time

from numarun.value import Value
from numarun.watch import Balancing, Locality, NodeSample, Sampler, Thresholds, find_issues
from numarun.watch.locality import locality, process_locality
from numarun.watch.sample import BALANCING_COUNTERS, NODE_COUNTERS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from numarun.supervisor.state import WorkerState
    from numarun.topology import Topology
    from numarun.watch import Issue


class Followed(Value):
    """A process the view follows: a job's worker (home nodes from its plan) or a PID."""

    pid: int
    job: str | None = None
    worker: str | None = None  # "web.0"
    home: tuple[int, ...] | None = None  # None: read from the process
    home_source: str = ""


class Frame(Value):
    """One refresh of the view."""

    time: float  # seconds since the epoch
    interval: float | None  # seconds since the previous reading
    nodes: tuple[NodeSample, ...]
    node_deltas: dict[int, dict[str, int]]  # counter -> change since the previous reading
    balancing: Balancing
    balancing_delta: dict[str, int]  # counters both readings have
    processes: tuple[tuple[Followed, Locality], ...]
    gone: tuple[int, ...]  # given PIDs that have exited since the previous frame
    issues: tuple[Issue, ...]
    warnings: tuple[str, ...] = ()


def worker_home(worker: WorkerState, topology: Topology) -> tuple[tuple[int, ...], str]:
    """A worker's home nodes from its planned policy: the policy's nodes, or for ``local``
    and default policy its node (or its CPUs' nodes); and how they were found."""
    from numarun import cpulist
    from numarun.numamaps import parse_policy

    policy = parse_policy(worker.memory) if worker.memory else None
    if policy is not None and policy.nodes:
        return tuple(sorted(policy.nodes)), f"plan {worker.memory}"
    what = worker.memory or "default"
    if worker.node is not None:
        return (worker.node,), f"plan {what} on node {worker.node}"
    try:
        cpus = cpulist.parse_list(worker.cpus or "")
    except ValueError:
        cpus = frozenset()
    nodes = sorted({n for c in cpus if (n := topology.node_of(c)) is not None})
    if not nodes:
        nodes = topology.nodes_with_memory(allowed_only=False)
    return tuple(nodes), f"plan {what}, nodes of its cpus"


def job_workers(
    topology: Topology, state_dir: str | None = None
) -> tuple[list[Followed], tuple[str, ...]]:
    """Every running worker of every live job, and the warnings of reading the state files."""
    from numarun.supervisor import state

    listing = state.list_jobs(state_dir)
    out: list[Followed] = []
    for _path, job in listing.jobs:
        for worker in job.workers:
            if worker.state != "running" or worker.pid is None:
                continue
            home, source = worker_home(worker, topology)
            out.append(
                Followed(
                    pid=worker.pid, job=job.job, worker=worker.label, home=home, home_source=source
                )
            )
    return out, listing.warnings


class Monitor:
    """Takes frames; keeps the previous reading for rates and deltas."""

    def __init__(
        self,
        pids: Iterable[int] = (),
        thresholds: Thresholds | None = None,
        *,
        root: str = "/",
        state_dir: str | None = None,
        jobs: bool = True,
        sampler: Sampler | None = None,
    ) -> None:
        self.sampler = sampler or Sampler(root=root)
        self.topology = self.sampler.topology
        self.root = root
        self.pids = list(dict.fromkeys(pids))
        self.thresholds = thresholds or Thresholds()
        self.state_dir = state_dir
        self.jobs = jobs
        self._nodes: tuple[NodeSample, ...] | None = None
        self._balancing: Balancing | None = None

    def prime(self) -> None:
        """The first reading, which the first frame's rates are measured against."""
        self._nodes = self.sampler.sample_nodes()
        self._balancing = self.sampler.balancing()

    def frame(self) -> Frame:
        nodes = self.sampler.sample_nodes()
        balancing = self.sampler.balancing()
        before = {n.id: n for n in self._nodes or ()}
        node_deltas = {n.id: _deltas(before.get(n.id), n, NODE_COUNTERS) for n in nodes}
        balancing_delta = _deltas(self._balancing, balancing, BALANCING_COUNTERS)
        self._nodes, self._balancing = nodes, balancing
        followed, warnings = job_workers(self.topology, self.state_dir) if self.jobs else ([], ())
        known = {f.pid for f in followed}
        followed += [Followed(pid=p) for p in self.pids if p not in known]
        found: list[tuple[Followed, Locality]] = []
        gone: list[int] = []
        for who in followed:
            if who.home is None:
                loc = process_locality(who.pid, self.topology, self.root)
            else:
                loc = locality(who.pid, who.home, self.root)
                loc = loc.replace(home_source=who.home_source) if loc is not None else None
            if loc is not None:
                found.append((who, loc))
            elif who.job is None:
                gone.append(who.pid)
        self.pids = [p for p in self.pids if p not in gone]
        return Frame(
            time=time.time(),
            interval=self.sampler.interval,
            nodes=nodes,
            node_deltas=node_deltas,
            balancing=balancing,
            balancing_delta=balancing_delta,
            processes=tuple(found),
            gone=tuple(gone),
            issues=find_issues(nodes, [loc for _, loc in found], self.thresholds),
            warnings=tuple(warnings),
        )


def _deltas(before: Value | None, after: Value, names: tuple[str, ...]) -> dict[str, int]:
    if before is None:
        return {}
    out = {}
    for name in names:
        old, new = getattr(before, name), getattr(after, name)
        if isinstance(old, int) and isinstance(new, int):
            out[name] = max(0, new - old)
    return out


# -- JSON ------------------------------------------------------------------------------------


def to_json(frame: Frame) -> dict[str, object]:
    """The frame as ``numarun watch --json`` prints it (man numarun, WATCHING)."""
    return {
        "time": round(frame.time, 3),
        "interval_seconds": None if frame.interval is None else round(frame.interval, 3),
        "nodes": [
            {
                "id": n.id,
                "cpus": list(n.cpus),
                "cpu_utilization": None
                if n.cpu_utilization is None
                else round(n.cpu_utilization, 4),
                "memory_total_bytes": n.memory_total_bytes,
                "memory_free_bytes": n.memory_free_bytes,
                "memory_used_bytes": n.memory_used_bytes,
                "tier": n.tier,
                **{name: getattr(n, name) for name in NODE_COUNTERS},
                "delta": frame.node_deltas.get(n.id, {}),
            }
            for n in frame.nodes
        ],
        "balancing": {
            "mode": frame.balancing.mode,
            **{name: getattr(frame.balancing, name) for name in BALANCING_COUNTERS},
            "delta": frame.balancing_delta,
        },
        "processes": [
            {
                "pid": loc.pid,
                "job": who.job,
                "worker": who.worker,
                "home_nodes": list(loc.home_nodes),
                "home_source": loc.home_source,
                "node_bytes": {str(n): b for n, b in loc.node_bytes.items()},
                "judged_bytes": loc.judged_bytes,
                "local_ratio": None if loc.local_ratio is None else round(loc.local_ratio, 4),
            }
            for who, loc in frame.processes
        ],
        "gone": list(frame.gone),
        "issues": [
            {
                "kind": i.kind,
                "message": i.message,
                "nodes": list(i.nodes),
                "pid": i.pid,
                "value": i.value,
                "threshold": i.threshold,
            }
            for i in frame.issues
        ],
        "warnings": list(frame.warnings),
    }


# -- text ------------------------------------------------------------------------------------

_MODES = {0: "off", 1: "normal", 2: "memory tiering", 3: "normal and tiering"}


def _size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}G"
    return f"{n / (1 << 20):.0f}M"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _count(delta: dict[str, int], name: str) -> str:
    return str(delta[name]) if name in delta else "-"


def render_text(frame: Frame) -> str:
    """The terminal view: nodes, balancing, processes, issues."""
    from numarun import cpulist

    stamp = time.strftime("%H:%M:%S", time.localtime(frame.time))
    every = f"{frame.interval:.1f} s" if frame.interval is not None else "-"
    mode = (
        _MODES.get(frame.balancing.mode, "unknown")
        if frame.balancing.mode is not None
        else ("unknown")
    )
    lines = [f"numarun watch  {stamp}  (changes over {every}; NUMA balancing {mode})", ""]
    lines.append(
        f"{'node':<5} {'cpus':<12} {'cpu':>5} {'used':>8} {'free':>8} {'total':>8} "
        f"{'hit':>9} {'miss':>7} {'foreign':>7}"
    )
    for n in frame.nodes:
        d = frame.node_deltas.get(n.id, {})
        lines.append(
            f"{n.id:<5} {cpulist.format_list(n.cpus) or '-':<12} {_pct(n.cpu_utilization):>5} "
            f"{_size(n.memory_used_bytes):>8} {_size(n.memory_free_bytes):>8} "
            f"{_size(n.memory_total_bytes):>8} {_count(d, 'numa_hit'):>9} "
            f"{_count(d, 'numa_miss'):>7} {_count(d, 'numa_foreign'):>7}"
        )
    b = frame.balancing_delta
    faults, local = b.get("numa_hint_faults"), b.get("numa_hint_faults_local")
    share = f" ({local / faults:.0%} local)" if faults and local is not None else ""
    demoted = (
        str(b.get("pgdemote_kswapd", 0) + b.get("pgdemote_direct", 0))
        if "pgdemote_kswapd" in b or "pgdemote_direct" in b
        else "-"
    )
    lines += [
        "",
        f"balancing: hint faults {_count(b, 'numa_hint_faults')}{share}, pages migrated "
        f"{_count(b, 'numa_pages_migrated')}, promoted {_count(b, 'pgpromote_success')}, "
        f"demoted {demoted}",
    ]
    if frame.processes:
        lines += [
            "",
            f"{'process':<20} {'pid':>8} {'home':<6} {'local':>6} {'judged':>8}  "
            "per node, home from",
        ]
        for who, loc in frame.processes:
            name = who.worker if who.job is None else f"{who.job}/{who.worker}"
            per_node = " ".join(f"{n}:{_size(b)}" for n, b in loc.node_bytes.items()) or "-"
            lines.append(
                f"{name or '-':<20} {loc.pid:>8} {cpulist.format_list(loc.home_nodes) or '-':<6} "
                f"{_pct(loc.local_ratio):>6} {_size(loc.judged_bytes):>8}  {per_node}; "
                f"{loc.home_source}"
            )
    for pid in frame.gone:
        lines.append(f"process {pid} has exited")
    lines += ["", "issues:" if frame.issues else "issues: none"]
    lines += [f"  {i.kind}: {i.message}" for i in frame.issues]
    lines += [f"warning: {w}" for w in frame.warnings]
    return "\n".join(lines) + "\n"
