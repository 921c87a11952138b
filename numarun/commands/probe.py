"""``numarun probe``: read bandwidth from each CPU node to each memory node, measured here.

The seed of every NUMA decision: measure before optimizing. A progress line on stderr while
it runs; a table (rows: CPU nodes, columns: memory nodes) or ``--json`` at the end.
"""

from __future__ import annotations

import sys

from numarun.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    import typer

    from numarun.probe import Cell

DESCRIPTION = (
    "Measure read bandwidth from each CPU node to each memory node (threads pinned to the "
    "initiator's cores, the buffer bound to the target), like Intel MLC's matrix."
)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``64M``, ``1G``, ``4096``: bytes; refused in one line otherwise."""
    word = text.strip().upper().removesuffix("B").removesuffix("I")
    digits, unit = (word[:-1], word[-1]) if word and word[-1] in "KMG" else (word, "")
    if not (digits.isascii() and digits.isdigit()) or int(digits) == 0:
        raise UsageError(f"probe --size {text}: not a size", "write a size such as 64M or 1G")
    return int(digits) * _UNITS[unit]


def measured(
    size: int = 64 << 20, threads: int | None = None, *, quiet: bool = False
) -> list[Cell]:
    """The matrix of this machine, with a progress line on stderr unless ``quiet``."""
    from numarun import probe
    from numarun.topology import read_topology

    def progress(done: int, total: int, initiator: int, target: int) -> None:
        if not quiet:
            print(
                f"\rnumarun probe: node {initiator} -> node {target} ({done + 1}/{total})",
                end="",
                file=sys.stderr,
                flush=True,
            )

    cells = probe.matrix(read_topology(), size=size, threads=threads, progress=progress)
    if not quiet:
        print(file=sys.stderr)
    return cells


def render(cells: Sequence[Cell]) -> str:
    rows = sorted({c.initiator for c in cells})
    columns = sorted({c.target for c in cells})
    found = {(c.initiator, c.target): c for c in cells}
    size = cells[0].size_bytes >> 20 if cells else 0
    lines = [
        f"read bandwidth in MB/s from the CPUs of each node (rows) to the memory of each node "
        f"(columns); {size} MiB per buffer; latency is not measured",
        "node" + "".join(f"{n:>9}" for n in columns),
    ]
    for row in rows:
        cells_text = "".join(
            f"{found[row, col].read_bandwidth_mbps:>9}" if (row, col) in found else f"{'-':>9}"
            for col in columns
        )
        lines.append(f"{row:>4}{cells_text}")
    misplaced = [c for c in cells if set(c.buffer_nodes) != {c.target}]
    for cell in misplaced:
        lines.append(
            f"warning: node {cell.initiator} -> {cell.target}: the buffer's pages were on "
            f"nodes {sorted(cell.buffer_nodes)}"
        )
    return "\n".join(lines) + "\n"


def run_probe(*, size: str | None, threads: str | None, as_json: bool) -> None:
    count = None
    if threads is not None:
        if not (threads.isascii() and threads.isdigit()) or int(threads) == 0:
            raise UsageError(f"probe --threads {threads}: not a count", "write a count such as 4")
        count = int(threads)
    cells = measured(parse_size(size) if size is not None else 64 << 20, count)
    if not as_json:
        sys.stdout.write(render(cells))
        return
    import json

    from numarun.value import encode

    json.dump({"cells": [encode(c) for c in cells]}, sys.stdout, indent=1)
    sys.stdout.write("\n")


def register(app: typer.Typer) -> None:
    from numarun.options import typer_option

    @app.command("probe", help=DESCRIPTION)
    def probe_command(
        *,
        size: str | None = typer_option("probe_size"),
        threads: str | None = typer_option("probe_threads"),
        as_json: bool = typer_option("json"),
    ) -> None:
        run_probe(size=size, threads=threads, as_json=as_json)
