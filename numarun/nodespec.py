"""Node and CPU specs as numactl reads them: ``all``, ``1``, ``0-3``, ``0,2``, ``!1``, ``+0``.

Grammar (numactl(8), libnuma's ``numa_parse_nodestring``/``numa_parse_cpustring``)::

    spec   := "all" | ["!"] ["+"] list
    list   := the kernel list format: 0-3,8,10-31:2/4 (see numarun.cpulist), whose
              numbers are read as libnuma reads numactl's: ASCII digits, 0x1f in hex

* ``all`` is every node (CPU) this process may use: the cgroup/cpuset's allowed set.
* ``!LIST`` is ``all`` minus LIST ("all but"). numactl inverts over every configured id
  and then fails on ids the cpuset forbids; numarun inverts within the allowed set, so
  ``!1`` never names something the process may not use.
* ``+LIST`` counts within the allowed set: ``+0`` is the first allowed node (CPU), ``+1-2``
  the second and third. It is how a script says "the first node of my container" without
  knowing the host's numbering.

A node may also be named by a device on it, in numactl's words (``netdev:eth0``,
``pci:0000:3b:00.0``, ``block:nvme0n1``, ``file:/data`` for the disk holding it,
``ip:10.0.0.5`` for the interface holding that local address) and numarun's ``gpu:N``: the
spec keeps the name in ``device``, and :mod:`numarun.placement.resolve` finds its node.

Parsing is split from resolution so that syntax errors can be reported before any file
is read: :func:`parse_spec` checks the text; :func:`resolve` turns a parsed spec into ids
given the sets of a topology. Errors are :class:`~numarun.errors.NumarunError` with the
option's name in the message.
"""

from __future__ import annotations

from numarun import refusals
from numarun.cpulist import MAX_CPUS, MAX_NODES, parse_list
from numarun.errors import UsageError

#: Node names by device: numactl's (netdev:eth0, pci:0000:3b:00.0, ...) and gpu:N.
DEVICE_PREFIXES = ("netdev:", "pci:", "block:", "file:", "ip:", "gpu:")


class Spec:
    """A parsed node or CPU spec. ``items`` are ids, or positions when ``relative``."""

    __slots__ = ("device", "everything", "invert", "items", "relative", "text")
    text: str
    everything: bool
    invert: bool
    relative: bool
    items: frozenset[int]
    device: str | None  # "netdev:eth0", "gpu:3": the node is that device's, found later

    def __init__(
        self,
        text: str,
        *,
        everything: bool,
        invert: bool,
        relative: bool,
        items: frozenset[int],
        device: str | None = None,
    ) -> None:
        self.text = text
        self.everything = everything
        self.invert = invert
        self.relative = relative
        self.items = items
        self.device = device

    def __repr__(self) -> str:
        return f"Spec({self.text!r})"


def parse_spec(text: str, option: str = "--nodes", kind: str = "node") -> Spec:
    """Check the syntax of ``text``; :class:`~numarun.errors.UsageError` names ``option``."""
    raw = text.strip()
    body = raw
    if not body:
        raise UsageError(f"{option} needs a {kind} list", f"give e.g. {option} 0 or {option} 0-1")
    if body.lower() == "all":
        return Spec(raw, everything=True, invert=False, relative=False, items=frozenset())
    if kind == "node" and body.lower().startswith(DEVICE_PREFIXES):
        return _device_spec(raw, option)
    invert = body.startswith("!")
    if invert:
        body = body[1:]
    relative = body.startswith("+")
    if relative:
        body = body[1:]
    if body.lower() == "all" and not relative:
        # "!all" is the empty set: never what anyone means, and an empty policy is refused.
        raise UsageError(f"{option} {raw} names no {kind}s", f"give {kind} numbers")
    try:
        # Bounded, so that "0-99999999999999999999" is refused at once instead of filling
        # memory; hexadecimal because libnuma reads numactl's numbers with strtoul(s, 0).
        limit = MAX_NODES if kind == "node" else MAX_CPUS
        items = parse_list(body, limit=limit, c_numbers=True)
    except ValueError as err:
        raise UsageError(
            f"{option} {raw!r} is not a {kind} list: {err}",
            f"write {kind}s as numactl does: all, 1, 0-3, 0,2, !1 (all but 1), +0 (first allowed)",
        ) from None
    if not items:
        raise UsageError(f"{option} needs a {kind} list", f"give e.g. {option} 0")
    return Spec(raw, everything=False, invert=invert, relative=relative, items=items)


def _device_spec(raw: str, option: str) -> Spec:
    prefix, _, name = raw.partition(":")
    prefix = prefix.lower()
    if not name.strip():
        raise UsageError(
            f"{option} {raw}: {prefix}: needs a name", f"write e.g. {option} {_EXAMPLES[prefix]}"
        )
    if prefix == "gpu" and not (name.isascii() and name.isdigit()):
        raise UsageError(
            f"{option} {raw}: gpu: takes a GPU index (0, 1, ...)",
            "write e.g. gpu:0 (numarun topology lists the GPUs)",
        )
    return Spec(
        raw,
        everything=False,
        invert=False,
        relative=False,
        items=frozenset(),
        device=f"{prefix}:{name.strip()}",
    )


_EXAMPLES = {
    "netdev": "netdev:eth0",
    "pci": "pci:0000:3b:00.0",
    "block": "block:nvme0n1",
    "file": "file:/data",
    "ip": "ip:10.0.0.5",
    "gpu": "gpu:0",
}


def resolve(
    spec: Spec,
    *,
    existing: frozenset[int],
    allowed: frozenset[int],
    option: str = "--nodes",
    kind: str = "node",
) -> frozenset[int]:
    """The ids ``spec`` names, given the ``existing`` ids and the ``allowed`` ones.

    ``all`` and ``!`` work within ``allowed``; ``+N`` is the N-th (from 0) id of ``allowed``
    in ascending order. An id that does not exist raises
    :class:`~numarun.errors.UnknownResourceError` listing the valid ones; a ``+N`` beyond the
    allowed set raises :class:`~numarun.errors.NotAllowedError`. Explicit ids outside
    ``allowed`` are returned as they are: whether that is an error depends on the use, and
    the caller's message can say why (cgroup, offline, no memory).
    """
    usable = allowed & existing
    if spec.everything:
        return usable
    if spec.relative:
        ordered = sorted(usable)
        beyond = sorted(i for i in spec.items if i >= len(ordered))
        if beyond:
            raise refusals.past_allowed(option, spec.text, kind, beyond[0], ordered)
        named = frozenset(ordered[i] for i in spec.items)
    else:
        unknown = sorted(spec.items - existing)
        if unknown:
            raise refusals.unknown(option, kind, unknown, existing)
        named = spec.items
    return usable - named if spec.invert else named
