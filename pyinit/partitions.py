"""Partition tables in pure Python: GPT and MBR (with logical partitions).

`read_table(src, sector_size)` returns a `Table` (PTTYPE "gpt" or "dos", PTUUID, entries)
or None. Entry numbers are the kernel's: GPT slot index + 1; MBR primaries 1-4, logical
partitions from 5 in chain order. A partition's PARTUUID is the GPT entry's unique GUID, or
for MBR `<disk signature>-<number>` as "%08x-%02x" (what the kernel's root=PARTUUID= and
libblkid both use). A GPT entry also carries its 64 attribute bits (`attrs`; blkid's
PART_ENTRY_FLAGS), which the Discoverable Partitions rules read (pyinit/gptauto.py).

A partition table is input from a disk: a GPT header with a valid CRC may still name an
entry array past the end of the disk, a count or an entry size that would make PID 1 read
and allocate hundreds of MiB, or an LBA that overflows a file offset. `_gpt_at` believes
only what the UEFI specification allows and the disk can hold (GPT_MAX_ENTRIES,
GPT_MAX_ENTRY_SIZE, GPT_MAX_ARRAY); entries whose first LBA is past their last are
skipped. Every read goes through blkid.Source, which bounds it again.
"""
import struct
from binascii import crc32

from pyinit.blkid import Source, is_fat_boot_sector, utf16le

# UEFI 2.10, 5.3.2: SizeOfPartitionEntry is 128 x 2^n; 128 entries are the usual array. The
# caps are far above any real table (the kernel and libblkid read at most this much too).
GPT_MAX_ENTRIES = 4096
GPT_MAX_ENTRY_SIZE = 4096
GPT_MAX_ARRAY = 1 << 20  # bytes of the entry array
_MAX_LBA = (1 << 63) // 4096  # past this an LBA times the sector size is not a file offset


class Entry:
    __slots__ = ("attrs", "name", "number", "size", "start", "type", "uuid")

    def __init__(self, number: int, start: int, size: int, uuid: str, name: str, ptype: str, attrs: int = 0) -> None:
        self.number, self.start, self.size = number, start, size  # start and size in sectors
        self.uuid, self.name, self.type = uuid, name, ptype
        self.attrs = attrs  # GPT attribute bits (0 for MBR entries)

    def __repr__(self) -> str:
        return f"Entry({self.number}, start={self.start}, size={self.size}, uuid={self.uuid}, name={self.name!r})"

    def info(self) -> dict[str, str]:
        """The keys blkid gives a partition device: PARTUUID, PARTLABEL, and the type."""
        out = {"PARTUUID": self.uuid, "PART_ENTRY_TYPE": self.type, "PART_ENTRY_NUMBER": str(self.number)}
        if self.name:
            out["PARTLABEL"] = self.name
        if self.attrs:
            out["PART_ENTRY_FLAGS"] = f"0x{self.attrs:x}"
        return out


class Table:
    __slots__ = ("entries", "pttype", "ptuuid")

    def __init__(self, pttype: str, ptuuid: str, entries: list[Entry]) -> None:
        self.pttype, self.ptuuid, self.entries = pttype, ptuuid, entries

    def entry(self, number: int) -> Entry | None:
        for e in self.entries:
            if e.number == number:
                return e
        return None

    def __repr__(self) -> str:
        return f"Table({self.pttype}, {self.ptuuid}, {self.entries})"


def guid_str(raw: bytes) -> str:
    """A GPT GUID: the first three fields are little-endian on disk."""
    a, b, c = struct.unpack_from("<IHH", raw, 0)
    return f"{a:08x}-{b:04x}-{c:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}"


def read_table(src: Source, sector_size: int = 512) -> Table | None:
    mbr = src.read(0, 512)
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
        return None
    parts = [struct.unpack_from("<BBBBBBBBII", mbr, 446 + 16 * i) for i in range(4)]
    if any(p[0] not in (0, 0x80) for p in parts):
        return None  # boot flags other than 0/0x80: boot code, not a partition table
    if any(p[4] == 0xEE for p in parts):
        table = read_gpt(src, sector_size)
        if table is not None:
            return table
    if is_fat_boot_sector(mbr):
        return None  # a FAT filesystem on the whole device, not a partitioned disk
    return read_mbr(src, mbr, parts, sector_size)


def read_gpt(src: Source, sector_size: int = 512) -> Table | None:
    table = _gpt_at(src, 1, sector_size)
    if table is None and src.size:
        table = _gpt_at(src, src.size // sector_size - 1, sector_size)  # the backup header
    return table


def _gpt_at(src: Source, lba: int, sector_size: int) -> Table | None:
    hdr = src.read(lba * sector_size, 92)
    if len(hdr) < 92 or hdr[:8] != b"EFI PART":
        return None
    hdr_size, hdr_crc = struct.unpack_from("<II", hdr, 12)
    if hdr_size < 92 or hdr_size > sector_size:
        return None
    full = src.read(lba * sector_size, hdr_size)
    if crc32(full[:16] + b"\0\0\0\0" + full[20:]) != hdr_crc:
        return None
    my_lba, = struct.unpack_from("<Q", hdr, 24)
    if my_lba != lba:
        return None
    disk_guid = guid_str(hdr[56:72])
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", hdr, 72)
    if not gpt_array_ok(entries_lba, count, entry_size, sector_size, src.size):
        return None
    raw = src.read(entries_lba * sector_size, count * entry_size)
    if len(raw) < count * entry_size or crc32(raw) != entries_crc:
        return None
    entries = []
    for i in range(count):
        e = raw[i * entry_size:(i + 1) * entry_size]
        if e[:16] == bytes(16):
            continue  # unused slot
        first, last, attrs = struct.unpack_from("<QQQ", e, 32)
        if last < first or last > _MAX_LBA:
            continue  # the kernel skips such an entry too (is_pte_valid)
        entries.append(Entry(i + 1, first, last - first + 1, guid_str(e[16:32]), utf16le(e[56:128]),
                             guid_str(e[:16]), attrs))
    return Table("gpt", disk_guid, entries)


def gpt_array_ok(entries_lba: int, count: int, entry_size: int, sector_size: int, disk_size: int | None) -> bool:
    """Whether a GPT header's entry array is one to read (see the module doc). Pure."""
    if entry_size < 128 or entry_size > GPT_MAX_ENTRY_SIZE or entry_size & (entry_size - 1):
        return False
    if count == 0 or count > GPT_MAX_ENTRIES or count * entry_size > GPT_MAX_ARRAY:
        return False
    if entries_lba < 2 or entries_lba > _MAX_LBA:
        return False  # LBA 0 is the protective MBR, 1 the header
    if disk_size:
        return entries_lba * sector_size + count * entry_size <= disk_size
    return True


_EXTENDED = (0x05, 0x0F, 0x85)


def read_mbr(src: Source, mbr: bytes, parts: list[tuple[int, ...]], sector_size: int = 512) -> Table:
    disk_id, = struct.unpack_from("<I", mbr, 440)
    entries = []
    extended = None
    for i, p in enumerate(parts):
        ptype, start, size = p[4], p[8], p[9]
        if ptype == 0 or size == 0:
            continue
        entries.append(Entry(i + 1, start, size, f"{disk_id:08x}-{i + 1:02x}", "", f"0x{ptype:x}"))
        if ptype in _EXTENDED and extended is None:
            extended = start
    if extended is not None:
        entries += _logical(src, disk_id, extended, sector_size)
    return Table("dos", f"{disk_id:08x}", entries)


def _logical(src: Source, disk_id: int, ext_start: int, sector_size: int) -> list[Entry]:
    """Walk the chain of extended boot records; logical partitions are numbered from 5."""
    out = []
    ebr_lba = ext_start
    seen: set[int] = set()
    number = 5
    while ebr_lba not in seen and len(seen) < 128 and ebr_lba <= _MAX_LBA:
        seen.add(ebr_lba)
        ebr = src.read(ebr_lba * sector_size, 512)
        if len(ebr) < 512 or ebr[510:512] != b"\x55\xaa":
            break
        first = struct.unpack_from("<BBBBBBBBII", ebr, 446)
        link = struct.unpack_from("<BBBBBBBBII", ebr, 462)
        if first[4] != 0 and first[9] != 0:
            out.append(Entry(number, ebr_lba + first[8], first[9], f"{disk_id:08x}-{number:02x}", "",
                             f"0x{first[4]:x}"))
            number += 1
        if link[4] not in _EXTENDED or link[8] == 0:
            break
        ebr_lba = ext_start + link[8]
    return out
