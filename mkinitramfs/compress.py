"""Compression the kernel can unpack: zstd, xz (CRC32 check only), gzip, or none.

The kernel's xz decoder (lib/xz) accepts only the CRC32 check or none, never the CRC64 that
xz(1) and Python default to: an image compressed with CRC64 fails at boot with
"Initramfs unpacking failed: XZ-compressed data is corrupt".
"""
import gzip
import lzma

from mkinitramfs.errors import MkinitramfsError

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


class CompressError(MkinitramfsError):
    """Data that cannot be compressed or decompressed as asked; the message names the method and offset."""


class LimitExceeded(CompressError):
    """Unpacking would pass the limit (`--max-size`): stopped there, nothing more allocated."""


def compress(data: bytes, method: str, level: int | None = None) -> bytes:
    if method == "none":
        return data
    lvl = DEFAULT_LEVELS.get(method, 0) if level is None else level
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


_CHUNK = 1 << 20  # output taken from a decompressor at once
# zstd input fed at once. A zstd block of 4 bytes (an RLE block) unpacks to 128 KiB, and
# python-zstandard's decompressobj returns all the output of what it is fed: 512 bytes in
# give at most 16 MiB out, so the limit is never passed by more than that.
_ZSTD_INPUT = 512


def decompress_stream(buf: bytes, pos: int, method: str, limit: int | None = None) -> tuple[bytes, int]:
    """Decompress one stream starting at buf[pos]; return (data, offset after the stream).

    Incremental: never more than `limit` bytes of output are produced (then LimitExceeded),
    whatever the stream claims or its ratio is (a few KiB of a hostile stream can unpack
    to gigabytes)."""
    out = bytearray()

    def take(chunk: bytes) -> None:
        out.extend(chunk)
        if limit is not None and len(out) > limit:
            raise LimitExceeded(f"the {method} stream at offset {pos} unpacks to more than {limit} bytes "
                                f"(the limit; --max-size raises it)")
    if method == "zstd":
        import zstandard
        dobj = zstandard.ZstdDecompressor().decompressobj()
        at = pos
        while at < len(buf) and not dobj.eof:
            end = min(at + _ZSTD_INPUT, len(buf))
            take(dobj.decompress(buf[at:end]))
            at = end
        if not dobj.eof:
            raise CompressError(f"truncated zstd stream at offset {pos}")
        return bytes(out), at - len(dobj.unused_data)
    if method == "xz":
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        data = buf[pos:]
        while not d.eof:
            chunk = d.decompress(data, max_length=_CHUNK)
            data = b""
            take(chunk)
            if not chunk and d.needs_input:
                raise CompressError(f"truncated xz stream at offset {pos}")
        return bytes(out), len(buf) - len(d.unused_data)
    if method == "gzip":
        import zlib
        z = zlib.decompressobj(wbits=31)
        data = buf[pos:]
        while not z.eof:
            chunk = z.decompress(data, _CHUNK)
            data = z.unconsumed_tail
            take(chunk)
            if not chunk and not data:
                raise CompressError(f"truncated gzip stream at offset {pos}")
        return bytes(out), len(buf) - len(z.unused_data)
    raise CompressError(f"cannot decompress {method} data at offset {pos}")
