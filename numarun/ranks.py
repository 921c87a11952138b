"""Who is this rank? Local rank and local size from the launcher's environment.

``numarun --per-rank`` runs once per rank on every host, started by ``mpirun``, ``srun`` or
``mpiexec``; each copy learns from its environment which local rank it is (0..N-1 on this
host) and how many ranks share the host, plans N slots over the host with the same planner
as ``numarun plan`` and takes slot ``rank``. Every rank computes the same plan from the same
inputs, so no coordination is needed.

Where rank and size come from, first found wins:

1. ``--rank I`` / ``--ranks N`` on the command line (each one on its own: ``--ranks`` alone
   keeps the launcher's rank and overrides its size);
2. Open MPI: ``OMPI_COMM_WORLD_LOCAL_RANK`` / ``OMPI_COMM_WORLD_LOCAL_SIZE``;
3. MPICH and Intel MPI (Hydra): ``MPI_LOCALRANKID`` / ``MPI_LOCALNRANKS``;
4. Slurm: ``SLURM_LOCALID``, with the size from the step's task count on this node
   (``SLURM_STEP_TASKS_PER_NODE``, then ``SLURM_TASKS_PER_NODE``, both lists such as
   ``4(x2),3`` indexed by ``SLURM_NODEID``), else ``SLURM_NTASKS_PER_NODE``.

The MPI launchers go before Slurm on purpose: ``mpirun`` inside an ``sbatch`` script
inherits the batch step's ``SLURM_LOCALID=0`` in every rank, while its own variables are
the ones that describe the ranks it started. The step's real task count goes before
``SLURM_NTASKS_PER_NODE`` because the latter is the request (``--ntasks-per-node``), which a
last node with fewer tasks does not meet.

Under srun, Slurm also says what it did with the CPUs (:func:`slurm_binding`). Its task/affinity
plugin sets every task's affinity to the step's allocation on the node even with
``--cpu-bind=none``, so an affinity narrower than the cgroup is no sign of a binding there.
``SLURM_CPU_BIND_TYPE`` says ``none`` when the job has the whole node; otherwise Slurm 22.05
reports every binding it made, ``--cpu-bind=none`` on part of a node included, as
``mask_cpu:`` with ``SLURM_CPU_BIND_LIST`` the masks of the local tasks in order (one mask
for all of them: the allocation; ``0x30,0xC0,0x30,0xC0`` for ``--cpu-bind=cores``: tasks 0
and 2 on one core, 1 and 3 on the other). The list says which ranks share CPUs.

Everything here is a pure function of an environment mapping, so it is tested without any
launcher installed.
"""

from __future__ import annotations

from numarun.errors import UnknownResourceError, UsageError
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: this module is on the prefix launcher's start-up path
    from collections.abc import Mapping

#: (launcher, rank variable, size variable), in the order they are tried.
MPI_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("Open MPI", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MPICH/Hydra", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
)
SLURM_RANK = "SLURM_LOCALID"
SLURM_NODE = "SLURM_NODEID"
#: Per-node task lists, the step's first (see the module docstring for the order).
SLURM_TASK_LISTS = ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
SLURM_PER_NODE = "SLURM_NTASKS_PER_NODE"
SLURM_BIND_TYPE = "SLURM_CPU_BIND_TYPE"
SLURM_BIND_LIST = "SLURM_CPU_BIND_LIST"
SLURM_BIND = "SLURM_CPU_BIND"  # "quiet,mask_cpu:0x3,0xC": both of the above in one
#: ``--cpu-bind`` types that bind each task; the entity words first, so that "cores" names
#: a binding that task/affinity also reports as the masks it computed ("cores,mask_cpu:").
SLURM_BIND_KINDS = (
    "threads", "cores", "sockets", "ldoms", "boards", "rank", "rank_ldom",
    "map_cpu", "mask_cpu", "map_ldom", "mask_ldom",
)  # fmt: skip
#: Types whose list is of memory nodes, not CPUs: no CPU masks to compare ranks by.
_NODE_LISTS = ("map_ldom", "mask_ldom")


class RankInfo(Value):
    """This process's local rank and the number of ranks on this host, and their sources.

    ``rank_from`` and ``size_from`` say where each came from, as the user would look it up
    (``OMPI_COMM_WORLD_LOCAL_RANK=1``, ``--ranks 4``); ``launcher`` names the launcher whose
    variables were used, or ``command line``.
    """

    rank: int
    size: int
    rank_from: str
    size_from: str
    launcher: str

    def describe(self) -> str:
        """``rank 1 of 4 (rank from X, size from Y)``, for --explain and messages."""
        return (
            f"local rank {self.rank} of {self.size} (rank from {self.rank_from}, "
            f"size from {self.size_from})"
        )


class SlurmBinding(Value):
    """What srun did with this step's CPUs, from ``SLURM_CPU_BIND_TYPE`` and its list.

    ``kind`` is ``none`` (no binding: the affinity is the step's allocation) or the type that
    bound the tasks (``cores``, ``mask_cpu``, ...). ``masks`` holds the CPUs of each local
    task in local-id order, used cyclically as Slurm does when there are fewer entries than
    tasks; empty when Slurm gave no CPU list. ``source`` is how a user would look it up.
    """

    kind: str
    masks: tuple[frozenset[int], ...] = ()
    source: str

    def mask_of(self, task: int) -> frozenset[int] | None:
        """The CPUs Slurm gave local task ``task``, or None when its list does not say."""
        return self.masks[task % len(self.masks)] if self.masks else None

    def sharers(self, task: int, size: int) -> tuple[int, ...]:
        """The local tasks (of ``size``) Slurm bound to the same CPUs as ``task``, ascending."""
        mine = self.mask_of(task)
        if mine is None:
            return (task,)
        return tuple(t for t in range(size) if self.mask_of(t) == mine)


def _bind_list_item(item: str, kind: str, whole: str, name: str) -> frozenset[int]:
    """One entry of a CPU bind list: a CPU id for map_cpu, a hexadecimal mask otherwise."""
    from numarun.cpulist import parse_mask

    try:
        if kind == "map_cpu":
            return frozenset({int(item, 16 if item.lower().startswith("0x") else 10)})
        return parse_mask(item)
    except ValueError:
        raise UsageError(
            f"{name}={whole!r} is not a Slurm CPU bind list",
            "expected CPU masks such as 0x3,0xC (or CPU ids for map_cpu); check srun --cpu-bind",
        ) from None


def slurm_binding(env: Mapping[str, str]) -> SlurmBinding | None:
    """srun's CPU binding of this step, or None when Slurm does not say (then guess).

    ``SLURM_CPU_BIND_TYPE`` and ``SLURM_CPU_BIND_LIST`` first, else both from
    ``SLURM_CPU_BIND``. Words that qualify the type (``quiet``, ``verbose``) are skipped;
    a type with no binding word in it is no answer.
    """
    type_text = env.get(SLURM_BIND_TYPE)
    list_text = env.get(SLURM_BIND_LIST, "")
    name, list_name = SLURM_BIND_TYPE, SLURM_BIND_LIST
    if type_text is None:
        combined = env.get(SLURM_BIND)
        if combined is None:
            return None
        type_text, _, list_text = combined.partition(":")
        name = list_name = SLURM_BIND
    words = [w.strip().rstrip(":").lower() for w in type_text.split(",")]
    source = f"{name}={env[name].strip()}"
    if "none" in words:
        return SlurmBinding(kind="none", source=source)
    kinds = [k for k in SLURM_BIND_KINDS if k in words]
    if not kinds:
        return None
    items = [i.strip() for i in list_text.split(",") if i.strip()]
    masked = [k for k in kinds if k in ("map_cpu", "mask_cpu")]
    if any(k in _NODE_LISTS for k in kinds) or not items:
        return SlurmBinding(kind=kinds[0], source=source)
    list_kind = masked[0] if masked else "mask_cpu"
    whole = env.get(list_name, list_text)
    masks = tuple(_bind_list_item(i, list_kind, whole, list_name) for i in items)
    return SlurmBinding(kind=kinds[0], masks=masks, source=source)


def parse_task_list(text: str, name: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """Slurm's compressed per-node counts: ``2(x3),1`` -> ``[2, 2, 2, 1]``."""
    # Parsed by hand rather than with re: this is on the prefix launcher's start-up path.
    counts: list[int] = []
    for item in text.split(","):
        count, bracket, repeat = item.replace(" ", "").partition("(x")
        if bracket:  # N(xM): M nodes with N tasks each
            repeat = repeat[:-1] if repeat.endswith(")") else "?"
        elif not repeat:
            repeat = "1"
        if not (count.isdigit() and count.isascii() and repeat.isdigit() and repeat.isascii()):
            raise UsageError(
                f"{name}={text!r} is not a Slurm task count list",
                "expected counts such as 4, 4(x2) or 2(x3),1; or give --ranks N",
            )
        counts.extend([int(count)] * int(repeat))
    return counts


def _integer(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise UsageError(
            f"{name}={value!r} is not a number", "check the launcher, or give --rank and --ranks"
        ) from None


def _slurm_size(env: Mapping[str, str]) -> tuple[int, str] | None:
    """The number of this step's tasks on this node, and where it was read."""
    node = _integer(env, SLURM_NODE)
    for name in SLURM_TASK_LISTS:
        text = env.get(name)
        if text is None or not text.strip():
            continue
        counts = parse_task_list(text, name)
        if len(set(counts)) == 1:  # the same on every node: no need to know which node
            return counts[0], f"{name}={text}"
        if node is not None and 0 <= node < len(counts):
            return counts[node], f"{name}={text} at {SLURM_NODE}={node}"
        # A list that differs per node, and no usable index into it: try the next source.
    per_node = _integer(env, SLURM_PER_NODE)
    if per_node is not None:
        return per_node, f"{SLURM_PER_NODE}={per_node}"
    return None


def _from_environment(env: Mapping[str, str]) -> tuple[str, int, str, int | None, str] | None:
    """(launcher, rank, rank source, size or None, size source) of the first launcher seen."""
    for launcher, rank_name, size_name in MPI_SOURCES:
        rank = _integer(env, rank_name)
        if rank is not None:
            size = _integer(env, size_name)
            size_from = f"{size_name}={size}" if size is not None else f"{size_name} (not set)"
            return launcher, rank, f"{rank_name}={rank}", size, size_from
    rank = _integer(env, SLURM_RANK)
    if rank is not None:
        found = _slurm_size(env)
        if found is None:
            return "Slurm", rank, f"{SLURM_RANK}={rank}", None, "Slurm's task counts (not set)"
        return "Slurm", rank, f"{SLURM_RANK}={rank}", found[0], found[1]
    return None


def discover(env: Mapping[str, str], rank: int | None = None, ranks: int | None = None) -> RankInfo:
    """This process's local rank and local size; ``rank``/``ranks`` (the options) win.

    Refusals: no rank at all, or a rank without a size (:class:`UsageError`, exit 2);
    a rank outside ``0..size-1`` (:class:`UnknownResourceError`, exit 4: that slot does not
    exist). A size larger than the usable CPUs is the planner's to refuse: it needs the
    machine.
    """
    found = _from_environment(env)
    launcher = "command line"
    if rank is not None:
        rank_from = f"--rank {rank}"
    elif found is not None:
        launcher, rank, rank_from = found[0], found[1], found[2]
    else:
        raise UsageError(
            "--per-rank: no rank information: none of "
            + ", ".join(r for _, r, _ in MPI_SOURCES)
            + f" or {SLURM_RANK} is set",
            "run under mpirun, mpiexec or srun, or give --rank I --ranks N",
        )
    if ranks is not None:
        size, size_from = ranks, f"--ranks {ranks}"
    elif found is not None and found[3] is not None:
        size, size_from = found[3], found[4]
        if launcher == "command line":
            launcher = found[0]
    else:
        missing = found[4] if found is not None else "the launcher's environment"
        raise UsageError(
            f"--per-rank: local rank {rank} ({rank_from}) but no number of local ranks: {missing}",
            "give --ranks N",
        )
    if size < 1:
        raise UsageError(
            f"--per-rank: {size} local ranks ({size_from})", "the number of ranks is at least 1"
        )
    if not 0 <= rank < size:
        raise UnknownResourceError(
            f"--per-rank: local rank {rank} ({rank_from}) is outside 0..{size - 1}: there are "
            f"{size} local ranks ({size_from})",
            "give a rank below the number of ranks (--rank, --ranks), or check the launcher",
        )
    return RankInfo(
        rank=rank, size=size, rank_from=rank_from, size_from=size_from, launcher=launcher
    )
