"""Parse ``/proc/PID/numa_maps``: where each mapping's pages are, and under which policy.

One line per mapping (``fs/proc/task_mmu.c``, ``show_numa_map``; proc(5))::

    7f2a1c000000 bind=static:1 file=/dev/shm/x\\040y anon=3 dirty=3 N1=3 kernelpagesize_kB=4

* the start address in hex;
* the memory policy as ``mpol_to_str`` writes it: a mode (``default``, ``prefer``,
  ``bind``, ``interleave``, ``local``, ``prefer (many)``, ``weighted interleave``; note the
  spaces in the last two), optional flags after ``=`` (``static`` or ``relative``, and
  ``balancing``, joined by ``|``), optional nodes after ``:`` in the list format;
* what backs it: ``file=PATH`` (space, tab, newline and ``=`` written as octal escapes, so
  a path never contains a blank), else ``heap`` or ``stack`` (``stack:TID`` on old
  kernels); then ``huge`` for hugetlb mappings;
* only when the mapping has pages: counters ``anon= dirty= mapped= mapmax= swapcache=
  active= writeback=``, pages per node ``N<node>=<pages>``, and ``kernelpagesize_kB=``.
  Pages are counted in units of ``kernelpagesize_kB``: a 2 MB hugetlb page counts once at
  2048 kB; a transparent huge page counts as 512 base pages at 4 kB. Bytes are therefore
  always ``pages * kernelpagesize_kB * 1024``.

The file is read in one go and the process may change or exit meanwhile, so any line may be
truncated or odd. Nothing here raises on content: unknown tokens are ignored, a line without
an address is skipped, a count that is not a number is dropped, and a line with pages but no
``kernelpagesize_kB`` (cut off) is counted at the base page size.

Speed matters (a JVM or a Python process with 60,000 mappings is ordinary, and the watch
reads every worker's file again and again): :func:`summarize` strips the address off every
line (``bytes.partition`` mapped over the lines) and counts identical remainders with
``collections.Counter`` (all in C, no Python code per line); only the distinct
remainders, usually a few hundred, are parsed in Python. :func:`summarize_chunks` does the
same read by read, never holding the whole file.
:func:`parse_mappings` keeps every mapping with its address and is for when that is needed.
"""

from __future__ import annotations

import os
from collections import Counter
from itertools import chain, repeat
from operator import itemgetter

from numarun import cpulist
from numarun.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

# Kinds of mapping, in display order. "shm" is shared memory (POSIX /dev/shm, SysV, memfd,
# shared anonymous); "huge" is hugetlbfs whatever backs it.
KINDS: tuple[str, ...] = ("anon", "heap", "stack", "shm", "huge", "file")
# Kinds whose pages follow the allocation policy; "file" (page cache) does not.
JUDGED_KINDS: tuple[str, ...] = ("anon", "heap", "stack", "shm", "huge")

# Modes as numarun names them, from the words mpol_to_str writes.
_MODES = {
    "default": "default",
    "local": "local",
    "bind": "bind",
    "interleave": "interleave",
    "prefer": "preferred",
    "preferred": "preferred",
    "prefer (many)": "preferred-many",
    "preferred-many": "preferred-many",
    "weighted interleave": "weighted-interleave",
    "weighted-interleave": "weighted-interleave",
}

# Paths of file-backed mappings that are really shared memory. A shared anonymous mapping
# (mmap MAP_SHARED|MAP_ANONYMOUS) shows as /dev/zero; SysV segments as /SYSV<key>.
_SHM_PREFIXES = ("/dev/shm/", "/SYSV", "/memfd:", "/dev/zero")

# A line less its address: what follows its first blank (bytes.partition, picked by
# itemgetter: C calls mapped over the lines, no Python code per line, and no regular
# expression, whose module and the enum it imports cost more start-up time than they save
# on 60,000 lines). The kernel starts every line with an address; a line without a blank
# gives b"", which parses to nothing.
_AFTER_BLANK = itemgetter(2)
_OCTAL_DIGITS = frozenset("01234567")

_BASE_PAGE_KB = (os.sysconf("SC_PAGE_SIZE") // 1024) if hasattr(os, "sysconf") else 4


class Policy(Value):
    """A memory policy as numa_maps shows it: mode, flags and nodes."""

    mode: str  # default, local, bind, interleave, preferred, preferred-many,
    #            weighted-interleave, or the kernel's word when unknown
    nodes: frozenset[int]  # empty for default and local
    flags: frozenset[str]  # "static", "relative", "balancing"
    text: str  # as the kernel wrote it

    # Equal by meaning: the text is how one line spelled it.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and (self.mode, self.nodes, self.flags) == (
            other.mode,
            other.nodes,
            other.flags,
        )

    def __hash__(self) -> int:
        return hash((self.mode, self.nodes, self.flags))

    def __repr__(self) -> str:
        return f"Policy({self.text!r})"

    def __str__(self) -> str:
        """numarun's spelling: ``bind:1``, ``interleave=static:0-3``, ``default``."""
        flags = "=" + "|".join(sorted(self.flags)) if self.flags else ""
        nodes = ":" + cpulist.format_list(self.nodes) if self.nodes else ""
        return f"{self.mode}{flags}{nodes}"


def parse_policy(text: str) -> Policy:
    """Parse the policy column (``bind=static:0-1``, ``prefer (many):2``, ``default``).

    Never raises: an unreadable node list gives an empty node set.
    """
    head, _, node_text = text.partition(":")
    word, _, flag_text = head.partition("=")
    word = word.strip()
    mode = _MODES.get(word, word or "unknown")
    flags = frozenset(f for f in flag_text.split("|") if f)
    try:
        nodes = cpulist.parse_list(node_text)
    except ValueError:
        nodes = frozenset()
    return Policy(mode=mode, nodes=nodes, flags=flags, text=text)


class Mapping(Value):
    """One line of numa_maps: a mapping, its policy, its backing and its pages per node."""

    address: int
    policy: Policy
    kind: str  # one of KINDS
    path: str | None  # the backing file, octal escapes undone
    page_kb: int = _BASE_PAGE_KB  # until the line says; a cut-off line never does
    pages: dict[int, int] = {}  # noqa: RUF012 - node -> pages of page_kb each
    anon: int = 0
    dirty: int = 0
    mapped: int = 0
    mapmax: int = 0
    swapcache: int = 0
    active: int = 0
    writeback: int = 0

    def node_bytes(self) -> dict[int, int]:
        """Bytes per node."""
        unit = self.page_kb * 1024
        return {node: pages * unit for node, pages in self.pages.items()}

    @property
    def total_pages(self) -> int:
        return sum(self.pages.values())

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"Mapping({self.address:#x} {self.policy} {self.kind}{where} {self.pages})"


# Counters that numa_maps prints as key=value and Mapping keeps.
_COUNTERS = frozenset({"anon", "dirty", "mapped", "mapmax", "swapcache", "active", "writeback"})


def _unescape(path: str) -> str:
    # seq_path writes blank, tab, newline and '=' (and '\\') as \ooo octal escapes; a
    # backslash not followed by three octal digits stays as it is.
    if "\\" not in path:
        return path
    head, *parts = path.split("\\")
    out = [head]
    for part in parts:
        code = part[:3]
        if len(code) == 3 and _OCTAL_DIGITS.issuperset(code):
            out.append(chr(int(code, 8)) + part[3:])
        else:
            out.append("\\" + part)
    return "".join(out)


def _remainders(text: bytes) -> Iterator[bytes]:
    """Every line of ``text`` less its address (b"" for a line without a blank)."""
    return map(_AFTER_BLANK, map(bytes.partition, text.split(b"\n"), repeat(b" ")))


def _split_policy(tokens: list[str]) -> tuple[str, int]:
    """The policy text at the front of ``tokens`` and how many tokens it took."""
    if len(tokens) > 1 and (
        (tokens[0] == "weighted" and tokens[1].startswith("interleave"))
        or (tokens[0] == "prefer" and tokens[1].startswith("(many)"))
    ):
        return f"{tokens[0]} {tokens[1]}", 2
    return tokens[0], 1


def _parse_remainder(  # noqa: PLR0912
    rest: str, address: int, policies: dict[str, Policy]
) -> Mapping | None:
    # One branch per numa_maps field, in one function on purpose: it runs once per mapping
    # (60,000 in a large process) and a call per field would double the parse time.
    """Parse what follows the address on one line; None when there is no policy at all."""
    # Split on blanks only: a path may hold other whitespace (\r, \x1f, U+2028), which the
    # kernel does not escape.
    tokens = [t for t in rest.split(" ") if t]
    if not tokens:
        return None
    policy_text, used = _split_policy(tokens)
    policy = policies.get(policy_text)
    if policy is None:
        policy = policies[policy_text] = parse_policy(policy_text)
    fields: dict[str, Any] = {"pages": {}}
    huge = heap = stack = False
    for token in tokens[used:]:
        key, eq, value = token.partition("=")
        if not eq:
            if token == "heap":
                heap = True
            elif token == "stack" or token.startswith("stack:"):
                stack = True
            elif token == "huge":
                huge = True
            continue
        if key == "file":
            fields["path"] = _unescape(value)
            continue
        try:
            number = int(value)
        except ValueError:
            continue  # cut off mid-number, or a field this parser does not know
        if key[:1] == "N" and key[1:].isdigit():
            fields["pages"][int(key[1:])] = number
        elif key == "kernelpagesize_kB":
            if number > 0:
                fields["page_kb"] = number
        elif key in _COUNTERS:
            fields[key] = number
    path = fields.pop("path", None)
    kind = _kind(path, fields, huge=huge, heap=heap, stack=stack)
    return Mapping(address=address, policy=policy, kind=kind, path=path, **fields)


def _kind(path: str | None, fields: dict[str, Any], *, huge: bool, heap: bool, stack: bool) -> str:
    if huge:
        return "huge"
    if path is not None:
        if path.startswith(_SHM_PREFIXES):
            return "shm"
        pages = sum(fields["pages"].values())
        # A private file mapping whose every page is a private copy (a library's .data, a
        # written MAP_PRIVATE file) holds anonymous memory allocated under the policy, not
        # page cache: count it with anon.
        if pages and fields.get("anon", 0) >= pages:
            return "anon"
        return "file"
    if heap:
        return "heap"
    if stack:
        return "stack"
    return "anon"


def parse_line(line: str) -> Mapping | None:
    """One numa_maps line as a :class:`Mapping`, or None when it has no address or policy."""
    address_text, blank, rest = line.strip("\n").partition(" ")
    if not blank:
        return None
    try:
        address = int(address_text, 16)
    except ValueError:
        return None
    return _parse_remainder(rest, address, {})


def parse_mappings(text: str) -> list[Mapping]:
    """Every mapping of a whole numa_maps text, in file order; bad lines are skipped."""
    policies: dict[str, Policy] = {}
    # Most remainders repeat (see summarize); parse each once and copy it per address.
    parsed: dict[str, Mapping | None] = {}
    out: list[Mapping] = []
    for line in text.split("\n"):  # not splitlines(): \r or \x1c may be part of a path
        address_text, blank, rest = line.partition(" ")
        if not blank:
            continue
        try:
            address = int(address_text, 16)
        except ValueError:
            continue
        if rest in parsed:
            template = parsed[rest]
        else:
            template = parsed[rest] = _parse_remainder(rest, 0, policies)
        if template is not None:
            out.append(_copy(template, address))
    return out


def _copy(template: Mapping, address: int) -> Mapping:
    copy: Mapping = template.replace(address=address, pages=dict(template.pages))
    return copy


class Group(Value):
    """The pages of every mapping that shares one policy and one kind, in bytes per node."""

    policy: Policy
    kind: str
    mappings: int
    node_bytes: dict[int, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.node_bytes.values())

    def __repr__(self) -> str:
        return f"Group({self.policy} {self.kind} x{self.mappings} {self.node_bytes})"


class Summary(Value):
    """A process's numa_maps folded into (policy, kind) groups."""

    groups: dict[tuple[Policy, str], Group]
    mappings: int  # lines parsed

    def node_bytes(self, kinds: Iterable[str] | None = None) -> dict[int, int]:
        """Bytes per node over all groups, or over the groups of the given kinds."""
        wanted = None if kinds is None else frozenset(kinds)
        out: dict[int, int] = {}
        for group in self.groups.values():
            if wanted is None or group.kind in wanted:
                for node, size in group.node_bytes.items():
                    out[node] = out.get(node, 0) + size
        return out

    def kind_bytes(self) -> dict[str, dict[int, int]]:
        """Bytes per node for each kind present, kinds in :data:`KINDS` order."""
        found: dict[str, dict[int, int]] = {}
        for group in self.groups.values():
            per_node = found.setdefault(group.kind, {})
            for node, size in group.node_bytes.items():
                per_node[node] = per_node.get(node, 0) + size
        return {kind: found[kind] for kind in KINDS if kind in found}

    @property
    def total_bytes(self) -> int:
        return sum(g.total_bytes for g in self.groups.values())


def fold(counted: Iterable[tuple[Mapping, int]]) -> Summary:
    """A :class:`Summary` of mappings, each counted as many times as given."""
    tally: dict[tuple[Policy, str], tuple[list[int], dict[int, int]]] = {}
    lines = 0
    for mapping, count in counted:
        key = (mapping.policy, mapping.kind)
        found = tally.get(key)
        if found is None:
            found = tally[key] = ([0], {})
        found[0][0] += count
        unit = mapping.page_kb * 1024 * count
        node_bytes = found[1]
        for node, pages in mapping.pages.items():
            node_bytes[node] = node_bytes.get(node, 0) + pages * unit
        lines += count
    groups = {
        key: Group(policy=key[0], kind=key[1], mappings=n[0], node_bytes=node_bytes)
        for key, (n, node_bytes) in tally.items()
    }
    return Summary(groups=groups, mappings=lines)


def summarize(data: bytes | str) -> Summary:
    """Fold a whole numa_maps file into a :class:`Summary`, parsing each distinct line once.

    Takes the file's bytes as read (decoding only the distinct remainders is cheaper) or
    its text.
    """
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    # Addresses make every line unique; without them most lines of a big process repeat
    # ("default anon=1 dirty=1 active=0 N0=1 kernelpagesize_kB=4"), so count first.
    return _summarize_counts(Counter(_remainders(raw)))


def summarize_chunks(chunks: Iterable[bytes]) -> Summary:
    """:func:`summarize` of a numa_maps file given in pieces (``procfs.numa_maps_chunks``).

    The same result as :func:`summarize` of the pieces joined, for pieces cut anywhere;
    counting piece by piece never holds the whole text (4 MB at 60,000 mappings) or all its
    remainders at once, which in a short-lived process costs more in page faults than the
    parse itself.
    """
    # One Counter over all pieces (itertools.chain): an update per piece, ~1,000 of them at
    # 60,000 mappings since seq_file returns about a page a read, costs ~4 ms more.
    counts = Counter(chain.from_iterable(map(_remainders, _whole_lines(chunks))))
    return _summarize_counts(counts)


def _whole_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The pieces again, each ending at a line's end: a cut-off line goes with the next."""
    tail = b""
    for chunk in chunks:
        if tail:
            chunk = tail + chunk  # noqa: PLW2901 - the line cut off by the last piece
        end = chunk.rfind(b"\n") + 1
        if end == len(chunk):  # as seq_file cuts them: whole lines, no copy
            tail = b""
            yield chunk
        else:
            tail = chunk[end:]
            yield chunk[:end]
    if tail:
        yield tail


def _summarize_counts(counts: Counter[bytes]) -> Summary:
    """Parse each distinct remainder once and fold them with their counts."""
    policies: dict[str, Policy] = {}
    counted = []
    for rest, count in counts.items():
        mapping = _parse_remainder(rest.decode("utf-8", "replace"), 0, policies)
        if mapping is not None:
            counted.append((mapping, count))
    return fold(counted)


def summarize_mappings(mappings: Iterable[Mapping]) -> Summary:
    """Fold already parsed mappings into a :class:`Summary`."""
    return fold((mapping, 1) for mapping in mappings)
