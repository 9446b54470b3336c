"""Superblock probes in pure Python: a file object in, {"TYPE", "UUID", "LABEL", ...} out.

The keys and values are libblkid's (`blkid -p -o export`): TYPE, UUID, LABEL, UUID_SUB
(btrfs device, md member), VERSION, SUBSYSTEM (LUKS2). Partition tables are in
pyinit/partitions.py.

One read of the first 68 KiB (`Source.head`) serves every probe that looks near the start
(btrfs's superblock at 64 KiB is the farthest); only md 0.90/1.0 (at the end) and LUKS2's
secondary header read more.

A disk is input: `Source` bounds every read a probe makes, whatever a superblock asks for:
never before 0 or past the device's end, at most MAX_READ bytes at once and READ_BUDGET
bytes for the whole probe of one device (then `ProbeLimit`). A probe that finds numbers
it cannot believe returns None; the caller (pyinit.probe) turns any other exception into
"this device is unknown", with one log line naming it. Each probe returns None when its magic does not match. Order
follows libblkid: RAID members, then LUKS and LVM, then filesystems, then swap, so that a
RAID1 member whose data starts with a filesystem is reported as the member, as blkid does.
"""
from __future__ import annotations

import struct

from pyinit.errors import ProbeLimit

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from typing import Protocol

    class Readable(Protocol):
        """A device or image file open for binary reading (a file, a BytesIO in tests)."""

        def seek(self, offset: int, whence: int = 0, /) -> int: ...

        def read(self, size: int = -1, /) -> bytes: ...

    Info = dict[str, str]  # blkid's keys and values
    # (bytes/sector, sectors/cluster, reserved, fats, root entries, fat length, is FAT32)
    Bpb = tuple[int, int, int, int, int, int, bool]

HEAD = 0x11000  # up to the end of btrfs's primary superblock (64 KiB + 4 KiB)
MAX_READ = 1 << 20  # one read: a GPT entry array of 4096 x 256 bytes, a FAT root directory
READ_BUDGET = 8 << 20  # every read of one device's probe together


class Source:
    """The device or image being probed: its first HEAD bytes, its size, and bounded reads
    elsewhere (see the module doc)."""

    __slots__ = ("budget", "f", "head", "size")

    def __init__(self, f: Readable, size: int | None = None) -> None:
        self.f = f
        try:
            f.seek(0)
        except OSError:
            pass  # not seekable (a pipe): a file just opened is at its start anyway
        self.head = f.read(HEAD)
        self.size = f.seek(0, 2) if size is None else size
        self.budget = READ_BUDGET

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset`; fewer at the device's end, b"" outside it."""
        if offset < 0 or size <= 0:
            return b""
        if offset + size <= len(self.head):
            return self.head[offset:offset + size]
        if self.size is not None and self.size > 0:
            if offset >= self.size:
                return b""
            size = min(size, self.size - offset)
        if size > MAX_READ:
            raise ProbeLimit(f"a read of {size} bytes at offset {offset} (the limit is {MAX_READ})")
        if size > self.budget:
            raise ProbeLimit(f"more than {READ_BUDGET} bytes read while probing")
        self.budget -= size
        self.f.seek(offset)
        return self.f.read(size)


def _label(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").rstrip(" ")


def utf16le(raw: bytes) -> str:
    """UTF-16LE up to the first NUL, decoded by hand: the image carries no utf_16_le codec
    module (encodings.* are files, and only utf-8, ascii and latin-1 are packed)."""
    units = struct.unpack_from(f"<{len(raw) // 2}H", raw)
    out = []
    i = 0
    while i < len(units):
        u = units[i]
        if u == 0:
            break
        if 0xD800 <= u < 0xDC00 and i + 1 < len(units) and 0xDC00 <= units[i + 1] < 0xE000:
            out.append(chr(0x10000 + ((u - 0xD800) << 10) + (units[i + 1] - 0xDC00)))
            i += 2
            continue
        out.append("\ufffd" if 0xD800 <= u < 0xE000 else chr(u))
        i += 1
    return "".join(out)


def uuid_str(raw: bytes) -> str:
    """16 bytes -> "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (the uuid module costs an enum import)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _set(out: Info, key: str, value: str) -> None:
    if value:
        out[key] = value


# --------------------------------------------------------------------------- RAID, crypto, LVM

_MD_MAGIC = 0xA92B4EFC
MD_SB_090_BYTES = 4096
MD_SB1_MAX_BYTES = 4096  # 256 + 2 * max_dev: a 1.x superblock fits in 4 KiB (mdadm's limit)


def _fold(total: int) -> int:
    return ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF


def md090_checksum_ok(sb: bytes, end: str) -> bool:
    """md 0.90 (the kernel's calc_sb_csum): the 32-bit words of the 4 KiB superblock, with
    sb_csum (word 38) taken as 0, summed and folded, in the superblock's byte order."""
    if len(sb) < MD_SB_090_BYTES:
        return False
    words = struct.unpack_from(f"{end}1024I", sb)
    stored = words[38]
    return bool(_fold(sum(words) - stored) == stored)


def md1_checksum_ok(sb: bytes) -> bool:
    """md 1.x (calc_sb_1_csum): little-endian words over 256 + 2 * max_dev bytes, sb_csum
    (offset 216) taken as 0. A max_dev that makes the superblock larger than 4 KiB is not
    believed."""
    if len(sb) < 256:
        return False
    stored, max_dev = struct.unpack_from("<II", sb, 216)
    size = 256 + 2 * max_dev
    if size > MD_SB1_MAX_BYTES or size > len(sb):
        return False
    total = sum(struct.unpack_from(f"<{size // 4}I", sb)) - stored
    if size % 4:
        total += struct.unpack_from("<H", sb, size - 2)[0]
    return bool(_fold(total) == stored)


def probe_linux_raid(src: Source) -> Info | None:
    """md superblocks: 0.90 and 1.0 near the end, 1.1 at 0, 1.2 at 4 KiB."""
    size = src.size
    if size >= 0x20000:
        # 0.90: the last 64 KiB-aligned 64 KiB block.
        off = (size & ~0xFFFF) - 0x10000
        sb = src.read(off, MD_SB_090_BYTES)
        if len(sb) == MD_SB_090_BYTES:
            for end in "<>":
                magic, major = struct.unpack_from(end + "II", sb, 0)
                if magic == _MD_MAGIC and major == 0 and md090_checksum_ok(sb, end):
                    # set_uuid0 is word 5, set_uuid1-3 words 13-15, each a number in the
                    # superblock's byte order; blkid prints each as big-endian hex.
                    words = struct.unpack_from(end + "I", sb, 20) + struct.unpack_from(end + "3I", sb, 52)
                    raw = struct.pack(">4I", *words)
                    return {"TYPE": "linux_raid_member", "VERSION": "0.90.0", "UUID": uuid_str(raw)}
    candidates = [(0, "1.1"), (4096, "1.2")]
    if size >= 8 * 1024:
        # 1.0: 8 KiB before the end, aligned down to 4 KiB (in 512-byte sectors, as md computes it)
        candidates.insert(0, ((((size >> 9) - 16) & ~7) << 9, "1.0"))
    for off, version in candidates:
        sb = src.read(off, 256)
        if len(sb) < 256:
            continue
        magic, major = struct.unpack_from("<II", sb, 0)
        if magic != _MD_MAGIC or major != 1:
            continue
        super_offset, = struct.unpack_from("<Q", sb, 144)
        if super_offset != off >> 9:
            continue
        # A stale or half-wiped superblock keeps its magic: believe only a checksum that
        # matches (libblkid and mdadm do the same).
        if not md1_checksum_ok(src.read(off, MD_SB1_MAX_BYTES)):
            continue
        out = {"TYPE": "linux_raid_member", "VERSION": version, "UUID": uuid_str(sb[16:32]),
               "UUID_SUB": uuid_str(sb[168:184])}
        _set(out, "LABEL", _label(sb[32:64]))
        return out
    return None


_LUKS_SECONDARY = (0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000)


def probe_luks(src: Source) -> Info | None:
    hdr = src.read(0, 512)
    if hdr[:6] != b"LUKS\xba\xbe":
        # LUKS2 keeps a second header; blkid finds the device by it when the first is damaged.
        for off in _LUKS_SECONDARY:
            hdr = src.read(off, 512)
            if hdr[:6] == b"SKUL\xba\xbe" and struct.unpack_from(">H", hdr, 6)[0] == 2:
                break
        else:
            return None
    version, = struct.unpack_from(">H", hdr, 6)
    out = {"TYPE": "crypto_LUKS", "VERSION": str(version), "UUID": _label(hdr[168:208])}
    if version == 2:
        _set(out, "LABEL", _label(hdr[24:72]))
        _set(out, "SUBSYSTEM", _label(hdr[208:256]))
    return out


def probe_lvm2(src: Source) -> Info | None:
    for sector in range(4):
        base = sector * 512
        label = src.read(base, 512)
        if label[:8] != b"LABELONE" or label[24:32] != b"LVM2 001":
            continue
        sector_xl, = struct.unpack_from("<Q", label, 8)
        if sector_xl != sector:
            continue
        offset, = struct.unpack_from("<I", label, 20)
        raw = src.read(base + offset, 32).decode("ascii", "replace")
        if len(raw) != 32:
            continue
        # LVM prints its 32-character ids in groups of 6-4-4-4-4-4-6.
        uuid = "-".join((raw[0:6], raw[6:10], raw[10:14], raw[14:18], raw[18:22], raw[22:26], raw[26:32]))
        return {"TYPE": "LVM2_member", "VERSION": "LVM2 001", "UUID": uuid}
    return None


# --------------------------------------------------------------------------- filesystems

def probe_squashfs(src: Source) -> Info | None:
    magic = src.head[:4]
    if magic == b"hsqs":
        major, minor = struct.unpack_from("<HH", src.head, 28)
    elif magic == b"sqsh":
        major, minor = struct.unpack_from(">HH", src.head, 28)
    else:
        return None
    return {"TYPE": "squashfs" if major >= 4 else "squashfs3", "VERSION": f"{major}.{minor}"}


def probe_erofs(src: Source) -> Info | None:
    sb = src.head[1024:1024 + 128]
    if len(sb) < 128 or struct.unpack_from("<I", sb, 0)[0] != 0xE0F5E1E2:
        return None
    if not 9 <= sb[12] <= 16:  # blkszbits
        return None
    out = {"TYPE": "erofs", "UUID": uuid_str(sb[48:64])}
    _set(out, "LABEL", _label(sb[64:80]))
    return out


def probe_xfs(src: Source) -> Info | None:
    sb = src.head[:512]
    if len(sb) < 512 or sb[:4] != b"XFSB":
        return None
    blocksize, = struct.unpack_from(">I", sb, 4)
    sectsize, = struct.unpack_from(">H", sb, 102)
    if blocksize < 512 or blocksize & (blocksize - 1) or sectsize < 512 or sectsize & (sectsize - 1):
        return None
    out = {"TYPE": "xfs", "UUID": uuid_str(sb[32:48])}
    _set(out, "LABEL", _label(sb[108:120]))
    return out


# ext2/3/4 feature bits (from e2fsprogs' ext2_fs.h), used to tell the three apart as blkid does.
_EXT3_COMPAT_HAS_JOURNAL = 0x0004
_EXT3_INCOMPAT_SUPPORTED = 0x0002 | 0x0004 | 0x0010  # FILETYPE | RECOVER | META_BG
_EXT3_RO_COMPAT_SUPPORTED = 0x0001 | 0x0002 | 0x0004  # SPARSE_SUPER | LARGE_FILE | BTREE_DIR
_EXT_INCOMPAT_JOURNAL_DEV = 0x0008


def probe_ext(src: Source) -> Info | None:
    sb = src.head[1024:1024 + 256]
    if len(sb) < 256 or struct.unpack_from("<H", sb, 0x38)[0] != 0xEF53:
        return None
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 0x5C)
    if incompat & _EXT_INCOMPAT_JOURNAL_DEV:
        fstype = "jbd"
    elif not compat & _EXT3_COMPAT_HAS_JOURNAL and not incompat & ~_EXT3_INCOMPAT_SUPPORTED \
            and not ro_compat & ~_EXT3_RO_COMPAT_SUPPORTED:
        fstype = "ext2"
    elif incompat & ~_EXT3_INCOMPAT_SUPPORTED or ro_compat & ~_EXT3_RO_COMPAT_SUPPORTED:
        fstype = "ext4"
    else:
        fstype = "ext3"
    out = {"TYPE": fstype, "UUID": uuid_str(sb[0x68:0x78])}
    _set(out, "LABEL", _label(sb[0x78:0x88]))
    return out


def probe_btrfs(src: Source) -> Info | None:
    sb = src.head[0x10000:0x10000 + 0x1000]
    if len(sb) < 0x200 or sb[64:72] != b"_BHRfS_M":
        return None
    if struct.unpack_from("<Q", sb, 48)[0] != 0x10000:  # bytenr: where this copy claims to be
        return None
    out = {"TYPE": "btrfs", "UUID": uuid_str(sb[32:48]), "UUID_SUB": uuid_str(sb[267:283])}
    _set(out, "LABEL", _label(sb[299:299 + 256]))
    return out


def probe_f2fs(src: Source) -> Info | None:
    sb = src.head[1024:1024 + 1148]
    if len(sb) < 1148 or struct.unpack_from("<I", sb, 0)[0] != 0xF2F52010:
        return None
    major, minor = struct.unpack_from("<HH", sb, 4)
    out = {"TYPE": "f2fs", "VERSION": f"{major}.{minor}", "UUID": uuid_str(sb[108:124])}
    _set(out, "LABEL", utf16le(sb[124:124 + 1024]))
    return out


def _fat_bpb(bs: bytes) -> Bpb | None:
    """(bytes/sector, sectors/cluster, reserved, fats, root entries, fat length, is FAT32) of a
    plausible FAT boot sector, else None."""
    if len(bs) < 512:
        return None
    bps, spc, reserved, fats, root_entries, _, media, fat16 = struct.unpack_from("<HBHBHHBH", bs, 11)
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or reserved == 0:
        return None
    if fats == 0 or not (media == 0xF0 or media >= 0xF8):
        return None
    fat32 = fat16 == 0
    fat_length = struct.unpack_from("<I", bs, 36)[0] if fat32 else fat16
    if fat_length == 0:
        return None
    return bps, spc, reserved, fats, root_entries, fat_length, fat32


def is_fat_boot_sector(bs: bytes) -> bool:
    """A FAT boot sector also ends in 55 AA: the MBR probe asks this before trusting one."""
    if _fat_bpb(bs) is None:
        return False
    return bs[0x52:0x57] == b"FAT32" or bs[0x36:0x39] == b"FAT" or bs[0x52:0x57] == b"MSWIN" \
        or bs[0x36:0x3B] == b"MSDOS" or (bs[0] in (0xEB, 0xE9) and bs[510:512] == b"\x55\xaa")


def _fat_dir_label(entries: bytes) -> bytes | None:
    for i in range(0, len(entries) - 31, 32):
        e = entries[i:i + 32]
        if e[0] == 0:
            return None  # end of directory
        if e[0] == 0xE5:
            continue  # deleted
        attr = e[11]
        if attr & 0x0F == 0x0F or not attr & 0x08:
            continue  # long-name piece, or not the volume label
        name = bytes(e[:11])
        if name[0] == 0x05:
            name = b"\xe5" + name[1:]
        return name
    return None


def probe_vfat(src: Source) -> Info | None:
    bs = src.head[:512]
    bpb = _fat_bpb(bs)
    if bpb is None or not is_fat_boot_sector(bs):
        return None
    fat32 = bpb[6]
    if fat32:
        serial_at, label_at, sig_at = 67, 71, 66
    else:
        serial_at, label_at, sig_at = 39, 43, 38
    out = {"TYPE": "vfat", "VERSION": "FAT32" if fat32 else ("FAT16" if _fat_clusters(bs, bpb) >= 4085 else "FAT12")}
    if bs[sig_at] in (0x28, 0x29):
        s = bs[serial_at:serial_at + 4]
        out["UUID"] = f"{s[3]:02X}{s[2]:02X}-{s[1]:02X}{s[0]:02X}"
    # The label in the root directory wins over the boot sector's copy (as blkid and
    # Windows do); "NO NAME" means none.
    label = _fat_root_label(src, bpb, bs)
    if label is None and bs[sig_at] == 0x29:
        label = bs[label_at:label_at + 11]
    if label is not None and label != b"NO NAME    ":
        _set(out, "LABEL", label.decode("latin-1").rstrip(" "))
    return out


def _fat_clusters(bs: bytes, bpb: Bpb) -> int:
    bps, spc, reserved, fats, root_entries, fat_length, _ = bpb
    total, = struct.unpack_from("<H", bs, 19)
    if total == 0:
        total, = struct.unpack_from("<I", bs, 32)
    root_sectors = (root_entries * 32 + bps - 1) // bps
    data = total - reserved - fats * fat_length - root_sectors
    return max(0, int(data) // spc)


def _fat_root_label(src: Source, bpb: Bpb, bs: bytes) -> bytes | None:
    bps, spc, reserved, fats, root_entries, fat_length, fat32 = bpb
    if not fat32:
        start = (reserved + fats * fat_length) * bps
        return _fat_dir_label(src.read(start, root_entries * 32))
    data_start = (reserved + fats * fat_length) * bps
    cluster, = struct.unpack_from("<I", bs, 44)
    for _ in range(64):  # a root directory longer than 64 clusters has no label worth waiting for
        if cluster < 2 or cluster >= 0x0FFFFFF7:
            return None
        entries = src.read(data_start + (cluster - 2) * spc * bps, spc * bps)
        found = _fat_dir_label(entries)
        if found is not None:
            return found
        if any(entries[i] == 0 for i in range(0, len(entries), 32)):
            return None
        nxt = src.read(reserved * bps + cluster * 4, 4)
        if len(nxt) < 4:
            return None
        cluster = struct.unpack("<I", nxt)[0] & 0x0FFFFFFF
    return None


_SWAP_PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)
_SUSPEND_MAGICS = (b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND", b"\xedWHIBERNATE", b"LINHIB0001")


def probe_swap(src: Source) -> Info | None:
    for page in _SWAP_PAGE_SIZES:
        tail = src.read(page - 10, 10)
        if tail == b"SWAPSPACE2":
            hdr = src.read(1024, 44)
            if len(hdr) < 44:
                return None
            out = {"TYPE": "swap", "VERSION": "1", "UUID": uuid_str(hdr[12:28])}
            _set(out, "LABEL", _label(hdr[28:44]))
            return out
        if tail == b"SWAP-SPACE":
            return {"TYPE": "swap", "VERSION": "0"}
        if any(tail.endswith(m) or src.read(page - 10, len(m)) == m for m in _SUSPEND_MAGICS):
            # A hibernation image keeps the swap header's UUID and LABEL (resume=UUID=...).
            out = {"TYPE": "swsuspend"}
            hdr = src.read(1024, 44)
            if len(hdr) == 44 and struct.unpack_from("<I", hdr, 0)[0] == 1:
                out["UUID"] = uuid_str(hdr[12:28])
                _set(out, "LABEL", _label(hdr[28:44]))
            return out
    return None


PROBES = [probe_linux_raid, probe_luks, probe_lvm2, probe_squashfs, probe_erofs, probe_xfs, probe_ext,
          probe_btrfs, probe_f2fs, probe_vfat, probe_swap]


def probe(f: Readable | Source, size: int | None = None) -> Info | None:
    """The first superblock found on `f` (a file object open for binary reading), or None.
    A probe that reads garbage (short data, bad numbers) counts as "not this type", and so
    does an I/O error under it; a read past the limits (ProbeLimit) ends the probe of the
    device (raised to the caller)."""
    src = f if isinstance(f, Source) else Source(f, size)
    for p in PROBES:
        try:
            found = p(src)
        except (OSError, ValueError, struct.error):
            found = None  # a bad sector under one probe must not hide the others
        if found:
            return found
    return None


def probe_path(path: str) -> Info | None:
    try:
        with open(path, "rb", buffering=0) as f:
            return probe(f)
    except OSError:
        return None


# --------------------------------------------------------------------------- names for /dev/disk

_SAFE = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#+-.:=@_")


def encode_name(value: str) -> str:
    r"""libblkid's blkid_encode_string(), which udev uses for the names in /dev/disk/by-label,
    by-uuid and by-partlabel: ASCII letters, digits and #+-.:=@_ stay, valid UTF-8 multi-byte
    characters stay, every other byte (space, '/', '\\', controls) becomes \xNN."""
    raw = value.encode("utf-8", "surrogateescape")
    out = []
    i = 0
    while i < len(raw):
        b = raw[i]
        if b >= 0x80:
            n = _utf8_len(raw, i)
            if n > 1:
                out.append(raw[i:i + n].decode("utf-8"))
                i += n
                continue
        if b in _SAFE:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
        i += 1
    return "".join(out)


def _utf8_len(raw: bytes, i: int) -> int:
    """Length of a valid UTF-8 multi-byte sequence at raw[i], else 1."""
    b = raw[i]
    n = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
    if n == 1 or i + n > len(raw):
        return 1
    try:
        raw[i:i + n].decode("utf-8")
    except UnicodeDecodeError:
        return 1
    return n
