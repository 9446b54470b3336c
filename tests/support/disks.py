"""Disk images made byte by byte, for the inputs no mkfs or mdadm would write: GPT headers
whose CRC is right whatever they claim, md superblocks with a right or a stale checksum.
The unit tier probes them from files; the VM tier hands them to a real kernel."""
from __future__ import annotations

import struct
from binascii import crc32

MD_MAGIC = 0xA92B4EFC
MD1_SB_SIZE = 256 + 2 * 2  # the superblock and a dev_roles array of max_dev=2
MD1_CSUM_AT = 216


def gpt_disk(size: int, *, entries_lba=2, count=128, entry_size=128, entries=b"") -> bytearray:
    """A protective MBR and a primary GPT header whose own CRC is right, whatever it says."""
    raw = bytearray(size) if size <= (64 << 20) else bytearray(64 << 20)
    raw[446 + 4] = 0xEE
    struct.pack_into("<II", raw, 446 + 8, 1, 0xFFFFFFFF)
    raw[510:512] = b"\x55\xaa"
    array = entries.ljust(min(count * entry_size, 1 << 16), b"\0")
    hdr = bytearray(92)
    hdr[:8] = b"EFI PART"
    struct.pack_into("<IIIIQQQQ", hdr, 8, 0x10000, 92, 0, 0, 1, size // 512 - 1, 34, size // 512 - 34)
    hdr[56:72] = bytes(range(16))
    struct.pack_into("<QIII", hdr, 72, entries_lba, count, entry_size, crc32(array))
    struct.pack_into("<I", hdr, 16, crc32(bytes(hdr)))
    raw[512:512 + 92] = hdr
    if entries_lba == 2:
        raw[1024:1024 + len(array)] = array
    return raw


def set_md1_checksum(sb: bytearray) -> None:
    """The md 1.x superblock checksum (the kernel's calc_sb_1_csum: the 32-bit words of the
    superblock and its roles, the field itself counted as 0, the carry folded in once)."""
    struct.pack_into("<I", sb, MD1_CSUM_AT, 0)
    total = sum(struct.unpack_from(f"<{len(sb) // 4}I", sb))
    struct.pack_into("<I", sb, MD1_CSUM_AT, ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF)


def md12_member(size=4 << 20, *, corrupt=False) -> bytes:
    """A metadata 1.2 member: the superblock at 4 KiB with a correct checksum (or a byte of
    its name changed afterwards: a half-wiped or stale superblock)."""
    raw = bytearray(size)
    sb = bytearray(MD1_SB_SIZE)
    struct.pack_into("<II", sb, 0, MD_MAGIC, 1)
    sb[16:32] = bytes.fromhex("5e1f000000004000800000000000ab00")
    sb[32:40] = b"pyinit:0"
    struct.pack_into("<Q", sb, 144, 8)  # super_offset: 4 KiB in sectors
    struct.pack_into("<I", sb, 220, 2)  # max_dev
    set_md1_checksum(sb)
    if corrupt:
        sb[35] ^= 0x20
    raw[4096:4096 + len(sb)] = sb
    return bytes(raw)
