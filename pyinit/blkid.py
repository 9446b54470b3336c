"""Superblock probes in pure Python: a file object in, {"TYPE", "UUID", "LABEL", ...} out.

Each probe reads only what it needs through `read_at(f, offset, size)` and returns None
when the magic does not match. `probe(f)` tries them in order and returns the first match.
"""
import struct


def read_at(f, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _label(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def _uuid_str(raw: bytes) -> str:
    """16 bytes -> "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (the uuid module costs an enum import)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


# ext2/3/4 feature bits (from e2fsprogs' ext2_fs.h), used to tell the three apart as blkid does.
_EXT3_COMPAT_HAS_JOURNAL = 0x0004
_EXT3_INCOMPAT_SUPPORTED = 0x0002 | 0x0004 | 0x0010  # FILETYPE | RECOVER | META_BG
_EXT3_RO_COMPAT_SUPPORTED = 0x0001 | 0x0002 | 0x0004  # SPARSE_SUPER | LARGE_FILE | BTREE_DIR
_EXT_INCOMPAT_JOURNAL_DEV = 0x0008


def probe_ext(f):
    sb = read_at(f, 1024, 256)
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
    out = {"TYPE": fstype, "UUID": _uuid_str(sb[0x68:0x78])}
    label = _label(sb[0x78:0x88])
    if label:
        out["LABEL"] = label
    return out


PROBES = [probe_ext]


def probe(f) -> dict | None:
    for p in PROBES:
        try:
            found = p(f)
        except (OSError, ValueError, struct.error):
            found = None
        if found:
            return found
    return None


def probe_path(path: str) -> dict | None:
    try:
        with open(path, "rb", buffering=0) as f:
            return probe(f)
    except OSError:
        return None
