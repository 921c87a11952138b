"""JSON text as ``json.dumps(data, indent=1)`` writes it, without importing :mod:`json`.

``import json`` imports its decoder, which imports :mod:`re` and :mod:`enum`: several
milliseconds of a ``numarun topology --json`` or ``numarun placement --json`` that only
writes. This writer produces the same text, byte for byte (tests/test_jsontext.py holds it
to ``json.dumps``), for the data numarun writes: dicts, lists and tuples, strings, ints,
floats, booleans and None (keys that are not strings converted as json converts them).
Strings are escaped by the C function ``json`` itself uses (``_json.encode_basestring_ascii``).
"""

from __future__ import annotations

from _json import encode_basestring_ascii as _string

TYPE_CHECKING = False  # typing costs ms at start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

_INFINITY = float("inf")


def dumps(data: Any, indent: int | None = 1) -> str:
    """``json.dumps(data, indent=indent)``, for JSON-ready data (None: one line)."""
    out: list[str] = []
    _write(data, out, None if indent is None else "\n", " " * (indent or 0))
    return "".join(out)


def _float(value: float) -> str:
    if value != value:  # noqa: PLR0124 - NaN, as json writes it
        return "NaN"
    if value == _INFINITY:
        return "Infinity"
    if value == -_INFINITY:
        return "-Infinity"
    return float.__repr__(value)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _key(key: Any) -> str:
    """A dict key that is not a string, converted as json converts it."""
    if isinstance(key, (int, float)) or key is None:  # bools are ints
        text = _scalar(key)
        return _string(text)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _write(value: Any, out: list[str], newline: str | None, step: str) -> None:
    """Append ``value``'s text; ``newline`` is the current line break and indent (None:
    everything on one line, items separated by ", " as json does)."""
    if isinstance(value, dict):
        items: Any = value.items()
        opening, closing = "{", "}"
    elif isinstance(value, (list, tuple)):
        items = value
        opening, closing = "[", "]"
    else:
        out.append(_scalar(value))
        return
    if not value:
        out.append(opening + closing)
        return
    if newline is None:
        inner, first, then, last = None, "", ", ", ""
    else:
        inner = newline + step
        first, then, last = inner, "," + inner, newline
    out.append(opening)
    keyed = closing == "}"
    for n, entry in enumerate(items):
        out.append(then if n else first)
        if keyed:
            key, item = entry
            out.append(_string(key) if isinstance(key, str) else _key(key))
            out.append(": ")
        else:
            item = entry
        if isinstance(item, (dict, list, tuple)):
            _write(item, out, inner, step)
        else:
            out.append(_scalar(item))
    out.append(last)
    out.append(closing)
