"""``numarun probe``: where the threads ran and where the buffer was are checked, not assumed.

Runs on this machine, with small buffers; the figures themselves are only checked to be
there (a shared CI machine's bandwidth means nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from numarun import probe
from numarun.commands.probe import parse_size, render
from numarun.errors import UsageError
from numarun.topology import read_topology
from tests.conftest import REPO


def test_threads_run_where_pinned_and_the_buffer_is_on_the_target() -> None:
    topology = read_topology()
    node = topology.nodes_with_memory()[0]
    cpu = max(os.sched_getaffinity(0))
    cell = probe.measure(topology.node_of(cpu) or 0, [cpu], node, size=4 << 20, passes=1)
    assert cell.cpus == {cpu}
    assert set(cell.buffer_nodes) == {node} and sum(cell.buffer_nodes.values()) >= 16
    assert cell.read_bandwidth_mbps > 0 and cell.size_bytes == 4 << 20


def test_best_bandwidth_takes_each_targets_best_initiator() -> None:
    def cell(initiator: int, target: int, mbps: int) -> probe.Cell:
        return probe.Cell(
            initiator=initiator,
            target=target,
            read_bandwidth_mbps=mbps,
            threads=4,
            cpus=frozenset({0}),
            buffer_nodes={target: 64},
            size_bytes=1 << 26,
        )

    cells = [cell(0, 0, 20000), cell(1, 0, 9000), cell(0, 2, 8000), cell(1, 2, 3000)]
    assert probe.best_bandwidth(cells) == {0: 20000, 2: 8000}
    text = render([*cells, cell(1, 3, 100).replace(buffer_nodes={0: 64})])
    assert text.splitlines()[1].split() == ["node", "0", "2", "3"]
    assert text.splitlines()[2].split() == ["0", "20000", "8000", "-"]
    assert "node 1 -> 3: the buffer's pages were on nodes [0]" in text


@pytest.mark.parametrize(
    ("text", "size"), [("64M", 64 << 20), ("1G", 1 << 30), ("4096", 4096), ("8MiB", 8 << 20)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "lots", "-4M"])
def test_bad_sizes_are_one_line(text: str) -> None:
    with pytest.raises(UsageError, match="not a size"):
        parse_size(text)


def test_cli_json_and_progress_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "numarun", "probe", "--size", "4M", "--threads", "1", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    cells = json.loads(done.stdout)["cells"]
    assert cells and all(c["read_bandwidth_mbps"] > 0 and c["threads"] == 1 for c in cells)
    assert all(list(c["buffer_nodes"]) == [str(c["target"])] for c in cells)
    assert "numarun probe: node" in done.stderr
