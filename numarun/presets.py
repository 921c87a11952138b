"""Named policy presets: small TOML files that say how a kind of workload should be placed.

A preset gives a memory policy mode and, optionally, defaults for a job spec's placement keys.
Presets are looked up by name along a search path, first match wins:

1. each directory in ``$NUMARUN_POLICY_PATH`` (colon-separated), in order;
2. ``$XDG_CONFIG_HOME/numarun/policies/`` (``~/.config/numarun/policies/`` by default);
3. ``/etc/numarun/policies/``;
4. the presets shipped with numarun (the ``numarun.policies`` package, ``policies/`` in the
   source tree).

So a user can shadow a shipped preset (``bind``, ``database``, ...) with their own file of
the same name, and a site can do the same in ``/etc``. A preset file ``NAME.toml`` holds::

    description = "one line for `numarun policies`"
    reason = "why this workload wants this placement"      # optional
    mode = "interleave"           # a memory policy mode (required)
    memory_nodes = "all"          # optional: "local", "all", "local+cpuless" or a node spec
    smt = "allow"                 # optional defaults for the job spec's keys of that name
    workers = "per-node"
    cpus_per_worker = "all"

This module is on the prefix launcher's path (``numarun --policy NAME -- cmd``), so it
imports nothing heavier than :mod:`tomllib`: no pydantic, no typer. It also holds the TOML
reading helpers that :mod:`numarun.spec` shares: syntax errors with line and column, and a
small scan of the text that finds the line of a key for error messages.
"""

from __future__ import annotations

import os
import re
import sys

from numarun import mempolicy as _mempolicy
from numarun.errors import SpecError
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: keep the prefix launcher's imports small
    from collections.abc import Iterator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_PATH = "NUMARUN_POLICY_PATH"
SYSTEM_DIR = "/etc/numarun/policies"

#: Memory policy modes a preset (or a job spec's ``policy``) may name, and their aliases:
#: numarun.mempolicy's, whose import is cheap (ctypes loads on the first system call).
MODES = tuple(_mempolicy.MODES)
MODE_ALIASES = _mempolicy.MODE_ALIASES
SMT_CHOICES = ("avoid", "allow")
MEMORY_NODE_WORDS = ("local", "all", "local+cpuless")
_KEYS = ("description", "reason", "mode", "memory_nodes", "smt", "workers", "cpus_per_worker")


def canonical_mode(name: str) -> str | None:
    """The canonical mode for a spelling (``membind`` -> ``bind``), or None if it is none."""
    try:
        return _mempolicy.canonical_mode(name)
    except ValueError:
        return None


# --- reading TOML with useful errors ------------------------------------------------------


class TomlDoc:
    """A parsed TOML file with its text, so that errors can point at the line of a key."""

    __slots__ = ("data", "lines", "path")

    def __init__(self, path: str, data: dict[str, object], lines: dict[tuple[object, ...], int]):
        self.path = path
        self.data = data
        self.lines = lines

    def line_of(self, loc: tuple[object, ...]) -> int | None:
        """The line of the key at ``loc`` (or of its nearest enclosing key or table)."""
        for end in range(len(loc), 0, -1):
            found = self.lines.get(tuple(loc[:end]))
            if found is not None:
                return found
        return None

    def where(self, loc: tuple[object, ...]) -> str:
        """``path:line`` for messages (just the path when the line is unknown)."""
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line is not None else self.path


def read_toml(path: str | os.PathLike[str], *, what: str = "job spec") -> TomlDoc:
    """Read and parse a TOML file; a missing file or bad syntax is a one-line SpecError."""
    shown = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise SpecError(f"{what} {shown} does not exist", "check the path") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{shown}: not UTF-8 text ({err.reason})", "save it as UTF-8") from None
    except OSError as err:
        raise SpecError(f"cannot read {what} {shown}: {err.strerror}", "check the path") from None
    return parse_toml(text, shown)


def parse_toml(text: str, path: str) -> TomlDoc:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line, column, problem = _syntax_position(str(err), text)
        raise SpecError(
            f"{path}:{line}:{column}: TOML syntax error: {problem}",
            f"fix the TOML at line {line}, column {column}",
        ) from None
    return TomlDoc(path, data, scan_key_lines(text))


_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_position(message: str, text: str) -> tuple[int, int, str]:
    """Line, column and the bare problem from a tomllib message (1-based, like editors)."""
    found = _POSITION.search(message)
    if found:
        return int(found.group(1)), int(found.group(2)), message[: found.start()].lower()
    # tomllib says "at end of document" for an unterminated value: point past the last text.
    lines = text.rstrip("\n").split("\n")
    problem = _AT_END.sub("", message).lower()
    return len(lines), len(lines[-1]) + 1, f"{problem} (at end of file)"


_HEADER = re.compile(r"^\s*(\[\[|\[)\s*([^\[\]]+?)\s*(\]\]|\])\s*(#.*)?$")
_KEY = r"""(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)"""  # a bare or quoted key
_KEY_LINE = re.compile(rf"^\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")
_KEY_PART = re.compile(rf"\s*({_KEY})\s*")


def _key_parts(dotted: str) -> list[str]:
    return [p.strip("\"'") for p in _KEY_PART.findall(dotted)]


def scan_key_lines(text: str) -> dict[tuple[object, ...], int]:
    """Where each key is defined: ``("process", 1, "policy") -> 14`` (1-based lines).

    Not a TOML parser: it runs only on text that :mod:`tomllib` accepted, and only has to be
    right for headers and ``key =`` lines, which is what error messages point at. Lines
    inside multi-line strings are skipped.
    """
    lines: dict[tuple[object, ...], int] = {}
    arrays: dict[tuple[object, ...], int] = {}  # array-of-tables path -> its last index
    table: tuple[object, ...] = ()
    in_string: str | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        if in_string is not None:
            if raw.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _HEADER.match(raw)
        if header:
            parts = _key_parts(header.group(2))
            if header.group(1) == "[[":
                # A new element of an array of tables: index the parents, count this one.
                path = [*_indexed(parts[:-1], arrays), parts[-1]]
                index = arrays.get(tuple(path), -1) + 1
                arrays[tuple(path)] = index
                path = [*path, index]
            else:
                path = _indexed(parts, arrays)
            table = tuple(path)
            lines.setdefault(table, number)
            continue
        key = _KEY_LINE.match(raw)
        if key:
            lines.setdefault((*table, *_key_parts(key.group(1))), number)
        for quote in ('"""', "'''"):
            if raw.count(quote) % 2 == 1:
                in_string = quote
                break
    return lines


def _indexed(parts: list[str], arrays: dict[tuple[object, ...], int]) -> list[object]:
    """``[process.backoff]`` belongs to the last ``[[process]]``: insert that index."""
    out: list[object] = []
    for part in parts:
        out.append(part)
        index = arrays.get(tuple(out))
        if index is not None:
            out.append(index)
    return out


# --- presets ------------------------------------------------------------------------------


class Preset(Value):
    """One preset file, validated."""

    name: str
    path: str
    source: str
    mode: str
    description: str = ""
    reason: str = ""
    memory_nodes: str | None = None
    smt: str | None = None
    workers: str | int | None = None
    cpus_per_worker: str | int | None = None

    def defaults(self) -> dict[str, object]:
        """The job-spec keys this preset sets (besides the mode), for a process group."""
        out: dict[str, object] = {}
        for key in ("memory_nodes", "smt", "workers", "cpus_per_worker"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def __repr__(self) -> str:
        return f"Preset({self.name!r}, mode={self.mode!r}, path={self.path!r})"


def search_path() -> list[tuple[str, str]]:
    """The preset directories in lookup order, each with a label saying where it came from."""
    out: list[tuple[str, str]] = []
    for entry in os.environ.get(ENV_PATH, "").split(":"):
        if entry:
            out.append((os.path.expanduser(entry), f"${ENV_PATH}"))
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    out.append((os.path.join(config, "numarun", "policies"), "user"))
    out.append((SYSTEM_DIR, "system"))
    out.append((shipped_dir(), "shipped"))
    return out


def shipped_dir() -> str:
    """Where the presets that come with numarun live (the ``numarun.policies`` package)."""
    import importlib.util

    # find_spec rather than import: the editable install maps the package as a namespace,
    # which has no __file__; both kinds list their directory in submodule_search_locations.
    spec = importlib.util.find_spec("numarun.policies")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isdir(location):
            return os.path.abspath(location)
    # A source checkout on sys.path (pip's "compat" editable mode, PYTHONPATH=.) does not
    # apply pyproject's package-dir mapping: the presets are then beside the package.
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "policies")


def _files(directory: str) -> Iterator[tuple[str, str]]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:  # absent or unreadable: a search-path entry that simply has nothing
        return
    for entry in names:
        if entry.endswith(".toml") and not entry.startswith("."):
            yield entry[: -len(".toml")], os.path.join(directory, entry)


def find_preset(name: str) -> Preset | None:
    """The first preset called ``name`` along the search path, or None."""
    if not _valid_name(name):
        return None
    for directory, source in search_path():
        path = os.path.join(directory, f"{name}.toml")
        if os.path.isfile(path):
            return load_preset(path, source=source)
    return None


def preset_names() -> list[str]:
    """Every preset name on the search path (for suggestions), sorted."""
    return sorted({name for directory, _ in search_path() for name, _ in _files(directory)})


def list_presets() -> list[tuple[Preset, list[str]]]:
    """Every preset in lookup order of names, each with the paths it shadows."""
    found: dict[str, tuple[Preset, list[str]]] = {}
    for directory, source in search_path():
        for name, path in _files(directory):
            if name in found:
                found[name][1].append(path)
            else:
                found[name] = (load_preset(path, source=source), [])
    return [found[name] for name in sorted(found)]


def _valid_name(name: str) -> bool:
    # A preset name is a file name, never a path: "../x" must not read outside the search path.
    return bool(name) and "/" not in name and not name.startswith(".")


def load_preset(path: str, *, source: str = "file") -> Preset:
    """Read and validate one preset file; problems are a SpecError naming file and line."""
    doc = read_toml(path, what="policy preset")
    data = doc.data
    name = os.path.basename(path)[: -len(".toml")] if path.endswith(".toml") else path

    def fail(key: str, problem: str, fix: str) -> SpecError:
        return SpecError(f"{doc.where((key,))}: {key}: {problem}", fix)

    for key in data:
        if key not in _KEYS:
            from difflib import get_close_matches

            close = get_close_matches(key, _KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"keys are {', '.join(_KEYS)}"
            raise fail(key, f"unknown key '{key}'", hint)
    for key in ("description", "reason", "mode", "memory_nodes", "smt"):
        if key in data and not isinstance(data[key], str):
            raise fail(
                key, f"must be a string, not {_toml_type(data[key])}", f'write {key} = "..."'
            )
    if "mode" not in data:
        raise SpecError(
            f"{path}: missing key 'mode'", f'add mode = "bind" (or one of {", ".join(MODES)})'
        )
    mode = canonical_mode(str(data["mode"]))
    if mode is None:
        raise fail("mode", f"unknown memory policy mode {data['mode']!r}", _mode_hint(data["mode"]))
    smt = data.get("smt")
    if smt is not None and smt not in SMT_CHOICES:
        raise fail("smt", f'must be "avoid" or "allow", not {smt!r}', 'write smt = "avoid"')
    for key in ("workers", "cpus_per_worker"):
        value = data.get(key)
        if value is not None and not _count_or_word(value, key):
            raise fail(key, f"invalid value {value!r}", _COUNT_HINTS[key])
    return Preset(
        name=name,
        path=path,
        source=source,
        mode=mode,
        description=str(data.get("description", "")),
        reason=str(data.get("reason", "")).strip(),
        memory_nodes=data.get("memory_nodes"),  # type: ignore[arg-type]  # checked above
        smt=smt,
        workers=data.get("workers"),  # type: ignore[arg-type]
        cpus_per_worker=data.get("cpus_per_worker"),  # type: ignore[arg-type]
    )


_COUNT_HINTS = {
    "workers": 'write workers = "per-node", "per-socket" or a count such as 4',
    "cpus_per_worker": 'write cpus_per_worker = "all" or a count such as 4',
}


def _count_or_word(value: object, key: str) -> bool:
    words = ("per-node", "per-socket") if key == "workers" else ("all",)
    if isinstance(value, bool):
        return False
    return (isinstance(value, int) and value > 0) or value in words


def _mode_hint(given: object) -> str:
    from difflib import get_close_matches

    close = get_close_matches(str(given).lower(), [*MODES, *MODE_ALIASES], n=1)
    return f"did you mean '{close[0]}'?" if close else f"modes are {', '.join(MODES)}"


def _toml_type(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
