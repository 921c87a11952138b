"""Guest checks for the one placement engine (issue 11), by the kernel's own word.

Each case runs checks_ranks' PROBE under a numarun prefix: after numarun exec'd into it, it
faults in 8 MiB of anonymous memory and reports its CPUs (``/proc/self/status``) and where
those pages are and under which policy (``/proc/self/numa_maps``).
"""

from __future__ import annotations

from typing import Any

from checks_ranks import _numarun
from checks_ranks import _probe as probe_argv
from checks_ranks import _ranks as reports
from inguest import Context, check

JSONDict = dict[str, Any]


def _probe(ctx: Context, prefix: list[str]) -> JSONDict:
    """checks_ranks' probe under ``prefix``: its one report and a slim run."""
    run = ctx.run([*prefix, *probe_argv(ctx)], timeout=120)
    found = reports(run["stdout"])
    slim = {"rc": run["rc"], "stderr": run["stderr"][-700:]}
    return {"probe": found[0] if found else None, "run": slim}


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
