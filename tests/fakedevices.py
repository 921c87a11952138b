"""PCI devices for fake sysfs trees: the files and links the kernel shows for each.

:func:`add_devices` lays out ``/sys/devices/pci*/.../BDF`` folders with ``class``,
``vendor``, ``device``, ``numa_node`` and ``local_cpulist``, the ``/sys/bus/pci/devices``
links, network interfaces (``/sys/class/net/NAME/device``, through a ``virtioN`` child for
virtio NICs), block devices (``/sys/block/NAME/device``, an NVMe controller below its PCI
function) and NVIDIA's ``/proc/driver/nvidia/gpus/BDF/information``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


class FakeDevice:
    def __init__(
        self,
        pci: str,
        pci_class: str,
        *,
        vendor: str = "0x8086",
        device: str = "0x1234",
        node: int = -1,
        local_cpus: Iterable[int] | None = None,
        parent: str | None = None,
        net: str | None = None,
        virtio: bool = False,
        block: str | None = None,
        nvidia_minor: int | None = None,
    ) -> None:
        self.pci, self.pci_class, self.vendor, self.device = pci, pci_class, vendor, device
        self.node, self.parent = node, parent
        self.local_cpus = None if local_cpus is None else sorted(local_cpus)
        self.net, self.virtio, self.block, self.nvidia_minor = net, virtio, block, nvidia_minor


def add_devices(root: Path, devices: Iterable[FakeDevice]) -> Path:
    """Write the devices' folders and links under ``root`` (a fake sysfs root)."""
    from numarun import cpulist

    by_address = {d.pci: d for d in devices}

    def folder(dev: FakeDevice) -> str:
        above = folder(by_address[dev.parent]) if dev.parent else f"pci{dev.pci[:7]}"
        return f"{above}/{dev.pci}"

    for dev in by_address.values():
        rel = f"sys/devices/{folder(dev)}"
        base = root / rel
        base.mkdir(parents=True, exist_ok=True)
        (base / "class").write_text(dev.pci_class + "\n")
        (base / "vendor").write_text(dev.vendor + "\n")
        (base / "device").write_text(dev.device + "\n")
        (base / "numa_node").write_text(f"{dev.node}\n")
        if dev.local_cpus is not None:
            (base / "local_cpulist").write_text(cpulist.format_list(dev.local_cpus) + "\n")
        _link(root / "sys/bus/pci/devices" / dev.pci, root / rel)
        if dev.net:
            target = base / "virtio3" if dev.virtio else base
            target.mkdir(exist_ok=True)
            (root / "sys/class/net" / dev.net).mkdir(parents=True, exist_ok=True)
            _link(root / "sys/class/net" / dev.net / "device", target)
        if dev.block:
            controller = base / "nvme" / "nvme0"
            controller.mkdir(parents=True, exist_ok=True)
            (root / "sys/block" / dev.block).mkdir(parents=True, exist_ok=True)
            _link(root / "sys/block" / dev.block / "device", controller)
        if dev.nvidia_minor is not None:
            info = root / "proc/driver/nvidia/gpus" / dev.pci / "information"
            info.parent.mkdir(parents=True, exist_ok=True)
            info.write_text(
                "Model: \t\t NVIDIA H100 80GB HBM3\n"
                f"Bus Location: \t {dev.pci}\n"
                f"Device Minor: \t {dev.nvidia_minor}\n"
            )
    return root


def _link(link: Path, target: Path) -> None:
    """A relative symbolic link, as sysfs has: it resolves inside a copied tree too."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))
