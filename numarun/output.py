"""numarun's standard output and error, treated as coreutils treats them.

A command's output can go where it cannot be written: a closed descriptor
(``numarun topology >&-``), a full device (``>/dev/full``), a pipe whose reader left
(``| head -c1``). Python would print a traceback for each, and at exit a second one.
Here, as ``close_stdout`` does in coreutils:

* a failed write to stdout ends the command with one line, ``numarun: write error: No
  space left on device`` (:class:`WriteError`, exit 1), or silently with 141 (128 +
  SIGPIPE, what a shell reports for ``yes | head``) when the reader left;
* a write to stderr that fails is dropped: there is nowhere left to say anything, and the
  command's own exit status is still worth having;
* a descriptor 0, 1 or 2 that is closed at start is held on ``/dev/null`` (close-on-exec)
  so that no file numarun opens takes its number; a command exec'd by the prefix form, or
  a worker that inherits it, still finds it closed.

:func:`install` wraps ``sys.stdout`` and ``sys.stderr`` only when they are the process's
own (not a test's capture); :meth:`Guard.close` flushes, reports and puts them back. The
supervisor's printer asks :func:`failure` whether a stream has failed and calls
:func:`discard` once it has said so itself, so that ``numarun run`` keeps its workers and
ends with the job's own status.
"""

from __future__ import annotations

import errno
import io
import os
import sys

from numarun.errors import WriteError

TYPE_CHECKING = False  # typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import TextIO

    from _typeshed import ReadableBuffer

#: Exit status when the reader of stdout went away (128 + SIGPIPE, as a shell shows it).
EXIT_PIPE = 141


class StreamFailed(OSError):  # noqa: N818 - an OSError, as the io stack raises
    """A write to numarun's own stdout failed; ``errno`` and ``strerror`` are the kernel's.

    An :class:`OSError`, so that code which already survives a failed write (the
    supervisor's printer) goes on doing so.
    """


class _Guarded(io.FileIO):
    """Descriptor ``fd`` for writing, whose failures are told apart from every other OSError."""

    def __init__(self, fd: int, *, missing: bool, quiet: bool) -> None:
        super().__init__(fd, "w", closefd=False)
        self.missing = missing  # closed when numarun started: every write fails with EBADF
        self.quiet = quiet  # stderr: drop what cannot be written
        self.dropping = False  # the failure was reported: take and drop what comes
        self.failure: OSError | None = None

    def write(self, data: ReadableBuffer, /) -> int:
        size = memoryview(data).nbytes
        if self.dropping:
            return size
        if self.missing:
            err = OSError(errno.EBADF, os.strerror(errno.EBADF))
        else:
            try:
                return super().write(data)
            except BlockingIOError:
                raise  # a non-blocking descriptor that is full: the buffer retries
            except OSError as exc:
                err = exc
        if self.failure is None:
            self.failure = err
        if self.quiet:
            return size
        raise StreamFailed(err.errno, err.strerror)


def _hold_closed_descriptors() -> set[int]:
    """Put ``/dev/null`` (close-on-exec) on each of 0, 1, 2 that is closed; return those."""
    closed: set[int] = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            held = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)  # the lowest free: often fd
            if held != fd:
                os.dup2(held, fd, inheritable=False)
                os.close(held)
    return closed


def _wrap(fd: int, old: TextIO | None, *, missing: bool, quiet: bool) -> io.TextIOWrapper:
    if old is not None:
        try:
            old.flush()
        except (OSError, ValueError):
            pass
    raw = _Guarded(fd, missing=missing, quiet=quiet)
    return io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=getattr(old, "encoding", None) or "utf-8",
        errors=getattr(old, "errors", None) or ("backslashreplace" if quiet else "strict"),
        line_buffering=bool(getattr(old, "line_buffering", quiet)),
        write_through=bool(getattr(old, "write_through", quiet)),
    )


def _own(stream: TextIO | None, original: TextIO | None, fd: int) -> bool:
    """Whether ``stream`` is the process's own descriptor ``fd`` (not a capture, not ours)."""
    if stream is None:
        return True
    if stream is not original or _raw(stream) is not None:
        return False
    try:
        return stream.fileno() == fd
    except (OSError, ValueError):
        return False


class Guard:
    """What :func:`install` changed, to be reported on and undone by :meth:`close`."""

    __slots__ = ("out", "saved")

    def __init__(self, saved: tuple[TextIO | None, TextIO | None], out: _Guarded | None) -> None:
        self.saved = saved
        self.out = out

    def close(self, code: int, *, refused: bool = False) -> int:
        """Flush stdout, put the streams back; the exit status, a write error's if any.

        The failure is read from the descriptor itself, so that it is reported even where
        a library swallowed the exception (click turns EPIPE into exit 1). A refusal
        (``refused``) already said what went wrong: its status stands.
        """
        try:
            sys.stdout.flush()
        except (OSError, ValueError, AttributeError):
            pass  # recorded by the descriptor, or not ours to flush
        out = self.out
        if out is not None and out.failure is not None and not out.dropping and not refused:
            code = _report(out.failure)
        for stream in (sys.stdout, sys.stderr, *self.saved):
            discard(stream)
        sys.stdout, sys.stderr = self.saved
        return code


def install() -> Guard:
    """Guard stdout and stderr, when they are the process's own; see :class:`Guard`."""
    saved = (sys.stdout, sys.stderr)
    closed = _hold_closed_descriptors()
    out: _Guarded | None = None
    if _own(sys.stdout, sys.__stdout__, 1):
        sys.stdout = _wrap(1, sys.stdout, missing=1 in closed, quiet=False)
        out = _raw(sys.stdout)
    if _own(sys.stderr, sys.__stderr__, 2):
        sys.stderr = _wrap(2, sys.stderr, missing=2 in closed, quiet=True)
    return Guard(saved, out)


def _raw(stream: object) -> _Guarded | None:
    raw = getattr(getattr(stream, "buffer", None), "raw", None)
    return raw if isinstance(raw, _Guarded) else None


def failure(stream: object) -> OSError | None:
    """The first write that failed on ``stream``, when it is one of numarun's guarded ones."""
    raw = _raw(stream)
    return raw.failure if raw is not None else None


def discard(stream: object) -> None:
    """Once ``stream`` has failed and that was said: take and drop what is written to it.

    What is still buffered goes too, so that the interpreter's own flush at exit is quiet.
    A stream that has not failed is only flushed.
    """
    raw = _raw(stream)
    if raw is None or raw.failure is None:
        return
    raw.dropping = True
    try:
        stream.flush()  # type: ignore[attr-defined]
    except (OSError, ValueError):
        pass


def _report(err: OSError) -> int:
    """The exit status for a failed write to stdout, after saying so (silent for EPIPE)."""
    if err.errno == errno.EPIPE:
        return EXIT_PIPE
    problem = WriteError(f"write error: {err.strerror or os.strerror(err.errno or 0)}")
    say(f"numarun: {problem.message}")
    return problem.exit_code


def say(line: str) -> None:
    """One line on stderr, if stderr can take it at all."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
