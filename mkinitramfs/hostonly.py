"""--host-only: the drivers and filesystem of this machine's own root, read from
/proc/self/mountinfo and /sys, mapped into the *target* kernel's module tree.

The target may be another kernel than the running one (the builder often runs on the
machine's current kernel for the next one, or, as here, inside a VM whose kernel is not
Debian's at all). So the host's drivers are mapped by name, not by file: for each device
from the root's block device up to the root of /sys/devices that has a driver, in order

  1. the host module that provides the driver (`driver/module`), if the target has it;
  2. the driver's own name (virtio-pci -> virtio_pci), if the target has a module or a
     built-in of that name;
  3. the device's MODALIAS, through the target's modules.alias (a driver built into the host
     under another name: "sd" -> sd_mod via scsi:t-0x00).

Bus plumbing that every kernel builds in (PCIe ports, USB hubs) is skipped. A driver none
of these finds is an error naming it: an image without it could not reach the root.
Stacked devices (device-mapper, md) are followed through their slaves, adding dm_mod and the
target type (dm-crypt, raid1...). The root filesystem's module is `fs-<type>`.

The dm-crypt devices on the way (`crypt`) also choose the machine's /etc/crypttab entries the
image needs (hostfiles.py): the luks hook then unlocks them with their names, key files and
options.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.kmod import ModuleIndex, normalize


class HostOnlyError(MkinitramfsError):
    """--host-only cannot follow this machine's root to drivers of the target kernel."""


# Drivers of bus infrastructure that carry no storage path of their own and are built into
# every kernel that has the bus.
IGNORED_DRIVERS = {"pcieport", "usb", "hub", "usbfs", "port", "processor", "serial8250"}


@dataclass
class HostDevice:
    sysdir: str
    driver: str | None
    module: str | None
    modalias: str | None


@dataclass
class HostRoot:
    fstype: str
    source: str
    devnum: str  # "major:minor"
    devices: list[HostDevice] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # dm_mod, dm_crypt, raid1...: from the stack
    block_devices: list[str] = field(default_factory=list)  # names, top first
    crypt: list[CryptDevice] = field(default_factory=list)  # dm-crypt devices in the chain


@dataclass
class CryptDevice:
    name: str  # /dev/mapper/NAME
    uuid: str | None  # the LUKS UUID (from the dm UUID CRYPT-LUKS2-<hex>-NAME), None for plain
    slaves: list[str]  # the /dev nodes it is opened on


class RootMount(NamedTuple):
    """The mount at / as /proc/self/mountinfo lists it."""

    devnum: str  # major:minor
    root: str  # the folder of its filesystem mounted there ("/": the whole filesystem)
    fstype: str
    source: str
    options: str  # the super options (btrfs's subvol=...)


def _unescape(s: str) -> str:
    """mountinfo's octal escapes (space, tab, newline, backslash)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def root_mount(mountinfo: str) -> RootMount | None:
    """The mount at / (the last one listed there, if stacked), or None."""
    found = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        a, b = left.split(), right.split()
        if len(a) >= 5 and a[4] == "/" and b:
            found = RootMount(a[2], _unescape(a[3]), b[0], _unescape(b[1]) if len(b) > 1 else "",
                              b[2] if len(b) > 2 else "")
    return found


def parse_root_mount(mountinfo: str) -> tuple[str, str, str]:
    """(major:minor, fstype, source) of the mount at / (the last one, if stacked)."""
    found = root_mount(mountinfo)
    if found is None:
        raise HostOnlyError("no mount at / in /proc/self/mountinfo")
    return found.devnum, found.fstype, found.source


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def detect(sys_root: str = "/sys", mountinfo_path: str = "/proc/self/mountinfo") -> HostRoot:
    """The root filesystem of this machine and the chain of devices and drivers under it."""
    devnum, fstype, source = parse_root_mount(_read(mountinfo_path) if os.path.isfile(mountinfo_path) else "")
    if devnum.startswith("0:"):
        # btrfs and some others show an anonymous device number: ask the source device.
        try:
            st = os.stat(source)
            devnum = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        except OSError:
            raise HostOnlyError(f"the root filesystem is {fstype} on {source or 'nothing'}, which is not a block "
                                "device: host-only cannot know which disk driver to pack; use --generic or name "
                                "the drivers with --modules") from None
    host = HostRoot(fstype=fstype, source=source, devnum=devnum)
    sysdir = os.path.realpath(f"{sys_root}/dev/block/{devnum}")
    if not os.path.isdir(sysdir):
        raise HostOnlyError(f"the root filesystem ({fstype} on {source}, device {devnum}) has no "
                            f"{sys_root}/dev/block/{devnum}: use --generic or --modules")
    _walk_block(sys_root, sysdir, host, set())
    return host


def _walk_block(sys_root: str, sysdir: str, host: HostRoot, seen: set[str]) -> None:
    if sysdir in seen:
        return
    seen.add(sysdir)
    name = os.path.basename(sysdir)
    host.block_devices.append(name)
    if os.path.isfile(f"{sysdir}/partition"):
        sysdir = os.path.dirname(sysdir)  # a partition: its disk carries the rest
    dm_uuid = _read(f"{sysdir}/dm/uuid")
    if os.path.isdir(f"{sysdir}/dm"):
        host.extra.append("dm_mod")
        if dm_uuid.startswith("CRYPT-"):
            host.extra.append("dm_crypt")
            host.crypt.append(CryptDevice(_read(f"{sysdir}/dm/name"), luks_uuid_from_dm(dm_uuid),
                                          [f"/dev/{s}" for s in sorted(os.listdir(f"{sysdir}/slaves"))]
                                          if os.path.isdir(f"{sysdir}/slaves") else []))
        elif dm_uuid.startswith("LVM-"):
            pass  # linear and striped targets live in dm_mod
    level = _read(f"{sysdir}/md/level")
    if level:
        host.extra.append("md_mod")
        host.extra.append({"raid4": "raid456", "raid5": "raid456", "raid6": "raid456"}.get(level, level))
    slaves = sorted(os.listdir(f"{sysdir}/slaves")) if os.path.isdir(f"{sysdir}/slaves") else []
    for s in slaves:
        _walk_block(sys_root, os.path.realpath(f"{sysdir}/slaves/{s}"), host, seen)
    # Up the device tree: every ancestor with a driver (or a modalias) is on the path to the disk.
    top = os.path.realpath(f"{sys_root}/devices")
    d = sysdir
    while d.startswith(top + "/"):
        driver = _link_name(f"{d}/driver")
        module = _link_name(f"{d}/driver/module")
        modalias = _read(f"{d}/modalias") or None
        if driver or module:
            host.devices.append(HostDevice(d, driver, module, modalias))
        d = os.path.dirname(d)


def map_to_target(host: HostRoot, idx: ModuleIndex, running_kver: str | None = None) -> tuple[list[str], list[str]]:
    """(module names for the target kernel, notes saying how each was found)."""
    names: list[str] = []
    notes: list[str] = []

    def want(name: str, why: str) -> None:
        if name not in names:
            names.append(name)
            notes.append(f"{name}: {why}")

    running = running_kver or os.uname().release
    for dev in host.devices:
        where = os.path.basename(dev.sysdir)
        if dev.module and idx.resolve(dev.module):
            want(normalize(dev.module), f"module of driver {dev.driver} of {where}")
            continue
        if dev.driver and normalize(dev.driver) in idx.builtin | set(idx.paths):
            want(normalize(dev.driver), f"driver {dev.driver} of {where}")
            continue
        if dev.driver in IGNORED_DRIVERS:
            continue
        matched = list(idx.resolve(dev.modalias)) if dev.modalias else []
        if matched:
            for m in matched:
                want(m, f"modalias {dev.modalias} of {where} (driver {dev.driver})")
            continue
        raise HostOnlyError(
            f"host-only: the root's device {where} ({dev.sysdir}) uses driver {dev.driver}"
            + (f" from module {dev.module}" if dev.module else " (built into the running kernel)")
            + f" on kernel {running}, and kernel {idx.kver} has no module, built-in or alias for it"
            + (f" (modalias {dev.modalias})" if dev.modalias else "")
            + ": name the target's driver with --modules, or use --generic")
    for name in host.extra:
        if not idx.resolve(name):
            raise HostOnlyError(f"host-only: the root is stacked on {name}, which kernel {idx.kver} does not have")
        want(name, "the root's device-mapper/md stack")
    fs = idx.resolve(f"fs-{host.fstype}") or idx.resolve(host.fstype)
    if not fs:
        raise HostOnlyError(f"host-only: the root filesystem is {host.fstype}, and kernel {idx.kver} has no module "
                            f"or built-in for it (fs-{host.fstype})")
    for m in fs:
        want(m, f"the root filesystem ({host.fstype})")
    return names, notes


def luks_uuid_from_dm(dm_uuid: str) -> str | None:
    """"CRYPT-LUKS2-5e1f...aa-name" -> "5e1f....-....-aa" (the LUKS UUID as blkid prints it)."""
    parts = dm_uuid.split("-", 3)
    if len(parts) < 3 or parts[0] != "CRYPT" or not parts[1].startswith("LUKS"):
        return None
    h = parts[2].lower()
    if len(h) != 32 or any(c not in "0123456789abcdef" for c in h):
        return None
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
