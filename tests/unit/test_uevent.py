"""The uevent parser (kernel datagrams as bytes) and the coldplug path list on a fake /sys."""
import os

import pytest

from pyinit import uevent

pytestmark = pytest.mark.unit

BLOCK_ADD = (b"add@/devices/pci0000:00/0000:00:04.0/virtio1/block/vda\0ACTION=add\0"
             b"DEVPATH=/devices/pci0000:00/0000:00:04.0/virtio1/block/vda\0SUBSYSTEM=block\0MAJOR=254\0"
             b"MINOR=0\0DEVNAME=vda\0DEVTYPE=disk\0DISKSEQ=2\0SEQNUM=1187\0")


def test_parse_block_add():
    ev = uevent.parse(BLOCK_ADD)
    assert (ev.action, ev.devpath, ev.subsystem) == ("add", "/devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
                                                     "block")
    assert ev.get("DEVNAME") == "vda" and ev.get("MAJOR") == "254" and ev.get("SEQNUM") == "1187"


def test_parse_modalias_and_values_with_equals_and_spaces():
    ev = uevent.parse(b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=pci\0"
                      b"MODALIAS=pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\0PARTNAME=EFI System\0"
                      b"OPT=a=b\0")
    assert ev.get("MODALIAS").startswith("pci:v00001AF4")
    assert ev.get("PARTNAME") == "EFI System" and ev.get("OPT") == "a=b"


@pytest.mark.parametrize("msg", [
    b"",
    b"libudev\0\xfe\xed\xca\xfe" + bytes(32),  # udevd's re-broadcast on group 2
    b"garbage without an at sign\0A=B\0",
    b"add@relative/path\0",
    b"add@/devices/x\0ACTION=remove\0",  # header and ACTION disagree
    b"add@/devices/x\0DEVPATH=/devices/y\0",
])
def test_parse_rejects(msg):
    assert uevent.parse(msg) is None


def test_parse_without_action_key_uses_the_header():
    ev = uevent.parse(b"change@/devices/virtual/block/loop0\0SUBSYSTEM=block\0")
    assert ev.action == "change" and ev.env["ACTION"] == "change"
    assert ev.env["DEVPATH"] == "/devices/virtual/block/loop0"


def test_parse_uevent_file():
    assert uevent.parse_uevent_file("MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\n\n") == {
        "MAJOR": "254", "MINOR": "1", "DEVNAME": "vda1", "DEVTYPE": "partition", "PARTN": "1"}


def test_coldplug_paths_and_trigger(tmp_path):
    sysfs = tmp_path / "sys"
    for d in ("devices/pci0000:00/0000:00:04.0", "devices/platform/i8042", "devices/virtual/block/loop0"):
        (sysfs / d).mkdir(parents=True)
        (sysfs / d / "uevent").write_text("")
    (sysfs / "bus" / "pci" / "devices").mkdir(parents=True)
    (sysfs / "bus" / "platform" / "devices").mkdir(parents=True)
    (sysfs / "class" / "block").mkdir(parents=True)
    os.symlink("../../../devices/pci0000:00/0000:00:04.0", sysfs / "bus/pci/devices/0000:00:04.0")
    os.symlink("../../../devices/platform/i8042", sysfs / "bus/platform/devices/i8042")
    os.symlink("../../devices/virtual/block/loop0", sysfs / "class/block/loop0")
    paths = uevent.coldplug_paths(str(sysfs))
    assert paths == [f"{sysfs}/bus/pci/devices/0000:00:04.0/uevent", f"{sysfs}/bus/platform/devices/i8042/uevent",
                     f"{sysfs}/class/block/loop0/uevent"]
    assert uevent.trigger([*paths, f"{sysfs}/missing/uevent"]) == 3
    assert (sysfs / "devices/platform/i8042/uevent").read_text() == "add"
