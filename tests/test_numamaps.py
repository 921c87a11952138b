"""numa_maps parsing: every field and kind by hand, this machine's live text, and properties."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numarun import numamaps
from numarun.numamaps import parse_line, parse_mappings, parse_policy, summarize

# -- policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode", "nodes", "flags"),
    [
        ("default", "default", set(), set()),
        ("local", "local", set(), set()),
        ("bind:1", "bind", {1}, set()),
        ("bind:0-1,4", "bind", {0, 1, 4}, set()),
        ("interleave:0-3", "interleave", {0, 1, 2, 3}, set()),
        ("interleave=static:0-1", "interleave", {0, 1}, {"static"}),
        ("bind=relative:1", "bind", {1}, {"relative"}),
        ("bind=static|balancing:0", "bind", {0}, {"static", "balancing"}),
        ("prefer:1", "preferred", {1}, set()),
        ("prefer (many):0,2", "preferred-many", {0, 2}, set()),
        ("preferred-many:1", "preferred-many", {1}, set()),
        ("weighted interleave:0-1", "weighted-interleave", {0, 1}, set()),
        ("weighted interleave=static:2-3", "weighted-interleave", {2, 3}, {"static"}),
        ("bind:garbage", "bind", set(), set()),
        ("futuremode:3", "futuremode", {3}, set()),
    ],
)
def test_policy(text: str, mode: str, nodes: set[int], flags: set[str]) -> None:
    policy = parse_policy(text)
    assert (policy.mode, set(policy.nodes), set(policy.flags)) == (mode, nodes, flags)
    assert policy.text == text


def test_policy_spelling_and_equality() -> None:
    assert str(parse_policy("interleave=static:0-1")) == "interleave=static:0-1"
    assert str(parse_policy("prefer (many):0,2")) == "preferred-many:0,2"
    assert parse_policy("prefer:1") == parse_policy("preferred:1")
    assert hash(parse_policy("bind:0-1")) == hash(parse_policy("bind:0,1"))


# -- lines, one per kind and field ---------------------------------------------------------------


def test_anon_line_all_counters() -> None:
    m = parse_line(
        "7f0000000000 default anon=10 dirty=9 mapped=12 mapmax=3 swapcache=2 active=7 "
        "writeback=1 N0=4 N1=8 kernelpagesize_kB=4"
    )
    assert m is not None
    assert m.address == 0x7F0000000000
    assert m.kind == "anon" and m.path is None
    assert (m.anon, m.dirty, m.mapped, m.mapmax, m.swapcache, m.active, m.writeback) == (
        10,
        9,
        12,
        3,
        2,
        7,
        1,
    )
    assert m.pages == {0: 4, 1: 8}
    assert m.node_bytes() == {0: 4 * 4096, 1: 8 * 4096}


D = "7f00 default "  # most lines start so
K = " kernelpagesize_kB=4"
DEL = "\\040(deleted)"  # " (deleted)" as seq_path escapes it


@pytest.mark.parametrize(
    ("line", "kind", "path"),
    [
        ("55d0 default heap anon=4 dirty=4 N0=4" + K, "heap", None),
        ("7ffc default stack anon=9 dirty=9 N0=9" + K, "stack", None),
        ("7ffc default stack:1234 anon=1 dirty=1 N0=1" + K, "stack", None),
        (D + "file=/lib/libc.so.6 mapped=37 N0=37" + K, "file", "/lib/libc.so.6"),
        (D + "file=/lib/libc.so.6 anon=2 dirty=2 N0=2" + K, "anon", "/lib/libc.so.6"),
        (D + "file=/dev/shm/buf dirty=3 N1=3" + K, "shm", "/dev/shm/buf"),
        (D + "file=/SYSV00000000" + DEL + " dirty=3 N1=3" + K, "shm", "/SYSV00000000 (deleted)"),
        (D + "file=/memfd:pool" + DEL + " dirty=3 N0=3" + K, "shm", "/memfd:pool (deleted)"),
        (D + "file=/dev/zero" + DEL + " dirty=1 N0=1" + K, "shm", "/dev/zero (deleted)"),
        (
            "7f00 bind:1 file=/anon_hugepage" + DEL + " huge anon=2 N1=2 kernelpagesize_kB=2048",
            "huge",
            "/anon_hugepage (deleted)",
        ),
        (D + "file=/mnt/huge/f huge dirty=1 N0=1 kernelpagesize_kB=1048576", "huge", "/mnt/huge/f"),
        (D + "file=/tmp/a\\040b\\075c mapped=1 N0=1" + K, "file", "/tmp/a b=c"),
        ("7f00 default", "anon", None),
    ],
)
def test_kinds(line: str, kind: str, path: str | None) -> None:
    m = parse_line(line)
    assert m is not None
    assert (m.kind, m.path) == (kind, path)


def test_huge_pages_count_as_what_they_are() -> None:
    m = parse_line("7f00 bind:1 huge anon=3 dirty=3 N1=3 kernelpagesize_kB=2048")
    assert m is not None and m.kind == "huge"
    assert m.node_bytes() == {1: 3 * 2048 * 1024}
    giga = parse_line("7f00 default huge dirty=1 N0=1 kernelpagesize_kB=1048576")
    assert giga is not None and giga.node_bytes() == {0: 1 << 30}


def test_policies_with_blanks_in_lines() -> None:
    m = parse_line("7f00 weighted interleave:0-1 anon=4 dirty=4 N0=2 N1=2 kernelpagesize_kB=4")
    assert m is not None
    assert m.policy.mode == "weighted-interleave" and m.pages == {0: 2, 1: 2}
    m = parse_line("7f00 prefer (many)=static:0-1 heap anon=1 dirty=1 N1=1 kernelpagesize_kB=4")
    assert m is not None
    assert (m.policy.mode, m.kind, set(m.policy.nodes)) == ("preferred-many", "heap", {0, 1})


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "7f00",
        "zzzz default anon=1",
        "7f00 ",
        "7f00 default anon=1 dirty=1 N0=1 kernelpagesi",
        "7f00 default anon=1 N0=",
        "7f00 default anon=x N0=1x Nfoo=3 N=2 kernelpagesize_kB=0",
        "7f00 default file=",
        "7f00 bind: anon=1",
        "7f00 default N-1=5",
    ],
)
def test_truncated_and_malformed_lines_do_not_crash(line: str) -> None:
    parse_line(line)
    summarize(line)
    parse_mappings(line)


def test_cut_off_line_counts_at_base_page_size() -> None:
    m = parse_line("7f00 default anon=2 dirty=2 N0=2")
    assert m is not None
    assert m.page_kb == os.sysconf("SC_PAGE_SIZE") // 1024


# -- whole texts -------------------------------------------------------------------------------

TEXT = """\
55d000000000 default file=/usr/bin/python3 mapped=200 mapmax=3 N0=200 kernelpagesize_kB=4
55d000100000 default heap anon=100 dirty=100 N0=60 N1=40 kernelpagesize_kB=4
7f0000000000 bind:1 anon=256 dirty=256 N1=256 kernelpagesize_kB=4
7f0000100000 bind:1 anon=256 dirty=256 N1=250 N0=6 kernelpagesize_kB=4
7f0000200000 interleave:0-1 anon=10 dirty=10 N0=5 N1=5 kernelpagesize_kB=4
7f0000300000 default file=/dev/shm/x dirty=8 N0=8 kernelpagesize_kB=4
7f0000400000 default huge anon=1 dirty=1 N1=1 kernelpagesize_kB=2048
7ffc00000000 default stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4
7ffc00100000 default
7ffc00200000 bind:1 anon=1 dirty=1 N1=
"""


def test_summary_groups_and_totals() -> None:
    s = summarize(TEXT)
    assert s.mappings == 10
    bind = parse_policy("bind:1")
    default = parse_policy("default")
    assert s.groups[(bind, "anon")].node_bytes == {1: 506 * 4096, 0: 6 * 4096}
    assert s.groups[(bind, "anon")].mappings == 3
    assert s.groups[(default, "heap")].node_bytes == {0: 60 * 4096, 1: 40 * 4096}
    assert s.groups[(default, "huge")].node_bytes == {1: 2 << 20}
    assert s.groups[(default, "shm")].node_bytes == {0: 8 * 4096}
    assert s.node_bytes(["file"]) == {0: 200 * 4096}
    assert list(s.kind_bytes()) == ["anon", "heap", "stack", "shm", "huge", "file"]


def test_summary_matches_per_mapping_parse() -> None:
    fast = summarize(TEXT.encode())
    slow = numamaps.summarize_mappings(parse_mappings(TEXT))
    assert {k: g.node_bytes for k, g in fast.groups.items()} == {
        k: g.node_bytes for k, g in slow.groups.items()
    }
    assert [m.address for m in parse_mappings(TEXT)][:2] == [0x55D000000000, 0x55D000100000]


def _live_texts() -> list[tuple[int, bytes]]:
    out = []
    for pid in (os.getpid(), os.getppid(), 1):
        try:
            with open(f"/proc/{pid}/numa_maps", "rb") as f:
                out.append((pid, f.read()))
        except OSError:
            continue
    return out


def test_live_text_from_this_machine() -> None:
    texts = _live_texts()
    assert texts, "no readable numa_maps on this machine"
    for _pid, data in texts:
        text = data.decode()
        mappings = parse_mappings(text)
        assert len(mappings) == text.count("\n")
        fast = summarize(data)
        assert fast.mappings == len(mappings)
        assert fast.total_bytes == sum(sum(m.node_bytes().values()) for m in mappings)
        # Our own process has a heap or stack and libraries mapped from files.
    own = summarize(texts[0][1])
    kinds = {k for _, k in own.groups}
    assert "file" in kinds and ("stack" in kinds or "heap" in kinds)


def test_live_totals_match_a_plain_sum_of_node_fields() -> None:
    import re

    _, data = _live_texts()[0]
    text = data.decode()
    expected = 0
    for line in text.splitlines():
        unit = int(m.group(1)) if (m := re.search(r"kernelpagesize_kB=(\d+)", line)) else 4
        expected += sum(int(p) for p in re.findall(r" N\d+=(\d+)", line)) * unit * 1024
    assert summarize(data).total_bytes == expected


# -- properties --------------------------------------------------------------------------------

_nodes = st.frozensets(st.integers(0, 63), min_size=1, max_size=5)
_path_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def _escape(path: str) -> str:
    # what seq_path does with the characters numa_maps asks it to escape
    return "".join(f"\\{ord(c):03o}" if c in " \t\n=\\" else c for c in path)


@st.composite
def kernel_lines(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    from numarun import cpulist

    mode = draw(
        st.sampled_from(
            [
                "default",
                "local",
                "bind",
                "interleave",
                "prefer",
                "prefer (many)",
                "weighted interleave",
            ]
        )
    )
    text = mode
    nodes: frozenset[int] = frozenset()
    if mode not in ("default", "local"):
        flags = draw(
            st.sampled_from(["", "=static", "=relative", "=static|balancing", "=balancing"])
        )
        nodes = draw(_nodes)
        text += f"{flags}:{cpulist.format_list(nodes)}"
    backing = draw(st.sampled_from(["", "heap", "stack", "file"]))
    path = None
    if backing == "file":
        path = "/" + draw(st.text(_path_chars, min_size=1, max_size=30))
        text += f" file={_escape(path)}"
    elif backing:
        text += f" {backing}"
    huge = draw(st.booleans())
    if huge:
        text += " huge"
    pages = draw(st.dictionaries(st.integers(0, 1023), st.integers(1, 10**9), max_size=4))
    page_kb = 2048 if huge else 4
    if pages:
        total = sum(pages.values())
        anon = draw(st.integers(0, total))
        for key, value in (("anon", anon), ("dirty", draw(st.integers(0, total)))):
            if value:
                text += f" {key}={value}"
        text += f" mapped={total}"
        if draw(st.booleans()):
            text += f" mapmax={draw(st.integers(2, 100))}"
        text += "".join(f" N{n}={p}" for n, p in sorted(pages.items()))
        text += f" kernelpagesize_kB={page_kb}"
    address = draw(st.integers(0, 2**64 - 1))
    return f"{address:08x} {text}", {
        "address": address,
        "nodes": nodes,
        "path": path,
        "pages": pages,
        "page_kb": page_kb,
        "huge": huge,
    }


@settings(max_examples=300, deadline=None)
@given(kernel_lines())
def test_any_kernel_line_parses(case: tuple[str, dict[str, object]]) -> None:
    line, want = case
    m = parse_line(line)
    assert m is not None
    assert m.address == want["address"]
    assert m.policy.nodes == want["nodes"]
    assert m.path == want["path"]
    assert m.pages == want["pages"]
    if want["pages"]:
        assert m.page_kb == want["page_kb"]
    if want["huge"]:
        assert m.kind == "huge"
    s = summarize(line + "\n")
    assert s.mappings == 1
    assert s.total_bytes == sum(m.node_bytes().values())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_garbage_never_crashes(text: str) -> None:
    parse_line(text)
    parse_mappings(text)
    summarize(text)
    summarize(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(st.lists(kernel_lines(), max_size=20), st.integers(0, 200))
def test_cut_anywhere_never_crashes(cases: list[tuple[str, dict[str, object]]], cut: int) -> None:
    text = "\n".join(line for line, _ in cases)
    summarize(text[: len(text) - cut])
    parse_mappings(text[: len(text) - cut])


# -- the fast paths against the plain ones ------------------------------------------------------


def _every_readable_numa_maps() -> list[bytes]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/numa_maps", "rb") as f:
                    out.append(f.read())
            except OSError:
                continue
    return out


def test_summary_is_the_per_mapping_parse_on_every_process_here() -> None:
    # Real numa_maps, as many as this machine has: the fast summary (regex, counted
    # remainders) agrees with parsing every line on its own.
    texts = [t for t in _every_readable_numa_maps() if t]
    assert texts, "no readable numa_maps on this machine"
    for data in texts:
        fast = summarize(data)
        slow = numamaps.summarize_mappings(parse_mappings(data.decode("utf-8", "replace")))
        assert fast == slow
        assert fast.mappings == data.count(b"\n")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(kernel_lines(), min_size=1, max_size=20),
    st.lists(st.integers(0, 4000), max_size=8),
)
def test_counted_piece_by_piece_is_the_whole_file(
    cases: list[tuple[str, dict[str, object]]], cuts: list[int]
) -> None:
    # The report reads numa_maps read by read; pieces may end anywhere, mid-line included.
    data = "".join(line + "\n" for line, _ in cases).encode("utf-8", "surrogatepass")
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert numamaps.summarize_chunks(pieces) == summarize(data)
    assert numamaps.summarize_chunks(pieces).mappings == len(cases)


def test_live_file_read_piece_by_piece_is_the_whole_file() -> None:
    from numarun import procfs

    data = procfs.numa_maps(os.getpid())
    pieces = list(procfs.numa_maps_chunks(os.getpid()))
    assert len(pieces) >= 1 and b"".join(pieces).count(b"\n") == data.count(b"\n")
    assert numamaps.summarize_chunks(pieces).mappings == summarize(data).mappings
    assert numamaps.summarize_chunks([]).mappings == 0


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="\\0123456789ab=\x00\u00e9", max_size=40))
def test_octal_escapes_undone_as_seq_path_wrote_them(path: str) -> None:
    # Each backslash and three octal digits is one character; any other backslash stays.
    import re

    want = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)
    mapping = parse_line(f"7f00 default file={path} mapped=1 N0=1 kernelpagesize_kB=4")
    assert mapping is not None
    assert mapping.path == want
