"""Measure read bandwidth from each CPU node to each memory node, as Intel MLC's matrix does.

For each pair, a buffer is bound to the memory node (``mbind``, then touched) and one
thread per CPU of the initiator node, each pinned to its CPU, copies its slice of the buffer
into a small private buffer that stays in cache, with ``memmove`` through :mod:`ctypes`
(C speed; ctypes releases the GIL for the call, so the threads copy in parallel). Read
bandwidth is the bytes read over the time from the first thread's start to the last one's
end.

What it measured is checked, not assumed: the pages of the buffer are looked up
(``get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)``, sampled) and each thread's CPU is read from
``/proc/self/task/TID/stat`` while it is still there; both are in the result.

Latency is not measured: a dependent-load chain cannot be walked at C speed from Python,
and a figure that is mostly interpreter overhead would mislead.
"""

from __future__ import annotations

import os
import threading
import time

from numarun import mempolicy, procfs
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numarun.topology import Topology

MiB = 1 << 20
CHUNK = 1 * MiB  # each copy: large enough for memmove to stream, small enough for cache
PAGE = 4096
SAMPLES = 64  # pages looked up per buffer to say where it is


class Cell(Value):
    """One measurement: CPUs of ``initiator`` reading memory of ``target``."""

    initiator: int
    target: int
    read_bandwidth_mbps: int  # MB/s, 10^6 bytes per second like HMAT
    threads: int
    cpus: frozenset[int]  # the CPUs the threads were seen on
    buffer_nodes: dict[int, int]  # node -> sampled pages found there
    size_bytes: int


def measure(
    initiator: int, cpus: Sequence[int], target: int, *, size: int = 64 * MiB, passes: int = 3
) -> Cell:
    """Read bandwidth from threads on ``cpus`` (one each, of node ``initiator``) to a buffer
    bound to node ``target``."""
    import ctypes
    import mmap

    size = max(CHUNK * len(cpus), size // (CHUNK * len(cpus)) * CHUNK * len(cpus))
    buffer = mmap.mmap(-1, size)
    # The c_char view is dropped at once, so the mmap can close; the mapping stays until then.
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    try:
        mempolicy.mbind(address, size, mempolicy.MemoryPolicy("bind", [target]))
        ctypes.memset(address, 1, size)  # fault every page in, on the target
        where = _where(address, size)
        seconds, seen = _copy_in_threads(address, size, cpus, passes)
    finally:
        buffer.close()
    return Cell(
        initiator=initiator,
        target=target,
        read_bandwidth_mbps=round(size * passes / seconds / 1e6),
        threads=len(cpus),
        cpus=seen,
        buffer_nodes=where,
        size_bytes=size,
    )


def _where(address: int, size: int) -> dict[int, int]:
    out: dict[int, int] = {}
    step = max(PAGE, size // SAMPLES // PAGE * PAGE)
    for offset in range(0, size, step):
        node = mempolicy.node_of_address(address + offset)
        out[node] = out.get(node, 0) + 1
    return dict(sorted(out.items()))


def _copy_in_threads(
    address: int, size: int, cpus: Sequence[int], passes: int
) -> tuple[float, frozenset[int]]:
    """Seconds for every thread to read its slice ``passes`` times, and the CPUs they ran on."""
    import ctypes

    share = size // len(cpus)
    start = threading.Barrier(len(cpus) + 1)
    done = threading.Barrier(len(cpus) + 1)
    seen_done = threading.Event()
    tids: list[int] = []

    def work(index: int, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # 0: this thread only, on Linux
        scratch = ctypes.create_string_buffer(CHUNK)
        tids.append(threading.get_native_id())
        base = address + index * share
        start.wait()
        for _ in range(passes):
            for offset in range(0, share, CHUNK):
                ctypes.memmove(scratch, base + offset, CHUNK)
        done.wait()
        seen_done.wait()  # stay until our CPU has been read from /proc

    workers = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(cpus)]
    for thread in workers:
        thread.start()
    start.wait()
    began = time.perf_counter()
    done.wait()
    seconds = time.perf_counter() - began
    on = procfs.thread_cpus(os.getpid())
    seen = frozenset(on[t] for t in tids if t in on)
    seen_done.set()
    for thread in workers:
        thread.join()
    return seconds, seen


def matrix(
    topology: Topology,
    *,
    size: int = 64 * MiB,
    threads: int | None = None,
    progress: Callable[[int, int, int, int], None] | None = None,
) -> list[Cell]:
    """Every (CPU node, memory node) pair this process may use, measured in turn."""
    initiators = [n for n in topology.nodes_with_cpus() if topology.usable_cpus(n)]
    targets = topology.nodes_with_memory()
    pairs = [(i, t) for i in initiators for t in targets]
    cells = []
    for done, (initiator, target) in enumerate(pairs):
        if progress is not None:
            progress(done, len(pairs), initiator, target)
        cpus = sorted(_one_per_core(topology, initiator))[: threads or None]
        cells.append(measure(initiator, cpus, target, size=size))
    return cells


def _one_per_core(topology: Topology, node: int) -> list[int]:
    """One usable CPU per physical core of the node: SMT siblings share a core's bandwidth."""
    return [min(group) for group in topology.cores_of(topology.usable_cpus(node)).values()]


def best_bandwidth(cells: Sequence[Cell]) -> dict[int, int]:
    """Each memory node's read bandwidth from its best initiator."""
    out: dict[int, int] = {}
    for cell in cells:
        out[cell.target] = max(out.get(cell.target, 0), cell.read_bandwidth_mbps)
    return out
