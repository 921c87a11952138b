"""Job specs: a TOML file of process groups, validated with pydantic, errors with file and line.

A job spec is a list of ``[[process]]`` tables (see numarun-job(5) for every key)::

    [[process]]
    name = "cache"
    command = ["redis-server", "--port", "70{worker}"]
    workers = "per-node"
    smt = "avoid"
    policy = "bind"

An optional ``[defaults]`` table holds keys that every process group takes unless it sets
them itself (its ``env`` is merged key by key). :func:`load_spec` reads a file and returns a
:class:`JobSpec`; every problem is a :class:`~numarun.errors.SpecError` (exit 3) of one line:
``FILE:LINE: process[1].policy: what is wrong — how to fix it``. Process groups are counted
from 0, as in the plan's JSON.

The spec is machine-independent: node specs are checked for syntax here and resolved against a
topology by :mod:`numarun.plan`. Policy presets are resolved here (they are files, and the
planner stays pure).
"""

from __future__ import annotations

import os
import re
from difflib import get_close_matches
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from numarun import cpulist, presets
from numarun.errors import NumarunError, SpecError, UsageError
from numarun.supervisor import policy, watchpolicy
from numarun.supervisor.policy import PolicyError, Supervision
from numarun.supervisor.watchpolicy import Watch

#: Placeholders that arguments, env values, cwd and log paths may use.
PLACEHOLDERS = ("node", "worker", "cpus", "mem_nodes", "name", "gpu")
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_]\w*)\}")

# What to write instead, per key: the "fix" half of an error message.
HINTS: dict[str, str] = {
    "name": 'write name = "web" (letters, digits, ".", "_", "-")',
    "command": 'write command = ["prog", "--flag"] (a string only with shell = true)',
    "shell": "write shell = true or shell = false",
    "workers": 'write workers = "per-node", "per-socket", "per-gpu" or a count such as 4',
    "nodes": 'write a node spec such as "all", "0-3", "0,2", "!1", "+0" or "netdev:eth0"',
    "near": 'write near = "netdev:eth1", "gpu:0", "block:nvme0n1", "pci:BDF" or "file:PATH"',
    "cpus_per_worker": 'write cpus_per_worker = "all" or a count such as 4',
    "smt": 'write smt = "avoid" or smt = "allow"',
    "reserve_cpus": 'write a CPU list such as reserve_cpus = "0" or reserve_cpus = [0, 1]',
    "policy": "write a memory policy mode or a preset name (see numarun policies)",
    "memory_nodes": 'write "local", "all", "local+cpuless" or a node spec such as "0-1"',
    "env": 'write env = { NAME = "value" }',
    "cwd": 'write cwd = "/srv/{name}"',
    **policy.HINTS,  # restart, backoff, crash_loop, on_failure, stop_signal, stop_timeout
    "logs": 'write logs = "inherit" or a file path such as "logs/{name}-{worker}.log"',
    "stdin": 'write stdin = "null", "inherit" or a file path',
    "process": "add [[process]] tables, each with name and command (see man numarun-job)",
    "defaults": "write [defaults] with keys that every [[process]] takes",
    "weights": 'write weights = "bandwidth" or weights such as "0=5,2=2" (each 1-255)',
    **watchpolicy.HINTS,  # interval, threshold, remediate, migrate_rate_mbps, watch
}

_MISSING_HINTS = {
    "name": 'add name = "web"',
    "command": 'add command = ["prog", "--flag"]',
    "process": 'add a [[process]] table with name = "..." and command = [...]',
}


def _fail(key: str, problem: str, fix: str | None = None) -> PydanticCustomError:
    """An error that names the key it is about and carries its own fix."""
    # The problem travels in the context, not the template: it may hold braces ({wroker}).
    return PydanticCustomError(
        "numarun", "{problem}", {"problem": problem, "key": key, "fix": fix or HINTS.get(key, "")}
    )


def _check_placeholders(key: str, text: str) -> None:
    """A ``{wroker}`` that is a typo of a placeholder is an error; other braces are left be."""
    for found in _PLACEHOLDER.finditer(text):
        word = found.group(1)
        if word in PLACEHOLDERS:
            continue
        close = get_close_matches(word, PLACEHOLDERS, n=1, cutoff=0.6)
        if close:
            raise _fail(
                key,
                f"unknown placeholder {{{word}}}",
                f"did you mean {{{close[0]}}}? placeholders are "
                + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS),
            )


def _check_node_spec(key: str, text: str) -> None:
    # numarun.nodespec owns the numactl grammar; only its syntax check is wanted here.
    from numarun.nodespec import parse_spec

    try:
        parse_spec(text, option=key)
    except NumarunError as err:
        raise _fail(key, err.problem) from None


class ProcessSpec(BaseModel):
    """One ``[[process]]`` group. ``mode`` and ``preset`` are derived from ``policy``;
    ``supervision`` from the keys in :data:`numarun.supervisor.policy.KEYS`."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True
    )

    name: str
    shell: bool = False  # before command: command's validator reads it
    command: str | tuple[str, ...]
    workers: Literal["per-node", "per-socket", "per-gpu"] | int = "per-node"
    nodes: str = "all"
    near: str | None = None  # a device (netdev:eth1): every worker on its node
    cpus_per_worker: Literal["all"] | int = "all"
    smt: Literal["avoid", "allow"] = "allow"
    reserve_cpus: frozenset[int] = frozenset()
    policy: str = "default"
    memory_nodes: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    logs: str = "inherit"
    stdin: str = "null"
    # Derived, never written by users (the before-validators refuse them).
    mode: str = "default"
    preset: str | None = None
    supervision: Supervision = Supervision()

    @model_validator(mode="before")
    @classmethod
    def _supervision(cls, data: Any) -> Any:
        """Validate the supervision keys into one :class:`Supervision` record."""
        if not isinstance(data, dict):
            return data
        if "supervision" in data:
            raise _fail(
                "supervision",
                "unknown key 'supervision'",
                "write " + ", ".join(policy.KEYS) + " in the [[process]] table itself",
            )
        given = {key: data[key] for key in policy.KEYS if key in data}
        try:
            supervision = Supervision.from_dict(given)
        except PolicyError as err:
            raise _fail(".".join(err.path), err.problem, err.fix) from None
        rest = {key: value for key, value in data.items() if key not in policy.KEYS}
        return {**rest, "supervision": supervision}

    @model_validator(mode="before")
    @classmethod
    def _resolve_policy(cls, data: Any) -> Any:
        """Turn ``policy`` into a mode, and let a preset fill the keys the group leaves out."""
        if not isinstance(data, dict):
            return data
        for derived in ("mode", "preset"):
            if derived in data:
                raise _fail(
                    derived, f"unknown key '{derived}'", "name the policy with policy = ..."
                )
        policy = data.get("policy", "default")
        if not isinstance(policy, str):
            return data  # the field's own type check reports it
        # A mode name is always that mode (as in the prefix form's --policy); the shipped
        # presets named after modes only document them.
        mode = presets.canonical_mode(policy)
        if mode is not None:
            return {**data, "mode": mode}
        found = presets.find_preset(policy)
        if found is not None:
            return {**found.defaults(), **data, "mode": found.mode, "preset": found.name}
        known = [*presets.MODES, *presets.preset_names()]
        close = get_close_matches(policy, known, n=1)
        raise _fail(
            "policy",
            f"unknown policy {policy!r}",
            f"did you mean '{close[0]}'?"
            if close
            else f"use a mode ({', '.join(presets.MODES)}) or a preset (numarun policies)",
        )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", value):
            raise _fail("name", f"name {value!r} must be letters, digits, '.', '_' or '-'")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any, info: ValidationInfo) -> Any:
        shell = info.data.get("shell", False)
        if isinstance(value, str):
            if not shell:
                raise _fail(
                    "command",
                    "command is a string but shell is not true",
                    'write an argv list, command = ["prog", "arg"], or add shell = true',
                )
            if not value.strip():
                raise _fail("command", "command is empty")
            _check_placeholders("command", value)
            return value
        if isinstance(value, list):
            if not value:
                raise _fail("command", "command is an empty list")
            if shell:
                raise _fail(
                    "command",
                    "with shell = true the command is one string",
                    'write command = "prog arg | other" or drop shell = true',
                )
            for arg in value:
                if isinstance(arg, str):
                    _check_placeholders("command", arg)
            return tuple(value)
        return value

    @field_validator("workers", "cpus_per_worker", mode="before")
    @classmethod
    def _count(cls, value: Any, info: ValidationInfo) -> Any:
        key = info.field_name or ""
        words = ("per-node", "per-socket", "per-gpu") if key == "workers" else ("all",)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise _fail(key, f"must be {' or '.join(map(repr, words))} or a count")
        if isinstance(value, int) and value < 1:
            raise _fail(key, f"{key} = {value} must be at least 1")
        if isinstance(value, int) and value > cpulist.MAX_CPUS:
            # Past the most CPUs a kernel can have, no machine could give each its own
            # share; refused here rather than planned slot by slot.
            raise _fail(
                key,
                f"{key} = {value} is more than the {cpulist.MAX_CPUS} CPUs any machine has",
                f"give at most {cpulist.MAX_CPUS}",
            )
        if isinstance(value, str) and value not in words:
            close = get_close_matches(value, words, n=1)
            fix = f"did you mean '{close[0]}'?" if close else HINTS[key]
            raise _fail(key, f"invalid value {value!r}", fix)
        return value

    @field_validator("nodes", mode="before")
    @classmethod
    def _nodes(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        elif isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            value = cpulist.format_list(value)
        if isinstance(value, str):
            _check_node_spec("nodes", value)
        return value

    @field_validator("near", mode="before")
    @classmethod
    def _near(cls, value: Any) -> Any:
        from numarun.nodespec import DEVICE_PREFIXES

        if isinstance(value, str):
            if not value.lower().startswith(DEVICE_PREFIXES):
                raise _fail("near", f"near = {value!r} names no device")
            _check_node_spec("near", value)
        return value

    @model_validator(mode="after")
    def _one_placement(self) -> ProcessSpec:
        """``near`` is the nodes, ``per-gpu`` the workers' devices: each excludes the other."""
        if self.near is not None and self.nodes.strip().lower() != "all":
            raise _fail("near", "near and nodes both say where the workers go", "give one")
        if self.near is not None and self.workers == "per-gpu":
            raise _fail(
                "near", 'workers = "per-gpu" places each worker near its own GPU', "drop near"
            )
        if self.workers != "per-gpu" and _uses_gpu(self):
            raise _fail(
                "workers",
                '{gpu} is used but workers is not "per-gpu"',
                'write workers = "per-gpu", or drop {gpu}',
            )
        return self

    @field_validator("memory_nodes", mode="before")
    @classmethod
    def _memory_nodes(cls, value: Any) -> Any:
        if isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            value = cpulist.format_list(value)
        if isinstance(value, str) and value not in presets.MEMORY_NODE_WORDS:
            _check_node_spec("memory_nodes", value)
        return value

    @field_validator("reserve_cpus", mode="before")
    @classmethod
    def _reserve(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise _fail("reserve_cpus", "must be a CPU list, not a boolean")
        if isinstance(value, int):
            value = [value]
        if isinstance(value, str):
            try:
                return cpulist.parse_list(value)
            except ValueError as err:
                raise _fail("reserve_cpus", f"not a CPU list: {err}") from None
        if isinstance(value, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
                raise _fail("reserve_cpus", "every CPU must be a non-negative integer")
            return frozenset(value)
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for name, given in value.items():
            if not name or "=" in name or "\0" in name:
                raise _fail("env", f"{name!r} is not an environment variable name")
            item = given
            if isinstance(given, (int, float)) and not isinstance(given, bool):
                item = str(given)  # PORT = 7000 is what people write; the environment is text
            if isinstance(item, str):
                _check_placeholders("env", item)
            out[name] = item
        return out

    @field_validator("cwd", "logs", "stdin")
    @classmethod
    def _paths(cls, value: str | None, info: ValidationInfo) -> str | None:
        key = info.field_name or ""
        if value is not None:
            if not value.strip():
                raise _fail(key, f"{key} is empty")
            _check_placeholders(key, value)
        return value


def _uses_gpu(group: ProcessSpec) -> bool:
    texts = [group.command] if isinstance(group.command, str) else list(group.command)
    texts += [*group.env.values(), group.cwd or "", group.logs, group.stdin]
    return any("{gpu}" in text for text in texts)


class WatchTable(BaseModel):
    """The ``[watch]`` table, validated; :meth:`value` is the supervisor's record."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    interval: float = watchpolicy.DEFAULT_INTERVAL
    threshold: float = watchpolicy.DEFAULT_THRESHOLD
    remediate: Literal["off", "migrate"] = "off"
    migrate_rate_mbps: float = watchpolicy.DEFAULT_RATE_MBPS

    @field_validator("interval", "threshold", "migrate_rate_mbps", mode="before")
    @classmethod
    def _number(cls, value: Any, info: ValidationInfo) -> Any:
        key = info.field_name or ""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value  # the field's own type check names what it is
        number = float(value)
        if key == "interval" and not (
            watchpolicy.MIN_INTERVAL <= number <= watchpolicy.MAX_INTERVAL
        ):
            raise _fail(key, f"interval = {value} is outside 0.1 to 86400 seconds")
        if key == "threshold" and not 0.0 < number <= 1.0:
            raise _fail(key, f"threshold = {value} is not a share above 0 and at most 1")
        if key == "migrate_rate_mbps" and not 0.0 < number < float("inf"):
            raise _fail(key, f"migrate_rate_mbps = {value} must be above 0")
        return number

    def value(self) -> Watch:
        return Watch(
            interval=self.interval,
            threshold=self.threshold,
            remediate=self.remediate,
            migrate_rate_mbps=self.migrate_rate_mbps,
        )


class JobSpec(BaseModel):
    """A whole job spec: its process groups, and where each key was written."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    processes: tuple[ProcessSpec, ...]
    path: str | None = None
    # Weighted-interleave weights while the job runs: "bandwidth" or "0=5,2=2" (root only).
    weights: str | None = None
    # The [watch] table: None when the spec has none (the supervisor then samples nothing).
    watch: Watch | None = None
    # (process index, key) -> "file:line", for the planner's messages.
    lines: dict[tuple[int, str], int] = Field(default_factory=dict)

    def where(self, index: int, key: str | None = None) -> str:
        """``job.toml:14: process[1].nodes``: the prefix of a message about that key."""
        loc = f"process[{index}]" + (f".{key}" if key else "")
        line = self.lines.get((index, key or ""))
        if line is None:
            line = self.lines.get((index, ""))
        if self.path is None:
            return loc
        return f"{self.path}:{line}: {loc}" if line is not None else f"{self.path}: {loc}"


_TOP_KEYS = ("process", "defaults", "weights", "watch")


def load_spec(path: str | os.PathLike[str]) -> JobSpec:
    """Read, parse and validate a job spec file; any problem is a one-line SpecError."""
    return spec_from_doc(presets.read_toml(path, what="job spec"))


def parse_spec_text(text: str, path: str = "<spec>") -> JobSpec:
    """Like :func:`load_spec` for text already in hand (tests, stdin)."""
    return spec_from_doc(presets.parse_toml(text, path))


def spec_from_doc(doc: presets.TomlDoc) -> JobSpec:  # noqa: PLR0912
    # Translates pydantic's error kinds to one-line spec errors: a branch per kind.
    data = doc.data
    for key in data:
        if key not in _TOP_KEYS:
            raise _spec_error(
                doc, (key,), f"unknown top-level key '{key}'", _suggest(key, _TOP_KEYS)
            )
    groups = data.get("process")
    if groups is None:
        raise SpecError(f"{doc.path}: no [[process]] table", _MISSING_HINTS["process"])
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise _spec_error(doc, ("process",), "process must be [[process]] tables", HINTS["process"])
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _spec_error(doc, ("defaults",), "defaults must be a table", HINTS["defaults"])
    for bad in ("name", "command"):
        if bad in defaults:
            raise _spec_error(
                doc, ("defaults", bad), f"{bad} cannot have a default", f"set {bad} per [[process]]"
            )
    processes: list[ProcessSpec] = []
    lines: dict[tuple[int, str], int] = {}
    for index, raw in enumerate(groups):
        merged = {**defaults, **raw}
        if isinstance(defaults.get("env"), dict) and isinstance(raw.get("env"), dict):
            merged["env"] = {**defaults["env"], **raw["env"]}
        try:
            processes.append(ProcessSpec.model_validate(merged))
        except ValidationError as err:
            raise _from_validation(doc, index, raw, defaults, err) from None
        for key in _known_keys(()):
            origin = ("process", index, key) if key in raw else ("defaults", key)
            line = doc.lines.get(origin)
            if line is not None:
                lines[(index, key)] = line
        header = doc.lines.get(("process", index))
        if header is not None:
            lines[(index, "")] = header
    names: dict[str, int] = {}
    for index, group in enumerate(processes):
        if group.name in names:
            raise _spec_error(
                doc,
                ("process", index, "name"),
                f"process[{index}].name: {group.name!r} is already the name of "
                f"process[{names[group.name]}]",
                "give each [[process]] its own name",
                prefixed=True,
            )
        names[group.name] = index
    weights = _job_weights(doc)
    watch = _job_watch(doc)
    return JobSpec(
        processes=tuple(processes), path=doc.path, lines=lines, weights=weights, watch=watch
    )


def _job_watch(doc: presets.TomlDoc) -> Watch | None:
    """The ``[watch]`` table as the supervisor's record; None when the spec has none."""
    value = doc.data.get("watch")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _spec_error(
            doc, ("watch",), f"must be a table, not {presets._toml_type(value)}", HINTS["watch"]
        )
    try:
        return WatchTable.model_validate(value).value()
    except ValidationError as err:
        shaped = [_shape_watch(e) for e in err.errors()]
        shaped.sort(key=lambda s: (doc.line_of(s[0]) or 0, len(s[0])))
        loc, problem, fix = shaped[0]
        raise _spec_error(doc, loc, problem, fix) from None


def _shape_watch(error: Any) -> tuple[tuple[object, ...], str, str]:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
    key = str(loc[0]) if loc else "watch"
    kind = error["type"]
    ctx = error.get("ctx") or {}
    fix = HINTS.get(key, HINTS["watch"])
    full: tuple[object, ...] = ("watch", *loc)
    if kind == "numarun":
        return full, str(error["msg"]), str(ctx.get("fix") or fix)
    if kind == "extra_forbidden":
        return full, f"unknown key '{key}'", _suggest(key, watchpolicy.KEYS)
    if kind in _TYPE_WORDS:
        given = presets._toml_type(error["input"])
        return full, f"must be {_TYPE_WORDS[kind]}, not {given}", fix
    if kind == "literal_error":
        return full, f"invalid value {error['input']!r} (expected 'off' or 'migrate')", fix
    return full, str(error["msg"]), fix


def _job_weights(doc: presets.TomlDoc) -> str | None:
    """The job-level ``weights``: its syntax here; the nodes and root when the job starts."""
    value = doc.data.get("weights")
    if value is None:
        return None
    if isinstance(value, str) and value == "bandwidth":
        return value
    from numarun import weights

    try:
        if not isinstance(value, str):
            raise UsageError("not a string", None)
        weights.parse_given(value, None)
    except UsageError:
        raise _spec_error(
            doc, ("weights",), f"{value!r} is not bandwidth or NODE=WEIGHT,...", HINTS["weights"]
        ) from None
    return value


def _suggest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = get_close_matches(key, known, n=1)
    return f"did you mean '{close[0]}'?" if close else f"keys are {', '.join(known)}"


def _dotted(loc: tuple[object, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _spec_error(
    doc: presets.TomlDoc, loc: tuple[object, ...], problem: str, fix: str, *, prefixed: bool = False
) -> SpecError:
    text = problem if prefixed else f"{_dotted(loc)}: {problem}"
    return SpecError(f"{doc.where(loc)}: {text}", fix)


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a table",
    "list_type": "an array",
    "tuple_type": "an array",
    "model_type": "a table",
    "frozen_set_type": "a CPU list",
}


def _from_validation(
    doc: presets.TomlDoc,
    index: int,
    raw: dict[str, Any],
    defaults: dict[str, Any],
    err: ValidationError,
) -> SpecError:
    """The first error of a group (by line) as one SpecError with location and fix."""
    shaped = [_shape(index, raw, defaults, e) for e in err.errors()]
    shaped.sort(key=lambda s: (doc.line_of(s[0]) or 0, len(s[0])))
    loc, problem, fix = shaped[0]
    return _spec_error(doc, loc, problem, fix)


def _shape(
    index: int, raw: dict[str, Any], defaults: dict[str, Any], error: Any
) -> tuple[tuple[object, ...], str, str]:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
    kind = error["type"]
    ctx = error.get("ctx") or {}
    named = tuple(str(ctx.get("key", "")).split("."))  # "backoff.max": a key in a table
    if kind == "numarun" and loc[-len(named) :] != named:
        loc = (*loc, *named)  # raised by a model validator: name the key it is about
    key = str(loc[0]) if loc else ""
    # A key that came from [defaults] is reported where it was written.
    from_defaults = bool(loc) and key not in raw and key in defaults
    base: tuple[object, ...] = ("defaults",) if from_defaults else ("process", index)
    full = (*base, *loc)
    fix = HINTS.get(key, "see man numarun-job")
    if kind == "numarun":
        return full, str(error["msg"]), str(ctx.get("fix") or fix)
    if kind == "extra_forbidden":
        last = str(loc[-1])
        known = _known_keys(loc[:-1])
        return full, f"unknown key '{last}'", _suggest(last, known)
    if kind == "missing":
        last = str(loc[-1])
        return full[:-1], f"missing key '{last}'", _MISSING_HINTS.get(last, fix)
    if kind in _TYPE_WORDS:
        given = presets._toml_type(error["input"])
        return full, f"must be {_TYPE_WORDS[kind]}, not {given}", fix
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        return full, f"invalid value {error['input']!r} (expected {expected})", fix
    message = str(error["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Input should be ")
    if not error["msg"].startswith("Value error"):
        message = f"must be {message}"
    return full, message, fix


def _known_keys(parent: tuple[object, ...]) -> list[str]:
    """The keys a user may write in a ``[[process]]`` table (tables inside it: policy's)."""
    derived = ("mode", "preset", "supervision")
    return [k for k in ProcessSpec.model_fields if k not in derived] + list(policy.KEYS)
