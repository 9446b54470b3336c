"""The /dev/disk/by-* links of a block device, made and removed as udev does.

by-uuid and by-label from the filesystem (not for RAID or LVM members, which carry their
array's UUID: one member must not stand for the array), by-partuuid and by-partlabel from
the partition entry, by-id and by-path from the hardware (pyinit/diskid.py). Names are
escaped as udev escapes them (blkid.encode_name). A link another device already holds is
left to it: udev would pick by link priority; pyinit keeps the first device that claimed it.
"""
from __future__ import annotations

import os

from pyinit import blkid

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from pyinit.log import Logger

# udev makes by-uuid/by-label links only for these ID_FS_USAGE values; a RAID or LVM member
# carries its array's UUID, which must not point at one member.
_NO_LINK_TYPES = ("linux_raid_member", "LVM2_member")


def link_names(info: Mapping[str, str], names: Iterable[str] = ()) -> list[str]:
    """The links ("by-uuid/...", ...) of a device with the probed `info` and udev's hardware
    `names`. Pure."""
    out = []
    if info.get("TYPE") not in _NO_LINK_TYPES:
        if info.get("UUID"):
            out.append("by-uuid/" + blkid.encode_name(info["UUID"]))
        if info.get("LABEL"):
            out.append("by-label/" + blkid.encode_name(info["LABEL"]))
    if info.get("PARTUUID"):
        out.append("by-partuuid/" + info["PARTUUID"])
    if info.get("PARTLABEL"):
        out.append("by-partlabel/" + blkid.encode_name(info["PARTLABEL"]))
    return out + list(names)


def make(node: str, rels: Iterable[str], link_root: str, taken: Callable[[str], bool],
         log: Logger | None = None) -> None:
    """Point each link of `rels` (under `link_root`) at `node`, atomically, unless it points
    at a device `taken` says is known (the first device that claimed a name keeps it)."""
    for rel in rels:
        path = f"{link_root}/{rel}"
        target = os.path.relpath(node, os.path.dirname(path))
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            current = os.readlink(path) if os.path.islink(path) else None
            if current == target:
                continue
            if current is not None and taken(os.path.basename(current)):
                if log:
                    log.debug(f"/dev/disk/{rel} already points at {current}; not {os.path.basename(node)}")
                continue
            tmp = f"{path}.pyinit-tmp"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(target, tmp)
            os.replace(tmp, path)
        except OSError as e:
            if log:
                log.debug(f"cannot link /dev/disk/{rel}: {e}")


def remove(node: str, rels: Iterable[str], link_root: str) -> None:
    """Remove the links of `rels` that still point at `node`."""
    for rel in rels:
        path = f"{link_root}/{rel}"
        try:
            if os.readlink(path) == os.path.relpath(node, os.path.dirname(path)):
                os.unlink(path)
        except OSError:
            pass
