"""Real kernel uevents on this host: the netlink listener hears a loop device with a GPT
made by sgdisk appear (losetup -P), and `Devices` probes its partitions and links them.
Links go to a temporary folder, never to the host's /dev/disk."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from pyinit import devices, rootspec, uevent
from tests.support.hosttools import blank, run, tool

pytestmark = pytest.mark.container


@pytest.fixture
def fs_image(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root (losetup)", pytrace=False)
    img = blank(tmp_path / "fs.img", 20)
    run("mkfs.ext4", "-q", "-F", "-L", "loop root", str(img))
    return img


def test_listener_hears_a_change_event():
    listener = uevent.Listener()
    try:
        target = "/sys/class/block/loop0/uevent"
        assert os.path.exists(target), "no loop0 on this host"
        assert uevent.trigger([target], "change") == 1
        deadline = time.monotonic() + 10
        seen = []
        while time.monotonic() < deadline and not any(e.action == "change" and e.devpath.endswith("/loop0")
                                                      for e in seen):
            seen += listener.receive(1.0)
        ev = next(e for e in seen if e.devpath.endswith("/loop0"))
        assert ev.subsystem == "block" and ev.get("DEVNAME") == "loop0" and ev.get("MAJOR") == "7"
    finally:
        listener.close()


def test_devices_follow_a_new_loop_device(fs_image, tmp_path):
    """This host's kernel scans no partition tables on loop devices (no EFI/MSDOS partition
    support), so the disk carries a bare ext4; partitions are covered by the VM tier."""
    links = tmp_path / "links"
    devs = devices.Devices(link_root=str(links))
    assert devs.start()
    devs.coldplug(trigger=False)  # what exists now, read from /sys
    before = devs.events
    loop = subprocess.run([tool("losetup"), "-f", "--show", str(fs_image)], capture_output=True, text=True)
    assert loop.returncode == 0, loop.stderr
    node = loop.stdout.strip()
    try:
        dev = devs.wait_for(rootspec.parse_root("LABEL=loop root"), 30, rescan_every=1000)
        assert dev is not None, [d.describe() for d in devs.blocks.values()]
        assert dev.node == node and dev.info["TYPE"] == "ext4"
        assert devs.events > before  # found through a "change" uevent, not by rescanning
        link = links / "by-label" / "loop\\x20root"
        assert os.path.realpath(link) == node
        assert os.readlink(links / "by-uuid" / dev.info["UUID"]) == os.path.relpath(node, links / "by-uuid")
    finally:
        subprocess.run([tool("losetup"), "-d", node])
    # detaching sends "change" with size 0: the device stays, its filesystem and links go
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and devs.blocks[os.path.basename(node)].info:
        devs.pump(0.5)
    assert devs.blocks[os.path.basename(node)].info == {}
    assert not os.path.lexists(links / "by-label" / "loop\\x20root")
    devs.close()
