"""root= forms, and the device tracker on a fake /sys and /dev made of plain files: a GPT
disk made by sgdisk with an ext4 made by mkfs.ext4 in one partition, announced by uevents."""
import os

import pytest

from pyinit import devices, rootspec
from pyinit.rootspec import RootSpec
from tests.support.fakesys import FakeMachine
from tests.support.hosttools import run

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, kind, value, off", [
    ("/dev/vda", "path", "/dev/vda", 0),
    ("UUID=0A1B-XYZ", "UUID", "0a1b-xyz", 0),
    ("LABEL=My Root", "LABEL", "My Root", 0),
    ('LABEL="my root"', "LABEL", "my root", 0),  # root=LABEL="my root": the kernel keeps these quotes
    ("PARTUUID=ABCD-01", "PARTUUID", "abcd-01", 0),
    ("PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4/PARTNROFF=2", "PARTUUID",
     "0fc63daf-8483-4772-8e79-3d69d8477de4", 2),
    ("PARTUUID=1234abcd-05/PARTNROFF=-1", "PARTUUID", "1234abcd-05", -1),
    ("PARTLABEL=root", "PARTLABEL", "root", 0),
    ("PARTLABEL=EFI System", "PARTLABEL", "EFI System", 0),
    ("/dev/disk/by-uuid/1234-ABCD", "UUID", "1234-abcd", 0),
    ("/dev/disk/by-label/my\\x20root", "LABEL", "my root", 0),
    ("/dev/disk/by-label/donn\\xc3\\xa9es", "LABEL", "données", 0),
    ("/dev/disk/by-partuuid/abcd-02", "PARTUUID", "abcd-02", 0),
    ("/dev/disk/by-partlabel/root\\x2fa", "PARTLABEL", "root/a", 0),
    # udev's hardware names: matched against pyinit.diskid's names, not through the link
    ("/dev/disk/by-id/virtio-xyz", "by-id", "virtio-xyz", 0),
    ("/dev/disk/by-path/pci-0000:00:04.0-nvme-1-part2", "by-path", "pci-0000:00:04.0-nvme-1-part2", 0),
    ("/dev/disk/by-id/ata-QEMU_HARDDISK_a\\x20b", "by-id", "ata-QEMU_HARDDISK_a\\x20b", 0),  # as written
    ("/dev/disk/by-diskseq/3", "path", "/dev/disk/by-diskseq/3", 0),
    ("8:1", "devnum", (8, 1), 0),
    ("254:16", "devnum", (254, 16), 0),
    ("0801", "devnum", (8, 1), 0),
    ("fe00", "devnum", (254, 0), 0),
    ("0x10300", "devnum", (259, 0), 0),
])
def test_parse_root(text, kind, value, off):
    spec = rootspec.parse_root(text)
    assert (spec.kind, spec.value, spec.partnroff) == (kind, value, off)


@pytest.mark.parametrize("text", ["", "UUID=", "nonsense-value", "PARTUUID=abc/PARTNROFF=x",
                                  "PARTUUID=abc/OTHER=1"])
def test_parse_root_rejects_with_message(text):
    with pytest.raises(ValueError) as e:
        rootspec.parse_root(text)
    assert "root=" in str(e.value)


def test_root_from_a_quoted_command_line():
    """The kernel's tokenizer and parse_root together: spaces inside quotes survive."""
    from pyinit import cmdline
    for line, label in (('root="LABEL=my root" ro', "my root"), ('root=LABEL="my root" quiet', "my root")):
        c = cmdline.parse(line)
        assert rootspec.parse_root(c.root) == RootSpec("LABEL", label, c.root)


# --------------------------------------------------------------------------- a fake machine

@pytest.fixture(scope="module")
def gpt_disk(tmp_path_factory):
    """A 48 MiB GPT disk: 1 "EFI System" (empty), 2 "root fs" (ext4 LABEL=pyroot), 3 "swap"."""
    base = tmp_path_factory.mktemp("disk")
    disk = base / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(48 << 20)
    run("sgdisk", "-o", "-n", "1:2048:+4M", "-c", "1:EFI System", "-n", "2:0:+24M", "-c", "2:root fs",
         "-n", "3:0:+8M", "-c", "3:swap", str(disk))
    fs = base / "fs.img"
    with open(fs, "wb") as f:
        f.truncate(24 << 20)
    run("mkfs.ext4", "-q", "-F", "-L", "py root", str(fs))
    raw = bytearray(disk.read_bytes())
    start = (2048 + 4 * 2048) * 512
    raw[start:start + (24 << 20)] = fs.read_bytes()
    table = run("partx", "-g", "-o", "NR,START,SECTORS,UUID", str(disk)).split()
    rows = [table[i:i + 4] for i in range(0, len(table), 4)]
    return bytes(raw), {int(r[0]): (int(r[1]), int(r[2]), r[3]) for r in rows}


def _add_disk(m: FakeMachine, raw: bytes, parts: dict) -> list[dict]:
    envs = [m.add("vda", (254, 0), raw)]
    for n, (start, size, _) in sorted(parts.items()):
        envs.append(m.add(f"vda{n}", (254, n), raw[start * 512:(start + size) * 512], parent="vda", partn=n))
    return envs


def test_events_probe_and_link_a_gpt_disk(tmp_path, gpt_disk):
    raw, parts = gpt_disk
    m = FakeMachine(tmp_path)
    devs = devices.Devices(str(m.sys), str(m.dev))
    for env in _add_disk(m, raw, parts):
        devs.handle(m.event(env))
    vda2 = devs.find(rootspec.parse_root("PARTLABEL=root fs"))
    assert vda2 is not None and vda2.name == "vda2"
    assert vda2.info["TYPE"] == "ext4" and vda2.info["LABEL"] == "py root"
    assert vda2.info["PARTUUID"] == parts[2][2]
    assert devs.find(rootspec.parse_root(f"PARTUUID={parts[2][2].upper()}")) is vda2
    assert devs.find(rootspec.parse_root(f"PARTUUID={parts[1][2]}/PARTNROFF=1")) is vda2
    assert devs.find(rootspec.parse_root(f"PARTUUID={parts[1][2]}/PARTNROFF=5")) is None
    assert devs.find(rootspec.parse_root("LABEL=py root")) is vda2
    assert devs.find(rootspec.parse_root("254:2")) is vda2
    assert devs.blocks["vda"].info["PTTYPE"] == "gpt" and "TYPE" not in devs.blocks["vda"].info
    # the links udev would make, with udev's escaping
    links = m.dev / "disk"
    assert os.readlink(links / "by-label" / "py\\x20root") == "../../vda2"
    assert os.readlink(links / "by-uuid" / vda2.info["UUID"]) == "../../vda2"
    assert os.readlink(links / "by-partuuid" / parts[3][2]) == "../../vda3"
    assert os.readlink(links / "by-partlabel" / "EFI\\x20System") == "../../vda1"
    # root=/dev/disk/by-uuid/... names the filesystem; the link resolves to the same device
    assert devs.find(rootspec.parse_root(f"/dev/disk/by-uuid/{vda2.info['UUID']}")) is vda2
    # a removed partition takes its links with it
    devs.handle(m.event({"ACTION": "remove", "DEVPATH": "/devices/x/vda3", "SUBSYSTEM": "block", "DEVNAME": "vda3"}))
    assert not os.path.lexists(links / "by-partuuid" / parts[3][2])
    assert "vda3" not in devs.blocks


def test_rescan_without_events_finds_the_same(tmp_path, gpt_disk):
    """No uevent socket (or lost events): reading /sys gives the same picture."""
    raw, parts = gpt_disk
    m = FakeMachine(tmp_path)
    _add_disk(m, raw, parts)
    devs = devices.Devices(str(m.sys), str(m.dev), links=False)
    assert devs.rescan() == 4
    assert [d.name for d in devs.scan()] == ["vda", "vda1", "vda2", "vda3"]
    assert devs.find(rootspec.parse_root("PARTLABEL=swap")).devnum == (254, 3)
    vda1 = devs.blocks["vda1"].describe()
    assert vda1.startswith("/") and f'PARTUUID="{parts[1][2]}"' in vda1 and "TYPE=" not in vda1
    assert not (m.dev / "disk").exists()


def test_wait_for_times_out_and_reports_nothing_found(tmp_path, gpt_disk):
    m = FakeMachine(tmp_path)
    devs = devices.Devices(str(m.sys), str(m.dev), links=False)
    assert devs.wait_for(rootspec.parse_root("LABEL=nowhere"), 0.05) is None


def test_modalias_events_load_once(tmp_path):
    loaded = []

    class FakeDB:
        def load_modalias(self, modalias):
            loaded.append(modalias)
            return []

    m = FakeMachine(tmp_path)
    devs = devices.Devices(str(m.sys), str(m.dev), kmod=FakeDB(), links=False)
    for _ in range(2):
        devs.handle(m.event({"ACTION": "add", "DEVPATH": "/devices/pci0000:00/0000:00:04.0", "SUBSYSTEM": "pci",
                             "MODALIAS": "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"}))
    devs.handle(m.event({"ACTION": "bind", "DEVPATH": "/devices/pci0000:00/0000:00:05.0", "SUBSYSTEM": "pci",
                         "MODALIAS": "pci:v0000XXXX"}))  # bind is no reason to load anything
    assert loaded == ["pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"]


def test_read_text_never_raises_on_bytes_that_are_not_utf8(tmp_path):
    # sysfs and procfs text is input: a label or a module name with stray bytes must not
    # stop PID 1, and the bytes survive (surrogateescape, as the file system's names do).
    from pyinit import read_text
    (tmp_path / "f").write_bytes(b"ok \xff\xfe end\n")
    text = read_text(str(tmp_path / "f"))
    assert text.startswith("ok ") and text.endswith(" end\n")
    assert text.encode("utf-8", "surrogateescape") == b"ok \xff\xfe end\n"
    assert read_text(str(tmp_path / "missing")) == ""
