"""Immutable records for numarun's models, and their JSON, from one definition.

The topology and the plan are read on the prefix launcher's path (``numarun --per-rank``
plans every rank of the host before it execs), where start-up time is part of the product:
importing :mod:`dataclasses` costs 10-15 ms here (it pulls in ``inspect``, ``ast`` and
``re``), pydantic far more. A :class:`Value` subclass declares its fields as annotations, as
a dataclass would, optionally with defaults; instances are built by keyword, are immutable,
and compare, hash and print by their fields. Type checkers see it as a frozen, keyword-only
dataclass (:pep:`681`), so every construction is still checked.

The same annotations are the JSON schema: :func:`encode` writes a record as JSON-ready
data and :func:`decode` reads it back, checking every value against its field's type and
naming the first bad one (``nodes[2].cpus: expected a list of integers``). The types a
field may have are ``int``, ``float``, ``str``, ``bool``, ``X | None``, ``frozenset[X]``,
``list[X]``, ``tuple[X, ...]``, ``dict[K, V]`` and another record class; a
``dict[int, Record]`` is written as a list of records keyed by the record's first field
(``nodes: dict[int, Node]`` is a list of node objects). A field named after a Python
keyword takes a trailing underscore, which its JSON key drops (``class_`` is ``"class"``,
as PEP 8 spells such names). A class may add a :class:`Layout`
(``_json``) for the key order, keys computed from the record (``has_cpus``), and fields
written only when they differ from their default. Annotations are parsed on the first
encode or decode of a class, never on import.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs ms at start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

    from typing_extensions import dataclass_transform  # typing's own from Python 3.11

    Computed = Callable[[Any, Any], object]  # (record, the record being encoded) -> value
    Spec = tuple[Any, ...]
else:

    def dataclass_transform(**_options: object) -> object:
        return lambda cls: cls


_classes: dict[tuple[str, str], type] = {}


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Value:
    """Base of immutable keyword-built records; fields are the class's annotations."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, object]] = {}
    _copies: ClassVar[dict[str, str]] = {}  # field -> the field whose value it defaults to
    _json: ClassVar[Layout | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = [
            name
            # not inspect.get_annotations: importing inspect is what this module avoids
            for name, kind in cls.__dict__.get("__annotations__", {}).items()  # noqa: RUF063
            if "ClassVar" not in str(kind)
        ]
        cls._fields = (*cls._fields, *(n for n in own if n not in cls._fields))
        given = {n: cls.__dict__[n] for n in own if n in cls.__dict__}
        copies = {n: d.field for n, d in given.items() if isinstance(d, SameAs)}
        cls._defaults = {
            **{n: d for n, d in cls._defaults.items() if n not in copies},
            **{n: d for n, d in given.items() if n not in copies},
        }
        cls._copies = {**{n: f for n, f in cls._copies.items() if n not in given}, **copies}
        _classes[cls.__module__, cls.__name__] = cls  # for field types naming a local class

    def __init__(self, **fields: Any) -> None:
        for name in self._fields:
            if name in fields:
                value = fields.pop(name)
            elif name in self._defaults:
                value = self._defaults[name]
            elif name in self._copies:
                value = getattr(self, self._copies[name])
            else:
                raise TypeError(f"{type(self).__name__}() needs field {name!r}")
            object.__setattr__(self, name, value)
        if fields:
            raise TypeError(f"{type(self).__name__} has no field {sorted(fields)[0]!r}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, n) == getattr(other, n) for n in self._fields
        )

    def __hash__(self) -> int:
        # Equal records hash alike: dicts and lists (mutable, unhashable) by their contents.
        # (Not repr(): a frozenset's repr may list equal elements in different orders.)
        return hash(tuple(_hashable(getattr(self, n)) for n in self._fields))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({inner})"

    def replace(self, **changes: Any) -> Any:
        """A copy with the given fields changed (:func:`dataclasses.replace`)."""
        return type(self)(
            **{n: getattr(self, n) for n in self._fields if n not in changes}, **changes
        )


def _hashable(value: object) -> object:
    if isinstance(value, dict):
        return frozenset((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, (list, set)):
        return (type(value).__name__, *map(_hashable, value))
    return value


class SameAs(Value):
    """A field default that is the value of an earlier field (see :func:`same_as`)."""

    field: str


def same_as(field: str) -> Any:
    """Default a field to the value of the earlier field ``field`` of the same record.

    ``cpuset_cpus: frozenset[int] = same_as("cpus")``: records built (or snapshots saved)
    before the field existed get the older field's value.
    """
    return SameAs(field=field)


class Layout(Value):
    """How a record is written as JSON, beyond its fields in declaration order."""

    order: tuple[str, ...] = ()  # keys to write first, in this order (fields or computed)
    computed: dict[str, Computed] = {}  # noqa: RUF012 - key -> fn(record, root), never read
    omit_default: frozenset[str] = frozenset()  # fields left out while they hold their default


def layout(order: str = "", *, omit_default: str = "", **computed: Computed) -> Layout:
    """A :class:`Layout` from space-separated key names and computed keys."""
    return Layout(
        order=tuple(order.split()), computed=computed, omit_default=frozenset(omit_default.split())
    )


class DecodeError(ValueError):
    """JSON data that does not fit a record: ``path`` names the value, ``expected`` its type."""

    def __init__(self, path: str, expected: str) -> None:
        self.path = path or "top level"
        self.expected = expected
        super().__init__(f"{self.path}: {expected}")


# --- types: annotation text -> spec -----------------------------------------------------
#
# A spec is a tuple: ("int",), ("float",), ("str",), ("bool",), ("any",), ("opt", spec),
# ("set" | "list" | "tuple", spec), ("dict", key spec, value spec), ("record", class).

_SCALARS = {"int": ("int",), "float": ("float",), "str": ("str",), "bool": ("bool",)}
_SCALARS.update(object=("any",), Any=("any",), Computed=("any",))
_CONTAINERS = {"frozenset": "set", "list": "list", "tuple": "tuple", "dict": "dict"}
_SCALAR_KINDS = frozenset({"int", "float", "str", "bool", "any"})
_schemas: dict[type, tuple[tuple[str, Spec], ...]] = {}


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    word = ""
    for ch in text.replace("...", "…"):
        if ch.isalnum() or ch in "_.":
            word += ch
            continue
        if word:
            out.append(word)
            word = ""
        if not ch.isspace():
            out.append(ch)
    return [*out, word] if word else out


def _parse(tokens: list[str], at: int, names: dict[str, Any]) -> tuple[Spec | None, int]:
    """One union type from ``tokens[at:]``; its spec (None for ``None``) and the next index."""
    choices: list[Spec | None] = []
    while True:
        name = tokens[at]
        at += 1
        args: list[Spec | None] = []
        if at < len(tokens) and tokens[at] == "[":
            while tokens[at] in "[,":
                if tokens[at + 1] == "…":
                    at += 2
                    continue
                arg, at = _parse(tokens, at + 1, names)
                args.append(arg)
            at += 1  # the "]"
        choices.append(_named(name, args, names))
        if at >= len(tokens) or tokens[at] != "|":
            break
        at += 1
    real = [c for c in choices if c is not None]
    if len(real) != 1:
        raise TypeError(f"unsupported field type {' | '.join(map(str, choices))}")
    return (("opt", real[0]) if len(real) < len(choices) else real[0]), at


def _named(name: str, args: list[Spec | None], names: dict[str, Any]) -> Spec | None:
    if name == "None":
        return None
    if name in _SCALARS:
        return _SCALARS[name]
    if name in _CONTAINERS:
        return (_CONTAINERS[name], *args)
    found = names.get(name)
    if isinstance(found, type) and issubclass(found, Value):
        return ("record", found)
    raise TypeError(f"field type {name} is not one a record can hold")


def schema(cls: type[Value]) -> tuple[tuple[str, Spec], ...]:
    """``(field, spec)`` for each field of ``cls``, parsed from its annotations once."""
    found = _schemas.get(cls)
    if found is None:
        names = {n: c for (m, n), c in _classes.items() if m == cls.__module__}
        names.update(vars(sys.modules[cls.__module__]))
        annotations: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            annotations.update(klass.__dict__.get("__annotations__", {}))  # noqa: RUF063
        specs = []
        for name in cls._fields:
            spec, _ = _parse(_tokens(str(annotations[name])), 0, names)
            specs.append((name, spec if spec is not None else ("any",)))
        found = _schemas[cls] = tuple(specs)
    return found


# --- writing --------------------------------------------------------------------------


def encode(record: Value) -> dict[str, Any]:
    """The record as JSON-ready data (lists for sets, string keys, nested objects)."""
    return _encode_record(record, record)


def _encode_record(record: Value, root: Value) -> dict[str, Any]:
    cls = type(record)
    shape = cls._json or _PLAIN
    values = dict(schema(cls))
    out: dict[str, Any] = {}
    for key in (*shape.order, *(f for f in cls._fields if f not in shape.order)):
        if key in shape.computed:
            out[key] = _encode(shape.computed[key](record, root), ("any",), root)
            continue
        value = getattr(record, key)
        if key in shape.omit_default and value == cls._defaults.get(key):
            continue
        out[json_key(key)] = _encode(value, values[key], root)
    return out


def _encode(value: Any, spec: Spec, root: Value) -> Any:
    kind = spec[0]
    if value is None or kind in ("int", "float", "str", "bool"):
        return value
    if kind == "opt":
        return _encode(value, spec[1], root)
    if kind == "any":
        return _encode(value, _guess(value), root)
    if kind == "record":
        return _encode_record(value, root)
    if kind == "set":
        return sorted(_encode(v, spec[1], root) for v in value)
    if kind in ("list", "tuple"):
        return [_encode(v, spec[1], root) for v in value]
    if spec[2][0] == "record":  # dict[K, Record]: the records, in the dict's order
        return [_encode_record(v, root) for v in value.values()]
    return {str(k): _encode(v, spec[2], root) for k, v in value.items()}


def _guess(value: object) -> Spec:
    """The spec of a computed value, from what it is."""
    if isinstance(value, Value):
        return ("record", type(value))
    if isinstance(value, (set, frozenset)):
        return ("set", ("any",))
    if isinstance(value, (list, tuple)):
        return ("list", ("any",))
    if isinstance(value, dict):
        return ("dict", ("any",), ("any",))
    return ("int",)  # a scalar: written as it is


_PLAIN = Layout()


def json_key(field: str) -> str:
    """The JSON key of a field: ``class_`` (a Python keyword, PEP 8's way) is ``class``."""
    return field[:-1] if field.endswith("_") and not field.endswith("__") else field


# --- reading ----------------------------------------------------------------------------


def decode(cls: type[Value], data: object, path: str = "") -> Any:
    """A ``cls`` record from :func:`encode` output; :class:`DecodeError` names a bad value.

    Keys the record does not have (computed ones, those of a newer version) are ignored; a
    missing field takes its default, or is an error when it has none.
    """
    return _decode_record(cls, data, path)


def _decode_record(cls: type[Value], data: object, path: str) -> Value:
    if not isinstance(data, dict):
        raise DecodeError(path, "expected an object")
    fields: dict[str, Any] = {}
    for name, spec in schema(cls):
        key = json_key(name)
        if key in data:
            fields[name] = _decode(data[key], spec, f"{path}.{key}" if path else key)
        elif name not in cls._defaults and name not in cls._copies:
            raise DecodeError(f"{path}.{key}" if path else key, "missing")
    return cls(**fields)


def _decode(data: object, spec: Spec, path: str) -> Any:
    kind = spec[0]
    if kind == "opt":
        if data is None:
            return None
        if spec[1][0] in _SCALAR_KINDS:  # "expected an integer or null", not "an integer"
            return _scalar(data, spec[1], path, spec)
        return _decode(data, spec[1], path)
    if kind == "record":
        return _decode_record(spec[1], data, path)
    if kind in ("set", "list", "tuple"):
        if not isinstance(data, list):
            raise DecodeError(path, f"expected {describe(spec)}")
        if spec[1][0] in _SCALAR_KINDS:  # a bad one is reported as the list's fault
            items = [_scalar(v, spec[1], path, spec) for v in data]
        else:
            items = [_decode(v, spec[1], f"{path}[{i}]") for i, v in enumerate(data)]
        return frozenset(items) if kind == "set" else tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return _decode_dict(data, spec, path)
    return _scalar(data, spec, path, spec)


def _scalar(data: object, spec: Spec, path: str, whole: Spec) -> Any:
    kind = spec[0]
    ok = (
        kind == "any"
        or (kind == "str" and isinstance(data, str))
        or (kind == "bool" and isinstance(data, bool))
        or (kind == "int" and isinstance(data, int) and not isinstance(data, bool))
        or (kind == "float" and isinstance(data, (int, float)) and not isinstance(data, bool))
    )
    if not ok:
        raise DecodeError(path, f"expected {describe(whole)}")
    return data


def _decode_dict(data: object, spec: Spec, path: str) -> dict[Any, Any]:
    key_spec, value_spec = spec[1], spec[2]
    if value_spec[0] == "record":  # written as a list of records, keyed by their first field
        if not isinstance(data, list):
            raise DecodeError(path, f"expected {describe(spec)}")
        out: dict[Any, Any] = {}
        for i, item in enumerate(data):
            record = _decode_record(value_spec[1], item, f"{path}[{i}]")
            first = getattr(record, record._fields[0])
            if first in out:
                raise DecodeError(f"{path}[{i}]", f"{record._fields[0]} {first} appears twice")
            out[first] = record
        return dict(sorted(out.items()))
    if not isinstance(data, dict):
        raise DecodeError(path, f"expected {describe(spec)}")
    decoded: dict[Any, Any] = {}
    for raw_key, raw_value in data.items():
        key: Any = raw_key
        if key_spec[0] == "int":
            # ASCII digits only: int() would also take "٣" or " 3"
            if not (raw_key.isascii() and raw_key.isdigit() and len(raw_key) <= 18):
                raise DecodeError(path, f"expected {describe(spec)}")
            key = int(raw_key)
        decoded[key] = _decode(raw_value, value_spec, f"{path}.{raw_key}")
    return decoded


def describe(spec: Spec, *, plural: bool = False) -> str:
    """What a value of ``spec`` is, for messages: ``a list of integers``."""
    kind = spec[0]
    words = {
        "int": ("an integer", "integers"),
        "float": ("a number", "numbers"),
        "str": ("a string", "strings"),
        "bool": ("true or false", "booleans"),
        "any": ("a value", "values"),
        "record": ("an object", "objects"),
    }
    if kind in words:
        return words[kind][plural]
    if kind == "opt":
        return describe(spec[1], plural=plural) + (" or nulls" if plural else " or null")
    if kind == "dict" and spec[2][0] != "record":
        text = f"object{'s' if plural else ''} of {describe(spec[2], plural=True)}"
        keys = " by number" if spec[1][0] == "int" else ""
        return (text if plural else f"an {text}") + keys
    inner = ("record",) if kind == "dict" else spec[1]
    return ("lists" if plural else "a list") + f" of {describe(inner, plural=True)}"
