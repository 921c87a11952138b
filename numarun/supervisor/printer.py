"""Workers' output, line by line, each line prefixed with who wrote it.

Every pipe is read in chunks and cut into whole lines here, so a line is written out with
one ``write`` and two workers' lines are never spliced mid-line, whatever the chunking.
A line longer than :data:`MAX_LINE` is cut there (a worker that writes megabytes without
a newline must not make the supervisor hold them all). The printer is injected into the
supervisor, as in honcho, so tests and library callers capture or redirect output.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Protocol, TextIO

from numarun import output
from numarun.supervisor.model import WorkerSpec

MAX_LINE = 64 * 1024

# Foreground colours that read on dark and light terminals alike, one per worker in turn.
_COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
_RESET = "\033[0m"


class LineSplitter:
    """Turns a stream of byte chunks into whole text lines (without their newline)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        lines: list[str] = []
        start = 0
        buf = self._buf
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            lines.append(buf[start:end].decode("utf-8", "replace"))
            start = end + 1
        del buf[:start]
        while len(buf) >= MAX_LINE:
            lines.append(buf[:MAX_LINE].decode("utf-8", "replace"))
            del buf[:MAX_LINE]
        return lines

    def finish(self) -> list[str]:
        """What is left at end of file: a last line without its newline, if any."""
        if not self._buf:
            return []
        line = self._buf.decode("utf-8", "replace")
        self._buf.clear()
        return [line]


class Printer(Protocol):
    def line(self, worker: WorkerSpec, stream: str, text: str) -> None:
        """One line the worker wrote on ``stream`` (``stdout`` or ``stderr``)."""

    def note(self, worker: WorkerSpec | None, text: str) -> None:
        """A line from the supervisor itself about ``worker`` (None: about the job)."""


class PrefixPrinter:
    """``redis.0 n0 | text``: the worker's name, index and node, coloured on a terminal.

    Worker stdout goes to ``out`` and stderr to ``err``; the supervisor's own notes go to
    ``err`` so that a pipeline reading ``numarun run``'s stdout sees only workers' output.
    Prefixes are padded to the widest one so the text columns line up.
    """

    def __init__(
        self,
        workers: Iterable[WorkerSpec] = (),
        out: TextIO | None = None,
        err: TextIO | None = None,
        colour: bool | None = None,
    ) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        if colour is None:
            colour = _isatty(self.out)
        self.colour = colour
        self._width = max((len(_tag(w)) for w in workers), default=0)
        self._width = max(self._width, len("numarun"))
        self._gone: set[int] = set()

    def _prefix(self, tag: str, index: int | None) -> str:
        text = f"{tag:<{self._width}} |"
        if self.colour:
            code = "1" if index is None else _COLOURS[index % len(_COLOURS)]
            return f"\033[{code}m{text}{_RESET}"
        return text

    def _write(self, target: TextIO, text: str) -> None:
        # A reader that went away (``numarun run job.toml | head``, a closed terminal, a
        # full disk) must not bring the supervisor down with the workers in its care: drop
        # that stream, say so once on the other, and go on reading the workers' pipes.
        if id(target) in self._gone:
            return
        try:
            target.write(text)
            target.flush()
        except (OSError, ValueError) as err:
            self._lost(target, err)
            return
        failed = output.failure(target)  # numarun's stderr drops what it cannot write
        if failed is not None:
            self._lost(target, failed)

    def _lost(self, target: TextIO, err: Exception) -> None:
        self._gone.add(id(target))
        output.discard(target)  # said here: numarun's exit status stays the job's
        name, other = ("stdout", self.err) if target is self.out else ("stderr", self.out)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        self._write(
            other,
            f"{self._prefix('numarun', None)} cannot write to {name} ({reason}): its lines "
            "are dropped from now on; the job goes on\n",
        )

    def line(self, worker: WorkerSpec, stream: str, text: str) -> None:
        target = self.out if stream == "stdout" else self.err
        self._write(target, f"{self._prefix(_tag(worker), worker.index)} {text}\n")

    def note(self, worker: WorkerSpec | None, text: str) -> None:
        who = f"{worker.label}: " if worker else ""
        self._write(self.err, f"{self._prefix('numarun', None)} {who}{text}\n")


class NullPrinter:
    """Drops everything: for callers that only want :meth:`Supervisor.events`."""

    def line(self, worker: WorkerSpec, stream: str, text: str) -> None:
        pass

    def note(self, worker: WorkerSpec | None, text: str) -> None:
        pass


class QuietPrinter:
    """Drops the supervisor's notes, keeps workers' lines in memory (tests, libraries)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []  # (label, stream, text)
        self.notes: list[str] = []

    def line(self, worker: WorkerSpec, stream: str, text: str) -> None:
        self.lines.append((worker.label, stream, text))

    def note(self, worker: WorkerSpec | None, text: str) -> None:
        self.notes.append(f"{worker.label}: {text}" if worker else text)


def _tag(worker: WorkerSpec) -> str:
    node = f" n{worker.node}" if worker.node is not None else ""
    return f"{worker.label}{node}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
