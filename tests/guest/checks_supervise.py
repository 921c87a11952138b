"""Guest check for issues 7 and 3: ``numarun plan`` and ``numarun run`` on a multi-node kernel
(tests: test_supervise_guest.py).

One check, one job file, because python starts are the cost under TCG (~2-3 s each, far
more through numarun's CLI): ``numarun run JOB`` starts in the background and ``numarun
plan JOB --json`` of the same file runs meanwhile. The job has three process groups:

- ``bound``: ``workers = "per-node"``, ``smt = "avoid"``, ``policy = "bind"`` (issue 7's
  fixed example), each worker touching :data:`BOUND_MB` MiB;
- ``spread``: ``workers = N`` with N the guest's number of physical cores, ``smt = "avoid"``,
  ``policy = "bind"``, nothing touched (a shell, not python: on 4n1c2t four workers, one
  per node);
- ``inter``: one worker, ``policy = "interleave"``, ``memory_nodes = "all"``, touching
  :data:`INTER_MB` MiB.

Every worker starts a grandchild that sleeps (in the worker's process group, as a helper
of a real server would be), faults in its memory, prints ``ready PID CHILD MAPSTART CPUS
NODE CPUS-TEMPLATE`` and sleeps. The interleaved worker asks for no transparent huge pages
on its memory (through the job's ``env``): a huge page is interleaved whole, 512 pages at
once, which put one node 4.7% short of an even share of 128 MiB on 4n1c2t.

Once all are ready the check reads, from outside, each worker's ``/proc/PID/status`` and
``/proc/PID/numa_maps`` and the job's state file, then sends SIGTERM to numarun and checks
that it exits 0 and that nothing of the job is left.
Whatever happens, every process the check started is killed on the way out.

The guest's whole report must stay small (its results line is cut off past 32 KiB): the
results here are reduced to what the tests read.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from inguest import Context, check, parse_cpulist

JSONDict = dict[str, Any]

BOUND_MB = 96  # per bound worker; a guest node has only ~370 MiB free
INTER_MB = 128
READY_TIMEOUT = 240.0
STOP_TIMEOUT = 60.0
JOB = "numarun-guest-supervise"
WORKDIR = Path("/tmp") / JOB

# No braces in here: the job's argv is templated ({node}, {cpus}, ...) and this file's
# path is all that goes through it. -I -S keep the start cheap.
WORKER = """\
import ctypes, mmap, os, sys, time
mb = int(sys.argv[1])
child = os.fork()
if child == 0:
    time.sleep(3600)
    os._exit(0)
start = 0
if mb:
    size = mb << 20
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if os.environ.get("WORKER_THP") == "never":
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    buf[:: mmap.PAGESIZE] = b"\\x01" * (size // mmap.PAGESIZE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                start = lo
                break
cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
print("ready", os.getpid(), child, "%x" % start, cpus, *sys.argv[2:], flush=True)
time.sleep(3600)
"""

# The same line from a shell ("-": no mapping, no affinity of its own to print); $0 is the
# worker script's path, so the job's processes are found by it like the python workers.
SHELL_WORKER = "sleep 3600 & echo ready $$ $! 0 - {node} {cpus}; wait"


def _job_toml(ctx: Context, worker_path: Path, spread: int) -> str:
    def command(mb: int) -> str:
        argv = [ctx.python, "-I", "-S", str(worker_path), str(mb), "{node}", "{cpus}"]
        return json.dumps(argv)

    # The spread workers touch nothing: a shell costs far less than a python start.
    shell = json.dumps(["/bin/sh", "-c", SHELL_WORKER, str(worker_path)])

    return f"""\
[[process]]
name = "bound"
command = {command(BOUND_MB)}
workers = "per-node"
smt = "avoid"
policy = "bind"
restart = "never"

[[process]]
name = "spread"
command = {shell}
workers = {spread}
smt = "avoid"
policy = "bind"
restart = "never"

[[process]]
name = "inter"
command = {command(INTER_MB)}
workers = 1
policy = "interleave"
memory_nodes = "all"
restart = "never"
env = {{ WORKER_THP = "never" }}
"""


# -- what the guest's kernel says ------------------------------------------------------------


def _sysfs_topology() -> JSONDict:
    """{"nodes": {"0": [cpus]}, "siblings": {"0": [cpus]}} straight from sysfs."""
    base = Path("/sys/devices/system")
    nodes = {
        d.name[4:]: parse_cpulist((d / "cpulist").read_text())
        for d in sorted(base.glob("node/node[0-9]*"))
    }
    siblings = {
        str(cpu): parse_cpulist((base / f"cpu/cpu{cpu}/topology/thread_siblings_list").read_text())
        for cpu in parse_cpulist((base / "cpu/online").read_text())
    }
    return {"nodes": nodes, "siblings": siblings}


def _status_fields(pid: int) -> JSONDict:
    fields: JSONDict = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        return {"error": str(exc)}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("PPid", "Cpus_allowed_list", "Mems_allowed_list"):
            fields[key] = value.strip()
    return fields


def _numa_maps(pid: int, start: int) -> JSONDict:
    """The policies on every line of the process's numa_maps, and the per-node pages of the
    mapping at ``start`` (its touched memory)."""
    policies: set[str] = set()
    pages: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/numa_maps").read_text()
    except OSError as exc:
        return {"error": str(exc)}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        policies.add(fields[1])
        if start and int(fields[0], 16) == start:
            for f in fields:
                if m := re.fullmatch(r"N(\d+)=(\d+)", f):
                    pages[m[1]] = int(m[2])
    return {"policies": sorted(policies), "pages": pages, "total": sum(pages.values())}


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``Z`` for a zombie), or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()[0]


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _children(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        if int(text[text.rfind(")") + 2 :].split()[1]) == ppid:
            out.append(int(entry.name))
    return sorted(out)


def _job_processes(marker: str, sessions: set[int]) -> list[JSONDict]:
    """Every process of the job: its command line names ``marker`` (the worker script) or
    it is in one of the workers' ``sessions`` (each worker is a session leader)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes()
            sid = os.getsid(pid)
        except OSError:
            continue
        if marker.encode() in cmdline or sid in sessions:
            found.append({"pid": pid, "state": _proc_state(pid), "sid": sid})
    return found


def _runtime_dir(env: dict[str, str]) -> str:
    """numarun.supervisor.state.runtime_dir() for numarun's environment (not imported:
    importing numarun here would cost the check a few seconds)."""
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "numarun")
    if os.geteuid() == 0:
        return "/run/numarun"
    return f"/tmp/numarun-{os.geteuid()}"


def _state_file(path: str) -> JSONDict:
    try:
        st = os.stat(path)
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return {"exists": os.path.exists(path), "error": str(exc)}
    workers = data.get("workers", [])
    return {
        "exists": True,
        "mode": oct(st.st_mode & 0o777),
        "dir_mode": oct(os.stat(os.path.dirname(path)).st_mode & 0o777),
        "job": data.get("job"),
        "state": data.get("state"),
        "supervisor_pid": (data.get("supervisor") or {}).get("pid"),
        "guardian_pid": (data.get("supervisor") or {}).get("guardian"),
        # label -> [pid, state, cpus, memory]: the full entries would crowd the report
        "workers": {
            f"{w.get('name')}.{w.get('index')}": [
                w.get("pid"),
                w.get("state"),
                w.get("cpus"),
                w.get("memory"),
            ]
            for w in workers
        },
    }


# -- the check -----------------------------------------------------------------------------


def _plan_summary(data: Any) -> Any:
    """The plan JSON reduced to the fixed fields, argv without the interpreter's path."""
    if not isinstance(data, dict):
        return None
    return [
        {
            "name": p.get("name"),
            "workers": [
                {
                    "index": w.get("index"),
                    "node": w.get("node"),
                    "cpus": w.get("cpus"),
                    "memory": w.get("memory"),
                    "argv_tail": (w.get("argv") or [])[-2:],  # the templated {node} {cpus}
                }
                for w in p.get("workers", [])
            ],
        }
        for p in data.get("processes", [])
    ]


def _parse_ready(text: str) -> dict[str, JSONDict]:
    """``bound.0 n0 | ready PID CHILD START CPUS NODE CPUS-TEMPLATE`` -> by worker label."""
    ready: dict[str, JSONDict] = {}
    for line in text.splitlines():
        tag, sep, rest = line.partition(" | ")
        words = rest.split()
        if not sep or len(words) < 5 or words[0] != "ready":
            continue
        label = tag.split()[0]
        ready[label] = {
            "tag": tag.strip(),
            "pid": int(words[1]),
            "child": int(words[2]),
            "start": int(words[3], 16),
            "affinity": None if words[4] == "-" else parse_cpulist(words[4]),
            "templated": words[5:],
        }
    return ready


@check(min_nodes=2)
def supervise_job(ctx: Context) -> JSONDict:
    t0 = time.monotonic()
    WORKDIR.mkdir(parents=True, exist_ok=True)
    worker_path = WORKDIR / "worker.py"
    worker_path.write_text(WORKER)
    spread = ctx.nodes * ctx.cores  # one worker per physical core
    job_path = WORKDIR / f"{JOB}.toml"
    job_path.write_text(_job_toml(ctx, worker_path, spread))
    expected = ctx.nodes + spread + 1
    env = ctx.env()
    state_path = os.path.join(_runtime_dir(env), f"{JOB}.json")
    out_path, err_path = WORKDIR / "run.out", WORKDIR / "run.err"

    result: JSONDict = {
        "sysfs": _sysfs_topology(),
        "spread": spread,
        "bound_mb": BOUND_MB,
        "inter_mb": INTER_MB,
        "page": os.sysconf("SC_PAGE_SIZE"),
    }
    proc: subprocess.Popen[bytes] | None = None
    seen_pgids: set[int] = set()
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                ctx.numarun_argv("run", "--no-color", str(job_path)),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=env, cwd=ctx.repo, start_new_session=True,
            )  # fmt: skip
        # The plan of the same file while numarun starts up (both are python starts).
        plan_run = ctx.numarun("plan", str(job_path), "--json", timeout=180)
        try:
            plan_data = json.loads(plan_run["stdout"])
        except ValueError:
            plan_data = None
        result["plan"] = {
            "rc": plan_run["rc"],
            "stderr": plan_run["stderr"][-1500:],
            "stdout": "" if plan_data is not None else plan_run["stdout"][-1500:],
            "seconds": plan_run["seconds"],
            "processes": _plan_summary(plan_data),
        }

        deadline = time.monotonic() + READY_TIMEOUT
        ready: dict[str, JSONDict] = {}
        first_ready = state_seen = None
        while time.monotonic() < deadline:
            ready = _parse_ready(out_path.read_text(errors="replace"))
            if ready and first_ready is None:
                first_ready = round(time.monotonic() - t0, 2)
            if state_seen is None and os.path.exists(state_path):
                state_seen = round(time.monotonic() - t0, 2)  # every worker spawned
            if len(ready) >= expected or proc.poll() is not None:
                break
            time.sleep(0.25)
        result["first_ready_seconds"] = first_ready
        result["state_file_seconds"] = state_seen
        result["ready_seconds"] = round(time.monotonic() - t0, 2)
        result["ready_count"] = len(ready)
        result["expected_workers"] = expected
        result["supervisor_pid"] = proc.pid
        result["supervisor_exited_early"] = proc.poll()

        workers: dict[str, JSONDict] = {}
        for label, r in ready.items():
            seen_pgids.add(r["pid"])
            pid = r["pid"]
            status = _status_fields(pid)
            maps = _numa_maps(pid, r["start"])
            # Compact: nine workers' records must fit the guest's report with the others'.
            rec: JSONDict = {
                "pid": pid,
                "tag": r["tag"],
                "templated": r["templated"],
                # its process group, its session, its grandchild's process group
                "ids": [
                    _pgid(pid),
                    os.getsid(pid) if _proc_state(pid) else None,
                    _pgid(r["child"]),
                ],
                "ppid": int(status["PPid"]) if "PPid" in status else None,
                "cpus_allowed": status.get("Cpus_allowed_list"),
                "mems_allowed": status.get("Mems_allowed_list"),
                "policies": maps.get("policies"),
                "stdin": _readlink(f"/proc/{pid}/fd/0"),
            }
            if r["affinity"] is not None:
                rec["affinity"] = r["affinity"]
            if r["start"]:
                rec["pages"], rec["total"] = maps.get("pages"), maps.get("total")
            for err in (status.get("error"), maps.get("error")):
                if err:
                    rec["error"] = err
            workers[label] = rec
        result["workers"] = workers
        result["supervisor_children"] = _children(proc.pid)
        result["state_file"] = _state_file(state_path)
        seen_pgids.update(w[0] for w in result["state_file"].get("workers", {}).values() if w[0])
        guardian = result["state_file"].get("guardian_pid")

        # Stop as an operator would: SIGTERM to numarun.
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            rc = None
        time.sleep(0.5)  # the guardian's own exit, after the supervisor's
        result["stop"] = {
            "rc": rc,
            "seconds": round(time.monotonic() - t_stop, 2),
            "left": _job_processes(str(worker_path), seen_pgids),
            "workers_left": {
                label: _proc_state(r["pid"]) for label, r in ready.items() if _proc_state(r["pid"])
            },
            "children_left": {
                label: _proc_state(r["child"])
                for label, r in ready.items()
                if _proc_state(r["child"])
            },
            "guardian": guardian,
            "guardian_left": _proc_state(guardian) if isinstance(guardian, int) else None,
            "state_file_left": os.path.exists(state_path),
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()  # its guardian then kills every worker group
            proc.wait(10)
        left = _job_processes(str(worker_path), seen_pgids)
        for pgid in {_pgid(p["pid"]) for p in left} - {None} | (seen_pgids if left else set()):
            try:
                os.killpg(pgid, signal.SIGKILL)  # type: ignore[arg-type]
            except OSError:
                pass
    # numarun's own output only when something went wrong (the report must stay small).
    stop = result.get("stop") or {}
    fine = result.get("ready_count") == expected and stop.get("rc") == 0 and not stop.get("left")
    result["stdout_tail"] = "" if fine else out_path.read_text(errors="replace")[-1500:]
    result["stderr_tail"] = "" if fine else err_path.read_text(errors="replace")[-1500:]
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result
