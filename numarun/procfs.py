"""One plain function per ``/proc`` file that numarun reads on the live machine.

In the manner of psutil's Linux module: each function opens one file, returns plain values,
and translates the ways a process read can fail into :class:`~numarun.errors.ProcessError`
(exit code 9) at this boundary, so callers never see an ``OSError``:

* the process is gone (``ENOENT``/``ESRCH``, or it became a zombie with no memory left);
* it belongs to another user (``EACCES``/``EPERM``: numa_maps needs ptrace-read access).

Every path is under ``proc_root`` (``/proc`` on a live machine) so tests can fake one.
"""

from __future__ import annotations

import errno
import os

from numarun import cpulist
from numarun.errors import ProcessError

PROC = "/proc"

# /proc/PID/stat fields are numbered from 1 in proc(5); "processor" (the CPU the task last
# ran on) is field 39. Fields after the command name start at field 3 (state).
_STAT_PROCESSOR = 39 - 3
_STAT_STARTTIME = 22 - 3


def _gone(pid: int) -> ProcessError:
    return ProcessError(f"process {pid} does not exist (it may have exited)", "check the PID")


def _not_yours(pid: int) -> ProcessError:
    return ProcessError(
        f"process {pid} belongs to another user, its memory map cannot be read",
        "run as that user or as root",
    )


def _translate(pid: int, err: OSError) -> ProcessError:
    if err.errno in (errno.EACCES, errno.EPERM):
        return _not_yours(pid)
    if err.errno in (errno.ENOENT, errno.ESRCH, errno.ENOTDIR):
        return _gone(pid)
    return ProcessError(
        f"cannot read /proc/{pid}: {err.strerror}", "check that the process is still running"
    )


def read_bytes(pid: int, name: str, proc_root: str = PROC) -> bytes:
    """The whole of ``/proc/PID/<name>`` in as few reads as the kernel allows."""
    path = f"{proc_root}/{pid}/{name}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise _translate(pid, err) from None
    chunks: list[bytes] = []
    try:
        # procfs files report size 0; read large blocks (seq_file fills each in one go)
        # instead of letting a buffered reader grow from 8 kB.
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as err:
        raise _translate(pid, err) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(pid: int, name: str, proc_root: str = PROC) -> str:
    return read_bytes(pid, name, proc_root).decode("utf-8", "replace")


def numa_maps(pid: int, proc_root: str = PROC) -> bytes:
    """``/proc/PID/numa_maps`` whole (:func:`numa_maps_chunks` joined); empty for a zombie
    or a kernel thread. For when the text itself is wanted: counting wants the chunks."""
    return b"".join(numa_maps_chunks(pid, proc_root))


# Under glibc's mmap threshold (128 kB): each read's buffer comes from the heap and is
# reused by the next, where a whole 4 MB numa_maps held in memory (and joined: 8 MB) costs
# ~2,000 page faults, more system time than parsing it. seq_file returns about a page a read
# whatever the size asked.
_CHUNK = 64 << 10

# The copier that reads numa_maps ahead, in another process: dd, from coreutils or busybox,
# both of which gather whole blocks (iflag=fullblock), so that the ~4 kB the kernel hands
# each read reach numarun 64 kB at a time: a wake-up per page costs more than the overlap
# saves. Its stdin is numarun's own descriptor, opened (and refused) here.
_COPIERS = ("/usr/bin/dd", "/bin/dd")
_COPIER_ARGV = ["dd", f"bs={_CHUNK}", "iflag=fullblock", "status=none"]
_PIPE_BYTES = 1 << 20  # the unprivileged limit (fs/pipe-max-size): ~15 ms of the kernel's text
_SIGKILL = 9  # every Linux architecture; the signal module imports enum (ms at start-up)


def numa_maps_chunks(pid: int, proc_root: str = PROC, *, ahead: bool = False) -> NumaMapsReader:
    """``/proc/PID/numa_maps`` read by read, without holding the whole file.

    Opened now: a process that is gone or not this user's is refused here. Each chunk is
    what one read returned (seq_file ends each at a line's end, but nothing here relies on
    it); nothing for a zombie or a kernel thread.

    ``ahead``: the reading starts now, in a copier process, on another CPU when there is
    one. For a large process most of a report's time is the kernel writing this text
    (40-75 ms of 60-100 ms at 60,000 mappings, by machine), which then runs beside
    numarun's own start-up and parsing instead of before them. Where no copier can start,
    or it fails before reading anything, the file is read here as without ``ahead``.
    """
    try:
        fd = os.open(f"{proc_root}/{pid}/numa_maps", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise _translate(pid, err) from None
    return NumaMapsReader(pid, fd, _start_copier(fd) if ahead else None)


def _start_copier(fd: int) -> tuple[int, int] | None:
    """(copier's PID, read end of its pipe) copying ``fd``; None when none can start."""
    import fcntl  # a small C module, only for the commands that read ahead

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe only makes the copier wait for numarun more often
        actions = [
            (os.POSIX_SPAWN_DUP2, fd, 0),
            (os.POSIX_SPAWN_DUP2, write_end, 1),
            (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
        ]
        for path in _COPIERS:
            try:
                child = os.posix_spawn(path, _COPIER_ARGV, {}, file_actions=actions)
            except OSError:
                continue  # not there, or refused (a seccomp filter, a pids limit)
            return child, read_end
    finally:
        os.close(write_end)
    os.close(read_end)
    return None


class NumaMapsReader:
    """The chunks of one numa_maps file (:func:`numa_maps_chunks`): iterate to the end,
    or :meth:`close` it, which also ends its copier."""

    def __init__(self, pid: int, fd: int, copier: tuple[int, int] | None) -> None:
        self._pid = pid
        self._fd = fd
        self._copier, self._pipe = copier if copier is not None else (0, -1)

    def __iter__(self) -> NumaMapsReader:
        return self

    def __next__(self) -> bytes:
        source = self._pipe if self._copier else self._fd
        if source < 0:
            raise StopIteration
        try:
            chunk = os.read(source, _PIPE_BYTES if self._copier else _CHUNK)
        except OSError as err:
            self.close()
            raise _translate(self._pid, err) from None
        if chunk:
            return chunk
        if self._copier and not self._copier_finished():
            return next(self)  # read here what the copier could not
        self.close()
        raise StopIteration

    def _copier_finished(self) -> bool:
        """Whether the copier copied it all; False when this process can read it instead
        (the copier failed before reading: a dd without iflag=fullblock, say)."""
        status = _reap(self._copier)
        self._copier = 0
        os.close(self._pipe)
        self._pipe = -1
        if status == 0:
            return True
        if os.lseek(self._fd, 0, os.SEEK_CUR) == 0:  # it read nothing, so wrote nothing
            return False
        self.close()
        raise ProcessError(
            f"reading /proc/{self._pid}/numa_maps was cut short: its copier (dd) {_ended(status)}",
            "run the command again",
        )

    def close(self) -> None:
        """Stop reading: the descriptors closed, the copier (if any) killed and reaped."""
        if self._copier:
            try:
                os.kill(self._copier, _SIGKILL)
            except OSError:
                pass  # it has exited; waitpid reaps it
            _reap(self._copier)
            self._copier = 0
        for fd in (self._pipe, self._fd):
            if fd >= 0:
                os.close(fd)
        self._pipe = self._fd = -1


def _reap(pid: int) -> int:
    """The copier's wait status; 0 when someone else reaped it (a library caller's SIGCHLD
    handler): what it wrote has been read to its end either way."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return 0


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def status(pid: int, proc_root: str = PROC) -> dict[str, str]:
    """``/proc/PID/status`` as field -> value text (``"Cpus_allowed_list" -> "0-3"``)."""
    out: dict[str, str] = {}
    for line in read_text(pid, "status", proc_root).splitlines():
        key, colon, value = line.partition(":")
        if colon:
            out[key] = value.strip()
    return out


def own_status() -> dict[str, str]:
    """``/proc/self/status`` of this process: ``Mems_allowed``, ``Seccomp``, ...

    Raises :class:`~numarun.errors.ProcessError` when procfs cannot be read (not mounted,
    or hidden by a sandbox); callers that can do without it catch that.
    """
    out: dict[str, str] = {}
    try:
        with open(f"{PROC}/self/status", "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as err:
        raise ProcessError(
            f"cannot read {PROC}/self/status: {err.strerror}", "is procfs mounted?"
        ) from None
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            out[key] = value.strip()
    return out


def parse_stat_start_ticks(text: str) -> int | None:
    """Field 22 (start time, clock ticks after boot) of a ``stat`` line; None when odd, and
    for a process that has exited and waits to be reaped (state Z or X: a killed supervisor
    whose parent does not reap it runs no job)."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) <= _STAT_STARTTIME or fields[0] in ("Z", "X"):
        return None
    word = fields[_STAT_STARTTIME]
    return int(word) if word.isascii() and word.isdigit() else None


def start_ticks(pid: int, proc_root: str = PROC) -> int | None:
    """When process ``pid`` started (``/proc/PID/stat`` field 22), or None when it is gone.

    With the PID, this names one process for good: a PID the kernel reuses gets another
    start time, so a state file never leads to signalling an unrelated process.
    """
    try:
        return parse_stat_start_ticks(read_text(pid, "stat", proc_root))
    except ProcessError:
        return None


def _status_set(pid: int, fields: dict[str, str], key: str) -> frozenset[int]:
    try:
        return cpulist.parse_list(fields.get(key, ""))
    except ValueError:
        return frozenset()


def cpus_allowed(pid: int, proc_root: str = PROC) -> frozenset[int]:
    """The CPUs the process may run on (``Cpus_allowed_list``)."""
    return _status_set(pid, status(pid, proc_root), "Cpus_allowed_list")


def mems_allowed(pid: int, proc_root: str = PROC) -> frozenset[int]:
    """The nodes its cpuset lets it allocate on (``Mems_allowed_list``)."""
    return _status_set(pid, status(pid, proc_root), "Mems_allowed_list")


def allowed(pid: int, proc_root: str = PROC) -> tuple[frozenset[int], frozenset[int]]:
    """(CPUs, nodes) allowed, from one read of ``/proc/PID/status``."""
    fields = status(pid, proc_root)
    return (
        _status_set(pid, fields, "Cpus_allowed_list"),
        _status_set(pid, fields, "Mems_allowed_list"),
    )


def name(pid: int, proc_root: str = PROC) -> str:
    """The command name (``/proc/PID/comm``, at most 15 characters)."""
    return read_text(pid, "comm", proc_root).rstrip("\n")


def set_own_name(name: str) -> None:
    """Set this process's command name (``/proc/self/comm``, what ps and pgrep show); a
    kernel that refuses is left as it is: the name is a courtesy."""
    try:
        with open(f"{PROC}/self/comm", "w", encoding="utf-8") as f:
            f.write(name[:15])
    except OSError:
        pass


def cmdline(pid: int, proc_root: str = PROC) -> list[str]:
    """The argument vector; empty for kernel threads and zombies."""
    raw = read_text(pid, "cmdline", proc_root)
    return [arg for arg in raw.split("\0") if arg] if raw else []


def environ(pid: int, proc_root: str = PROC) -> dict[str, str]:
    """The environment the process started with (``/proc/PID/environ``); the owner's or root's."""
    raw = read_text(pid, "environ", proc_root)
    return dict(item.partition("=")[::2] for item in raw.split("\0") if "=" in item)


def parse_stat_processor(text: str) -> int | None:
    """Field 39 (last CPU) of a ``stat`` line; None when the line is cut short or odd.

    The command name (field 2) is in parentheses and may hold blanks and ')', so fields are
    counted from the last ')'.
    """
    _, paren, rest = text.rpartition(")")
    if not paren:
        return None
    fields = rest.split()
    if len(fields) <= _STAT_PROCESSOR:
        return None
    try:
        return int(fields[_STAT_PROCESSOR])
    except ValueError:
        return None


def tasks(pid: int, proc_root: str = PROC) -> list[int]:
    """Every thread id of the process (``/proc/PID/task``), ascending."""
    try:
        return sorted(int(t) for t in os.listdir(f"{proc_root}/{pid}/task") if t.isdigit())
    except OSError as err:
        raise _translate(pid, err) from None


def thread_cpus(pid: int, proc_root: str = PROC) -> dict[int, int]:
    """Thread id -> the CPU it last ran on, for every thread still there."""
    tids = tasks(pid, proc_root)
    out: dict[int, int] = {}
    for tid in tids:
        try:
            with open(f"{proc_root}/{pid}/task/{tid}/stat", "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue  # a thread that exits between listdir and open is simply not there
        cpu = parse_stat_processor(text)
        if cpu is not None:
            out[tid] = cpu
    return out


def exists(pid: int, proc_root: str = PROC) -> bool:
    return os.path.exists(f"{proc_root}/{pid}")


def pids(proc_root: str = PROC) -> list[int]:
    """Every process id, ascending."""
    try:
        return sorted(int(p) for p in os.listdir(proc_root) if p.isdigit())
    except OSError as err:
        raise ProcessError(
            f"cannot list {proc_root}: {err.strerror}", "is procfs mounted?"
        ) from None
