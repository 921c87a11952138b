"""Weighted-interleave weights: read them, derive them from bandwidth, write them all or none.

Since Linux 6.9, ``MPOL_WEIGHTED_INTERLEAVE`` spreads a process's pages over its nodes in
proportion to global per-node weights (``/sys/kernel/mm/mempolicy/weighted_interleave/
nodeN``, 1-255, 1 by default; Linux 6.16 adds ``auto``, where the kernel derives them from
HMAT itself). numactl uses whatever is set; this module sets them:

* :func:`from_bandwidth`: each memory node's weight in proportion to its read bandwidth
  from its best initiator (HMAT ``access0``), as the smallest integers that keep every
  node's share within half a point (20 GB/s : 8 GB/s gives 5:2);
* :func:`parse_given`: weights a user names (``0=5,2=2``);
* :func:`write`: writes them all or none, and returns the old and new weights;
* :func:`reset`: back to the kernel's own (``auto``) where it has that, else to 1.

Every write goes to a root (``/`` on a live machine), so tests point it at a fake tree.
"""

from __future__ import annotations

import contextlib
import errno
import math

from numarun import refusals, sysfs
from numarun.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from numarun.topology import Topology

MAX_WEIGHT = 255  # the kernel keeps each weight in a u8 and refuses 0
# The derived weights' shares may differ from the bandwidths' shares by this much at most;
# small integers are tried first, so 20:8 gives 5:2 and 20:7.9 gives 5:2 as well; where no
# weight up to 255 gets that close, the closest is taken.
SHARE_TOLERANCE = 0.005


def shares(weights: Mapping[int, int]) -> dict[int, float]:
    """Each node's expected share of the pages (w_n / sum w), from 0 to 1."""
    total = sum(weights.values())
    return {n: w / total for n, w in weights.items()} if total else {}


def small_ratio(values: Mapping[int, float]) -> dict[int, int]:
    """Small integer weights (1-255) in proportion to ``values``, reduced by their gcd."""
    best: dict[int, int] = {}
    best_error = math.inf
    top = max(values.values())
    target = shares({n: round(v * 1_000_000) for n, v in values.items()})
    for largest in range(1, MAX_WEIGHT + 1):
        trial = {n: max(1, round(v * largest / top)) for n, v in values.items()}
        error = max(abs(s - target[n]) for n, s in shares(trial).items())
        if error < best_error - 1e-12:
            best, best_error = trial, error
        if best_error <= SHARE_TOLERANCE:
            break
    divisor = math.gcd(*best.values())
    return {n: w // divisor for n, w in best.items()}


def from_bandwidth(topology: Topology, nodes: list[int]) -> dict[int, int]:
    """Weights for ``nodes`` (those of them with memory) from their HMAT read bandwidth."""
    bandwidth: dict[int, float] = {}
    for node in nodes:
        found = topology.nodes.get(node)
        if found is None or not found.has_memory:
            continue
        access = found.access
        if access is None or not access.read_bandwidth_mbps:
            raise refusals.no_bandwidth("weights --set bandwidth", node)
        bandwidth[node] = access.read_bandwidth_mbps
    if not bandwidth:
        raise refusals.no_bandwidth("weights --set bandwidth", None)
    return small_ratio(bandwidth)


def parse_given(text: str, known: list[int] | None) -> dict[int, int]:
    """``0=5,2=2`` as {0: 5, 2: 2}; refused in one line when malformed or naming a node not
    in ``known`` (None: the syntax only, as a job spec is checked before the machine)."""
    out: dict[int, int] = {}
    for item in text.split(","):
        node_text, sep, weight_text = item.strip().partition("=")
        words = (node_text.strip(), weight_text.strip())
        if not sep or not all(w.isascii() and w.isdigit() for w in words):
            raise UsageError(
                f"weights --set {text}: {item.strip()!r} is not NODE=WEIGHT",
                "write bandwidth, or weights such as 0=5,2=2 (each 1-255)",
            )
        node, weight = int(words[0]), int(words[1])
        if not 1 <= weight <= MAX_WEIGHT:
            raise UsageError(
                f"weights --set {text}: weight {weight} for node {node} is outside 1-255",
                "the kernel keeps weights from 1 to 255",
            )
        out[node] = weight
    unknown = sorted(set(out) - set(known)) if known is not None else []
    if unknown:
        raise refusals.unknown("weights --set", "node", unknown, known or ())
    return out


def _supported(root: str) -> sysfs.Root:
    """The weights' file system; refused before Linux 6.9, ahead of anything else missing
    (no HMAT figure, an unknown node), since nothing else can help there."""
    fs = sysfs.Root(root)
    if not sysfs.has_weighted_interleave(fs):
        raise refusals.no_weighted_interleave(sysfs.kernel_release(fs))
    return fs


def current(root: str = "/") -> tuple[bool | None, dict[int, int]]:
    """The kernel's auto flag (None before 6.16) and weights; refused before Linux 6.9."""
    fs = _supported(root)
    return sysfs.interleave_auto(fs), sysfs.interleave_weights(fs)


def nodes(root: str = "/") -> list[int]:
    """The nodes the kernel keeps a weight for; refused before Linux 6.9."""
    return sysfs.interleave_nodes(_supported(root))


def write(new: Mapping[int, int], root: str = "/") -> tuple[dict[int, int], dict[int, int]]:
    """Write the weights of ``new``'s nodes, all or none; the weights before and after.

    A node the kernel refuses undoes the ones already written (and ``auto``, which the
    kernel turns off at the first write), so a failed write leaves the weights as they were.
    """
    fs = sysfs.Root(root)
    auto, old = current(root)
    if not sysfs.interleave_writable(fs, sorted(new)):
        raise refusals.weights_need_root()
    written: list[int] = []
    try:
        for node, weight in new.items():
            sysfs.write_interleave_weight(fs, node, weight)
            written.append(node)
    except OSError as err:
        _undo(fs, written, old, auto)
        failed = next(n for n in new if n not in written)
        name = errno.errorcode.get(err.errno or 0, str(err))
        raise refusals.weight_refused(failed, new[failed], name) from None
    return old, {**old, **new}


def reset(root: str = "/") -> tuple[dict[int, int], dict[int, int]]:
    """Back to the kernel's own weights: ``auto`` where it has that, else 1 on every node."""
    fs = sysfs.Root(root)
    auto, old = current(root)
    if auto is None:
        return write(dict.fromkeys(old, 1), root)
    if not sysfs.interleave_writable(fs, [], auto=True):
        raise refusals.weights_need_root()
    try:
        sysfs.write_interleave_auto(fs)
    except OSError as err:
        raise refusals.weight_refused(None, None, errno.errorcode.get(err.errno or 0, "")) from None
    return old, sysfs.interleave_weights(fs)


def _undo(fs: sysfs.Root, written: list[int], old: Mapping[int, int], auto: bool | None) -> None:
    for node in written:
        if node in old:
            sysfs.write_interleave_weight(fs, node, old[node])
    if auto:
        sysfs.write_interleave_auto(fs)


def wanted(value: str, topology: Topology, root: str = "/") -> dict[int, int]:
    """The weights ``bandwidth`` or ``N=W,...`` asks for on this machine; refused before
    Linux 6.9 first, whatever else is missing (no HMAT figures, unknown nodes)."""
    known = nodes(root)
    return from_bandwidth(topology, known) if value == "bandwidth" else parse_given(value, known)


def wanted_on(value: str, topology: Topology) -> dict[int, int]:
    """:func:`wanted` from a topology alone (a snapshot too), as ``numarun plan`` shows it:
    the nodes are those the topology has weights for; refused before Linux 6.9."""
    found = topology.weighted_interleave
    if found is None:
        raise refusals.no_weighted_interleave(topology.identity.kernel)
    known = sorted(found.weights)
    return from_bandwidth(topology, known) if value == "bandwidth" else parse_given(value, known)


def writable(nodes: list[int], root: str = "/") -> bool:
    """Whether this process may write these nodes' weights (root may)."""
    return sysfs.interleave_writable(sysfs.Root(root), nodes)


def applied(
    value: str, topology: Topology, root: str = "/"
) -> contextlib.AbstractContextManager[dict[int, int]]:
    """The weights ``value`` asks for, in force while the block runs; restored after it.

    A job's ``weights = "bandwidth"``: refused (not root, no weighted interleave, no HMAT)
    on entering, before anything starts. On leaving, the nodes written get their previous
    weights back, and ``auto`` is turned on again where it was on.
    """
    return applied_weights(wanted(value, topology, root), root)


@contextlib.contextmanager
def applied_weights(asked: Mapping[int, int], root: str = "/") -> Iterator[dict[int, int]]:
    """:func:`applied` for weights already worked out (node -> weight): what the
    supervisor that ``numarun run`` hands its job to uses, without the topology."""
    auto, before = current(root)
    write(asked, root)
    try:
        yield dict(asked)
    finally:
        fs = sysfs.Root(root)
        for node in asked:
            if node in before:
                sysfs.write_interleave_weight(fs, node, before[node])
        if auto:
            sysfs.write_interleave_auto(fs)
