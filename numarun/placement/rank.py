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

Under srun the guess is not needed, and would be wrong: Slurm's task/affinity sets each task's
affinity to the step's allocation even with ``--cpu-bind=none``, and says what it did
(:func:`numarun.ranks.slurm_binding`). ``none`` (the job has the whole node), or one mask for
every local task (``mask_cpu:0xF0``: what ``--cpu-bind=none`` reads as on part of a node):
the affinity is the allocation, and all the step's local ranks are planned within it like
unbound ones. A binding (``cores``, ``sockets``, ``map_cpu`` ..., all reported by
task/affinity as ``mask_cpu`` with one mask per task): Slurm's CPUs are kept, memory follows
them, and the ranks Slurm put on the same CPUs (its mask list says which) split them as that
many slots. Under task/cgroup the
step's cgroup cpuset is the bound, as any cgroup's is (:func:`.bounds.bounds_of`).
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
    device_nodes,
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
    from numarun.ranks import RankInfo, SlurmBinding
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


class Share:
    """How this rank's slot is found: slot ``index`` of ``count`` planned over the pool."""

    __slots__ = ("count", "guessed", "index", "why")

    def __init__(self, count: int, index: int, why: str, *, guessed: bool = False) -> None:
        self.count = count
        self.index = index
        self.why = why  # the --explain reason: whose CPUs these are, and who shares them
        self.guessed = guessed  # "already bound", told only by affinity narrower than room


def _share(
    info: RankInfo,
    binding: SlurmBinding | None,
    bounds: Bounds,
    host: frozenset[int],
) -> Share:
    """All N slots, Slurm's binding (split between the ranks sharing it), or a guessed one."""
    given = bounds.inherited
    if binding is not None and binding.kind == "none":
        return Share(
            info.size, info.rank,
            f"{binding.source}: the affinity {format_list(given)} is the step's allocation on "
            "this node, not a binding; every local rank is planned within it",
        )  # fmt: skip
    if binding is not None:
        mine = binding.mask_of(info.rank)
        # The kernel's affinity is the truth; the list only says who shares it.
        sharers = binding.sharers(info.rank, info.size)
        if mine is None or (mine & bounds.cpus) != given:
            sharers = (info.rank,)
        if len(sharers) == info.size > 1:
            # How srun --cpu-bind=none reads on part of a node: one mask, the allocation.
            return Share(
                info.size, info.rank,
                f"{binding.source}: one CPU mask {format_list(given)} for all {info.size} "
                "local ranks is the step's allocation on this node; every local rank is "
                "planned within it",
            )  # fmt: skip
        others = [str(t) for t in sharers if t != info.rank]
        shared = f", shared with local rank(s) {','.join(others)}" if others else ""
        return Share(
            len(sharers), sharers.index(info.rank),
            f"{binding.source}: Slurm bound this rank to CPUs {format_list(given)}{shared}; "
            "numarun keeps that binding and places memory to follow it",
        )  # fmt: skip
    if given < host:
        return Share(
            1, 0,
            f"already bound: this process may run on CPUs {format_list(given)} only, fewer "
            "than its cpuset allows, so its launcher placed it; numarun works within those "
            "CPUs as one slot instead of re-planning every rank",
            guessed=True,
        )  # fmt: skip
    return Share(info.size, info.rank, "")


def _slot(
    info: RankInfo,
    request: Request,
    topology: Topology,
    bounds: Bounds,
    pool: frozenset[int],
    *,
    share: Share,
    notes: tuple[list[str], list[str], list[str]],
) -> Placement:
    """This rank's slot: its share of all N, of the launcher's binding, or of Slurm's."""
    heading, reasons, warnings = notes
    smt = request.smt or "allow"
    mode = request.mode if request.mode is not None else "default"
    word = request.node_word if request.nodes is None else None
    slot = plan_slots(
        topology, share.count, smt=smt, policy=mode, memory_nodes=word, warnings=warnings,
        usable=pool, bounds=bounds,
    )[share.index]  # fmt: skip
    cores = f"{slot.cores} core" if slot.cores == 1 else f"{slot.cores} cores"
    where = f"{format_list(slot.nodes)}, CPUs {format_list(slot.cpus)} ({cores})"
    everyone = share.count == info.size and share.index == info.rank and not share.guessed
    if everyone:
        heading.append(f"slot: {info.rank} of {info.size}: node(s) {where}")
    elif share.count > 1:
        heading.append(
            f"slot: {share.index} of {share.count} sharing the binding {format_list(pool)}: "
            f"node(s) {where}"
        )
    else:
        heading.append(f"slot: within the launcher's binding {format_list(pool)}: node(s) {where}")
    if share.why:
        reasons.append(share.why)
    if everyone or share.count > 1:
        reasons.append(
            f"slot {share.index}: {share.count} slots planned over CPUs {format_list(pool)} "
            f"({bounds.affinity}) with smt {smt}, as `numarun plan` would (one node per rank "
            "when ranks equal nodes, in proportion otherwise, cores before SMT siblings); "
            "every rank computes the same plan"
        )
    return slot


def _rank_policy(
    request: Request,
    mode: str | None,
    flags: frozenset[str],
    *,
    nodes: frozenset[int] | None,
    slot: Placement,
    reasons: list[str],
) -> MemoryPolicy | None:
    """The rank's memory policy: on the nodes named, or the slot's own."""
    if mode is None:
        return None
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
    return policy


def _gpu_slot(
    info: RankInfo,
    request: Request,
    topology: Topology,
    bounds: Bounds,
    pool: frozenset[int],
    *,
    env: Mapping[str, str],
    notes: tuple[list[str], list[str], list[str]],
) -> tuple[Placement, dict[str, str]]:
    """``--per-gpu``: one slot per GPU, as ``workers = "per-gpu"`` plans them; this rank's,
    and the environment that shows it its GPU (unless the launcher set that already)."""
    from numarun.placement import resolve
    from numarun.placement.slots import Context, per_gpu, placements, pool_of

    heading, reasons, warnings = notes
    ctx = Context(where=lambda _key: "--per-gpu", label="rank slots")
    smt = request.smt or "allow"
    cores = pool_of(topology, resolve.nodes_with_cpus(topology, pool), pool, ctx)
    placed, gpus = per_gpu(
        topology, cores, want=None, smt=smt, limits=bounds, ctx=ctx, asked="--per-gpu"
    )
    if info.size > len(gpus):
        raise refusals.ranks_past_gpus(info.size, info.size_from, [g.label() for g in gpus])
    mode = request.mode if request.mode is not None else "default"
    word = request.node_word if request.nodes is None else None
    slots = placements(topology, bounds, placed, mode=mode, word=word, named=None, ctx=ctx)
    warnings.extend(ctx.warnings)
    slot, gpu = slots[info.rank], gpus[info.rank]
    cores_text = f"{slot.cores} core" + ("s" if slot.cores != 1 else "")
    where = f"{format_list(slot.nodes)}, CPUs {format_list(slot.cpus)} ({cores_text})"
    heading.append(f"slot: {info.rank} of {info.size}: {gpu.label()}, node(s) {where}")
    reasons.append(
        f"--per-gpu: one slot per GPU ({len(gpus)}) on the GPU's node, the node's CPUs split "
        f"between its GPUs with smt {smt}; local rank {info.rank} gets {gpu.label()} "
        f"(on node {gpu.node if gpu.node is not None else 'unknown'}), as Slurm's "
        "--gpu-bind=closest with one GPU a task"
    )
    shown = resolve.visible_devices(topology, gpu)
    given = sorted(n for n in shown if n.endswith("_VISIBLE_DEVICES") and n in env)
    if given:
        reasons.append(f"{', '.join(given)} already set by the launcher: left as it is")
        shown = {}
    return slot, {**shown, **resolve.device_env(gpu)}


def plan_rank(
    request: Request,
    topology: Topology,
    env: Mapping[str, str],
    *,
    room: frozenset[int] | None = None,
    need_command: bool = True,
) -> LaunchPlan:
    """Plan this process as one rank of several on this host; change nothing."""
    from numarun.ranks import discover, slurm_binding

    info = discover(env, request.rank, request.ranks)
    # Slurm's word on its binding counts only for the ranks Slurm started (not mpirun's).
    binding = slurm_binding(env) if info.launcher == "Slurm" else None
    bounds = bounds_of(topology, whole_machine=request.whole_machine)
    heading = [
        f"rank: {info.rank} of {info.size} on this host ({info.launcher}: {info.rank_from}, "
        f"{info.size_from})"
    ]
    reasons: list[str] = [info.describe()]
    warnings: list[str] = []
    request, device_env = device_nodes(request, topology, bounds, (reasons, warnings))
    mode, flags = checked_mode(request, reasons)
    given = bounds.inherited
    host = given if room is None else room | given
    share = _share(info, binding, bounds, host)
    pool = given
    restricted = requested_cpus(request, topology, bounds, reasons)
    if restricted is not None:
        pool = pool & restricted
    if not pool:
        raise refusals.no_cpus("the CPU options", given)
    nodes = named_nodes(request, topology, bounds, reasons)
    if request.per_gpu:
        if share.guessed or share.count != info.size:
            raise refusals.gpu_ranks_bound(info.rank, given)
        slot, gpu_env = _gpu_slot(
            info, request, topology, bounds, pool, env=env, notes=(heading, reasons, warnings)
        )
        device_env = {**device_env, **gpu_env}
    else:
        if binding is None or binding.kind == "none":
            # A binding Slurm made is Slurm's to size: ranks it stacked on a CPU share it.
            _check_size(info, topology, host if share.guessed else pool, request.smt or "allow")
        slot = _slot(
            info, request, topology, bounds, pool, share=share, notes=(heading, reasons, warnings)
        )
    notice = None
    if share.guessed:
        notice = (
            f"numarun: rank {info.rank} of {info.size} was already bound by its launcher to CPUs "
            f"{format_list(given)} (its cpuset allows {format_list(host)}); placing it within "
            f"them: CPUs {format_list(slot.cpus)} — start the ranks unbound (mpirun --bind-to "
            "none, srun --cpu-bind=none) to let numarun plan all of them"
        )
    policy = _rank_policy(request, mode, flags, nodes=nodes, slot=slot, reasons=reasons)
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
        env=device_env,
    )
