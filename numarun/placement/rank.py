"""``--per-rank``: this process as one rank of several on this host.

The rank and the number of ranks come from the launcher's environment or the command line
(:mod:`numarun.ranks`). All ranks plan the same N slots (:func:`.slots.plan_slots`) over the
inherited affinity (within ``--cpus``/``--cpu-nodes`` when given) and each takes its own: every
rank computes the same plan from the same inputs, so no coordination is needed.

Already bound: when the CPUs this process may run on (its inherited affinity) are fewer than
its cgroup allows (``room``, see :func:`launcher_room`), the launcher bound the rank itself
(``mpirun --bind-to``, ``srun --cpu-bind``). numarun then plans this rank alone within the
CPUs it was given: the launcher's binding is this rank's share, and numarun cannot know the
others' without talking to them. ``notice`` says so, for stderr. ``room`` None (a snapshot,
whose cgroup is unknown) turns the check off.
"""

from __future__ import annotations

from numarun import refusals
from numarun.cpulist import format_list
from numarun.errors import UnsuitableError, UsageError
from numarun.mempolicy import NODELESS_MODES, MemoryPolicy
from numarun.placement import cores as _cores
from numarun.placement.bounds import bounds_of
from numarun.placement.prefix import (
    LaunchPlan,
    checked_mode,
    command_executable,
    fallback_mode,
    named_nodes,
    requested_cpus,
)
from numarun.placement.slots import plan_slots

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from numarun.placement.bounds import Bounds
    from numarun.placement.prefix import Request
    from numarun.placement.slots import Placement
    from numarun.ranks import RankInfo
    from numarun.topology import Topology


def launcher_room(topology: Topology, root: str = "/") -> frozenset[int]:
    """The CPUs a launcher could have bound this process to: what its cgroup allows.

    The cgroup's online CPUs, whatever the affinity, less the kernel's isolated CPUs
    (``isolcpus=``), which no process has by default and so no launcher took away.
    """
    from numarun import sysfs

    room = topology.allowed.cpuset_cpus & topology.online_cpus()
    isolated = sysfs.cpus_isolated(sysfs.Root(root))
    return room - isolated if isolated else room


def _check_size(info: RankInfo, topology: Topology, room: frozenset[int], smt: str) -> None:
    """Refuse more ranks than there are CPUs (cores, with --smt avoid) to give them."""
    by_node = _cores.cores_by_node(topology, room)
    node_cores = [c for cores in by_node.values() for c in cores]
    units = _cores.units(node_cores, smt)
    if info.size > units:
        what = "physical cores (--smt avoid)" if smt == "avoid" else "usable CPUs"
        threads = _cores.units(node_cores, "allow")
        raise UnsuitableError(
            f"--per-rank: {info.size} ranks on this host ({info.size_from}) but only {units} "
            f"{what} to place them on ({format_list(room)}): ranks would share CPUs",
            "use --smt allow"
            if smt == "avoid" and info.size <= threads
            else "start fewer ranks per host, or widen the cpuset",
        )


def _slot(
    info: RankInfo,
    request: Request,
    topology: Topology,
    bounds: Bounds,
    pool: frozenset[int],
    *,
    bound: bool,
    notes: tuple[list[str], list[str], list[str]],
) -> Placement:
    """This rank's slot: alone within the launcher's binding, or its share of all N."""
    heading, reasons, warnings = notes
    smt = request.smt or "allow"
    mode = request.mode if request.mode is not None else "default"
    word = request.preset_nodes if request.nodes is None else None
    count, index = (1, 0) if bound else (info.size, info.rank)
    slot = plan_slots(
        topology, count, smt=smt, policy=mode, memory_nodes=word, warnings=warnings,
        usable=pool, bounds=bounds,
    )[index]  # fmt: skip
    cores = f"{slot.cores} core" if slot.cores == 1 else f"{slot.cores} cores"
    where = f"{format_list(slot.nodes)}, CPUs {format_list(slot.cpus)} ({cores})"
    if bound:
        heading.append(f"slot: within the launcher's binding {format_list(pool)}: node(s) {where}")
        reasons.append(
            f"already bound: this process may run on CPUs {format_list(bounds.inherited)} only, "
            "fewer than its cpuset allows, so its launcher placed it; numarun works within "
            "those CPUs as one slot instead of re-planning every rank"
        )
    else:
        heading.append(f"slot: {info.rank} of {info.size}: node(s) {where}")
        reasons.append(
            f"slot {info.rank}: {info.size} slots planned over CPUs {format_list(pool)} "
            f"({bounds.affinity}) with smt {smt}, as `numarun plan` would (one node per rank "
            "when ranks equal nodes, in proportion otherwise, cores before SMT siblings); "
            "every rank computes the same plan"
        )
    return slot


def plan_rank(
    request: Request,
    topology: Topology,
    env: Mapping[str, str],
    *,
    room: frozenset[int] | None = None,
    need_command: bool = True,
) -> LaunchPlan:
    """Plan this process as one rank of several on this host; change nothing."""
    from numarun.ranks import discover

    info = discover(env, request.rank, request.ranks)
    bounds = bounds_of(topology, whole_machine=request.whole_machine)
    heading = [
        f"rank: {info.rank} of {info.size} on this host ({info.launcher}: {info.rank_from}, "
        f"{info.size_from})"
    ]
    reasons: list[str] = [info.describe()]
    warnings: list[str] = []
    mode, flags = checked_mode(request, reasons)
    given = bounds.inherited
    host = given if room is None else room | given
    bound = given < host
    pool = given
    restricted = requested_cpus(request, topology, bounds, reasons)
    if restricted is not None:
        pool = pool & restricted
    if not pool:
        raise refusals.no_cpus("the CPU options", given)
    nodes = named_nodes(request, topology, bounds, reasons)
    _check_size(info, topology, host if bound else pool, request.smt or "allow")
    slot = _slot(
        info, request, topology, bounds, pool, bound=bound, notes=(heading, reasons, warnings)
    )
    notice = None
    if bound:
        notice = (
            f"numarun: rank {info.rank} of {info.size} was already bound by its launcher to CPUs "
            f"{format_list(given)} (its cpuset allows {format_list(host)}); placing it within "
            f"them: CPUs {format_list(slot.cpus)} — start the ranks unbound (mpirun --bind-to "
            "none, srun --cpu-bind=none) to let numarun plan all of them"
        )
    policy = None
    if mode is not None:
        chosen = nodes if nodes is not None else frozenset(slot.memory.nodes)
        if nodes is None and mode not in NODELESS_MODES:
            reasons.append(f"memory nodes {format_list(chosen)}: the slot's own")
        if mode == "preferred" and len(chosen) > 1:
            raise refusals.preferred_several(request.nodes_option, chosen)
        try:
            policy = MemoryPolicy(mode, () if mode in NODELESS_MODES else chosen, set(flags))
        except ValueError as err:
            raise UsageError(str(err), "see numarun(1), MEMORY POLICY") from None
        if request.preset is not None:
            reasons.append(f"memory policy {mode}: from preset {request.preset}")
    return LaunchPlan(
        policy=policy,
        cpus=frozenset(slot.cpus),
        fallback=fallback_mode(request, policy),
        reasons=tuple(reasons + warnings),
        warnings=tuple(warnings),
        command=tuple(request.command),
        executable=command_executable(request, need_command),
        heading=tuple(heading),
        rank=info.rank,
        notice=notice,
    )
