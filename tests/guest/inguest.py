#!/usr/bin/env python3
"""Runs INSIDE the numarun QEMU guest: every registered check in one boot, one JSON object out.

Boots are what the guest suite pays for (about ten seconds each under TCG), so instead of one
boot per test there is one boot per shape: this script runs all checks and prints their
results, and the tests in ``tests/guest/test_*.py`` assert on them on the host.

Adding a check: decorate a function taking a :class:`Context` and returning a JSON-able dict,
either here or in a new module ``tests/guest/checks_<topic>.py`` (imported automatically, so
engineers working on different features need not edit the same file)::

    from inguest import Context, check

    @check(min_nodes=2)
    def launcher_membind(ctx: Context) -> dict[str, object]:
        node = ctx.nodes - 1
        return {"node": node, **ctx.touch(ctx.numarun_argv("--membind", str(node), "--"))}

A check that raises is reported with its traceback, and the test asking for it fails with
that traceback; the other checks still run.  Try a check without pytest::

    python tests/guest/numavm.py --shape 2n2c2t -- \\
        .venv/bin/python tests/guest/inguest.py --shape 2n2c2t --only launcher_membind --pretty

Also ``inguest.py --touch MB`` (used by Context.touch): allocate MB of anonymous memory,
write every page, print how many of those pages each node holds by /proc/self/numa_maps.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# The results line on stdout starts with this, so stray output from a check cannot be
# mistaken for it.
RESULT_PREFIX = "NUMARUN-INGUEST-RESULTS "

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")

JSONDict = dict[str, Any]
CheckFunc = Callable[["Context"], JSONDict]


@dataclasses.dataclass(frozen=True)
class CheckSpec:
    name: str
    func: CheckFunc
    min_nodes: int  # skipped (not run, not reported) on guests with fewer nodes
    # None: every general shape (2n2c2t, 4n1c2t); else only these shapes, by name. A special
    # shape (tier2n) runs only the checks that name it: its boot and its check list are dear.
    shapes: tuple[str, ...] | None = None

    def runs_in(self, ctx: Context) -> bool:
        if self.shapes is None:
            return ctx.general and ctx.nodes >= self.min_nodes
        return ctx.name in self.shapes


REGISTRY: dict[str, CheckSpec] = {}
PLUGIN_ERRORS: dict[str, str] = {}  # checks_*.py module -> traceback of its failed import


def check(
    name: str | None = None, *, min_nodes: int = 1, shapes: Sequence[str] | None = None
) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check under ``name`` (default: the function's name); ``shapes`` limits it
    to those shapes (the only way a check runs in a special shape such as tier2n)."""

    def register(func: CheckFunc) -> CheckFunc:
        key = name or func.__name__
        if key in REGISTRY and REGISTRY[key].func is not func:
            raise ValueError(f"two guest checks named {key!r}")
        REGISTRY[key] = CheckSpec(key, func, min_nodes, None if shapes is None else tuple(shapes))
        return func

    return register


@dataclasses.dataclass
class Context:
    """What a check gets: the guest's expected shape and helpers to run things in it."""

    nodes: int  # with CPUs
    cores: int  # per node
    threads: int  # per core
    mem_mb: int  # per node
    python: str = sys.executable  # by its real path: a pyenv shim costs ~13 s in the guest
    repo: Path = REPO
    name: str = ""  # the shape's name (numavm.SHAPES)
    memnodes: int = 0  # CPU-less nodes, numbered after the CPU nodes
    general: bool = True  # runs the checks registered without shapes=

    @property
    def shape(self) -> JSONDict:
        return {
            "nodes": self.nodes,
            "cores": self.cores,
            "threads": self.threads,
            "mem_mb": self.mem_mb,
            "memnodes": self.memnodes,
            "name": self.name,
            "python": self.python,
            "repo": str(self.repo),
        }

    def node_cpus(self, node: int) -> list[int]:
        per_node = self.cores * self.threads
        return list(range(node * per_node, (node + 1) * per_node))

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Our environment with the checkout importable, so ``-m numarun`` is this tree's."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.repo), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env | (extra or {})

    def run(
        self, argv: Sequence[str], timeout: float = 120.0, env: dict[str, str] | None = None
    ) -> JSONDict:
        """Run argv; returns {"argv", "rc", "stdout", "stderr", "seconds"} (never raises on a
        non-zero exit: the tests decide what exit status is right)."""
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout,
                env=self.env(env), cwd=self.repo, check=False,
            )  # fmt: skip
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out, err = 124, _text(exc.stdout), _text(exc.stderr) + f"\n[timeout {timeout}s]"
        except OSError as exc:
            rc, out, err = 127, "", f"{type(exc).__name__}: {exc}"
        return {
            "argv": list(argv),
            "rc": rc,
            "stdout": out,
            "stderr": err,
            "seconds": round(time.monotonic() - t0, 2),
        }

    def numarun_argv(self, *args: str) -> list[str]:
        """``python -m numarun ARGS`` with this checkout's numarun."""
        return [self.python, "-m", "numarun", *args]

    def numarun(self, *args: str, timeout: float = 120.0) -> JSONDict:
        return self.run(self.numarun_argv(*args), timeout=timeout)

    def touch(self, prefix: Sequence[str] = (), mb: int = 256, timeout: float = 180.0) -> JSONDict:
        """Run the page-touching helper under ``prefix`` (e.g. ``["numactl", "--membind=1"]``
        or a numarun launcher line ending in ``--``); returns its per-node page counts:
        {"pages": {"0": n, ...}, "total": n, "cpu_node": ..., "run": {...}} or, when the
        helper failed, {"pages": {}, "total": 0, "run": {...}}."""
        # -I -S: no site-packages scan, nothing from the environment; the helper needs only
        # the stdlib and every file python reads costs 9p round trips in the guest.
        argv = [*prefix, self.python, "-I", "-S", str(HERE / "inguest.py"), "--touch", str(mb)]
        run = self.run(argv, timeout=timeout)
        data: JSONDict = {"pages": {}, "total": 0}
        for line in run["stdout"].splitlines():
            if line.startswith(RESULT_PREFIX):
                data = json.loads(line[len(RESULT_PREFIX) :])
        run["stdout"] = run["stdout"][-2000:]
        return data | {"run": run}


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def parse_cpulist(text: str) -> list[int]:
    """ "0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


# --------------------------------------------------------------------------------------------
# Checks that need nothing from numarun: they prove the guest is the machine we asked for.


@check()
def guest_info(ctx: Context) -> JSONDict:
    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            return f"<{exc}>"

    return {
        "kernel": os.uname().release,
        "cmdline": read("/proc/cmdline"),
        "numa_balancing": read("/proc/sys/kernel/numa_balancing"),
        "online_cpus": read("/sys/devices/system/cpu/online"),
        "online_nodes": read("/sys/devices/system/node/online"),
        "thp": read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "python": sys.executable,
        "python_version": sys.version.split()[0],
        "cgroup2": Path("/sys/fs/cgroup/cgroup.controllers").exists(),
        "uid": os.getuid(),
    }


@check()
def numactl_hardware(ctx: Context) -> JSONDict:
    """`numactl --hardware`, parsed: {"available": n, "nodes": {"0": {"cpus": [...],
    "size_mb": n}}, "distances": [[...]], "run": {...}}."""
    run = ctx.run(["numactl", "--hardware"])
    out = run["stdout"]
    nodes: dict[str, JSONDict] = {}
    available = None
    distances: list[list[int]] = []
    in_dist = False
    for line in out.splitlines():
        if m := re.match(r"available: (\d+) nodes", line):
            available = int(m[1])
        elif m := re.match(r"node (\d+) cpus:(.*)", line):
            nodes.setdefault(m[1], {})["cpus"] = [int(c) for c in m[2].split()]
        elif m := re.match(r"node (\d+) size: (\d+) MB", line):
            nodes.setdefault(m[1], {})["size_mb"] = int(m[2])
        elif line.startswith("node distances"):
            in_dist = True
        elif in_dist and (m := re.match(r"\s*\d+:\s+(.*)", line)):
            distances.append([int(v) for v in m[1].split()])
    return {"available": available, "nodes": nodes, "distances": distances, "run": run}


@check()
def lscpu(ctx: Context) -> JSONDict:
    """`lscpu` summary fields and its per-CPU table (cpu, core, socket, node)."""
    summary = ctx.run(["lscpu"])
    fields = {}
    for line in summary["stdout"].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    table = ctx.run(["lscpu", "--parse=CPU,CORE,SOCKET,NODE"])
    cpus = []
    for line in table["stdout"].splitlines():
        if line and not line.startswith("#"):
            cpu, core, socket, node = (int(v) if v else -1 for v in line.split(","))
            cpus.append({"cpu": cpu, "core": core, "socket": socket, "node": node})
    return {"fields": fields, "cpus": cpus, "rc": summary["rc"], "stderr": summary["stderr"]}


@check()
def sysfs_cpus(ctx: Context) -> JSONDict:
    """What the kernel says directly: per CPU its node, package, core id and SMT siblings."""
    base = Path("/sys/devices/system")
    node_of = {}
    for node_dir in sorted(base.glob("node/node[0-9]*")):
        for cpu in parse_cpulist((node_dir / "cpulist").read_text()):
            node_of[cpu] = int(node_dir.name[4:])
    cpus = {}
    for cpu in parse_cpulist((base / "cpu/online").read_text()):
        topo = base / f"cpu/cpu{cpu}/topology"
        cpus[str(cpu)] = {
            "node": node_of.get(cpu, -1),
            "package": int((topo / "physical_package_id").read_text()),
            "core_id": int((topo / "core_id").read_text()),
            "siblings": parse_cpulist((topo / "thread_siblings_list").read_text()),
        }
    return {"cpus": cpus}


@check()
def touch_default(ctx: Context) -> JSONDict:
    """No policy: the baseline (first touch lands where the process happens to run)."""
    return ctx.touch([])


@check(min_nodes=2)
def touch_membind(ctx: Context) -> JSONDict:
    """numactl --membind=<last node>: node 1 on the two-node guest."""
    node = ctx.nodes - 1
    return {"node": node, **ctx.touch(["numactl", f"--membind={node}"])}


@check(min_nodes=2)
def touch_interleave(ctx: Context) -> JSONDict:
    """numactl --interleave over every node: 0,1 on the two-node guest."""
    nodes = list(range(ctx.nodes))
    return {"nodes": nodes, **ctx.touch(["numactl", f"--interleave={','.join(map(str, nodes))}"])}


@check(min_nodes=2)
def touch_preferred(ctx: Context) -> JSONDict:
    """numactl --preferred=<last node> while running on node 0's CPUs: memory should still
    come from the preferred node (it has room for it)."""
    node = ctx.nodes - 1
    return {
        "node": node,
        **ctx.touch(["numactl", f"--preferred={node}", "--cpunodebind=0"]),
    }


# --------------------------------------------------------------------------------------------
# numarun itself, run as `python -m numarun` from this checkout (tests: test_numarun.py).


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


@check()
def numarun_topology(ctx: Context) -> JSONDict:
    """`numarun topology --json` in the guest, to compare with numactl, lscpu and sysfs."""
    run = ctx.numarun("topology", "--json")
    data = _json_or_none(run["stdout"])
    run["stdout"] = run["stdout"][-2000:]
    return {"topology": data, "run": run}


@check(min_nodes=2)
def numarun_membind(ctx: Context) -> JSONDict:
    node = ctx.nodes - 1
    return {"node": node, **ctx.touch(ctx.numarun_argv("--membind", str(node), "--"))}


@check(min_nodes=2)
def numarun_interleave(ctx: Context) -> JSONDict:
    nodes = list(range(ctx.nodes))
    spec = ",".join(map(str, nodes))
    return {"nodes": nodes, **ctx.touch(ctx.numarun_argv("--interleave", spec, "--"))}


@check(min_nodes=2)
def numarun_preferred(ctx: Context) -> JSONDict:
    """Preferred last node while running on node 0's CPUs (so not first-touch locality)."""
    node = ctx.nodes - 1
    argv = ctx.numarun_argv("--preferred", str(node), "--cpu-nodes", "0", "--")
    return {"node": node, **ctx.touch(argv)}


_AFFINITY = "import os, json; print(json.dumps(sorted(os.sched_getaffinity(0))))"


@check()
def numarun_smt_avoid(ctx: Context) -> JSONDict:
    """The CPUs a command gets under `--smt avoid` (expected: one per physical core)."""
    run = ctx.run(ctx.numarun_argv("--smt", "avoid", "--", ctx.python, "-I", "-S", "-c", _AFFINITY))
    return {"cpus": _json_or_none(run["stdout"]), "run": run}


@check()
def numarun_unknown_node(ctx: Context) -> JSONDict:
    """Binding to a node the machine does not have is refused; the command never runs."""
    marker = "numarun-guest-command-ran"
    run = ctx.run(ctx.numarun_argv("--membind", str(ctx.nodes + 3), "--", "echo", marker))
    return {"node": ctx.nodes + 3, "ran": marker in run["stdout"], "run": run}


@check(min_nodes=2)
def numarun_outside_cpuset(ctx: Context) -> JSONDict:
    """In a cgroup whose cpuset allows node 0 only, binding to the last node is refused and
    numarun's topology reports the allowed set."""
    cg = Path("/sys/fs/cgroup/numarun-guest-check")
    Path("/sys/fs/cgroup/cgroup.subtree_control").write_text("+cpuset\n")
    cg.mkdir(exist_ok=True)
    (cg / "cpuset.cpus").write_text(",".join(map(str, ctx.node_cpus(0))) + "\n")
    (cg / "cpuset.mems").write_text("0\n")
    # The child joins the cgroup itself, then execs numarun: nothing else moves.
    join = ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh"]
    marker = "numarun-guest-command-ran"
    node = ctx.nodes - 1
    refused = ctx.run([*join, *ctx.numarun_argv("--membind", str(node), "--", "echo", marker)])
    topo = ctx.run([*join, *ctx.numarun_argv("topology", "--json")])
    allowed = (_json_or_none(topo["stdout"]) or {}).get("allowed")
    topo["stdout"] = topo["stdout"][-2000:]
    ok_run = ctx.run([*join, *ctx.numarun_argv("--membind", "0", "--", "echo", marker)])
    return {
        "node": node,
        "allowed_cpus": ctx.node_cpus(0),
        "refused": refused | {"ran": marker in refused["stdout"]},
        "allowed_run": ok_run | {"ran": marker in ok_run["stdout"]},
        "topology_allowed": allowed,
        "topology_run": topo,
    }


# --------------------------------------------------------------------------------------------
# The --touch helper (runs as its own process, under whatever policy its parent set).


def _touch(mb: int) -> JSONDict:
    """Fault in ``mb`` MiB of private anonymous memory and count its pages per node.

    Anonymous memory on purpose: file pages already in the host's page cache show up on
    node 0 whatever the policy."""
    import ctypes

    size = mb << 20
    t0 = time.monotonic()
    # A bytearray this large is its own private anonymous mmap (glibc's mmap threshold);
    # the kernel zero-fills lazily, so write one byte in every page to fault each one in.
    buf = bytearray(size)
    buf[::PAGE] = b"\x01" * (size // PAGE)
    touched = time.monotonic() - t0
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    start = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                start = lo
                break
    pages: dict[str, int] = {}
    line_found = ""
    with open("/proc/self/numa_maps") as numa_maps:
        for line in numa_maps:
            fields = line.split()
            if start is not None and int(fields[0], 16) == start:
                line_found = line.strip()
                for f in fields:
                    if m := re.fullmatch(r"N(\d+)=(\d+)", f):
                        pages[m[1]] = int(m[2])
    cpu_node = None
    with open("/proc/self/stat") as stat:
        cpu = int(stat.read().rsplit(")", 1)[1].split()[36])  # field 39: last CPU
    for node_dir in Path("/sys/devices/system/node").glob("node[0-9]*"):
        if cpu in parse_cpulist((node_dir / "cpulist").read_text()):
            cpu_node = int(node_dir.name[4:])
    del buf
    return {
        "mb": mb,
        "expected_pages": size // PAGE,
        "pages": pages,
        "total": sum(pages.values()),
        "numa_maps": line_found,
        "cpu": cpu,
        "cpu_node": cpu_node,
        "touch_seconds": round(touched, 2),
    }


# --------------------------------------------------------------------------------------------


def load_plugins() -> list[str]:
    """Import tests/guest/checks_*.py so their @check functions register.

    They do ``from inguest import check``: make that name this very module even when it
    runs as __main__, else the plugins would register into a second copy."""
    sys.modules.setdefault("inguest", sys.modules[__name__])
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    loaded = []
    for path in sorted(HERE.glob("checks_*.py")):
        try:
            importlib.import_module(path.stem)
        except Exception:  # one broken plugin must not cost the other checks' results
            PLUGIN_ERRORS[path.stem] = traceback.format_exc()
        else:
            loaded.append(path.stem)
    return loaded


def run_checks(ctx: Context, only: Sequence[str] = ()) -> JSONDict:
    results: dict[str, JSONDict] = {}
    for spec in REGISTRY.values():
        if (only and spec.name not in only) or not spec.runs_in(ctx):
            continue
        t0 = time.monotonic()
        try:
            entry: JSONDict = {"result": spec.func(ctx)}
        except Exception:  # a broken check must not hide the others' results
            entry = {"error": traceback.format_exc()}
        entry["seconds"] = round(time.monotonic() - t0, 2)
        results[spec.name] = entry
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", help="expected shape, e.g. 2n2c2t (numavm.py's notation)")
    parser.add_argument("--only", default="", help="comma-separated check names")
    parser.add_argument("--pretty", action="store_true", help="indented JSON, no prefix")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--touch", type=int, metavar="MB", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.touch is not None:
        print(RESULT_PREFIX + json.dumps(_touch(ns.touch)))
        return 0
    t0 = time.monotonic()
    plugins = load_plugins()
    if ns.list:
        print(
            "\n".join(
                f"{s.name} (min_nodes={s.min_nodes}, shapes={','.join(s.shapes or ('general',))})"
                for s in REGISTRY.values()
            )
        )
        return 0
    if not ns.shape:
        parser.error("--shape is required")
    sys.path.insert(0, str(HERE))
    from numavm import get_shape

    shape = get_shape(ns.shape)
    ctx = Context(
        shape.nodes, shape.cores, shape.threads, shape.mem_mb,
        name=shape.name, memnodes=shape.memnodes, general=shape.general,
    )  # fmt: skip
    only = [n for n in ns.only.split(",") if n]
    if unknown := [n for n in only if n not in REGISTRY]:
        parser.error(f"unknown checks: {', '.join(unknown)}")
    report = {
        "shape": ctx.shape,
        "plugins": plugins,
        "plugin_errors": PLUGIN_ERRORS,
        "checks": run_checks(ctx, only),
        "seconds": round(time.monotonic() - t0, 2),
    }
    text = json.dumps(report, indent=2) if ns.pretty else RESULT_PREFIX + json.dumps(report)
    _write_all(1, (text + "\n").encode())
    return 0


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte. A virtio port takes at most 32 KiB a write, and with
    PYTHONUNBUFFERED set print() hands the text to the raw file once and drops whatever a
    short write left over: long reports came back cut at 32768 bytes."""
    sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    sys.exit(main())
