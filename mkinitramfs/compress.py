"""Compression the kernel can unpack: zstd, xz (CRC32 check only), gzip, or none.

The kernel's xz decoder (lib/xz) accepts only the CRC32 check or none, never the CRC64 that
xz(1) and Python default to: an image compressed with CRC64 fails at boot with
"Initramfs unpacking failed: XZ-compressed data is corrupt".
"""
import gzip
import lzma

METHODS = ("zstd", "xz", "gzip", "none")

_MAGICS = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gzip"),
    (b"\x1f\x9e", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x89LZO", "lzo"),
    (b"\x5d\x00\x00", "lzma"),
    (b"070701", "none"),
    (b"070702", "none"),
)

DEFAULT_LEVELS = {"zstd": 10, "xz": 6, "gzip": 6}


class CompressError(Exception):
    pass


def compress(data: bytes, method: str, level: int | None = None) -> bytes:
    if method == "none":
        return data
    lvl = DEFAULT_LEVELS.get(method) if level is None else level
    if method == "zstd":
        import zstandard
        # write_content_size so tools can size buffers; no threads, so output is reproducible.
        cctx = zstandard.ZstdCompressor(level=lvl, write_checksum=True, write_content_size=True)
        return cctx.compress(data)
    if method == "xz":
        # BCJ x86 filter + LZMA2 with a 1 MiB+ dictionary; CRC32 because the kernel wants it.
        filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": lvl}]
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
    if method == "gzip":
        return gzip.compress(data, compresslevel=lvl, mtime=0)
    raise CompressError(f"unknown compression {method!r}; choose one of {', '.join(METHODS)}")


def detect(buf: bytes, pos: int = 0) -> str | None:
    for magic, name in _MAGICS:
        if buf.startswith(magic, pos):
            return name
    return None


def decompress_stream(buf: bytes, pos: int, method: str) -> tuple[bytes, int]:
    """Decompress one stream starting at buf[pos]; return (data, offset after the stream)."""
    if method == "zstd":
        import zstandard
        dobj = zstandard.ZstdDecompressor().decompressobj()
        data = dobj.decompress(buf[pos:])
        used = len(buf) - pos - len(dobj.unused_data)
        return data, pos + used
    if method == "xz":
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        data = d.decompress(buf[pos:])
        if not d.eof:
            raise CompressError(f"truncated xz stream at offset {pos}")
        return data, len(buf) - len(d.unused_data)
    if method == "gzip":
        import zlib
        d = zlib.decompressobj(wbits=31)
        data = d.decompress(buf[pos:])
        if not d.eof:
            raise CompressError(f"truncated gzip stream at offset {pos}")
        return data, len(buf) - len(d.unused_data)
    raise CompressError(f"cannot decompress {method} data at offset {pos}")
