#!/usr/bin/env python3
"""numavm: boot a throw-away QEMU guest with a multi-node NUMA + SMT shape and run one command.

The guest's root file system is this host's ``/`` shared read-only over virtio-9p with a tmpfs
overlay on top, so the host's interpreters, the project's virtualenv and the checkout are all
visible at the same paths and writes stay inside the guest.  A tiny busybox initramfs (built
once, cached) loads the 9p/virtio/overlay modules from a Debian kernel package, assembles that
root, and runs the command in a chroot; its stdout, stderr and exit status come back over
virtio-serial ports.

Library use (the guest test suite)::

    from numavm import boot_and_run
    res = boot_and_run("2n2c2t", ["numactl", "--hardware"], timeout=300)
    res.stdout, res.stderr, res.returncode, res.boot_seconds

Command line::

    python tests/guest/numavm.py --setup                 # fetch kernel, build initramfs,
                                                         # and numactl's test scripts
    python tests/guest/numavm.py --shape 2n2c2t -- numactl --hardware
    python tests/guest/numavm.py --shape tier2n -- numactl --hardware   # 6.12, HMAT, CXL, PCI

Exit status of the command line: the command's own, 124 on timeout, 125 when the guest could
not be started or gave no exit status.

Environment: NUMARUN_VM_CACHE (cache directory), NUMARUN_VM_ACCEL (auto|kvm|tcg),
NUMARUN_VM_KERNEL_PKG (a specific linux-image-* package instead of linux-image-amd64's, for
the shapes that do not name their own kernel), NUMARUN_VM_TIER_KERNEL (tier2n's kernel
version instead of 6.12.117+deb12-amd64).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import lzma
import os
import re
import selectors
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

# Markers the guest init prints on the serial console: INIT means the kernel reached our
# /init (used for the boot-hang watchdog), EXEC means the command is about to start (used
# to measure boot time, which thus includes module loading and the 9p/overlay mounts).
INIT_MARKER = b"numarun-vm: init"
EXEC_MARKER = b"numarun-vm: exec"

# Modules the initramfs needs; modprobe resolves their dependencies from the kernel package.
# virtio_rng feeds the guest's entropy pool so nothing in it waits on getrandom().
GUEST_MODULES = ("virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay", "virtio_rng")
# A shape with PCI devices also needs their drivers, so that the NIC is eth0 and the disk vda,
# and a file system for that disk (numactl's file: names the block device holding a file).
DEVICE_MODULES = ("virtio_net", "virtio_blk", "ext4")

# virtio-serial port names the init looks up under /sys/class/virtio-ports/*/name.
PORT_STDOUT = "numarun.stdout"
PORT_STDERR = "numarun.stderr"
PORT_RC = "numarun.rc"

# The guest's /init.  Kept deliberately small: everything that can be done on the host is.
# The kernel hands unknown "key=value" boot parameters to init as environment variables,
# which is how the job directory (a host path, visible through the 9p root) arrives.
GUEST_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "numarun-vm: init"
fail() { echo "numarun-vm: FAILED: $*"; poweroff -f; }
for m in $(cat /modules/order); do
  insmod "/modules/$m" || echo "numarun-vm: insmod $m failed"
done
[ -n "$numarun_job" ] || fail "no numarun_job on the kernel command line"
# msize: larger 9p messages make reading the host's files (python's stdlib) much faster.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower \
  || fail "9p mount of the host root"
mount -t tmpfs -o mode=0755 overlay-rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /root \
  || fail "overlay mount"
R=/root
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs shm $R/dev/shm
# cgroup2 so tests can build cpusets inside the guest.
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
hostname numarun-vm
ip link set lo up 2>/dev/null
# The ports appear a little after virtio_console is loaded.
port() {
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && { echo "/dev/${p##*/}"; return 0; }
  done
  return 1
}
n=0
until port numarun.rc >/dev/null; do
  n=$((n + 1)); [ $n -gt 400 ] && fail "virtio-serial ports did not appear"; sleep 0.05
done
OUT=$(port numarun.stdout); ERR=$(port numarun.stderr); RC=$(port numarun.rc)
echo "numarun-vm: exec"
chroot $R /bin/sh "$numarun_job/cmd.sh" </dev/null >"$OUT" 2>"$ERR"
echo "rc=$?" >"$RC"
poweroff -f
"""

# Boot parameters: quiet serial console (every byte costs under TCG), panic=-1 so a panic
# ends qemu at once (-no-reboot), no automatic NUMA balancing so placement is deterministic.
KERNEL_ARGS = (
    "console=ttyS0",
    "loglevel=4",
    "panic=-1",
    "mitigations=off",
    "numa_balancing=disable",
    "rdinit=/init",
)


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A guest kernel: a Debian package fetched with apt-get download, and its initramfs."""

    version: str = ""  # linux-image-<version>; "" is linux-image-amd64's (the 6.1 kernel)
    modules: tuple[str, ...] = GUEST_MODULES

    @property
    def package(self) -> str:
        """The package name, "" where it is resolved from linux-image-amd64 at set-up."""
        if self.version:
            return f"linux-image-{self.version}"
        return os.environ.get("NUMARUN_VM_KERNEL_PKG", "")

    def cache(self, base: Path) -> Path:
        """The default kernel keeps the cache's top level (as before); others their own
        directory under it, so each has its own initramfs and stamp."""
        return base / f"kernel-{self.version}" if self.version else base


DEFAULT_KERNEL = Kernel()
# Weighted interleave (6.9), memory tiers from HMAT and the device drivers: Debian 12's
# security archive carries this kernel next to the 6.1 one.
# NUMARUN_VM_TIER_KERNEL names another version (once the archive has moved past this one).
KERNEL_6_12 = Kernel(
    os.environ.get("NUMARUN_VM_TIER_KERNEL") or "6.12.117+deb12-amd64",
    GUEST_MODULES + DEVICE_MODULES,
)


@dataclasses.dataclass(frozen=True)
class PciDevice:
    """A PCI device QEMU puts behind the expander bridge of NUMA node ``node``."""

    # "display" (bochs-display, class 0x03), "net" (virtio-net), "block" (virtio-blk),
    # "rng" (virtio-rng: a device of no kind numarun names)
    kind: str
    node: int
    slot: int  # its device number on the bridge's bus

    def qemu_args(self, bus: str, job: Path) -> list[str]:
        at = f"bus={bus},addr={self.slot}"
        if self.kind == "display":
            return ["-device", f"bochs-display,{at}"]
        if self.kind == "net":  # no netdev: no backend, nothing leaves the guest
            return ["-device", f"virtio-net-pci,{at}"]
        if self.kind == "rng":
            return ["-device", f"virtio-rng-pci,{at}"]
        if self.kind == "block":
            disk = job / f"disk{self.node}-{self.slot}.img"
            with disk.open("wb") as f:
                f.truncate(DISK_MB << 20)  # sparse: costs nothing on the host
            drive = f"disk{self.node}x{self.slot}"
            return [
                "-drive", f"if=none,id={drive},format=raw,file={disk}",
                "-device", f"virtio-blk-pci,drive={drive},{at}",
            ]  # fmt: skip
        raise ValueError(f"unknown PCI device kind {self.kind!r}")


DISK_MB = 16  # the virtio-blk disk's size (a sparse raw file in the job directory)


def device_address(dev: PciDevice) -> str:
    """The PCI address the guest gives ``dev``."""
    return f"0000:{bridge_bus(dev.node) + 1:02x}:{dev.slot:02x}.0"


def bridge_bus(node: int) -> int:
    """The bus number of node ``node``'s PCI expander bridge: 0x20, 0x40, ...  The bridge
    itself is 0000:20:00.0 and its devices sit on the bus below it: 0000:21:SS.0 on node 0,
    0000:41:SS.0 on node 1."""
    return 0x20 * (node + 1)


class GuestUnavailableError(RuntimeError):
    """The guest cannot be started here: a tool, the kernel or the initramfs is missing."""


class GuestError(RuntimeError):
    """The guest started but did not give the command's exit status."""


@dataclasses.dataclass(frozen=True)
class Shape:
    """A guest topology: one NUMA node per socket, each with its own memory; optionally
    CPU-less memory nodes (CXL-like) with ACPI HMAT figures, and PCI devices on nodes."""

    nodes: int  # nodes with CPUs, 0 .. nodes-1
    cores: int  # per node (= per socket)
    threads: int  # per core
    mem_mb: int = 512  # per node
    # CPU-less nodes nodes .. nodes+memnodes-1; node nodes+j is near CPU node j % nodes.
    memnodes: int = 0
    hmat: bool = False  # ACPI HMAT: bandwidth and latency per initiator (memory tiers)
    kernel: Kernel = DEFAULT_KERNEL
    devices: tuple[PciDevice, ...] = ()
    label: str = ""  # the name, where NnCcTt would not say what the shape is

    @property
    def name(self) -> str:
        return self.label or f"{self.nodes}n{self.cores}c{self.threads}t"

    @property
    def general(self) -> bool:
        """Plain shapes run every general check; special ones only checks naming them."""
        return not (self.memnodes or self.hmat or self.devices or self.kernel.version)

    @property
    def all_nodes(self) -> int:
        return self.nodes + self.memnodes

    def near_cpu_node(self, node: int) -> int:
        """The CPU node a node belongs to: itself, or a CPU-less node's initiator."""
        return node if node < self.nodes else (node - self.nodes) % self.nodes

    def access(self, initiator: int, target: int) -> tuple[int, int, int, int]:
        """HMAT figures from CPU node ``initiator`` to ``target``: read and write bandwidth
        (MB/s), read and write latency (ns). DRAM 20 GB/s local, 12 remote; CXL 8 GB/s from
        its own socket, 5 from the other; writes slower than reads."""
        local = self.near_cpu_node(target) == initiator
        if target < self.nodes:
            return (20000, 16000, 80, 90) if local else (12000, 10000, 130, 140)
        return (8000, 6000, 250, 300) if local else (5000, 4000, 320, 380)

    @property
    def cpus(self) -> int:
        return self.nodes * self.cores * self.threads

    def node_cpus(self, node: int) -> list[int]:
        """CPUs of ``node``: QEMU numbers CPUs socket by socket, core by core, thread by thread."""
        per_node = self.cores * self.threads
        return list(range(node * per_node, (node + 1) * per_node))

    def distance(self, a: int, b: int) -> int:
        """SLIT distance: 10 local; with four or more nodes, pairs of nodes are "closer" (16)
        than the rest (22) so that tests see a non-uniform matrix, as on real big machines.
        A CPU-less node is 24 from its own CPU node, 30 from the others', 40 from another
        CPU-less node."""
        if a == b:
            return 10
        if self.memnodes and max(a, b) >= self.nodes:
            if min(a, b) >= self.nodes:
                return 40
            cpu, mem = min(a, b), max(a, b)
            return 24 if self.near_cpu_node(mem) == cpu else 30
        if self.nodes >= 4:
            return 16 if a // 2 == b // 2 else 22
        return 20

    @classmethod
    def parse(cls, text: str) -> Shape:
        """``"2n2c2t"`` or ``"2n2c2t1024m"`` (per-node memory in MiB)."""
        m = re.fullmatch(r"(\d+)n(\d+)c(\d+)t(?:(\d+)m)?", text.strip())
        if not m:
            raise ValueError(f"bad shape {text!r}: expected e.g. 2n2c2t or 2n2c2t512m")
        nodes, cores, threads = int(m[1]), int(m[2]), int(m[3])
        if min(nodes, cores, threads) < 1:
            raise ValueError(f"bad shape {text!r}: counts must be >= 1")
        return cls(nodes, cores, threads, int(m[4]) if m[4] else 512)


# tier2n: the tiered-memory and device-placement machine of issues 13 and 17. Two sockets
# (1 core x 2 threads each: TCG on a two-core host), each with its own CXL-like node (2 near
# 0, 3 near 1) and HMAT; a display device ("GPU") on each CPU node, on node 1 a NIC (eth0)
# and a disk (vda), and a virtio-rng on CPU-less node 2 (a device with no OS name: a second
# NIC there was probed first and took eth0 from node 1's).
TIER2N = Shape(
    2, 1, 2, 512, memnodes=2, hmat=True, kernel=KERNEL_6_12, label="tier2n",
    devices=(
        PciDevice("display", 0, 1),
        PciDevice("display", 1, 1),
        PciDevice("net", 1, 2),
        PciDevice("block", 1, 3),
        PciDevice("rng", 2, 1),
    ),
)  # fmt: skip
SHAPES: dict[str, Shape] = {s.name: s for s in (Shape(2, 2, 2), Shape(4, 1, 2), TIER2N)}


def get_shape(shape: Shape | str) -> Shape:
    if isinstance(shape, Shape):
        return shape
    return SHAPES.get(shape) or Shape.parse(shape)


@dataclasses.dataclass
class GuestResult:
    stdout: str
    stderr: str
    returncode: int  # the command's; 124 when the run timed out (see timed_out)
    boot_seconds: float  # qemu start until the command started (last attempt)
    wall_seconds: float  # the whole call, all attempts included
    accel: str  # "kvm" or "tcg"
    attempts: int  # boots tried (more than one after a boot hang)
    timed_out: bool = False
    console: str = ""  # the guest's serial console (kernel warnings, init messages)


# --------------------------------------------------------------------------------------------
# Cache and one-time setup


def cache_dir() -> Path:
    if env := os.environ.get("NUMARUN_VM_CACHE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/numarun-vm")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "numarun" / "vm"


def _stamp(kernel: Kernel = DEFAULT_KERNEL) -> str:
    """Changes whenever what goes into the initramfs changes, so the cache rebuilds itself."""
    h = hashlib.sha256()
    for part in (GUEST_INIT, " ".join(kernel.modules), kernel.package):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def is_ready(cache: Path | None = None, kernel: Kernel = DEFAULT_KERNEL) -> bool:
    cache = kernel.cache(cache or cache_dir())
    try:
        stamp = (cache / "stamp").read_text().strip()
    except OSError:
        return False
    return (
        stamp == _stamp(kernel) and (cache / "vmlinuz").is_file() and (cache / "initrd").is_file()
    )


def _is_static_elf(path: Path) -> bool:
    """True when the ELF file has no PT_INTERP: a dynamically linked busybox would not run in
    the initramfs, which contains no libc."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only; x86_64 host
            return False
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != 3  # PT_INTERP
        for i in range(phnum)
    )


def missing_tools() -> list[str]:
    """Debian packages whose tools are missing, for a clear error message."""
    missing: list[str] = []
    if not shutil.which("qemu-system-x86_64"):
        missing.append("qemu-system-x86")
    busybox = shutil.which("busybox")
    if not busybox or not _is_static_elf(Path(busybox).resolve()):
        missing.append("busybox-static")
    if not (shutil.which("depmod") and shutil.which("modprobe")):
        missing.append("kmod")
    return missing


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestUnavailableError(
            f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return proc.stdout


def _kernel_package(kernel: Kernel = DEFAULT_KERNEL) -> str:
    if pkg := kernel.package:
        return pkg
    # linux-image-amd64 is a metapackage; the real one is its linux-image-<version> dependency.
    out = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=False
    ).stdout
    m = re.search(r"Depends:\s*(linux-image-\S+)", out)
    return m[1] if m else ""


def _fetch_kernel(work: Path, kernel: Kernel = DEFAULT_KERNEL) -> tuple[Path, str]:
    """Download (never install) the Debian kernel package and unpack it; returns (root, kver)."""
    if not shutil.which("apt-get"):
        raise GuestUnavailableError(
            "apt-get not found: the guest kernel comes from Debian packages"
        )
    pkg = _kernel_package(kernel)
    ok = (
        bool(pkg)
        and subprocess.run(
            ["apt-get", "download", "-q", pkg], cwd=work, capture_output=True, check=False
        ).returncode
        == 0
    )
    if not ok and os.geteuid() == 0:
        # Stale or empty package lists (fresh containers): refresh once and retry.
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
        pkg = _kernel_package(kernel)
        if pkg:
            _run(["apt-get", "download", "-q", pkg], cwd=work)
            ok = True
    if not ok:
        raise GuestUnavailableError(
            f"cannot download the kernel package ({pkg or 'linux-image-amd64'}); "
            "run `apt-get update` as root, or set "
            + (
                "NUMARUN_VM_TIER_KERNEL to a version the archive has "
                "(apt-cache search 'linux-image-6.*-amd64')"
                if kernel.version
                else "NUMARUN_VM_KERNEL_PKG"
            )
        )
    debs = sorted(work.glob("linux-image-*.deb"))
    if not debs:
        raise GuestUnavailableError(f"apt-get download {pkg} produced no .deb")
    root = work / "kernel"
    _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
    kvers = sorted(p.name for p in (root / "lib" / "modules").iterdir())
    if not kvers:
        raise GuestUnavailableError(f"{debs[0].name} has no /lib/modules")
    kver = kernel.version if kernel.version in kvers else kvers[-1]
    _run(["depmod", "-b", str(root), kver])
    return root, kver


def _module_files(root: Path, kver: str, modules: Sequence[str] = GUEST_MODULES) -> list[Path]:
    """The module files to insmod, dependencies first (modprobe --show-depends order)."""
    out = _run(["modprobe", "-d", str(root), "-S", kver, "--show-depends", "-a", *modules])
    files: list[Path] = []
    for line in out.splitlines():
        parts = line.split()
        # "insmod /path/x.ko.xz [params]"; "builtin x" needs nothing.
        if len(parts) >= 2 and parts[0] == "insmod" and Path(parts[1]) not in files:
            files.append(Path(parts[1]))
    return files


def _decompressed(path: Path) -> tuple[str, bytes]:
    """busybox insmod cannot read compressed modules, so unpack them on the host."""
    name, data = path.name, path.read_bytes()
    if name.endswith(".xz"):
        return name[:-3], lzma.decompress(data)
    if name.endswith(".gz"):
        return name[:-3], gzip.decompress(data)
    if name.endswith(".zst"):
        if not shutil.which("zstd"):
            raise GuestUnavailableError(f"{name} is zstd-compressed and zstd is not installed")
        unz = subprocess.run(["zstd", "-qdc", str(path)], capture_output=True, check=True)
        return name[:-4], unz.stdout
    return name, data


class _Cpio:
    """Minimal writer for the "newc" cpio format the kernel unpacks as an initramfs.

    Written here so the harness needs no cpio binary (Debian's busybox-static has one, other
    distributions' may not)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        self.ino += 1
        self.buf += b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf += name.encode() + b"\0"
        self.buf += b"\0" * (-len(self.buf) % 4)
        self.buf += data
        self.buf += b"\0" * (-len(self.buf) % 4)

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.buf)


def _build_initrd(root: Path, kver: str, modules: Sequence[str] = GUEST_MODULES) -> bytes:
    busybox = Path(shutil.which("busybox") or "/bin/busybox").resolve()
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "lower", "rw", "root", "modules"):
        cpio.dir(d)
    # The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.file("init", GUEST_INIT.encode(), 0o755)
    order = []
    for path in _module_files(root, kver, modules):
        name, data = _decompressed(path)
        cpio.file(f"modules/{name}", data)
        order.append(name)
    cpio.file("modules/order", ("\n".join(order) + "\n").encode())
    return cpio.finish()


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """Serialises set-up between concurrent runs (parallel test sessions, CI jobs)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def setup(force: bool = False, log: bool = True, kernel: Kernel = DEFAULT_KERNEL) -> Path:
    """Fetch the kernel and build the initramfs into the cache (once). Returns the kernel's
    cache directory (vmlinuz, initrd, version)."""
    cache = kernel.cache(cache_dir())
    if not force and is_ready(cache_dir(), kernel):
        return cache
    if missing := missing_tools():
        raise GuestUnavailableError(
            f"missing Debian packages: {' '.join(missing)} (apt-get install {' '.join(missing)})"
        )
    with _locked(cache):
        if not force and is_ready(cache_dir(), kernel):
            return cache
        if log:
            what = kernel.package or "the kernel"
            print(f"numavm: fetching {what}, building the initramfs in {cache}", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=cache, prefix="build.") as tmp:
            work = Path(tmp)
            root, kver = _fetch_kernel(work, kernel)
            initrd = _build_initrd(root, kver, kernel.modules)
            # Write-then-rename so a concurrent reader never sees a half-written file.
            (work / "initrd").write_bytes(initrd)
            shutil.copyfile(root / "boot" / f"vmlinuz-{kver}", work / "vmlinuz")
            for name in ("vmlinuz", "initrd"):
                os.replace(work / name, cache / name)
            (cache / "version").write_text(kver + "\n")
            (cache / "stamp").write_text(_stamp(kernel) + "\n")
        if log:
            print(f"numavm: ready: kernel {kver} in {cache}", file=sys.stderr)
    return cache


# --------------------------------------------------------------------------------------------
# Running a guest


def detect_accel() -> str:
    """ "kvm" only where KVM can boot a stock kernel, else "tcg".

    /dev/kvm may be provided by kvm_pvm (a nested "PVM" hypervisor) which only runs
    PVM-aware guest kernels: a stock Debian kernel does not boot there.  Hardware KVM is
    kvm_intel or kvm_amd, so require one of those modules besides an accessible /dev/kvm."""
    forced = os.environ.get("NUMARUN_VM_ACCEL", "auto")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    if any(Path("/sys/module", m).is_dir() for m in ("kvm_intel", "kvm_amd")):
        return "kvm"
    return "tcg"


def _accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # Single-threaded TCG: multi-threaded TCG was seen to hang about one boot in thirty.
    # The Intel vendor makes the guest kernel read the SMT topology from CPUID leaf 0xb, so
    # it sees thread siblings (with -cpu max's default AMD-like view it may not).
    return ["-accel", "tcg,thread=single", "-cpu", "max,vendor=GenuineIntel"]


def _qemu_argv(shape: Shape, accel: str, cache: Path, job: Path) -> list[str]:
    argv = [
        "qemu-system-x86_64",
        "-nodefaults", "-no-user-config", "-no-reboot",
        "-display", "none", "-vga", "none", "-net", "none", "-monitor", "none",
        "-machine", "pc,hmat=on" if shape.hmat else "pc",
        *_accel_args(accel),
        "-smp", f"{shape.cpus},sockets={shape.nodes},cores={shape.cores},threads={shape.threads}",
        "-m", f"{shape.all_nodes * shape.mem_mb}M",
    ]  # fmt: skip
    for i in range(shape.all_nodes):
        # With HMAT every node names its initiator: itself, or a CPU-less node's CPU node.
        initiator = f",initiator={shape.near_cpu_node(i)}" if shape.hmat else ""
        argv += [
            "-object", f"memory-backend-ram,id=m{i},size={shape.mem_mb}M",
            "-numa", f"node,nodeid={i},memdev=m{i}{initiator}",
        ]  # fmt: skip
        if i < shape.nodes:
            argv += ["-numa", f"cpu,node-id={i},socket-id={i}"]
    for a in range(shape.all_nodes):
        for b in range(shape.all_nodes):
            if a != b:
                argv += ["-numa", f"dist,src={a},dst={b},val={shape.distance(a, b)}"]
    argv += _hmat_args(shape)
    append = " ".join((*KERNEL_ARGS, f"numarun_job={job}"))
    argv += [
        "-kernel", str(cache / "vmlinuz"), "-initrd", str(cache / "initrd"), "-append", append,
        "-serial", f"file:{job / 'console.log'}",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-device", "virtio-serial-pci,id=vser",
        "-chardev", f"file,id=out,path={job / 'out'}",
        "-device", f"virtserialport,bus=vser.0,nr=1,chardev=out,name={PORT_STDOUT}",
        "-chardev", f"file,id=err,path={job / 'err'}",
        "-device", f"virtserialport,bus=vser.0,nr=2,chardev=err,name={PORT_STDERR}",
        "-chardev", f"file,id=rc,path={job / 'rc'}",
        "-device", f"virtserialport,bus=vser.0,nr=3,chardev=rc,name={PORT_RC}",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip
    # Last: devices given without a bus go to the most recently added one, and nothing but a
    # bridge may sit on a pxb.
    return argv + _device_args(shape, job)


def _hmat_args(shape: Shape) -> list[str]:
    """-numa hmat-lb entries: read/write bandwidth and latency from each CPU node to each node."""
    if not shape.hmat:
        return []
    argv: list[str] = []
    lb = "hmat-lb,initiator={},target={},hierarchy=memory,data-type={}"
    for a in range(shape.nodes):
        for t in range(shape.all_nodes):
            read_bw, write_bw, read_ns, write_ns = shape.access(a, t)
            argv += [
                "-numa", lb.format(a, t, "read-latency") + f",latency={read_ns}",
                "-numa", lb.format(a, t, "write-latency") + f",latency={write_ns}",
                "-numa", lb.format(a, t, "read-bandwidth") + f",bandwidth={read_bw}M",
                "-numa", lb.format(a, t, "write-bandwidth") + f",bandwidth={write_bw}M",
            ]  # fmt: skip
    return argv


def _device_args(shape: Shape, job: Path) -> list[str]:
    """A PCI expander bridge (pxb) on each node that has devices, the devices behind it.
    The bridge's numa_node becomes its ACPI _PXM, which the guest kernel reports as each
    device's numa_node in sysfs."""
    argv: list[str] = []
    for node in sorted({d.node for d in shape.devices}):
        bus = f"pxb{node}"
        argv += ["-device", f"pxb,id={bus},bus=pci.0,bus_nr={bridge_bus(node)},numa_node={node}"]
        for dev in shape.devices:
            if dev.node == node:
                argv += dev.qemu_args(bus, job)
    return argv


_SKIP_ENV = re.compile(r"PWD|OLDPWD|SHLVL|_|TERMCAP|LS_COLORS|SSH_.*|TMUX.*|BASH_FUNC_.*")


def _cmd_script(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> str:
    """The shell script the guest runs in the chroot: environment, directory, exec."""
    lines = ["set +e"]
    for key, value in sorted(env.items()):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and not _SKIP_ENV.fullmatch(key):
            lines.append(f"export {key}={shlex.quote(value)}")
    lines.append(f"cd {shlex.quote(cwd)} || exit 125")
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclasses.dataclass
class _Attempt:
    out: bytearray
    err: bytearray
    rc: int | None
    booted: bool  # reached the INIT marker
    hung: bool  # killed for not reaching init in time
    boot_seconds: float
    timed_out: bool
    console: str
    qemu_log: str


def _boot_once(
    *,
    shape: Shape,
    accel: str,
    cache: Path,
    job: Path,
    deadline: float,
    boot_timeout: float,
    echo: bool,
) -> _Attempt:
    for name in ("console.log", "rc", "qemu.log", "out", "err"):
        with contextlib.suppress(FileNotFoundError):
            (job / name).unlink()
    (job / "rc").touch()
    # stdout/stderr are FIFOs rather than files so output streams while the command runs.
    # We open them read-write and non-blocking: opening cannot block (a read-only open would
    # wait for qemu, forever if qemu fails early), and we never see EOF, so the loop below
    # decides when it is done (qemu exited) and drains what is left.  We keep reading until
    # then, so the guest never blocks on a full pipe.
    fds: dict[int, bytearray] = {}
    out, err = bytearray(), bytearray()
    sel = selectors.DefaultSelector()
    for name, buf in (("out", out), ("err", err)):
        os.mkfifo(job / name)
        fd = os.open(job / name, os.O_RDWR | os.O_NONBLOCK)
        fds[fd] = buf
        sel.register(fd, selectors.EVENT_READ)
    mirror = {id(out): sys.stdout.buffer, id(err): sys.stderr.buffer}

    def pump(fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            fds[fd] += chunk
            stream = mirror.get(id(fds[fd]))
            if echo and stream is not None:
                try:
                    stream.write(chunk)
                    stream.flush()
                except OSError:
                    # Our reader left (`numavm.py ... | head`): stop copying, keep draining
                    # so the guest never blocks on a full port.
                    del mirror[id(fds[fd])]

    console_path = job / "console.log"
    with (job / "qemu.log").open("wb") as qlog:
        start = time.monotonic()
        proc = subprocess.Popen(
            _qemu_argv(shape, accel, cache, job), stdin=subprocess.DEVNULL, stdout=qlog,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    booted = started = timed_out = hung = False
    boot_seconds = 0.0
    try:
        while proc.poll() is None:
            for key, _ in sel.select(timeout=0.05):
                pump(int(key.fd))
            now = time.monotonic()
            if not started:
                console = console_path.read_bytes() if console_path.exists() else b""
                booted = booted or INIT_MARKER in console
                if EXEC_MARKER in console:
                    started, boot_seconds = True, now - start
                elif not booted and now - start > boot_timeout:
                    hung = True
                    break  # boot hang: the caller boots again (the command never started)
            if now > deadline:
                timed_out = True
                break
    finally:
        _stop(proc)
        for fd in fds:
            pump(fd)
            os.close(fd)
        sel.close()
    rc_text = (job / "rc").read_text(errors="replace")
    m = re.search(r"rc=(\d+)", rc_text)
    return _Attempt(
        out=out,
        err=err,
        rc=int(m[1]) if m else None,
        booted=booted,
        hung=hung,
        boot_seconds=boot_seconds,
        timed_out=timed_out,
        console=console_path.read_text(errors="replace") if console_path.exists() else "",
        qemu_log=(job / "qemu.log").read_text(errors="replace"),
    )


def boot_and_run(
    shape: Shape | str,
    argv: Sequence[str],
    timeout: float = 600.0,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    boot_timeout: float = 60.0,
    attempts: int = 3,
    accel: str | None = None,
    echo: bool = False,
) -> GuestResult:
    """Boot a guest of ``shape``, run ``argv`` in it, return its output and exit status.

    ``env`` is the command's whole environment (default: this process's); ``cwd`` its
    directory (default: ours).  A guest that has not reached its init within
    ``boot_timeout`` seconds is killed and booted again, up to ``attempts`` boots; ``timeout``
    bounds the whole call, after which the result has ``timed_out`` set and returncode 124.
    ``echo`` copies the command's output to our stdout/stderr as it arrives.

    Raises GuestUnavailableError when the guest cannot be started here and GuestError when it
    started but gave no exit status (kernel panic, failed mount: see the message)."""
    shape = get_shape(shape)
    if not argv:
        raise ValueError("no command")
    if not shutil.which("qemu-system-x86_64"):
        raise GuestUnavailableError(
            "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
        )
    cache = setup(kernel=shape.kernel)
    accel = accel or detect_accel()
    script = _cmd_script(argv, os.environ if env is None else env, cwd or os.getcwd())
    t0 = time.monotonic()
    deadline = t0 + timeout
    # The job directory is a host path that the guest sees through the 9p root.
    with tempfile.TemporaryDirectory(prefix="numarun-vm.") as tmp:
        job = Path(tmp)
        (job / "cmd.sh").write_text(script)
        tried = 0
        while True:
            tried += 1
            at = _boot_once(
                shape=shape,
                accel=accel,
                cache=cache,
                job=job,
                deadline=deadline,
                boot_timeout=boot_timeout,
                echo=echo,
            )
            # Only a boot hang is retried: a qemu that refused to start, a panic or a failed
            # mount would fail the same way again.
            if not at.hung or tried >= attempts:
                break
            print(
                f"numavm: guest did not reach init in {boot_timeout:.0f}s "
                f"(boot {tried}, {accel}); booting again",
                file=sys.stderr,
            )
            # A KVM that cannot run this kernel looks like a hang: fall back to TCG.
            if accel == "kvm" and os.environ.get("NUMARUN_VM_ACCEL") != "kvm":
                accel = "tcg"
    wall = time.monotonic() - t0
    result = GuestResult(
        stdout=at.out.decode(errors="replace"),
        stderr=at.err.decode(errors="replace"),
        returncode=124 if at.timed_out else (at.rc if at.rc is not None else -1),
        boot_seconds=round(at.boot_seconds, 2),
        wall_seconds=round(wall, 2),
        accel=accel,
        attempts=tried,
        timed_out=at.timed_out,
        console=at.console,
    )
    if at.hung:
        raise GuestError(
            f"guest ({shape.name}, {accel}) did not reach its init within {boot_timeout:.0f}s "
            f"in {tried} boot(s); console tail:\n" + "\n".join(at.console.splitlines()[-20:])
        )
    if at.rc is None and not at.timed_out:
        tail = "\n".join((at.console.splitlines() + at.qemu_log.splitlines())[-40:])
        raise GuestError(
            f"guest ({shape.name}, {accel}, {tried} boot(s)) gave no exit status; "
            f"console and qemu output:\n{tail}"
        )
    return result


# --------------------------------------------------------------------------------------------
# Command line


def _setup_numactl_suite() -> None:
    """numactl's own test scripts for test_numactl_suite_guest.py: a warning, not a failure,
    when they cannot be fetched (the rest of the guest suite does not need them)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numactl_suite

    try:
        print(f"numavm: numactl's test scripts in {numactl_suite.fetch()}")
    except numactl_suite.FetchError as exc:
        print(f"numavm: warning: numactl's test scripts: {exc}", file=sys.stderr)


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="numavm.py",
        description="Run one command in a throw-away QEMU guest with several NUMA nodes.",
    )
    parser.add_argument("--setup", action="store_true", help="fetch kernel, build initramfs")
    parser.add_argument("--force", action="store_true", help="with --setup: rebuild")
    parser.add_argument(
        "--shape", default="2n2c2t", help=f"{' | '.join(SHAPES)} | NnCcTt[Mm] (default 2n2c2t)"
    )
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None)
    parser.add_argument("--timeout", type=float, default=600.0, help="whole run, seconds")
    parser.add_argument("--boot-timeout", type=float, default=60.0, help="seconds to reach init")
    parser.add_argument("-v", "--verbose", action="store_true", help="timings, console tail")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG]...")
    ns = parser.parse_args(args)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    try:
        if ns.setup:
            # Every shape's kernel: the 6.1 one and the 6.12 one of tier2n, each cached apart.
            for kernel in dict.fromkeys(s.kernel for s in SHAPES.values()):
                cache = setup(force=ns.force, kernel=kernel)
                print(f"numavm: ready ({(cache / 'version').read_text().strip()}, {cache})")
            _setup_numactl_suite()
            if not command:
                return 0
        if not command:
            parser.error("no command (use -- CMD [ARG]...)")
        accel = None if ns.accel in (None, "auto") else ns.accel
        res = boot_and_run(
            ns.shape, command, ns.timeout, boot_timeout=ns.boot_timeout, accel=accel, echo=True
        )
    except (GuestUnavailableError, GuestError, ValueError) as exc:
        print(f"numavm: {exc}", file=sys.stderr)
        return 125
    if ns.verbose:
        print("\n".join(res.console.splitlines()[-20:]), file=sys.stderr)
        print(
            f"numavm: {get_shape(ns.shape).name} {res.accel}: boot {res.boot_seconds:.1f}s, "
            f"wall {res.wall_seconds:.1f}s, {res.attempts} boot(s), rc {res.returncode}",
            file=sys.stderr,
        )
    if res.timed_out:
        print(f"numavm: timed out after {ns.timeout:.0f}s", file=sys.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
