"""Linux CPU and node lists: the list format and the hex mask format, both ways.

The kernel prints sets of CPUs or nodes in two shapes (see the kernel's
``Documentation/core-api/printk-formats`` and ``lib/bitmap.c``):

* the *list* format, ``0-3,8,10-31:2/4``: ranges, single numbers, and ranges with a
  stride ``A-B:used/group`` that takes the first ``used`` of every ``group`` numbers;
* the *mask* format, ``00000000,0000000f``: hexadecimal 32-bit words, most significant
  first, separated by commas (``cpumap``, ``Cpus_allowed``).

Every set numarun handles is a ``frozenset[int]``; this module is the only place that
turns one into text or back. Parsing errors raise :class:`ValueError` with the offending
text; callers that read files add the path.
"""

from __future__ import annotations

from collections.abc import Iterable


def parse_list(text: str) -> frozenset[int]:
    """Parse the kernel list format (``"0-3,8,16-31:2/4"``); an empty string is the empty set."""
    out: set[int] = set()
    # Some kernels pad sysfs files with a trailing NUL; it carries no meaning.
    text = text.replace("\x00", "").strip()
    if not text:
        return frozenset()
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise ValueError(f"empty item in list {text!r}")
        rng, _, stride = part.partition(":")
        lo_s, dash, hi_s = rng.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if dash else lo
        except ValueError:
            raise ValueError(f"{part!r} in list {text!r} is not a number or range") from None
        if lo < 0 or hi < lo:
            raise ValueError(f"range {part!r} in list {text!r} is reversed or negative")
        if not stride:
            out.update(range(lo, hi + 1))
            continue
        used_s, slash, group_s = stride.partition("/")
        try:
            used, group = int(used_s), int(group_s)
        except ValueError:
            raise ValueError(f"stride {part!r} in list {text!r} is not 'used/group'") from None
        if not slash or used <= 0 or group <= 0 or used > group:
            raise ValueError(f"stride {part!r} in list {text!r} needs 0 < used <= group")
        for start in range(lo, hi + 1, group):
            out.update(range(start, min(start + used, hi + 1)))
    return frozenset(out)


def format_list(items: Iterable[int]) -> str:
    """Format a set as the kernel's list format, ranges collapsed: ``{0,1,2,5}`` -> ``"0-2,5"``."""
    ordered = sorted(set(items))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_mask(text: str) -> frozenset[int]:
    """Parse the kernel mask format (``"00000000,0000000f"`` or ``"0xf"``)."""
    cleaned = text.replace("\x00", "").strip().replace(",", "")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    if not cleaned:
        return frozenset()
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a hexadecimal mask") from None
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)


def format_mask(items: Iterable[int], width: int = 32) -> str:
    """Format a set as comma-separated 32-bit hex words, at least ``width`` bits wide."""
    value = 0
    for bit in items:
        value |= 1 << bit
    words = max(1, (max(value.bit_length(), width) + 31) // 32)
    return ",".join(f"{(value >> (32 * w)) & 0xFFFFFFFF:08x}" for w in reversed(range(words)))
