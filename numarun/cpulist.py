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

TYPE_CHECKING = False  # collections.abc imports collections: ~1.4 ms of every start-up
if TYPE_CHECKING:
    from collections.abc import Iterable

# Bounds on ids read from text, so that no input can make a parser build a huge set: the
# kernel's NR_CPUS is at most 8192 and MAX_NUMNODES 1024.
MAX_CPUS = 1 << 16
MAX_NODES = 1 << 10
_HEX = frozenset("0123456789abcdefABCDEF")
_SAME_IN_OCTAL = ("", "1", "2", "3", "4", "5", "6", "7")  # what "0N" is in octal and decimal


def _in(part: str, whole: str) -> str:
    return repr(part) if part == whole else f"{part!r} in list {whole!r}"


def _number(text: str, whole: str, *, c_numbers: bool) -> int:
    """One id: ASCII decimal digits (``int`` alone would take ``"٣"``, ``"1_0"`` or ``"+1"``).

    With ``c_numbers`` it is read as libnuma reads numactl's node and CPU numbers (C's
    ``strtoul`` with base 0): ``0x1f`` is hexadecimal; a leading ``0`` means octal there,
    so a zero-padded number is taken only where octal and decimal agree (``07``), and
    refused where they differ (``010`` is 8 to numactl, 10 to a reader).
    """
    digits = text.strip()
    if c_numbers and digits[:2] in ("0x", "0X"):
        if 0 < len(digits) - 2 <= 12 and all(c in _HEX for c in digits[2:]):
            return int(digits[2:], 16)
        raise ValueError(f"{_in(digits, whole)} is not a hexadecimal number")
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"{_in(digits, whole)} is not a number (digits 0-9)")
    if len(digits) > 12:
        return 10**12  # beyond every limit: the caller's bound check names it
    if (
        c_numbers
        and len(digits) > 1
        and digits[0] == "0"
        and digits.lstrip("0") not in _SAME_IN_OCTAL
    ):
        raise ValueError(
            f"{_in(digits, whole)} has a leading 0, which numactl reads as octal"
            + (f" ({int(digits, 8)})" if set(digits) <= set("01234567") else "")
            + "; write it in decimal without the 0"
        )
    return int(digits)


def parse_list(text: str, *, limit: int = MAX_CPUS, c_numbers: bool = False) -> frozenset[int]:
    """Parse the kernel list format (``"0-3,8,16-31:2/4"``); an empty string is the empty set.

    Every id must be below ``limit`` (a :class:`ValueError` otherwise, before any set is
    built); ``c_numbers`` reads numbers as numactl does (see :func:`_number`).
    """
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
        if not lo_s.strip() or (dash and not hi_s.strip()):
            raise ValueError(f"{_in(part, text)} is not a number or range")
        lo = _number(lo_s, text, c_numbers=c_numbers)
        hi = _number(hi_s, text, c_numbers=c_numbers) if dash else lo
        if hi < lo:
            raise ValueError(f"range {_in(part, text)} is reversed")
        if hi >= limit:
            raise ValueError(
                f"{_in(part, text)} goes past {limit - 1}, the largest id numarun reads"
            )
        if not stride:
            out.update(range(lo, hi + 1))
            continue
        used_s, slash, group_s = stride.partition("/")
        try:
            used = _number(used_s, text, c_numbers=False)
            group = _number(group_s, text, c_numbers=False)
        except ValueError:
            raise ValueError(f"stride {_in(part, text)} is not 'used/group'") from None
        if not slash or used <= 0 or group <= 0 or used > group:
            raise ValueError(f"stride {_in(part, text)} needs 0 < used <= group")
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
    # int(x, 16) alone would take "f_f" and non-ASCII digits; a mask is ASCII hex words.
    if not all(c in _HEX for c in cleaned) or len(cleaned) > MAX_CPUS // 4:
        raise ValueError(f"{text.strip()!r} is not a hexadecimal mask")
    value = int(cleaned, 16)
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)


def format_mask(items: Iterable[int], width: int = 32) -> str:
    """Format a set as comma-separated 32-bit hex words, at least ``width`` bits wide."""
    value = 0
    for bit in items:
        value |= 1 << bit
    words = max(1, (max(value.bit_length(), width) + 31) // 32)
    return ",".join(f"{(value >> (32 * w)) & 0xFFFFFFFF:08x}" for w in reversed(range(words)))
