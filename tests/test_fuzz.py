"""Fuzzing every parser entry point: only numarun's own errors may come out, fast, small.

Each target takes what a user, a file or the kernel could hand numarun and checks that the
answer is a result or a :class:`~numarun.errors.NumarunError` (the CLI: an exit status),
never another exception, within hypothesis' deadline and under an address-space limit
(:func:`memory_bound`), so that a parser which builds a set of 10**20 CPUs fails here
instead of eating the machine. Examples are derandomized: a failure is the same on every
run, and a known one is an ``xfail(strict=True)`` naming its input until its owner fixes it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import resource
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from numarun import cpulist, nodespec, topology
from numarun.errors import NumarunError
from tests.fakesysfs import FakeMachine

F = TypeVar("F", bound=Callable[..., Any])

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=3),  # generous for a loaded 2-core machine; a hang is far past
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Head room above what the test process already maps: a parser that tries to build a
# huge set hits MemoryError here long before it could hurt the machine.
HEADROOM = 1 << 30


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


@pytest.fixture(autouse=True)
def memory_bound() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _mapped_bytes() + HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _small_machine() -> FakeMachine:
    return FakeMachine(
        nodes={0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: []},
        siblings=[(0, 1), (2, 3), (4, 5), (6, 7)],
        memory_mb={0: 1024, 1: 1024, 2: 512},
        offline=[3],
    )


@pytest.fixture(scope="module")
def machine_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small_machine().write(tmp_path_factory.mktemp("fuzzmachine"))


@pytest.fixture(scope="module")
def machine(machine_root: Path) -> topology.Topology:
    return topology.read_topology(machine_root)


# -- node specs and cpulists ---------------------------------------------------------------

# Text near the grammar (digits, separators, the spec words) finds more than random text.
_LIST_ALPHABET = st.sampled_from([*"0123456789,-:/!+ x", "all", "same", "0x", "\u0663"])
list_text = st.one_of(
    st.lists(_LIST_ALPHABET, max_size=24).map("".join),
    st.text(max_size=24),
    st.sampled_from(["0-99999999999999999999", "0-4294967295:1/2", "1-0", "0x" + "f" * 20]),
)
id_sets = st.frozensets(st.integers(0, 70), max_size=12)


@FUZZ
@given(text=list_text, kind=st.sampled_from(["node", "CPU"]), existing=id_sets, allowed=id_sets)
def test_node_and_cpu_specs(
    text: str, kind: str, existing: frozenset[int], allowed: frozenset[int]
) -> None:
    try:
        spec = nodespec.parse_spec(text, "--nodes", kind)
    except NumarunError:
        return
    try:
        ids = nodespec.resolve(spec, existing=existing, allowed=allowed, kind=kind)
    except NumarunError:
        return
    assert ids <= existing | spec.items


@FUZZ
@given(
    text=list_text,
    c_numbers=st.booleans(),
    limit=st.sampled_from([cpulist.MAX_NODES, cpulist.MAX_CPUS]),
)
def test_cpulists(text: str, c_numbers: bool, limit: int) -> None:
    # parse_list's contract is ValueError naming the text; callers add where it came from.
    try:
        ids = cpulist.parse_list(text, limit=limit, c_numbers=c_numbers)
    except ValueError:
        return
    assert all(0 <= i < limit for i in ids)
    assert cpulist.parse_list(cpulist.format_list(ids), limit=limit) == ids


@FUZZ
@given(
    text=st.one_of(
        st.text(alphabet="0123456789abcdefABCDEF,x \x00", max_size=40), st.text(max_size=20)
    )
)
def test_cpu_masks(text: str) -> None:
    try:
        ids = cpulist.parse_mask(text)
    except ValueError:
        return
    assert cpulist.parse_mask(cpulist.format_mask(ids)) == ids


# -- job specs -----------------------------------------------------------------------------

safe_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
huge = st.sampled_from([99999999999999999999, 2**63, 1e9, 1e300, float("inf"), float("nan"), -1])
node_specs = st.sampled_from(["all", "0", "1", "0-1", "!0", "+1", "2", "7", "0-99999999999", ""])


def _either(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly what a user would write, sometimes something hostile."""
    return st.one_of(plausible, plausible, plausible, huge, safe_text, st.booleans())


# Each key with values a user could plausibly write; _either mixes in hostile ones.
_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "command": st.sampled_from([["true"], ["echo", "{worker}", "{node}", "{cpus}"], ["{bogus}"]]),
    "shell": st.booleans(),
    "workers": st.one_of(st.integers(0, 40), st.sampled_from(["per-node", "per-socket"])),
    "nodes": node_specs,
    "cpus_per_worker": st.one_of(st.integers(0, 9), st.just("all")),
    "smt": st.sampled_from(["avoid", "allow"]),
    "reserve_cpus": st.sampled_from(["0", "5-99999999999", "0-7", "", "3"]),
    "policy": st.sampled_from(["bind", "interleave", "preferred", "local", "default", "bogus"]),
    "memory_nodes": node_specs,
    "env": st.dictionaries(st.sampled_from(["A", "PATH", ""]), safe_text, max_size=2),
    "cwd": st.sampled_from(["/", "/nonexistent", "relative"]),
    "logs": st.sampled_from(["inherit", "/nonexistent/dir", "logs"]),
    "stdin": st.sampled_from(["null", "inherit", "/nonexistent"]),
    "restart": st.sampled_from(["always", "on-failure", "never"]),
    "backoff": st.fixed_dictionaries({}, optional={"initial": huge, "max": huge, "jitter": huge}),
    "crash_loop": st.fixed_dictionaries({}, optional={"limit": huge, "window": huge}),
    "on_failure": st.sampled_from(["stop-job", "keep-going", "bogus"]),
    "stop_signal": st.sampled_from(["SIGTERM", "SIGINT", "SIGBOGUS", "9"]),
    "stop_timeout": st.one_of(st.floats(0, 100), huge),
}


@st.composite
def _group(draw: st.DrawFn, *, defaults: bool = False) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(_PLAUSIBLE)), unique=True, max_size=5))
    group: dict[str, Any] = {} if defaults else {"name": "web", "command": ["true"]}
    for key in keys:
        if defaults and key == "command":
            continue
        group[key] = draw(_either(_PLAUSIBLE[key]))
    return group


documents = st.fixed_dictionaries(
    {"process": st.lists(_group(), min_size=1, max_size=3)},
    optional={"defaults": _group(defaults=True)},
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)  # tomllib reads integers past 64 bits as they are
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(value)


def _toml(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    if "defaults" in doc:
        lines.append("[defaults]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in doc["defaults"].items()]
    for group in doc["process"]:
        lines.append("[[process]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in group.items()]
    return "\n".join(lines) + "\n"


def _plan_text(text: str, machine: topology.Topology) -> None:
    from numarun.plan import plan_job
    from numarun.spec import parse_spec_text

    try:
        spec = parse_spec_text(text, "job.toml")
        plan_job(machine, spec)
    except NumarunError:
        pass


@FUZZ
@given(doc=documents)
def test_job_specs_from_values(doc: dict[str, Any], machine: topology.Topology) -> None:
    _plan_text(_toml(doc), machine)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), documents.map(_toml).map(lambda t: t[: len(t) // 2])))
def test_job_specs_from_text(text: str, machine: topology.Topology) -> None:
    _plan_text(text, machine)


# -- snapshots ------------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(data: object, at: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield at
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*at, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*at, i))


def _replace(data: Any, at: tuple[object, ...], new: object) -> Any:
    if not at:
        return new
    head, rest = at[0], at[1:]
    if isinstance(data, dict):
        return {**data, head: _replace(data[head], rest, new)}  # type: ignore[index]
    copy = list(data)
    copy[head] = _replace(copy[head], rest, new)  # type: ignore[index]
    return copy


@FUZZ
@given(data=st.data())
def test_snapshot_dicts(data: st.DataObject, machine: topology.Topology) -> None:
    good = machine.to_dict()
    paths = list(_paths(good))
    at = data.draw(st.sampled_from(paths))
    mutated = _replace(good, at, data.draw(json_values))
    try:
        topology.from_dict(mutated, where="fuzz.json")
    except NumarunError:
        pass


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_snapshot_files(raw: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-snapshot.json"
    path.write_bytes(raw)
    try:
        topology.load_topology(path)
    except NumarunError:
        pass


# -- sysfs trees ---------------------------------------------------------------------------

_FILE_TEXTS = st.one_of(
    st.sampled_from(["", "\n", "0", "1", "0-999999999", "0-3,8", "x", "-1", "00000000,0000000f",
                     "99999999999999999999", "Node 0 MemTotal: 99999999999999999999 kB", "\x00"]),
    st.text(max_size=30),
)  # fmt: skip


@pytest.fixture(scope="module")
def tree_files(machine_root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(machine_root))
        for p in machine_root.rglob("*")
        if p.is_file() and not str(p.relative_to(machine_root)).startswith("job")
    )


@FUZZ
@given(data=st.data())
def test_sysfs_trees(data: st.DataObject, machine_root: Path, tree_files: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "m"
        shutil.copytree(machine_root, root)
        for _ in range(data.draw(st.integers(1, 4))):
            rel = data.draw(st.sampled_from(tree_files))
            how = data.draw(st.sampled_from(["empty", "remove", "text", "directory"]))
            path = root / rel
            if how in ("remove", "directory"):
                if path.is_file():
                    path.unlink()
                if how == "directory":
                    path.mkdir(parents=True, exist_ok=True)
            elif path.parent.is_dir() and not path.is_dir():
                path.write_text("" if how == "empty" else data.draw(_FILE_TEXTS))
        try:
            found = topology.read_topology(root)
        except NumarunError:
            return
        from numarun import render

        render.render_drawing(found, colour=False, width=80)
        render.render_hardware(found)


# -- the command line -------------------------------------------------------------------------


class _Executed(Exception):  # noqa: N818 - not an error: the happy end
    """The prefix form got as far as exec: the fuzzed command line was accepted."""


_ARGS = [
    "topology", "placement", "numastat", "migrate", "plan", "policies", "status", "stop",
    "--", "-", "--json", "--help", "-h", "--version", "-H", "--hardware", "--show", "-s",
    "--dry-run", "--explain", "-m", "--membind", "--membind=", "-i", "-p", "-P", "-w", "-N",
    "-C", "--cpunodebind=", "--physcpubind", "-l", "--localalloc", "--policy", "--nodes",
    "--cpus", "--smt", "--fallback", "--per-rank", "--rank", "--ranks", "--relative-nodes",
    "--static-nodes", "-b", "-a", "--all", "--cpu-compress", "--root", "--topology", "--to",
    "--from", "--check", "--now", "--name", "--color", "--no-color",
    "0", "1", "0-1", "all", "!0", "+0", "same", "7", "0-99999999999", "\u0663", "bind",
    "interleave", "avoid", "true", "sh", "-c", "job.toml", "machine", "1.5", "",
]  # fmt: skip
argvs = st.lists(st.one_of(st.sampled_from(_ARGS), st.text(max_size=6)), max_size=7)


@pytest.fixture
def sandbox(machine_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No fuzzed command line may change this process or the machine: exec, the policy
    and affinity, migrating pages, saving files and the job state are all stubbed or
    pointed into a temporary directory."""
    import numarun.launch
    import numarun.mempolicy

    def executed(*_args: object, **_kw: object) -> None:
        raise _Executed

    monkeypatch.setattr(numarun.launch, "exec_command", executed)
    monkeypatch.setattr(numarun.launch, "apply_plan", lambda *a, **k: None)
    monkeypatch.setattr(numarun.mempolicy, "migrate_pages", lambda *a, **k: 0)
    monkeypatch.setattr(topology, "save_snapshot", lambda *a, **k: None)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.toml").write_text('[[process]]\nname = "w"\ncommand = "true"\n')
    (tmp_path / "machine").symlink_to(machine_root)
    return tmp_path


@FUZZ
@given(argv=argvs)
@example(argv=["-C", "0-99999999999999999999", "--", "true"])
@example(argv=["migrate", "1", "--to", "0-99999999999"])
@example(argv=["placement", "0"])
def test_command_lines(argv: list[str], sandbox: Path) -> None:
    from numarun.__main__ import main

    assume(not any(a.startswith("--watch") for a in argv))  # it loops until Ctrl-C
    assume("run" not in argv[:1])  # would supervise real workers
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: object = main(argv)
        except _Executed:
            return
        except SystemExit as done:
            code = done.code
    assert isinstance(code, int), (argv, code)
    assert "Traceback" not in err.getvalue(), argv
    if code not in (0, 130):
        assert err.getvalue().count("\n") >= 1, (argv, code)


def test_the_memory_bound_is_in_force() -> None:
    # The fixture above is what keeps a runaway parser from eating the machine.
    with pytest.raises(MemoryError):
        bytearray(2 * HEADROOM)
    assert os.getpid()  # the process survives it


def test_a_huge_worker_count_is_refused_at_once(machine: topology.Topology) -> None:
    from numarun.plan import plan_job
    from numarun.spec import parse_spec_text

    text = '[[process]]\nname = "web"\ncommand = ["true"]\nworkers = 99999999999999999999\n'
    with pytest.raises(NumarunError, match="more than the 65536 CPUs"):
        plan_job(machine, parse_spec_text(text, "job.toml"))
