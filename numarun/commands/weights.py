"""``numarun weights``: show the weighted-interleave weights in force, or set or reset them.

Setting is root's (the files are), writes every node or none, and prints the weights before
and after; ``--root`` points it at another sysfs tree (a test's, a container's view).
"""

from __future__ import annotations

import sys

from numarun.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    import typer

    from numarun.topology import Topology

DESCRIPTION = (
    "Show the weighted-interleave weights (Linux 6.9+) with each node's tier and bandwidth; "
    "--set bandwidth or --set 0=5,2=2 writes them (root), --reset gives them back."
)


def weights(
    root: str = "/", *, set_to: str | None = None, reset: bool = False, as_json: bool = False
) -> None:
    from numarun import weights as lib
    from numarun.topology import read_topology

    if set_to is not None and reset:
        raise UsageError("weights: --set and --reset both change the weights", "give one")
    auto, old = lib.current(root)
    topology = read_topology(root)
    if set_to is None and not reset:
        _show(topology, auto, old, as_json=as_json)
        return
    if reset:
        before, after = lib.reset(root)
    else:
        if set_to == "measured":
            if root != "/":
                raise UsageError(
                    "weights --set measured: the probe measures this machine, not --root's",
                    "drop --root, or give the weights as N=W",
                )
            wanted = _measured(lib.nodes(root))
        else:
            wanted = lib.wanted(set_to or "", topology, root)
        before, after = lib.write(wanted, root)
    if as_json:
        _json({"old": before, "new": after})
        return
    print(f"{'node':>4} {'old':>4} {'new':>4}")
    for node in sorted(after):
        mark = "" if before.get(node) == after[node] else "  changed"
        print(f"{node:>4} {before.get(node, '-'):>4} {after[node]:>4}{mark}")


def _measured(known: list[int]) -> dict[int, int]:
    """Weights from the bandwidth numarun probe measures here (no HMAT needed)."""
    from numarun import probe, weights
    from numarun.commands.probe import measured

    found = probe.best_bandwidth(measured())
    return weights.small_ratio({n: float(b) for n, b in found.items() if n in known and b})


def _show(
    topology: Topology, auto: bool | None, found: Mapping[int, int], *, as_json: bool
) -> None:
    from numarun import weights as lib

    if as_json:
        _json({"auto": auto, "weights": found})
        return
    mode = {None: "", True: " (auto: the kernel's, from HMAT)", False: " (set by hand)"}[auto]
    print(f"weighted interleave weights{mode}; shares are of pages interleaved over all nodes")
    print(f"{'node':>4} {'weight':>6} {'share':>6} {'tier':>4} {'read bandwidth':>15}")
    share = lib.shares(found)
    for node, weight in found.items():
        info = topology.nodes.get(node)
        tier = info.tier if info is not None and info.tier is not None else "-"
        access = info.access if info is not None else None
        bandwidth = access.read_bandwidth_mbps if access is not None else None
        shown = f"{bandwidth / 1000:.1f} GB/s" if bandwidth else "-"
        print(f"{node:>4} {weight:>6} {share[node]:>6.1%} {tier:>4} {shown:>15}")


def _json(data: Mapping[str, object]) -> None:
    import json

    json.dump(data, sys.stdout, indent=1)  # node numbers as keys: json writes them as "0"
    sys.stdout.write("\n")


def register(app: typer.Typer) -> None:
    from numarun.options import typer_option

    @app.command("weights", help=DESCRIPTION)
    def weights_command(
        *,
        root: str | None = typer_option("root"),
        set_to: str | None = typer_option("set_weights"),
        reset: bool = typer_option("reset_weights"),
        as_json: bool = typer_option("json"),
    ) -> None:
        weights(root or "/", set_to=set_to, reset=reset, as_json=as_json)
