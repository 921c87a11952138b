"""Immutable records for numarun's models: what :func:`dataclasses.dataclass` gives, cheaper.

The topology and the plan are read on the prefix launcher's path (``numarun --per-rank``
plans every rank of the host before it execs), where start-up time is part of the product:
importing :mod:`dataclasses` costs 10-15 ms here (it pulls in ``inspect``, ``ast`` and
``re``). A :class:`Value` subclass declares its fields as annotations, as a dataclass
would, optionally with defaults; instances are built by keyword, are immutable, and
compare, hash and print by their fields. Type checkers see it as a frozen, keyword-only
dataclass (:pep:`681`), so every construction is still checked.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ms at start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from typing_extensions import dataclass_transform  # typing's own from Python 3.11
else:

    def dataclass_transform(**_options: object) -> object:
        return lambda cls: cls


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Value:
    """Base of immutable keyword-built records; fields are the class's annotations."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, object]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = [
            name
            # not inspect.get_annotations: importing inspect is what this module avoids
            for name, kind in cls.__dict__.get("__annotations__", {}).items()  # noqa: RUF063
            if "ClassVar" not in str(kind)
        ]
        cls._fields = (*cls._fields, *(n for n in own if n not in cls._fields))
        cls._defaults = {**cls._defaults, **{n: cls.__dict__[n] for n in own if n in cls.__dict__}}

    def __init__(self, **fields: Any) -> None:
        for name in self._fields:
            if name in fields:
                value = fields.pop(name)
            elif name in self._defaults:
                value = self._defaults[name]
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
        return hash(tuple(repr(getattr(self, n)) for n in self._fields))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({inner})"
