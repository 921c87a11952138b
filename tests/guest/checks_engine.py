"""Guest checks for the one placement engine (issue 11), by the kernel's own word.

Each case runs :data:`PROBE` under a numarun prefix: after numarun exec'd into it, it faults
in 8 MiB of anonymous memory and reports its CPUs (``/proc/self/status``) and where those
pages are and under which policy (``/proc/self/numa_maps``).
"""

from __future__ import annotations

import json
from typing import Any

from inguest import Context, check

JSONDict = dict[str, Any]
MARK = "NUMARUN-PROBE "
# Runs as `python -I -S -c PROBE`: stdlib only, nothing read from the environment.
PROBE = r"""
import json, re
size = 8 << 20
buf = bytearray(size)
buf[::4096] = b"\1" * (size // 4096)
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
best = (0, "")
for line in open("/proc/self/numa_maps"):
    m = re.search(r" anon=(\d+)", line)
    if m and int(m[1]) > best[0]:
        best = (int(m[1]), line)
print("NUMARUN-PROBE " + json.dumps({
    "cpus": status["Cpus_allowed_list"].strip(),
    "policy": best[1].split()[1] if best[1] else None,
    "pages": {k: int(v) for k, v in re.findall(r" N(\d+)=(\d+)", best[1])},
}), flush=True)
"""


def _probe(ctx: Context, prefix: list[str]) -> JSONDict:
    argv = [*prefix, ctx.python, "-I", "-S", "-c", PROBE]
    run = ctx.run(argv, timeout=120)
    found = [json.loads(x[len(MARK) :]) for x in run["stdout"].splitlines() if x.startswith(MARK)]
    slim = {"rc": run["rc"], "stderr": run["stderr"][-700:]}
    return {"probe": found[0] if found else None, "run": slim}


def _numarun(ctx: Context, *args: str) -> list[str]:
    return [ctx.python, "-S", "-m", "numarun", *args]


@check(min_nodes=2)
def engine_own_spelling_follows_memory(ctx: Context) -> JSONDict:
    """numarun --policy bind --nodes N --smt avoid: one thread per core of node N only."""
    node = ctx.nodes - 1
    prefix = _numarun(ctx, "--policy", "bind", "--nodes", str(node), "--smt", "avoid", "--")
    return {"node": node, **_probe(ctx, prefix)}


@check(min_nodes=2)
def engine_numactl_spelling_leaves_cpus(ctx: Context) -> JSONDict:
    """numarun -m N: memory bound, CPUs as they were (numactl's meaning), one warning."""
    node = ctx.nodes - 1
    return {"node": node, **_probe(ctx, _numarun(ctx, "-m", str(node), "--"))}


@check(min_nodes=2)
def engine_taskset_is_widened(ctx: Context) -> JSONDict:
    """taskset -c 0-1, then numarun -N LAST: the command runs on the last node's CPUs."""
    node = ctx.nodes - 1
    prefix = ["taskset", "-c", "0-1", *_numarun(ctx, "-N", str(node), "--")]
    return {"node": node, **_probe(ctx, prefix)}


@check(min_nodes=2)
def engine_taskset_bounds_own_choice(ctx: Context) -> JSONDict:
    """taskset -c 0-1, then numarun --policy bind (numarun chooses): stays on CPUs 0-1."""
    prefix = ["taskset", "-c", "0-1", *_numarun(ctx, "--policy", "bind", "--")]
    return _probe(ctx, prefix)
