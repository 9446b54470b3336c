"""No root=: the Discoverable Partitions rules (pyinit/gptauto.py) as a pure choice
(partitions and LoaderDevicePartUUID in, a choice or the reasons out), the GPT attribute
bits read from a table sgdisk wrote, the EFI variable's encoding, and the Finder on a fake
/sys and /dev fed by uevents (tests/support/fakesys.py's FakeMachine)."""
import os
import subprocess

import pytest

from pyinit import blkid, devices, gptauto, partitions, rootspec
from pyinit.gptauto import GROW_FS, NO_AUTO, READ_ONLY, Disk, Part, choose, explain
from tests.support.fakesys import FakeMachine

pytestmark = pytest.mark.unit

ROOT = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"  # Root Partition (x86-64)
ARM64_ROOT = "b921b045-1df0-41c3-af44-4c6f280d3fae"
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
SWAP = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def disk(node, *parts, pttype="gpt"):
    return Disk(node, pttype, [Part(f"{node}{i}", i, t, uuid(u), label, attrs)
                               for i, (t, u, label, attrs) in enumerate(parts, 1)])


def test_the_root_on_the_disk_the_boot_loader_came_from():
    a = disk("/dev/vda", (ESP, 1, "esp", 0), (ROOT, 2, "root", 0))
    b = disk("/dev/vdb", (ESP, 3, "esp", 0), (ROOT, 4, "root", 0))
    d = choose([a, b], uuid(3), ROOT)
    assert d.part is b.parts[1] and d.disk is b and d.esp is b
    assert [(p.node, why) for p, _, why in d.skipped] == [
        ("/dev/vda2", "not on the disk the boot loader came from (/dev/vdb)")]
    assert not d.readonly and not d.growfs


def test_without_the_loader_variable_the_only_disk_with_a_root_partition():
    a = disk("/dev/vda", (SWAP, 1, "swap", 0))
    b = disk("/dev/vdb", (ESP, 2, "", 0), (LINUX, 3, "data", 0), (ROOT, 4, "", 0))
    d = choose([a, b], None, ROOT)
    assert d.part is b.parts[2] and d.problem == ""


def test_two_disks_with_a_root_partition_and_no_loader_variable_no_guess():
    a = disk("/dev/vda", (ROOT, 1, "", 0))
    b = disk("/dev/vdb", (ROOT, 2, "", 0))
    d = choose([a, b], None, ROOT)
    assert d.part is None
    assert "root partitions on 2 disks (/dev/vda, /dev/vdb)" in d.problem and "not guessing" in d.problem
    assert {p.node for p, _, _ in d.skipped} == {"/dev/vda1", "/dev/vdb1"}
    # with the loader's word, the same disks are no problem
    assert choose([a, b], uuid(2), ROOT).part is b.parts[0]


def test_no_auto_is_skipped_and_the_next_root_partition_taken():
    a = disk("/dev/vda", (ESP, 1, "", 0), (ROOT, 2, "old", NO_AUTO), (ROOT, 3, "new", READ_ONLY | GROW_FS))
    d = choose([a], uuid(1), ROOT)
    assert d.part is a.parts[2] and d.readonly and d.growfs
    assert [(p.node, why) for p, _, why in d.skipped] == [("/dev/vda2", "flagged no-auto (GPT attribute 63)")]


def test_only_no_auto_roots_give_nothing_with_reasons():
    a = disk("/dev/vda", (ESP, 1, "", 0), (ROOT, 2, "", NO_AUTO), (SWAP, 3, "", 0))
    d = choose([a], uuid(1), ROOT)
    assert d.part is None
    assert d.problem == f"no usable root partition (type {ROOT}) on /dev/vda, the disk the boot loader came from"
    assert [why for _, _, why in d.skipped] == ["flagged no-auto (GPT attribute 63)"]


def test_another_architectures_root_and_an_empty_slot_are_not_taken():
    a = disk("/dev/vda", (ARM64_ROOT, 1, "", 0), (ROOT, 2, "_empty", 0), (ROOT, 3, "", 0))
    d = choose([a], None, ROOT)
    assert d.part is a.parts[2]
    assert {p.node: why for p, _, why in d.skipped} == {
        "/dev/vda1": "a root partition of another architecture (64-bit ARM/AArch64)",
        "/dev/vda2": 'labelled "_empty" (an unused update slot)'}


def test_the_highest_version_label_wins_then_the_first():
    a = disk("/dev/vda", (ROOT, 1, "os_9", 0), (ROOT, 2, "os_10", 0), (ROOT, 3, "os_2", 0))
    assert choose([a], None, ROOT).part.node == "/dev/vda2"
    same = disk("/dev/vda", (ROOT, 1, "root", 0), (ROOT, 2, "root", 0))
    d = choose([same], None, ROOT)
    assert d.part.node == "/dev/vda1"
    assert [p.node for p, _, _ in d.skipped] == ["/dev/vda2"]
    assert gptauto.version_key("root-10") > gptauto.version_key("root-9") > gptauto.version_key("root")


def test_mbr_disks_and_unknown_loader_partitions():
    mbr = disk("/dev/sda", ("0x83", 1, "", 0), pttype="dos")
    assert choose([mbr], None, ROOT).part is None
    d = choose([mbr], uuid(99), ROOT)
    assert d.part is None and uuid(99) in d.problem and "not a partition of any disk seen" in d.problem


def test_explain_names_disks_types_flags_and_reasons():
    a = disk("/dev/vda", (ESP, 1, "EFI", 0), (ROOT, 2, "root", NO_AUTO | READ_ONLY), (SWAP, 3, "", 0),
             ("1234abcd-0000-4000-8000-000000000000", 4, "", 0))
    b = disk("/dev/vdb", (ROOT, 5, "", 0))
    c = Disk("/dev/vdc", None)
    d = choose([a, b, c], uuid(1), ROOT)
    text = "\n".join(explain([a, b, c], uuid(1), "x86-64", ROOT, d))
    assert f"Root Partition (x86-64), type {ROOT}" in text
    assert f"LoaderDevicePartUUID is {uuid(1)}" in text
    assert "/dev/vda: GPT partition table, 4 partition(s)" in text
    assert f'/dev/vda1 "EFI": EFI System Partition ({ESP}) (the boot loader\'s ESP)' in text
    assert (f'/dev/vda2 "root": Root Partition (x86-64) ({ROOT}), flags no-auto read-only: skipped, flagged '
            "no-auto (GPT attribute 63)") in text
    assert f"/dev/vda3: Swap ({SWAP})" in text
    assert "/dev/vda4: type 1234abcd-0000-4000-8000-000000000000" in text
    assert "/dev/vdb1: Root Partition (x86-64)" in text
    assert "not on the disk the boot loader came from (/dev/vda)" in text
    assert "/dev/vdc: no partition table" in text
    odd = disk("/dev/vda", (ROOT, 1, "evil\n[ 1.0] pyinit: forged\x1b[2J", 0))
    shown = "\n".join(explain([odd], None, "x86-64", ROOT, choose([odd], None, ROOT)))
    assert '/dev/vda1 "evil\\x0a[ 1.0] pyinit: forged\\x1b[2J"' in shown and shown.count("\n") == 3
    plain = [disk("/dev/vda", (LINUX, 1, "", 0))]
    assert "Generic Linux Data Partition is never taken" in gptauto.hint(choose(plain, None, ROOT), plain, ROOT)
    assert gptauto.hint(d, [a, b, c], ROOT) == (f"/dev/vda2 is flagged no-auto: clear the flag if it is the root "
                                               f"(sgdisk -A 2:clear:63 <disk>), or boot with root=PARTUUID={uuid(2)}")
    two = [disk("/dev/vda", (ROOT, 1, "", 0)), disk("/dev/vdb", (ROOT, 2, "", 0))]
    assert gptauto.hint(choose(two, None, ROOT), two, ROOT) == (
        f"say which root partition: boot with root=PARTUUID=<uuid> (/dev/vda1: {uuid(1)}, /dev/vdb1: {uuid(2)})")
    wrong = [b, disk("/dev/vdc", (ESP, 9, "", 0))]
    assert f"boot with root=PARTUUID={uuid(5)} (/dev/vdb1)" in gptauto.hint(choose(wrong, uuid(9), ROOT), wrong, ROOT)


def test_root_types_per_architecture_and_the_type_table():
    assert gptauto.root_type("x86_64") == ("x86-64", ROOT)
    assert gptauto.root_type("aarch64") == ("64-bit ARM/AArch64", ARM64_ROOT)
    assert gptauto.root_type("armv7l")[0] == "32-bit ARM"
    assert gptauto.root_type("i686")[0] == "x86"
    assert gptauto.root_type("vax") is None
    guids = [g for _, _, r, u in gptauto.ARCHES for g in (r, u)] + list(gptauto._OTHER_TYPES)
    assert len(guids) == len(set(guids)) and all(len(g) == 36 and g == g.lower() for g in guids)


def test_loader_variable_encoding():
    """efivarfs gives 4 bytes of attributes, then the value: systemd-boot writes the ESP's
    PARTUUID upper-case, as UTF-16LE with a NUL."""
    value = "6E0D2B1A-33C4-4F7B-9D21-0A1B2C3D4E5F"
    raw = (7).to_bytes(4, "little") + (value + "\0").encode("utf-16-le")
    assert gptauto.parse_loader_variable(raw) == value.lower()
    assert gptauto.parse_loader_variable(raw[:-2]) == value.lower()  # no NUL: still the GUID
    assert gptauto.parse_loader_variable(b"\x07\0\0\0" + "not a guid".encode("utf-16-le")) is None
    assert gptauto.parse_loader_variable(b"\x07\0") is None


def test_gpt_auto_root_file_tells_the_real_system():
    a = disk("/dev/vda", (ROOT, 1, "", READ_ONLY | GROW_FS))
    text = gptauto.gpt_auto_root_file(choose([a], None, ROOT))
    assert text == (f"ROOT_PARTITION=/dev/vda1\nROOT_PARTUUID={uuid(1)}\nROOT_FLAGS=\"read-only grow-fs\"\n"
                    "READ_ONLY=1\nGROWFS=1\n")


def test_devices_root_gpt_auto():
    spec = rootspec.parse_root("gpt-auto")
    assert (spec.kind, spec.text) == ("gpt-auto", "gpt-auto")
    assert "Discoverable Partitions" in spec.describe()


# --------------------------------------------------------------------------- real tables

def _run(*argv):
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


def _gpt(path, *sgdisk_args, mb=40):
    with open(path, "wb") as f:
        f.truncate(mb << 20)
    _run("sgdisk", "-o", *sgdisk_args, str(path))
    return path


def test_attribute_bits_and_type_from_an_sgdisk_table(tmp_path):
    img = _gpt(tmp_path / "d.img", "-n", "1:2048:+4M", "-t", "1:ef00", "-n", "2:0:+8M", "-t", "2:8304",
               "-A", "2:set:63", "-A", "2:set:60", "-n", "3:0:+8M", "-t", f"3:{ROOT}", "-A", "3:set:59")
    with open(img, "rb") as f:
        table = partitions.read_table(blkid.Source(f))
    e1, e2, e3 = table.entries
    assert (e1.type, e1.attrs) == (ESP, 0)
    assert (e2.type, e2.attrs) == (ROOT, NO_AUTO | READ_ONLY)  # sgdisk's 8304 is the x86-64 root
    assert e3.attrs == GROW_FS
    assert e2.info()["PART_ENTRY_FLAGS"] == "0x9000000000000000"
    assert "PART_ENTRY_FLAGS" not in e1.info()
    assert "Attribute flags: 9000000000000000" in _run("sgdisk", "-i", "2", str(img))


# --------------------------------------------------------------------------- the Finder

class Log:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda text: self.lines.append((level, text))


def _machine(tmp_path, img, extra_luks: bool = False):
    """A fake /sys and /dev holding the disk image as vda and its partitions."""
    raw = img.read_bytes()
    with open(img, "rb") as f:
        table = partitions.read_table(blkid.Source(f))
    m = FakeMachine(tmp_path / "m")
    envs = [m.add("vda", (254, 0), raw)]
    for e in table.entries:
        envs.append(m.add(f"vda{e.number}", (254, e.number), raw[e.start * 512:(e.start + e.size) * 512],
                          parent="vda", partn=e.number))
    return m, envs, table


def _put(img, table, number, data):
    with open(img, "r+b") as f:
        f.seek(table.entry(number).start * 512)
        f.write(data)


@pytest.fixture
def ext4(tmp_path):
    fs = tmp_path / "fs.img"
    with open(fs, "wb") as f:
        f.truncate(8 << 20)
    _run("mkfs.ext4", "-q", "-F", "-L", "groot", str(fs))
    return fs.read_bytes()


def test_finder_takes_the_flagged_root_on_the_loader_disk(tmp_path, ext4):
    img = _gpt(tmp_path / "d.img", "-n", "1:2048:+4M", "-t", "1:ef00", "-n", "2:0:+8M", "-t", f"2:{ROOT}",
               "-A", "2:set:63", "-n", "3:0:+8M", "-t", f"3:{ROOT}", "-A", "3:set:60")
    with open(img, "rb") as f:
        table = partitions.read_table(blkid.Source(f))
    _put(img, table, 2, ext4)
    _put(img, table, 3, ext4)
    m, envs, table = _machine(tmp_path, img)
    devs = devices.Devices(str(m.sys), str(m.dev), links=False)
    log = Log()
    esp = table.entry(1).uuid
    finder = gptauto.Finder(devs, log, machine="x86_64", read_loader=lambda modules, log: esp)
    devs.handle(m.event(envs[0]))  # the disk alone: its partitions' devices are not there yet
    assert finder.find() is None and finder.decision.part.node.endswith("vda3")
    for env in envs[1:]:
        devs.handle(m.event(env))
    found = finder.find()
    assert found is not None and found.name == "vda3" and found.info["TYPE"] == "ext4"
    assert finder.decision.readonly
    assert ("info", f"gpt-auto: skipped {m.dev}/vda2: flagged no-auto (GPT attribute 63)") in log.lines
    assert any("root partition" in t and "flags read-only" in t for _, t in log.lines)


def test_finder_waits_for_the_mapped_device_of_a_luks_root(tmp_path, ext4):
    img = _gpt(tmp_path / "d.img", "-n", "1:2048:+8M", "-t", f"1:{ROOT}")
    with open(img, "rb") as f:
        table = partitions.read_table(blkid.Source(f))
    luks = bytearray(4096)
    luks[:8] = b"LUKS\xba\xbe\x00\x02"
    luks[168:204] = uuid(7).encode()
    _put(img, table, 1, bytes(luks))
    m, envs, table = _machine(tmp_path, img)
    devs = devices.Devices(str(m.sys), str(m.dev), links=False)
    for env in envs:
        devs.handle(m.event(env))
    finder = gptauto.Finder(devs, Log(), machine="x86_64", read_loader=lambda modules, log: None)
    assert finder.find() is None  # LUKS: nothing to mount until it is unlocked
    assert finder.luks_partition.name == "vda1"
    message, hint = finder.failure()
    assert "LUKS-encrypted and was not unlocked" in message and "--hook luks" in hint and uuid(7) in hint
    # the luks hook opened it: dm-0 holds vda1
    dm = m.add("dm-0", (253, 0), ext4)
    os.makedirs(devs.blocks["vda1"].sysdir + "/holders")
    os.symlink("../../../dm-0", devs.blocks["vda1"].sysdir + "/holders/dm-0")
    devs.handle(m.event(dm))
    found = finder.find()
    assert found is not None and found.name == "dm-0" and found.info["LABEL"] == "groot"


def test_finder_failure_lists_what_it_saw(tmp_path):
    img = _gpt(tmp_path / "d.img", "-n", "1:2048:+4M", "-t", "1:ef00", "-n", "2:0:+8M", "-t", "2:8300")
    m, envs, _ = _machine(tmp_path, img)
    devs = devices.Devices(str(m.sys), str(m.dev), links=False)
    for env in envs:
        devs.handle(m.event(env))
    finder = gptauto.Finder(devs, Log(), machine="x86_64", read_loader=lambda modules, log: None)
    assert finder.find() is None
    message, hint = finder.failure()
    assert message.startswith(f"gpt-auto: no usable root partition (type {ROOT}) on any disk.")
    assert f"{m.dev}/vda2: Generic Linux Data Partition ({LINUX})" in message
    assert "Generic Linux Data Partition is never taken" in hint


# --------------------------------------------------------------------------- the builder

def _moddir(tmp_path, efivarfs_line):
    root = tmp_path / "6.1.0-test"
    root.mkdir()
    (root / "modules.dep").write_text("kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko\nkernel/lib/crc16.ko:\n"
                                      + efivarfs_line)
    (root / "modules.alias").write_text("alias fs-efivarfs efivarfs\n")
    (root / "modules.builtin").write_text("" if efivarfs_line else "kernel/fs/efivarfs/efivarfs.ko\n")
    from mkinitramfs import kmod
    return kmod.ModuleIndex.load(str(tmp_path), "6.1.0-test")


@pytest.mark.parametrize("eager", [None, {"ext4", "crc16"}])
def test_every_image_carries_efivarfs_loaded_on_demand(tmp_path, eager):
    """--modules (eager None: all of them load at boot), host-only and --generic all get
    efivarfs, and never in the list loaded at every boot."""
    from mkinitramfs import build
    idx = _moddir(tmp_path, "kernel/fs/efivarfs/efivarfs.ko:\n")
    names, now = build._add_on_demand(idx, ["ext4"], eager)
    assert names == ["ext4", "efivarfs"]
    assert now == {"ext4", "crc16"}


def test_a_built_in_efivarfs_adds_nothing(tmp_path):
    from mkinitramfs import build
    idx = _moddir(tmp_path, "")
    assert build._add_on_demand(idx, ["ext4"], None) == (["ext4"], None)


def test_boot_report_and_analyze_show_the_choice():
    """boot.json's gpt_auto record, and pyinit-analyze's line for it."""
    from pyinit import analyze, report

    class FakeFinder:
        loader = uuid(1)
        decision = choose([disk("/dev/vda", (ESP, 1, "", 0), (ROOT, 2, "", NO_AUTO), (ROOT, 3, "", READ_ONLY))],
                          uuid(1), ROOT)

    record = report._gpt_auto(FakeFinder())
    assert record == {"loader_partuuid": uuid(1), "partition": "/dev/vda3", "partuuid": uuid(3),
                      "flags": ["read-only"], "skipped": [["/dev/vda2", "flagged no-auto (GPT attribute 63)"]],
                      "problem": None}
    data = {"root": {"spec": None, "device": "/dev/vda3", "fstype": "ext4"}, "gpt_auto": record,
            "switch": "MS_MOVE", "init": "/sbin/init"}
    text = analyze.details(data)
    assert "root: gpt-auto -> /dev/vda3 (ext4)" in text
    assert f"gpt-auto: partition /dev/vda3 (flags: read-only), boot loader's ESP {uuid(1)}" in text
