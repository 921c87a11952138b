"""Guest checks: numactl's own regression scripts, with numactl and with numarun standing in.

Each script of numactl's source package's ``test/`` (fetched on the host by numactl_suite.py,
found through $NUMARUN_NUMACTL_TESTS) runs twice, as ``make test`` would run it: once with the
real numactl, once with a ``numactl`` shim that runs this checkout's numarun. The scripts find
numactl as ``$builddir/numactl`` (first on their PATH, and regress's $NUMACTL), so each run
gets its own build directory holding that ``numactl`` and ``test/pagesize``, the one helper
program they need from a build (numactl's test/pagesize.c prints getpagesize(); here
``getconf PAGESIZE`` prints the same).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from inguest import Context, check

JSONDict = dict[str, Any]
ENV_DIR = "NUMARUN_NUMACTL_TESTS"  # numactl_suite.ENV_DIR (not imported: host-side module)
# Seconds a script may run, per variant: regress sleeps 2 s before each of its ~24 counter
# reads in the two-node guest, and the guest's CPUs are emulated (74 s with numactl, 115 s
# with numarun, the guest alone). Both runs together stay well inside the guest's 600 s.
TIMEOUTS = {"regress": 240.0}
TAIL = 4000  # characters of output kept for the report
# The shapes each script runs in. Under emulation numarun's start-up is ~2 s in the guest
# and regress sleeps ~60 s per run, so the two dearest scripts run in one shape each, the
# one where they prove most: checkaffinity loops over four nodes, regress over the nodes of
# the cheaper two-node guest. Every script still runs with both numactl and numarun.
EVERY_SHAPE = ("2n2c2t", "4n1c2t")
SHAPES = {
    "checkaffinity": ("4n1c2t",),
    "checktopology": EVERY_SHAPE,
    "bind_range": EVERY_SHAPE,
    "regress": ("2n2c2t",),
}


def _build_dir(ctx: Context, variant: str) -> Path:
    """A directory standing for numactl's build tree: ``numactl`` and ``test/pagesize``."""
    build = Path(tempfile.mkdtemp(prefix=f"numactl-suite-{variant}."))
    (build / "test").mkdir()
    pagesize = build / "test" / "pagesize"
    pagesize.write_text("#!/bin/sh\nexec getconf PAGESIZE\n")
    pagesize.chmod(0o755)
    if variant == "numactl":
        real = shutil.which("numactl")
        if real is None:
            raise FileNotFoundError("numactl is not installed in the guest")
        (build / "numactl").symlink_to(os.path.realpath(real))
    else:
        shim = build / "numactl"
        path = os.pathsep.join(p for p in (str(ctx.repo), os.environ.get("PYTHONPATH")) if p)
        shim.write_text(
            "#!/bin/sh\n# numarun standing in for numactl: this checkout's, by its real path\n"
            f"export PYTHONPATH={shlex.quote(path)}\n"
            f'exec {shlex.quote(ctx.python)} -S -m numarun "$@"\n'
        )
        shim.chmod(0o755)
    return build


def _run_script(ctx: Context, tests: Path, script: str, variant: str) -> JSONDict:
    build = _build_dir(ctx, variant)
    work = Path(tempfile.mkdtemp(prefix=f"numactl-suite-{script}."))  # regress writes A, B
    env = {"builddir": str(build), "NUMACTL": str(build / "numactl")}
    argv = ["bash", str(tests / script)]
    timeout = TIMEOUTS.get(script, 180.0)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            argv, cwd=work, env=ctx.env(env), capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = 124, _text(exc.stdout), _text(exc.stderr) + f"\n[timeout {timeout}s]"
    finally:
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "rc": rc,
        "stdout": out[-TAIL:],
        "stderr": err[-TAIL:],
        "seconds": round(time.monotonic() - t0, 2),
    }


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _suite(ctx: Context, script: str) -> JSONDict:
    shape = f"{ctx.nodes}n{ctx.cores}c{ctx.threads}t"
    if shape not in SHAPES[script]:
        return {"elsewhere": f"{script} runs in the {' and '.join(SHAPES[script])} guest"}
    where = os.environ.get(ENV_DIR, "")
    if not where:
        return {"unavailable": f"${ENV_DIR} is not set: the host did not fetch the scripts"}
    tests = Path(where)
    if not (tests / script).is_file():
        return {"unavailable": f"{tests / script} is not visible in the guest"}
    runs = {variant: _run_script(ctx, tests, script, variant) for variant in ("numactl", "numarun")}
    return {"script": script, "dir": str(tests), "runs": runs}


@check()
def numactl_suite_checkaffinity(ctx: Context) -> JSONDict:
    """--physcpubind / --cpunodebind against --show and the CPU a process runs on."""
    return _suite(ctx, "checkaffinity")


@check()
def numactl_suite_checktopology(ctx: Context) -> JSONDict:
    """--hardware's nodes and CPUs against /proc/cpuinfo and sysfs."""
    return _suite(ctx, "checktopology")


@check(min_nodes=2)
def numactl_suite_bind_range(ctx: Context) -> JSONDict:
    """-a/--all: its place in the options, and CPUs outside the inherited affinity."""
    return _suite(ctx, "bind_range")


@check(min_nodes=2)
def numactl_suite_regress(ctx: Context) -> JSONDict:
    """memhog under each memory policy, judged by numastat's counters."""
    return _suite(ctx, "regress")
