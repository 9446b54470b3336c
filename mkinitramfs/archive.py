"""Reading a whole initramfs file: possibly several concatenated segments (an uncompressed
early-microcode cpio, then the compressed main archive), as the kernel reads it."""
from __future__ import annotations

from dataclasses import dataclass, field

from mkinitramfs import compress
from mkinitramfs.cpio import CpioError, Member, read_archive, skip_padding


@dataclass
class Segment:
    offset: int  # where the segment starts in the file
    compression: str
    size: int  # bytes it takes in the file
    unpacked_size: int
    members: list[Member] = field(default_factory=list)


def read_image(buf: bytes) -> list[Segment]:
    """Every segment of an image. Raises CpioError / CompressError naming the offset."""
    segments = []
    pos = skip_padding(buf, 0)
    if pos >= len(buf):
        raise CpioError("empty image: no cpio archive found")
    while pos < len(buf):
        method = compress.detect(buf, pos)
        if method is None:
            raise CpioError(f"unrecognised data at offset {pos} (starts with {buf[pos:pos + 8].hex()}): "
                            "neither a newc cpio archive nor a known compression")
        if method == "none":
            members, end = read_archive(buf, pos)
            segments.append(Segment(pos, "none", end - pos, end - pos, members))
            pos = skip_padding(buf, end)
            continue
        try:
            data, end = compress.decompress_stream(buf, pos, method)
        except compress.CompressError:
            raise
        except Exception as e:  # zstd/lzma/zlib raise their own error types
            raise compress.CompressError(f"corrupt {method} data at offset {pos}: {e}") from None
        members = []
        inner = 0
        while inner < len(data):
            ms, inner = read_archive(data, inner)
            members.extend(ms)
            inner = skip_padding(data, inner)
        segments.append(Segment(pos, method, end - pos, len(data), members))
        pos = skip_padding(buf, end)
    return segments


def members(buf: bytes) -> list[Member]:
    """The tree the kernel would unpack: later members replace earlier ones of the same name."""
    out: dict[str, Member] = {}
    for seg in read_image(buf):
        for m in seg.members:
            out[m.name] = m
    return [out[k] for k in sorted(out)]
