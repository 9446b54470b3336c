"""A machine's /sys and /dev made of plain files, and the uevents that announce its disks:
the device tracker (pyinit.devices) runs on them unprivileged, reading real probe data."""
from __future__ import annotations

import os
from pathlib import Path

from pyinit import uevent


class FakeMachine:
    """/sys and /dev as plain folders: a disk's sysfs node is a folder with dev, size,
    uevent and queue/logical_block_size; its /dev node is a plain file with the bytes."""

    def __init__(self, base: Path):
        self.sys = base / "sys"
        self.dev = base / "dev"
        (self.sys / "class" / "block").mkdir(parents=True)
        (self.sys / "bus").mkdir()
        self.dev.mkdir()

    def add(self, name: str, devnum, data: bytes, parent: str | None = None, partn: int | None = None) -> dict:
        if parent is None:
            sysdir = self.sys / "devices" / "pci0000:00" / "virtio1" / "block" / name
        else:
            sysdir = self.sys / "devices" / "pci0000:00" / "virtio1" / "block" / parent / name
        sysdir.mkdir(parents=True)
        (sysdir / "dev").write_text(f"{devnum[0]}:{devnum[1]}\n")
        (sysdir / "size").write_text(f"{len(data) // 512}\n")
        env = {"MAJOR": str(devnum[0]), "MINOR": str(devnum[1]), "DEVNAME": name,
               "DEVTYPE": "partition" if parent else "disk"}
        if partn:
            (sysdir / "partition").write_text(f"{partn}\n")
            env["PARTN"] = str(partn)
        (sysdir / "uevent").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        os.symlink(os.path.relpath(sysdir, self.sys / "class" / "block"), self.sys / "class" / "block" / name)
        (self.dev / name).write_bytes(data)
        env.update(ACTION="add", SUBSYSTEM="block", DEVPATH="/" + str(sysdir.relative_to(self.sys)))
        return env

    def event(self, env: dict) -> uevent.Uevent:
        msg = f"{env['ACTION']}@{env['DEVPATH']}\0" + "".join(f"{k}={v}\0" for k, v in env.items())
        ev = uevent.parse(msg.encode())
        assert ev is not None
        return ev
