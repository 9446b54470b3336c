"""A deterministic newc ("070701") cpio writer, and a reader for ls / unpack / verify.

Written by hand rather than taken from a library because the byte layout is the product:
the output must be identical for identical inputs (sorted names, uid/gid from the entry,
one fixed mtime, inodes renumbered in order, device numbers zeroed), the kernel's unpacker
(init/initramfs.c) must accept it, and GNU cpio and bsdtar must read the same tree back.
No Python cpio library offers that control.

Layout of one member: a 110-byte ASCII header (magic + 13 eight-digit hex fields), the
NUL-terminated name, padding to 4 bytes, the data, padding to 4 bytes. The archive ends
with a member named "TRAILER!!!". Several archives may be concatenated (early microcode,
then the compressed main archive); the kernel skips zero padding between them.
"""
from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.image import Entry, Image, check_limits

MAGIC = b"070701"
MAGIC_CRC = b"070702"
TRAILER = "TRAILER!!!"
HEADER_LEN = 110
# The kernel's limit for a name in an initramfs member (include/uapi/linux/limits.h PATH_MAX).
PATH_MAX = 4096


_HEX_DIGITS = b"0123456789abcdefABCDEF"


class CpioError(MkinitramfsError):
    """A newc archive that cannot be written or read; the message names the member or offset."""


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def header(*, ino: int, mode: int, uid: int, gid: int, nlink: int, mtime: int, filesize: int,
           rdevmajor: int = 0, rdevminor: int = 0, namesize: int, devmajor: int = 0,
           devminor: int = 0, check: int = 0, magic: bytes = MAGIC) -> bytes:
    fields = (ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
              rdevminor, namesize, check)
    for v in fields:
        if not 0 <= v <= 0xFFFFFFFF:
            raise CpioError(f"cpio header field out of range: {v}")
    return magic + b"".join(b"%08X" % v for v in fields)


def member(name: str, *, ino: int, mode: int, uid: int = 0, gid: int = 0, nlink: int = 1,
           mtime: int = 0, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    raw_name = name.encode("utf-8", "surrogateescape") + b"\0"
    if len(raw_name) > PATH_MAX:
        raise CpioError(f"{name}: name is {len(raw_name) - 1} bytes, the kernel's limit is {PATH_MAX - 1}")
    head = header(ino=ino, mode=mode, uid=uid, gid=gid, nlink=nlink, mtime=mtime,
                  filesize=len(data), rdevmajor=rdev[0], rdevminor=rdev[1], namesize=len(raw_name))
    return b"".join((head, raw_name, b"\0" * _pad4(HEADER_LEN + len(raw_name)), data,
                     b"\0" * _pad4(len(data))))


def trailer() -> bytes:
    return member(TRAILER, ino=0, mode=0, nlink=1)


def write(entries: Image | Iterable[Entry], *, mtime: int = 0) -> bytes:
    """Serialise entries (an Image or an iterable of Entry) as one newc archive, sorted by
    name. Every member gets the same mtime; inodes are numbered 1, 2, ... in that order.

    Hard links (Entry.link_to) are written as GNU cpio writes them: every name of the inode
    carries the same ino and nlink = the number of names, and only the last name (in archive
    order) carries the data. The kernel (init/initramfs.c maybe_link) creates the first name,
    links the later ones to it and writes the data it finds into the shared inode.
    """
    ordered = entries.sorted_entries() if isinstance(entries, Image) else sorted(entries, key=lambda e: e.path)
    by_path = {e.path: e for e in ordered}
    groups: dict[str, list[Entry]] = {}
    for e in ordered:
        if e.link_to is not None:
            primary = by_path.get(e.link_to)
            if primary is None or primary.link_to is not None:
                raise CpioError(f"{e.path}: hard link to {e.link_to}, which is not a primary entry of the archive")
            groups.setdefault(e.link_to, [primary]).append(e)
    out = []
    inodes: dict[str, int] = {}  # primary path -> ino
    next_ino = 1
    for e in ordered:
        name = e.path.lstrip("/")
        if not name:
            continue
        check_limits(e.path, e.target if e.kind == "symlink" else None)
        key = e.link_to or e.path
        if key not in inodes:
            inodes[key] = next_ino
            next_ino += 1
        source = by_path[key]
        group = groups.get(key)
        if group:
            group.sort(key=lambda x: x.path)
            nlink = len(group)
            data = source.content() if e is group[-1] else b""
        else:
            nlink = 2 if e.kind == "dir" else 1
            data = e.content()
        out.append(member(name, ino=inodes[key], mode=source.full_mode, uid=source.uid, gid=source.gid,
                          nlink=nlink, mtime=mtime, data=data,
                          rdev=source.rdev if source.kind in ("chardev", "blockdev") else (0, 0)))
    out.append(trailer())
    return b"".join(out)


@dataclass
class Member:
    name: str
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    ino: int
    rdev: tuple[int, int]
    data: bytes
    offset: int  # where the header starts, within its (uncompressed) archive
    dev: tuple[int, int] = (0, 0)  # devmajor, devminor: part of the kernel's hard-link key

    @property
    def kind(self) -> str:
        fmt = stat.S_IFMT(self.mode)
        return {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo",
                stat.S_IFSOCK: "socket"}.get(fmt, "unknown")

    @property
    def target(self) -> str:
        """A symlink's target, as the kernel's symlink() gets it: up to the first NUL."""
        if self.kind != "symlink":
            return ""
        return self.data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def read_archive(buf: bytes, start: int = 0) -> tuple[list[Member], int]:
    """Read one archive from buf[start:], up to and including its trailer.
    Returns (members without the trailer, offset just after the trailer's padding)."""
    members: list[Member] = []
    pos = start
    while True:
        if pos + HEADER_LEN > len(buf):
            raise CpioError(f"truncated archive: header at offset {pos} runs past the end ({len(buf)} bytes)")
        magic = buf[pos:pos + 6]
        if magic not in (MAGIC, MAGIC_CRC):
            raise CpioError(f"bad magic {magic!r} at offset {pos}: not a newc cpio member")
        raw_fields = buf[pos + 6:pos + HEADER_LEN]
        if raw_fields.strip(_HEX_DIGITS):
            raise CpioError(f"corrupt header at offset {pos}: a field is not hexadecimal "
                            f"({raw_fields.decode('ascii', 'replace')!r})")
        fields = [int(raw_fields[8 * i:8 * i + 8], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, filesize, dmaj, dmin, rmaj, rmin, namesize, check = fields
        name_start = pos + HEADER_LEN
        if namesize == 0 or namesize > PATH_MAX:
            raise CpioError(f"corrupt header at offset {pos}: name size {namesize}")
        name_end = name_start + namesize
        if name_end > len(buf):
            raise CpioError(f"truncated archive: name at offset {name_start} runs past the end")
        if buf[name_end - 1] != 0:
            raise CpioError(f"corrupt member at offset {pos}: name is not NUL-terminated")
        # The kernel reads the name as a C string: it ends at the first NUL (an embedded NUL,
        # found by fuzzing `unpack`, used to reach os.mkdir as "embedded null byte").
        raw_name = buf[name_start:name_end - 1].split(b"\0", 1)[0]
        name = raw_name.decode("utf-8", "surrogateescape")
        data_start = name_end + _pad4(HEADER_LEN + namesize)
        data_end = data_start + filesize
        if data_end > len(buf):
            raise CpioError(f"truncated archive: data of {name!r} ({filesize} bytes at offset {data_start}) "
                            f"runs past the end ({len(buf)} bytes)")
        data = buf[data_start:data_end]
        header_at = pos
        if magic == MAGIC_CRC and stat.S_ISREG(mode) and (sum(data) & 0xFFFFFFFF) != check:
            raise CpioError(f"checksum mismatch for {name!r} at offset {pos}")
        pos = data_end + _pad4(filesize)
        if name == TRAILER:
            return members, pos
        members.append(Member(name, mode, uid, gid, nlink, mtime, ino, (rmaj, rmin), data, header_at, (dmaj, dmin)))


def skip_padding(buf: bytes, pos: int) -> int:
    """The kernel skips NUL bytes between concatenated archives (in 4-byte steps)."""
    while pos < len(buf) and buf[pos] == 0:
        pos += 1
    return pos
