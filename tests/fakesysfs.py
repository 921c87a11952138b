"""Write small fake sysfs/procfs trees for tests: machines the project describes itself.

``FakeMachine`` describes nodes, CPUs and SMT siblings; :meth:`FakeMachine.write` lays
out the files the kernel would show under a root, in the modern layout (``cpulist``,
``core_cpus_list``) or, with ``old_sysfs=True``, the old one (hex ``cpumap`` and
``thread_siblings`` masks, no ``cpu/online``). ``c5n_18xlarge()`` is the two-node,
72-CPU SMT2 machine that ``numactl --hardware`` shows publicly for that EC2 type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from numarun import cpulist


class FakeMachine:
    def __init__(
        self,
        nodes: Mapping[int, Iterable[int]],
        siblings: Iterable[Iterable[int]],
        *,
        memory_mb: Mapping[int, int] | None = None,
        distances: Mapping[int, Mapping[int, int]] | None = None,
        offline: Iterable[int] = (),
        packages: Mapping[int, int] | None = None,
        vendor: str | None = None,
        product: str | None = None,
        numa_balancing: bool | None = False,
    ) -> None:
        self.nodes = {n: frozenset(c) for n, c in sorted(nodes.items())}
        self.siblings = [frozenset(s) for s in siblings]
        self.cpus = sorted(
            {c for s in self.siblings for c in s} | {c for n in self.nodes.values() for c in n}
        )
        self.memory_mb = dict(memory_mb or {n: 1024 for n in self.nodes})
        self.distances = distances or {
            a: {b: 10 if a == b else 21 for b in self.nodes} for a in self.nodes
        }
        self.offline = frozenset(offline)
        self.packages = dict(packages or {})
        self.vendor, self.product, self.numa_balancing = vendor, product, numa_balancing

    def write(self, root: Path, *, old_sysfs: bool = False) -> Path:
        def put(rel: str, text: str) -> None:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

        ids = list(self.nodes)
        put("sys/devices/system/node/online", cpulist.format_list(ids) + "\n")
        put("sys/devices/system/node/possible", cpulist.format_list(ids) + "\n")
        for node, cpus in self.nodes.items():
            base = f"sys/devices/system/node/node{node}"
            if old_sysfs:
                put(f"{base}/cpumap", cpulist.format_mask(cpus) + "\n")
            else:
                put(f"{base}/cpulist", cpulist.format_list(cpus) + "\n")
            total = self.memory_mb.get(node, 0) * 1024
            put(
                f"{base}/meminfo",
                f"Node {node} MemTotal:       {total} kB\n"
                f"Node {node} MemFree:        {total // 2} kB\n"
                f"Node {node} MemUsed:        {total - total // 2} kB\n",
            )
            put(f"{base}/distance", " ".join(str(self.distances[node][b]) for b in ids) + "\n")
        online = [c for c in self.cpus if c not in self.offline]
        if not old_sysfs:
            put("sys/devices/system/cpu/online", cpulist.format_list(online) + "\n")
            put("sys/devices/system/cpu/possible", cpulist.format_list(self.cpus) + "\n")
        node_of = {c: n for n, cpus in self.nodes.items() for c in cpus}
        for sib in self.siblings:
            for cpu in sorted(sib):
                base = f"sys/devices/system/cpu/cpu{cpu}"
                (root / base).mkdir(parents=True, exist_ok=True)
                if cpu != 0:
                    put(f"{base}/online", "0\n" if cpu in self.offline else "1\n")
                if cpu in self.offline:
                    continue
                core = min(sib)
                put(f"{base}/topology/physical_package_id", f"{self.packages.get(cpu, 0)}\n")
                put(f"{base}/topology/core_id", f"{core % 1000}\n")
                live = sorted(s for s in sib if s not in self.offline)
                if old_sysfs:
                    put(f"{base}/topology/thread_siblings", cpulist.format_mask(live) + "\n")
                else:
                    put(f"{base}/topology/core_cpus_list", cpulist.format_list(live) + "\n")
                    put(f"{base}/topology/thread_siblings_list", cpulist.format_list(live) + "\n")
                if cpu in node_of:
                    (root / base / f"node{node_of[cpu]}").mkdir(exist_ok=True)
        total = sum(self.memory_mb.values()) * 1024
        put("proc/meminfo", f"MemTotal:       {total} kB\nMemFree:        {total // 2} kB\n")
        put(
            "proc/self/status",
            f"Name:\tfake\nCpus_allowed_list:\t{cpulist.format_list(self.cpus)}\n"
            f"Mems_allowed_list:\t{cpulist.format_list(ids)}\n",
        )
        if self.numa_balancing is not None:
            put("proc/sys/kernel/numa_balancing", f"{int(self.numa_balancing)}\n")
        put("proc/sys/kernel/osrelease", "6.1.0-test\n")
        if self.vendor:
            put("sys/class/dmi/id/sys_vendor", self.vendor + "\n")
        if self.product:
            put("sys/class/dmi/id/product_name", self.product + "\n")
        return root

    def confine(
        self,
        root: Path,
        cgroup: str,
        cpus: Iterable[int],
        mems: Iterable[int],
        *,
        mount: str = "/sys/fs/cgroup",
        cgroup_file: bool = True,
    ) -> None:
        """Put the process in a cgroup v2 cpuset (as a container or Slurm job would be).

        ``mount`` is where cgroup2 is mounted (Slurm: ``/cgroup/unified``); without
        ``cgroup_file`` only ``/proc/self/cpuset`` names the cgroup, as in snapshots
        captured without ``/proc/self/cgroup`` and on old kernels.
        """
        (root / "proc/self").mkdir(parents=True, exist_ok=True)
        if cgroup_file:
            (root / "proc/self/cgroup").write_text(f"0::{cgroup}\n")
        (root / "proc/self/cpuset").write_text(f"{cgroup}\n")
        (root / "proc/mounts").write_text(
            "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
            f"cgroup2 {mount} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
        )
        base = root / mount.strip("/") / cgroup.strip("/")
        base.mkdir(parents=True, exist_ok=True)
        (base / "cpuset.cpus.effective").write_text(cpulist.format_list(cpus) + "\n")
        (base / "cpuset.mems.effective").write_text(cpulist.format_list(mems) + "\n")

    def pin(self, root: Path, cpus: Iterable[int]) -> None:
        """Narrow the process's own affinity, as ``taskset -c`` or a launcher would."""
        status = root / "proc/self/status"
        lines = [
            f"Cpus_allowed_list:\t{cpulist.format_list(cpus)}"
            if line.startswith("Cpus_allowed_list:")
            else line
            for line in status.read_text().splitlines()
        ]
        status.write_text("\n".join(lines) + "\n")


def c5n_18xlarge() -> FakeMachine:
    """2 nodes x 18 cores x 2 threads: node 0 = 0-17,36-53, node 1 = 18-35,54-71."""
    return FakeMachine(
        nodes={0: [*range(18), *range(36, 54)], 1: [*range(18, 36), *range(54, 72)]},
        siblings=[(i, i + 36) for i in range(36)],
        memory_mb={0: 95_000, 1: 96_000},
        distances={0: {0: 10, 1: 21}, 1: {0: 21, 1: 10}},
        packages={c: (0 if c % 36 < 18 else 1) for c in range(72)},
        vendor="Amazon EC2",
        product="c5n.18xlarge",
    )


class Tiering:
    """Memory tiers, HMAT figures and weighted-interleave files, as Linux 6.9+ shows them.

    ``access`` maps a node to (initiators, read MB/s, write MB/s, read ns, write ns);
    ``weights`` None leaves out the weighted-interleave directory (a kernel before 6.9),
    ``auto`` None its ``auto`` file (before 6.16).
    """

    def __init__(
        self,
        tiers: Mapping[int, Iterable[int]],
        access: Mapping[int, tuple[Iterable[int], int, int, int, int]],
        *,
        weights: Mapping[int, int] | None = None,
        auto: bool | None = None,
        demotion: bool | None = False,
        balancing_mode: int | None = None,
    ) -> None:
        self.tiers = {t: frozenset(n) for t, n in tiers.items()}
        self.access = dict(access)
        self.weights, self.auto, self.demotion = weights, auto, demotion
        self.balancing_mode = balancing_mode

    def write(self, root: Path) -> Path:
        def put(rel: str, text: str) -> None:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

        for tier, nodes in self.tiers.items():
            put(
                f"sys/devices/virtual/memory_tiering/memory_tier{tier}/nodelist",
                cpulist.format_list(nodes) + "\n",
            )
        for node, (initiators, *figures) in self.access.items():
            base = f"sys/devices/system/node/node{node}/access0/initiators"
            names = ("read_bandwidth", "write_bandwidth", "read_latency", "write_latency")
            for name, value in zip(names, figures, strict=True):
                put(f"{base}/{name}", f"{value}\n")
            for initiator in initiators:  # the kernel's are links to the initiator node
                (root / base / f"node{initiator}").symlink_to(f"../../../node{initiator}")
        weights_dir = "sys/kernel/mm/mempolicy/weighted_interleave"
        for node, weight in (self.weights or {}).items():
            put(f"{weights_dir}/node{node}", f"{weight}\n")
        if self.auto is not None:
            put(f"{weights_dir}/auto", "true\n" if self.auto else "false\n")
        if self.demotion is not None:
            put("sys/kernel/mm/numa/demotion_enabled", "true\n" if self.demotion else "false\n")
        if self.balancing_mode is not None:
            put("proc/sys/kernel/numa_balancing", f"{self.balancing_mode}\n")
        return root


def two_sockets_with_cxl() -> tuple[FakeMachine, Tiering]:
    """2 DRAM nodes (0: CPUs 0-3, 1: CPUs 4-7, 20 GB/s) and 2 CPU-less CXL nodes (2 near
    node 0, 3 near node 1; 8 GB/s): the issue's two sockets, each with its own CXL card.

    The SLIT distances tell the same story (17 to the own socket's CXL, 28 to the other),
    so pairing by distance, where HMAT is absent, pairs the same way.
    """
    far = {(0, 1): 21, (0, 2): 17, (0, 3): 28, (1, 2): 28, (1, 3): 17, (2, 3): 28}
    distances = {
        a: {b: 10 if a == b else far[min(a, b), max(a, b)] for b in range(4)} for a in range(4)
    }
    machine = FakeMachine(
        nodes={0: range(4), 1: range(4, 8), 2: (), 3: ()},
        siblings=[(c,) for c in range(8)],
        memory_mb={0: 8192, 1: 8192, 2: 4096, 3: 4096},
        distances=distances,
        packages={c: c // 4 for c in range(8)},
        product="tiered",
    )
    tiering = Tiering(
        tiers={4: (0, 1), 35: (2, 3)},
        access={
            0: ((0,), 20000, 20000, 100, 100),
            1: ((1,), 20000, 20000, 100, 100),
            2: ((0,), 8000, 8000, 250, 300),
            3: ((1,), 8000, 8000, 250, 300),
        },
        weights={0: 1, 1: 1, 2: 1, 3: 1},
        demotion=True,
        balancing_mode=2,
    )
    return machine, tiering


def write_two_sockets_with_cxl(path: Path, **changes: object) -> Path:
    """:func:`two_sockets_with_cxl` written under ``path``, with ``changes`` to its
    :class:`Tiering` (``weights=``, ``auto=``, ``access=``...); returns ``path``."""
    machine, tiering = two_sockets_with_cxl()
    for name, value in changes.items():
        setattr(tiering, name, value)
    tiering.write(machine.write(path))
    return path


class FakeCounters:
    """What a monitor reads that moves: meminfo, numastat, ``/proc/stat``, ``/proc/vmstat``,
    and processes' ``numa_maps`` and ``status``, written over a :class:`FakeMachine`'s tree.

    Each method writes its files anew, so a test steps the machine from one reading to the
    next by calling them again.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def meminfo(self, node: int, total_mb: int, free_mb: int, *, used: bool = True) -> None:
        """``nodeN/meminfo``; without ``used`` no MemUsed line (then total - free is used)."""
        lines = [
            f"Node {node} MemTotal:       {total_mb * 1024} kB",
            f"Node {node} MemFree:        {free_mb * 1024} kB",
        ]
        if used:
            lines.append(f"Node {node} MemUsed:        {(total_mb - free_mb) * 1024} kB")
        self.put(f"sys/devices/system/node/node{node}/meminfo", "\n".join(lines) + "\n")

    def numastat(self, node: int, **counters: int) -> None:
        text = "".join(f"{name} {value}\n" for name, value in counters.items())
        self.put(f"sys/devices/system/node/node{node}/numastat", text)

    def vmstat(self, **counters: int) -> None:
        text = "nr_free_pages 1000\n" + "".join(f"{k} {v}\n" for k, v in counters.items())
        self.put("proc/vmstat", text)

    def stat(self, cpus: Mapping[int, tuple[int, int]]) -> None:
        """``/proc/stat`` with each CPU's (busy, idle) jiffies (busy counted as user)."""
        total_busy = sum(b for b, _ in cpus.values())
        total_idle = sum(i for _, i in cpus.values())
        lines = [f"cpu  {total_busy} 0 0 {total_idle} 0 0 0 0 0 0"]
        lines += [f"cpu{c} {b} 0 0 {i} 0 0 0 0 0 0" for c, (b, i) in sorted(cpus.items())]
        self.put("proc/stat", "\n".join([*lines, "intr 1 2 3", ""]))

    def process(self, pid: int, numa_maps: str, cpus: Iterable[int], mems: Iterable[int]) -> None:
        self.put(f"proc/{pid}/numa_maps", numa_maps)
        self.put(
            f"proc/{pid}/status",
            f"Name:\tfake\nPid:\t{pid}\nCpus_allowed_list:\t{cpulist.format_list(cpus)}\n"
            f"Mems_allowed_list:\t{cpulist.format_list(mems)}\n",
        )
