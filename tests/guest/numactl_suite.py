"""numactl's own regression scripts (its source package's test/), fetched at test time.

numarun claims to be a numactl drop-in; the fairest judge is numactl's own test suite. Those
scripts are numactl's code, so they are never committed here: :func:`fetch` downloads the
Debian *source* package of the installed numactl (the same version) with apt, without
touching the system's apt state, and extracts its ``test/`` next to the guest kernel in
:func:`numavm.cache_dir`. In the guest, ``checks_numactl_suite.py`` runs each script with the
real numactl and again with a ``numactl`` shim that runs this checkout's numarun.

The system's apt sources usually list only binary packages (``Types: deb``). A private
sources file with the same URIs, suites, components and keys as ``deb-src`` is written at run
time (no host name is written into the repository), and apt runs with its own lists and
cache directories under the cache::

    apt-get -o Dir::Etc::SourceList=PRIVATE -o Dir::Etc::SourceParts=/nonexistent \\
            -o Dir::State::Lists=CACHE/lists -o Dir::Cache=CACHE/apt update
    apt-get ... source --download-only numactl=VERSION

Command line: ``python tests/guest/numactl_suite.py`` fetches (once) and prints the directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numavm  # noqa: E402  (needs HERE on sys.path)

#: The scripts this suite runs, in the order it runs them.
SCRIPTS = ("checkaffinity", "checktopology", "bind_range", "regress")
#: Where the guest finds the extracted test/ directory (set by the guest suite's conftest).
ENV_DIR = "NUMARUN_NUMACTL_TESTS"
#: The fields of a deb822 source the deb-src copy keeps (apt reads them case-insensitively).
KEPT = ("URIs", "Suites", "Components", "Signed-By")
SYSTEM_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


class FetchError(RuntimeError):
    """numactl's test scripts could not be fetched; the message says why."""


def installed_source() -> tuple[str, str]:
    """(source package, version) of the installed numactl, e.g. ("numactl", "2.0.16-1")."""
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${source:Package}\t${source:Version}\n", "numactl"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    except OSError as exc:
        raise FetchError(f"cannot ask dpkg which numactl is installed: {exc}") from None
    name, _, version = proc.stdout.strip().partition("\t")
    if proc.returncode != 0 or not version:
        raise FetchError(f"numactl is not installed as a Debian package: {proc.stderr.strip()}")
    return name, version


def scripts_dir(version: str) -> Path:
    """The extracted test/ directory of numactl ``version`` (it may not exist yet)."""
    return numavm.cache_dir() / "numactl-src" / version / "test"


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:  # a continuation line
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def source_entries(files: Sequence[Path]) -> str:
    """A deb822 sources text listing, as ``deb-src``, every enabled ``deb`` source of
    ``files`` (one-line ``.list`` files and deb822 ``.sources`` files alike)."""
    out: list[str] = []
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for st in _deb822_stanzas(text):
                if "deb" not in st.get("types", "").split() or st.get("enabled") == "no":
                    continue
                lines = ["Types: deb-src"] + [
                    f"{field}: {st[field.lower()]}" for field in KEPT if field.lower() in st
                ]
                out.append("\n".join(lines))
        elif path.suffix == ".list":
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[([^]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)", line)
                if not m:
                    continue
                opts = dict(o.split("=", 1) for o in (m[1] or "").split() if "=" in o)
                lines = [f"Types: deb-src\nURIs: {m[2]}\nSuites: {m[3]}"]
                if m[4].strip():
                    lines.append(f"Components: {m[4].strip()}")
                if "signed-by" in opts:
                    lines.append(f"Signed-By: {opts['signed-by']}")
                out.append("\n".join(lines))
    return "\n\n".join(out) + "\n" if out else ""


def _system_source_files() -> list[Path]:
    files: list[Path] = []
    for path in SYSTEM_SOURCES:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".list", ".sources"))
        elif path.is_file():
            files.append(path)
    return files


def _apt(work: Path, *args: str, cwd: Path | None = None) -> None:
    """apt-get with private sources, lists and cache: no root-owned state changes."""
    argv = [
        "apt-get", "-q",
        "-o", f"Dir::Etc::SourceList={work / 'deb-src.sources'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={work / 'lists'}",
        "-o", f"Dir::Cache={work / 'cache'}",
        *args,
    ]  # fmt: skip
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise FetchError(f"cannot run apt-get: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-1500:]
        raise FetchError(f"apt-get {' '.join(args)} failed ({proc.returncode}): {tail}")


def _extract_tests(tarball: Path, dest: Path) -> None:
    """Unpack the tarball's ``*/test/*`` members into ``dest`` (``dest/test/...``)."""
    with tarfile.open(tarball) as tar:
        members = []
        for member in tar.getmembers():
            parts = member.name.split("/")
            if len(parts) >= 2 and parts[1] == "test" and (member.isfile() or member.isdir()):
                member.name = "/".join(parts[1:])
                members.append(member)
        if not members:
            raise FetchError(f"{tarball.name} has no test/ directory")
        # The "data" filter (refuse links out, device files) where this Python has it.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **safe)


def _download(work: Path, name: str, version: str) -> Path:
    sources = source_entries(_system_source_files())
    if not sources:
        raise FetchError(
            "no enabled deb source in /etc/apt/sources.list or /etc/apt/sources.list.d to "
            "derive a deb-src source from"
        )
    (work / "deb-src.sources").write_text(sources)
    for sub in ("lists/partial", "cache/archives/partial", "dl"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    _apt(work, "update")
    _apt(work, "source", "--download-only", f"{name}={version}", cwd=work / "dl")
    upstream = version.rsplit(":", maxsplit=1)[-1].rsplit("-", 1)[0]
    tarballs = sorted((work / "dl").glob(f"{name}_{upstream}.orig.tar.*")) or sorted(
        (work / "dl").glob(f"{name}_{upstream}.tar.*")
    )
    if not tarballs:
        got = ", ".join(p.name for p in (work / "dl").iterdir()) or "nothing"
        raise FetchError(f"apt-get source {name}={version} gave no orig tarball (got {got})")
    return tarballs[0]


_FETCHED: dict[str, Path | FetchError] = {}


def fetch() -> Path:
    """numactl's test/ directory for the installed version: downloaded and unpacked once,
    then cached. Raises :class:`FetchError` with the reason when it cannot be had."""
    known = _FETCHED.get("result")
    if isinstance(known, FetchError):
        raise known
    if known is not None:
        return known
    try:
        path = _fetch_once()
    except FetchError as exc:
        _FETCHED["result"] = exc
        raise
    _FETCHED["result"] = path
    return path


def _fetch_once() -> Path:
    name, version = installed_source()
    final = scripts_dir(version)
    if all((final / script).is_file() for script in SCRIPTS):
        return final
    if not shutil.which("apt-get"):
        raise FetchError("apt-get not found: numactl's scripts come from its Debian source")
    base = final.parent.parent
    with numavm._locked(base), tempfile.TemporaryDirectory(dir=base, prefix="fetch.") as tmp:
        if all((final / script).is_file() for script in SCRIPTS):
            return final  # another session fetched it while we waited for the lock
        work = Path(tmp)
        tarball = _download(work, name, version)
        _extract_tests(tarball, work / "out")
        missing = [s for s in SCRIPTS if not (work / "out" / "test" / s).is_file()]
        if missing:
            raise FetchError(f"{tarball.name} lacks test/{', test/'.join(missing)}")
        final.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(final)
        # A rename, so a concurrent reader never sees half a directory.
        os.replace(work / "out" / "test", final)
    return final


def main() -> int:
    try:
        path = fetch()
    except FetchError as exc:
        print(f"numactl_suite: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
