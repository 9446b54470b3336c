"""pyinit's superblock and partition-table probes against util-linux's own blkid/partx, on
images made by the real mkfs tools (no mounts, no privileges: every tool here writes to a
plain file). LVM needs a loop device (tests/container/test_blkid_lvm.py) and md needs the
kernel's md driver, which this host lacks (tests/vm/test_blkid_md.py makes the members in a
guest). A missing tool fails the test, naming its Debian package.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pyinit import blkid, partitions
from tests.support.hosttools import blank, blkid_export, blkid_udev, run, tool

pytestmark = pytest.mark.unit

U = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def probe_file(path: Path) -> dict | None:
    with open(path, "rb") as f:
        return blkid.probe(f)


# Each maker writes one image; `tmp` holds a small tree for the tools that need content.
def _ext(fs, label):
    def make(path, tmp):
        run("mkfs." + fs, "-q", "-F", "-U", U, "-L", label, str(blank(path, 16)))
    return make


MAKERS = {
    "ext2": _ext("ext2", "plain two"),
    "ext3": _ext("ext3", "three"),
    "ext4": _ext("ext4", "root é/x"),  # a space, UTF-8 and a slash: by-label escaping
    "xfs": lambda p, t: run("mkfs.xfs", "-q", "-f", "-L", "xfs lab", "-m", f"uuid={U}", str(blank(p, 300))),
    "btrfs": lambda p, t: run("mkfs.btrfs", "-q", "-f", "-L", "btr label", "-U", U, str(blank(p, 128))),
    "vfat-fat12": lambda p, t: run("mkfs.vfat", "-n", "TINY", "-i", "1234abcd", str(blank(p, 1))),
    "vfat-fat16": lambda p, t: run("mkfs.vfat", "-F", "16", "-n", "SIXTEEN LAB", str(blank(p, 32))),
    "vfat-fat32": lambda p, t: run("mkfs.vfat", "-F", "32", "-n", "EFI", "-i", "deadbeef", str(blank(p, 40))),
    "vfat-nolabel": lambda p, t: run("mkfs.vfat", str(blank(p, 8))),
    "f2fs": lambda p, t: run("mkfs.f2fs", "-q", "-f", "-l", "f2 lab", "-U", U, str(blank(p, 64))),
    "squashfs": lambda p, t: run("mksquashfs", str(t), str(p), "-quiet", "-noappend", "-no-progress"),
    "erofs": lambda p, t: run("mkfs.erofs", f"-U{U}", str(p), str(t)),  # erofs-utils 1.5 has no -L
    "swap": lambda p, t: run("mkswap", "-L", "swap lab", "-U", U, str(blank(p, 16))),
    "swap-nolabel": lambda p, t: run("mkswap", str(blank(p, 8))),
    "luks1": lambda p, t: run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks1", "--pbkdf-force-iterations",
                              "1000", "--key-file=-", "--uuid", U, str(blank(p, 8)), stdin="secret"),
    "luks2": lambda p, t: run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
                              "--pbkdf-force-iterations", "1000", "--label", "crypt root", "--subsystem", "sub",
                              "--key-file=-", str(blank(p, 32)), stdin="secret"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    base = tmp_path_factory.mktemp("blkid")
    tree = base / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("pyinit\n")
    made = {}
    for name, make in MAKERS.items():
        path = base / f"{name}.img"
        make(path, tree)
        made[name] = path
    return made


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_probe_agrees_with_blkid(name, images):
    path = images[name]
    theirs = blkid_export(path)
    assert theirs.get("TYPE"), f"blkid found nothing on {name}: the maker is broken"
    ours = probe_file(path)
    assert ours is not None, f"{name}: blkid says {theirs}"
    for key in ("TYPE", "UUID", "LABEL", "UUID_SUB", "SUBSYSTEM"):
        assert ours.get(key) == theirs.get(key), f"{name} {key}: ours {ours}, blkid {theirs}"
    if name == "luks1":
        assert ours["UUID"] == U


@pytest.mark.parametrize("name", ["ext4", "xfs", "btrfs", "vfat-fat16", "f2fs", "swap", "luks2"])
def test_encoded_names_agree_with_blkid_udev(name, images):
    """The names udev gives /dev/disk/by-label and by-uuid links (ID_FS_*_ENC)."""
    ours = probe_file(images[name])
    theirs = blkid_udev(images[name])
    assert blkid.encode_name(ours["LABEL"]) == theirs["ID_FS_LABEL_ENC"]
    if "UUID" in ours:
        assert blkid.encode_name(ours["UUID"]) == theirs["ID_FS_UUID_ENC"]


def test_encode_name_rules():
    assert blkid.encode_name("root é/x") == "root\\x20é\\x2fx"
    assert blkid.encode_name("a\\b c") == "a\\x5cb\\x20c"
    assert blkid.encode_name("EFI-System_1.0:#+=@") == "EFI-System_1.0:#+=@"
    assert blkid.encode_name("tab\there") == "tab\\x09here"


def test_nothing_on_blank_or_noise(tmp_path):
    zero = blank(tmp_path / "zero.img", 1)
    assert probe_file(zero) is None
    noise = tmp_path / "noise.img"
    noise.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(200_000)))
    assert probe_file(noise) is None
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(b"XFSB")
    assert probe_file(tiny) is None


# --------------------------------------------------------------------------- partition tables

def partx(path: Path) -> list[dict[str, str]]:
    out = run("partx", "-P", "-o", "NR,START,SECTORS,UUID,NAME,TYPE", str(path))
    rows = []
    for line in out.splitlines():
        row = {}
        for field in line.split('" '):
            key, _, value = field.partition('="')
            row[key.strip()] = value.rstrip('"').encode("latin-1").decode("unicode_escape").encode(
                "latin-1").decode("utf-8")
        rows.append(row)
    return rows


def read_table(path: Path, sector_size: int = 512):
    with open(path, "rb") as f:
        return partitions.read_table(blkid.Source(f), sector_size)


def assert_table_matches(path: Path, table):
    assert table is not None
    theirs = blkid_export(path)
    assert (table.pttype, table.ptuuid) == (theirs["PTTYPE"], theirs["PTUUID"])
    rows = partx(path)
    assert [(e.number, e.start, e.size, e.uuid, e.name, e.type) for e in table.entries] == [
        (int(r["NR"]), int(r["START"]), int(r["SECTORS"]), r["UUID"], r["NAME"], r["TYPE"]) for r in rows]


def test_gpt_with_several_partitions_agrees_with_partx(tmp_path):
    disk = blank(tmp_path / "gpt.img", 64)
    run("sgdisk", "-o", "-n", "1:2048:+8M", "-c", "1:EFI System", "-t", "1:ef00",
        "-n", "2:0:+16M", "-c", "2:root fs", "-n", "4:0:+8M", "-c", "4:données", "-t", "4:8200", str(disk))
    table = read_table(disk)
    assert_table_matches(disk, table)
    assert [e.number for e in table.entries] == [1, 2, 4]  # slot 3 is empty: numbers are slots
    assert table.entry(4).info()["PARTLABEL"] == "données"
    assert table.entry(1).type == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"  # the ESP type GUID


def test_gpt_backup_header_is_used_when_the_primary_is_gone(tmp_path):
    disk = blank(tmp_path / "gpt.img", 16)
    run("sgdisk", "-o", "-n", "1:2048:+4M", "-c", "1:only", str(disk))
    good = read_table(disk)
    with open(disk, "r+b") as f:
        f.seek(512)
        f.write(bytes(512))  # wipe the primary header
    table = read_table(disk)
    assert table is not None and table.ptuuid == good.ptuuid
    assert [(e.number, e.uuid, e.name) for e in table.entries] == [(e.number, e.uuid, e.name) for e in good.entries]


def test_mbr_with_logical_partitions_agrees_with_partx(tmp_path):
    disk = blank(tmp_path / "mbr.img", 64)
    run("sfdisk", "-q", str(disk), stdin="label: dos\nlabel-id: 0x1234abcd\n,8M,83\n,40M,5\n,4M,83\n,4M,82\n"
                                           ",4M,c\n,4M,83\n")
    table = read_table(disk)
    assert_table_matches(disk, table)
    assert {e.number for e in table.entries} == {1, 2, 3, 4, 5, 6}
    assert table.entry(6).info()["PARTUUID"] == "1234abcd-06"


def test_fat_superfloppy_is_not_a_partition_table(images):
    assert read_table(images["vfat-fat16"]) is None
    assert read_table(images["ext4"]) is None


def test_partition_contents_probe_like_blkid_at_an_offset(tmp_path, images):
    """A filesystem inside a GPT partition: probing the partition's bytes finds it."""
    disk = blank(tmp_path / "gpt.img", 64)
    run("sgdisk", "-o", "-n", "1:2048:+20M", "-c", "1:root", str(disk))
    fs = images["ext4"].read_bytes()
    with open(disk, "r+b") as f:
        f.seek(2048 * 512)
        f.write(fs[:16 * 1024 * 1024])
    entry = read_table(disk).entry(1)
    out = subprocess.run([tool("blkid"), "-p", "-o", "export", "-O", str(entry.start * 512), str(disk)],
                         capture_output=True, text=True).stdout
    with open(disk, "rb") as f:
        f.seek(entry.start * 512)
        part = f.read(entry.size * 512)
    import io
    ours = blkid.probe(io.BytesIO(part))
    assert f"UUID={ours['UUID']}" in out and ours["TYPE"] == "ext4"


@pytest.mark.parametrize("text", ["", "root fs", "données", "EFI System Partition", "emoji \U0001F600 here", "日本"])
def test_utf16le_by_hand_is_the_codec(text):
    raw = text.encode("utf-16-le") + b"\0\0" + "junk".encode("utf-16-le")
    assert blkid.utf16le(raw) == text
    assert blkid.utf16le(text.encode("utf-16-le")) == text  # no terminator at all
