"""pyinit.diskid: udev's /dev/disk/by-id and by-path names from sysfs attributes.

The reference is udev itself: tests/support/udev_names.py holds the names systemd-udevd 252 gave
six disks under QEMU (tests/vm/test_disks.py checks udev still does), and tests/unit/sysfs/
the sysfs attributes of the same machine, recorded on Linux 7.3.4 and 6.1. Here the recorded
tree is rebuilt as plain folders and read by the real reader. Then udev's string rules and
the helpers' corner cases, with strings, and hostile input that must give no name, never
an exception.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinit import devices, diskid, rootspec
from pyinit.diskid import Node
from tests.support.udev_names import DISK_NAMES

pytestmark = pytest.mark.unit

SYSFS = Path(__file__).parent / "sysfs"
RECORDED = sorted(SYSFS.glob("qemu-six-disks-*.txt"))


def rebuild(recording: Path, root: Path) -> dict[str, str]:
    """The recorded sysfs as folders under root/sys: uevent and attribute files, subsystem
    links, class/block and class/ata_port. -> {block device name: its /sys path}."""
    sys = root / "sys"
    blocks = {}
    for line in recording.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        kind, rest = line.split(" ", 1)
        if kind == "BLOCK":
            name, path = rest.split(" ")
            blocks[name] = str(root) + path
            link = sys / "class" / "block" / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(str(root) + path)
        elif kind == "DIR":
            path, _, subsystem = rest.partition(" ")
            d = Path(str(root) + path)
            d.mkdir(parents=True, exist_ok=True)
            if subsystem:
                target = sys / "bus" / subsystem
                target.mkdir(parents=True, exist_ok=True)
                (d / "subsystem").symlink_to(target)
        elif kind == "ATTR":
            path, name, *data = rest.split(" ")
            (Path(str(root) + path) / name).write_bytes(bytes.fromhex(data[0] if data else ""))
        elif kind == "LS":
            path, *entries = rest.split(" ")
            for e in entries:
                if e.startswith("host"):
                    (Path(str(root) + path) / e).mkdir(exist_ok=True)
        elif kind == "ATAPORT":
            name, port = rest.split(" ")
            d = sys / "class" / "ata_port" / name
            d.mkdir(parents=True, exist_ok=True)
            (d / "port_no").write_text(port + "\n")
    return blocks


@pytest.mark.parametrize("recording", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_machines_get_udevs_names(recording, tmp_path):
    blocks = rebuild(recording, tmp_path)
    sys_root = str(tmp_path / "sys")
    disks, parts = {}, {}
    for name, path in blocks.items():
        if os.path.exists(f"{path}/partition"):
            parts[name] = (Path(path).parent.name, diskid.names_for(path, "partition", 1, sys_root))
        else:
            disks[name] = diskid.names_for(path, "disk", None, sys_root)
    # every disk has exactly the names udev gave one of the six, in udev's order of rules;
    # its partition 1 has the same with -part1
    assert sorted(disks.values()) == sorted(DISK_NAMES.values()), disks
    assert len(parts) == 6
    for name, (disk, names) in parts.items():
        assert names == [f"{n}-part1" for n in disks[disk]], (name, names)


def test_the_ata_names_also_come_from_page_83_when_a_kernel_shows_no_page_89(tmp_path):
    blocks = rebuild(RECORDED[0], tmp_path)
    ata = next(p for p in blocks.values() if "/ata" in p and not os.path.exists(f"{p}/partition"))
    scsi_device = Path(ata).parent.parent
    pg89 = (scsi_device / "vpd_pg89").read_bytes()
    pg83 = (scsi_device / "vpd_pg83").read_bytes()
    assert diskid.ata_identity(pg89) == diskid.ata_identity_from_pg83(pg83) == {
        "ID_BUS": "ata", "ID_SERIAL": "QEMU_HARDDISK_ahci-serial-1",
        "ID_WWN": "0x5000c50015ea71ac", "ID_WWN_WITH_EXTENSION": "0x5000c50015ea71ac"}
    (scsi_device / "vpd_pg89").unlink()
    assert diskid.names_for(ata, "disk", None, str(tmp_path / "sys")) == DISK_NAMES["ahci"]


def test_devices_links_them_and_finds_root_by_them(tmp_path):
    """pyinit.devices: the names become links under /dev/disk, root= finds a device by them
    (without the link: the name itself is compared), and a removed disk takes them along."""
    blocks = rebuild(RECORDED[0], tmp_path)
    dev = tmp_path / "dev"
    dev.mkdir()
    devs = devices.Devices(str(tmp_path / "sys"), str(dev))
    for name, path in sorted(blocks.items()):
        (dev / name).write_bytes(b"")
        partition = os.path.exists(f"{path}/partition")
        env = {"DEVNAME": name, "DEVPATH": path[len(str(tmp_path / "sys")):], "MAJOR": "8",
               "MINOR": str(len(devs.blocks)), "DEVTYPE": "partition" if partition else "disk"}
        if partition:
            env["PARTN"] = "1"
        devs.add_block(env)
    nvme = next(n for n in blocks if n.startswith("nvme") and "p" in n[5:])
    assert os.readlink(dev / "disk" / "by-path" / "pci-0000:00:06.0-nvme-1-part1") == f"../../{nvme}"
    assert os.readlink(dev / "disk" / "by-id" / "wwn-0x5000c50015ea71ac").startswith("../../sd")
    spec = rootspec.parse_root("/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_nvme-serial-1_1-part1")
    assert devs.find(spec).name == nvme and spec.describe().startswith("/dev/disk/by-id/nvme-QEMU")
    # the diagnosis of a root= by name that never came lists each device's names
    line = devs.blocks[nvme].describe(names=True)
    assert line.endswith(" by-path/pci-0000:00:06.0-nvme-1-part1") and "by-id/nvme-nvme.1b36-" in line
    assert "by-id" not in devs.blocks[nvme].describe()
    uas = rootspec.parse_root("/dev/disk/by-path/pci-0000:00:08.0-usb-0:2:1.0-scsi-0:0:0:0")
    assert devs.find(uas).name.startswith("sd")
    gone = devs.find(uas).name
    (tmp_path / "sys" / "class" / "block" / gone).unlink()  # the kernel's side of the removal
    devs.remove_block(gone)
    assert not os.path.lexists(dev / "disk" / "by-path" / "pci-0000:00:08.0-usb-0:2:1.0-scsi-0:0:0:0")
    assert devs.find(uas) is None
    assert devs.find(rootspec.parse_root("/dev/disk/by-id/virtio-no-such-serial")) is None


# --------------------------------------------------------------------------- udev's string rules

@pytest.mark.parametrize("raw, limit, want", [
    ("  QEMU HARDDISK   ", 40, "QEMU_HARDDISK"),
    ("a \t\n b", 40, "a_b"),
    ("abcdef", 4, "abcd"),
    ("ab  cd", 3, "ab"),  # no room for '_' plus the next byte: udev stops
    ("ab\0cd", 40, "ab"),  # C strings end at NUL
    ("\v x", 40, "_x"),  # WHITESPACE does not strip \v in front, but isspace() joins it into the run
])
def test_replace_whitespace(raw, limit, want):
    assert diskid.replace_whitespace(raw, limit) == want


@pytest.mark.parametrize("raw, allow, want", [
    ("QEMU NVMe Ctrl", b"", "QEMU_NVMe_Ctrl"),
    ("a/b c$%?,", diskid._ATTR_ALLOWED, "a/b c$%?,"),
    ("a\tb", b" ", "a b"),
    ("x\\x20y", b"", "x\\x20y"),  # udev's own escapes stay
    ("données", b"", "données"),  # valid UTF-8 stays
    (b"caf\xe9", b"", "caf_"),  # a lone Latin-1 byte does not
    ("a*b(c)", b"/", "a_b_c_"),
])
def test_replace_chars(raw, allow, want):
    assert diskid.replace_chars(raw, allow) == want


# --------------------------------------------------------------------------- scsi_id

def page83(*designators: tuple[int, int, bytes]) -> bytes:
    """VPD page 0x83 from (code set, type, identifier) designators, associated with the device."""
    body = b"".join(bytes([cs, t, 0, len(i)]) + i for cs, t, i in designators)
    return bytes([0, 0x83, len(body) >> 8, len(body) & 0xFF]) + body


VENDOR, MODEL = "QEMU    ", "QEMU HARDDISK   "


def test_scsi_id_prefers_naa_then_eui_then_t10_then_vendor_specific():
    vendor_specific = (2, 0, b"disk-serial")
    t10 = (2, 1, b"LIO-ORG block1  1234")
    eui = (1, 2, bytes.fromhex("0011223344556677"))
    naa5 = (1, 3, bytes.fromhex("5000c50015ea71ac"))
    naa6 = (1, 3, bytes.fromhex("6001405abcdef0123456789abcdef012"))
    assert diskid.scsi_identity(VENDOR, MODEL, page83(vendor_specific))["ID_SERIAL"] == \
        "0QEMU_QEMU_HARDDISK_disk-serial"
    assert diskid.scsi_identity(VENDOR, MODEL, page83(vendor_specific, t10))["ID_SERIAL"] == "1LIO-ORG_block1_1234"
    assert diskid.scsi_identity(VENDOR, MODEL, page83(t10, eui))["ID_SERIAL"] == "20011223344556677"
    got = diskid.scsi_identity(VENDOR, MODEL, page83(eui, naa5, vendor_specific))
    assert got == {"ID_BUS": "scsi", "ID_SERIAL": "35000c50015ea71ac", "ID_WWN": "0x5000c50015ea71ac",
                   "ID_WWN_WITH_EXTENSION": "0x5000c50015ea71ac"}
    got = diskid.scsi_identity(VENDOR, MODEL, page83(naa5, naa6))  # IEEE registered extended first
    assert got["ID_SERIAL"] == "36001405abcdef0123456789abcdef012"
    assert got["ID_WWN_WITH_EXTENSION"] == "0x6001405abcdef0123456789abcdef012"
    assert got["ID_WWN"] == "0x6001405abcdef012"


def test_scsi_id_falls_back_to_page_80_and_refuses_odd_pages():
    pg80 = bytes([0, 0x80, 0, 6]) + b"SER 42"
    assert diskid.scsi_identity(VENDOR, MODEL, None, pg80)["ID_SERIAL"] == "SQEMU_QEMU_HARDDISK_SER_42"
    # a vendor-specific id needs the 8 + 16 byte vendor and model it is prefixed with
    assert diskid.scsi_identity("QEMU", MODEL, page83((2, 0, b"x"))) == {}
    # associated with the port, not the device: not the disk's id
    assert diskid.scsi_identity(VENDOR, MODEL, bytes([0, 0x83, 0, 5, 2, 0x10, 0, 1]) + b"p") == {}
    # pre-SPC-3 (EMC Symmetrix: byte 6 is not 0): read another way by scsi_id, not named here
    assert diskid.scsi_identity(VENDOR, MODEL, bytes([0, 0x83, 0, 8, 2, 0, 7, 4]) + b"abcd") == {}
    # lengths that run past the page, a page of another number, nothing at all
    assert diskid.scsi_identity(VENDOR, MODEL, bytes([0, 0x83, 0, 40, 2, 0, 0, 30]) + b"abc") == {}
    assert diskid.scsi_identity(VENDOR, MODEL, pg80, None) == {}
    assert diskid.scsi_identity(None, None) == {}


# --------------------------------------------------------------------------- trees with strings

def chain(*nodes: tuple) -> Node:
    """Nodes from the block device up: (syspath, subsystem, devtype, attrs[, extra])."""
    built = [Node(*n[:4], extra=n[4] if len(n) > 4 else None) for n in nodes]
    for child, parent in itertools.pairwise(built):
        child.parent = parent
    return built[0]


PCI = ("/sys/devices/pci0000:00/0000:00:1d.0", "pci", None, {})


def usb_disk(serial: str, subclass: str = "06") -> Node:
    base = "/sys/devices/pci0000:00/0000:00:1d.0/usb1/1-4/1-4:1.0/host3/target3:0:1/3:0:1:2"
    return chain((base + "/block/sdb", "block", "disk", {"removable": "1"}),
                 (base, "scsi", "scsi_device", {"vendor": "Kingston", "model": "DataTraveler 3.0", "type": "0"}),
                 (base.rsplit("/", 1)[0], "scsi", "scsi_target", {}),
                 ("/sys/devices/pci0000:00/0000:00:1d.0/usb1/1-4/1-4:1.0/host3", "scsi", "scsi_host", {},
                  {"host_numbers": [3]}),
                 ("/sys/devices/pci0000:00/0000:00:1d.0/usb1/1-4/1-4:1.0", "usb", "usb_interface",
                  {"bInterfaceClass": "08", "bInterfaceSubClass": subclass}),
                 ("/sys/devices/pci0000:00/0000:00:1d.0/usb1/1-4", "usb", "usb_device",
                  {"idVendor": "0951", "idProduct": "1666", "manufacturer": "Kingston", "product": "DT 3.0",
                   "serial": serial}),
                 ("/sys/devices/pci0000:00/0000:00:1d.0/usb1", "usb", "usb_device", {}), PCI)


def test_usb_stick_names_and_the_serial_rule():
    by_id, by_path = diskid.disk_names(usb_disk("E0D55EA5"))
    assert by_id == ["usb-Kingston_DataTraveler_3.0_E0D55EA5-1:2"]  # target:lun of 3:0:1:2
    # the host number is rebased on the lowest host* beside it (itself): scsi-0:...
    assert by_path == ["pci-0000:00:1d.0-usb-0:4:1.0-scsi-0:0:1:2"]
    # a serial with a comma (or outside ASCII) is not one: usb_id leaves it out
    assert diskid.disk_names(usb_disk("12,34"))[0] == ["usb-Kingston_DataTraveler_3.0-1:2"]
    # not a SCSI/ATAPI mass-storage interface: the USB manufacturer and product instead
    assert diskid.disk_names(usb_disk("X1", subclass="05"))[0] == ["usb-Kingston_DT_3.0_X1"]


def test_nvme_multipath_namespace_is_named_through_its_controller():
    ctrl = chain(("/sys/devices/pci0000:00/0000:00:1c.4/0000:3c:00.0/nvme/nvme0", "nvme", None, {}),
                 ("/sys/devices/pci0000:00/0000:00:1c.4/0000:3c:00.0", "pci", None, {}),
                 ("/sys/devices/pci0000:00/0000:00:1c.4", "pci", None, {}))
    ns = chain(("/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1", "block", "disk",
                {"wwid": "eui.0025388b71b0a3c5", "nsid": "1"}),
               ("/sys/devices/virtual/nvme-subsystem/nvme-subsys0", "nvme-subsystem", None,
                {"serial": "S4EWNX0R123456  ", "model": "Samsung SSD 970 EVO Plus 1TB            "}))
    ns.extra["nvme_ctrl"] = ctrl
    by_id, by_path = diskid.disk_names(ns)
    assert by_id == ["nvme-eui.0025388b71b0a3c5", "nvme-Samsung_SSD_970_EVO_Plus_1TB_S4EWNX0R123456",
                     "nvme-Samsung_SSD_970_EVO_Plus_1TB_S4EWNX0R123456_1"]
    assert by_path == ["pci-0000:3c:00.0-nvme-1"]


def test_names_udev_would_make_a_folder_of_are_left_out():
    vd = chain(("/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vdb", "block", "disk", {"serial": "a/../b"}),
               ("/sys/devices/pci0000:00/0000:00:04.0/virtio1", "virtio", None, {}),
               ("/sys/devices/pci0000:00/0000:00:04.0", "pci", None, {}))
    assert diskid.disk_names(vd) == ([], ["pci-0000:00:04.0", "virtio-pci-0000:00:04.0"])


def test_devices_udev_does_not_name():
    assert diskid.disk_names(chain(("/sys/devices/virtual/block/dm-0", "block", "disk", {}))) == ([], [])
    assert diskid.disk_names(chain(("/sys/devices/virtual/block/loop0", "block", "disk", {}))) == ([], [])
    assert diskid.names_for("/nonexistent/sys/devices/x", "disk", None, "/nonexistent/sys") == []
    assert diskid.names_for("/sys/devices/x/sda1", "partition", None) == []


ATTRS = ("serial", "model", "vendor", "type", "wwid", "nsid", "removable", "idVendor", "idProduct", "manufacturer",
         "product", "bInterfaceClass", "bInterfaceSubClass", "vpd_pg80", "vpd_pg83", "vpd_pg89")
SHAPES = [("block", "disk"), ("scsi", "scsi_device"), ("scsi", "scsi_host"), ("usb", "usb_interface"),
          ("usb", "usb_device"), ("nvme", None), ("nvme-subsystem", None), ("virtio", None), ("pci", None),
          (None, None)]


@settings(max_examples=int(os.environ.get("PYINIT_PROPERTY_EXAMPLES", "300")), deadline=None)
@given(name=st.sampled_from(["sda", "vda", "nvme0n1", "sdz", "xvda"]),
       shapes=st.lists(st.sampled_from(SHAPES), min_size=0, max_size=8),
       attrs=st.lists(st.dictionaries(st.sampled_from(ATTRS), st.one_of(st.binary(max_size=600), st.text(max_size=40))),
                      min_size=9, max_size=9),
       sysnames=st.lists(st.sampled_from(["ata1", "host0", "0:0:0:0", "1-2:1.0", "1-2", "usb1", "0000:00:1f.2",
                                          "target0:0:0", "nvme0", "3:0:x:1", "-", ""]), min_size=9, max_size=9))
def test_hostile_attributes_give_names_or_nothing_never_an_exception(name, shapes, attrs, sysnames):
    nodes = [(f"/sys/devices/pci0000:00/x/block/{name}", "block", "disk", attrs[0])]
    path = "/sys/devices/pci0000:00"
    for i, (sub, devtype) in enumerate(shapes):
        path = f"{path}/{sysnames[i] or 'n'}"
        nodes.append((path, sub, devtype, attrs[i + 1]))
    by_id, by_path = diskid.disk_names(chain(*nodes))
    for n in by_id + by_path:
        assert n and "/" not in n and len(n) <= 255
