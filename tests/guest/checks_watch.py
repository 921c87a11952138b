"""Guest check for issue 14: ``numarun watch --once --json`` flags a memory imbalance that
the check creates (tests: test_watch_guest.py).

A holder (checks_placement's: 256 MiB of private anonymous memory, every page written) runs
under ``numarun --membind 0`` in the two-node guest, whose nodes have 512 MiB each, so node
0 ends well over half used and node 1 nearly empty. While it waits, ``numarun watch --once
--json HOLDER_PID`` runs once; each node's meminfo is read from sysfs directly just before
and just after, the oracle for the node figures. One watch start (~7 s under TCG).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from checks_placement import Holder
from inguest import Context, check

JSONDict = dict[str, Any]
NODE_SYSFS = Path("/sys/devices/system/node")
MEMINFO_KEYS = ("MemTotal", "MemFree", "MemUsed")  # the results line must stay small
NODE_KEYS = ("id", "cpus", "cpu_utilization", "memory_total_bytes", "memory_free_bytes",
             "memory_used_bytes", "numa_hit")  # fmt: skip


def _meminfo_kb(node: int) -> dict[str, int]:
    out = {}
    for line in (NODE_SYSFS / f"node{node}" / "meminfo").read_text().splitlines():
        words = line.split()  # "Node 0 MemTotal: 524288 kB"
        key = words[2].rstrip(":") if len(words) >= 4 else ""
        if key in MEMINFO_KEYS and words[3].isdigit():
            out[key] = int(words[3])
    return out


@check(min_nodes=2)
def watch_memory_imbalance(ctx: Context) -> JSONDict:
    if ctx.nodes != 2:  # one quick check, in the two-node guest only
        return {"skipped": f"runs in the two-node guest; this one has {ctx.nodes} nodes"}
    holder = Holder(ctx, ["--membind", "0"])
    try:
        pid = holder.wait_ready()
        before = {n: _meminfo_kb(n) for n in range(ctx.nodes)}
        run = ctx.numarun("watch", "--once", "--json", str(pid), timeout=180)
        after = {n: _meminfo_kb(n) for n in range(ctx.nodes)}
    finally:
        holder.kill()
    try:
        data = json.loads(run["stdout"])
    except ValueError:
        data = None
    nodes = [{k: n[k] for k in NODE_KEYS} for n in data["nodes"]] if data else None
    return {
        "pid": pid,
        "rc": run["rc"],
        "stderr": run["stderr"][-1500:],
        "seconds": run["seconds"],
        "stdout": "" if data is not None else run["stdout"][-1500:],
        "nodes": nodes,
        "issues": data["issues"] if data else None,
        "processes": data["processes"] if data else None,
        "meminfo_before": before,
        "meminfo_after": after,
    }
