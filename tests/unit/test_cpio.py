import subprocess

import pytest

from mkinitramfs import archive, compress, cpio
from mkinitramfs.image import Image, ImageError

pytestmark = pytest.mark.unit


def sample_image() -> Image:
    img = Image()
    img.add_file("/usr/bin/tool", data=b"#!/bin/sh\necho hi\n", mode=0o755, part="x")
    img.add_file("/etc/empty", data=b"", part="x")
    img.add_symlink("/bin", "usr/bin")
    img.add_node("/dev/console", "chardev", 5, 1, 0o600)
    img.add_dir("/tmp", 0o1777)
    return img


def test_round_trip_through_reader():
    raw = cpio.write(sample_image(), mtime=1234)
    members, end = cpio.read_archive(raw)
    assert end == len(raw)
    by_name = {m.name: m for m in members}
    assert by_name["usr/bin/tool"].data == b"#!/bin/sh\necho hi\n"
    assert by_name["usr/bin/tool"].mode & 0o7777 == 0o755
    assert by_name["bin"].kind == "symlink" and by_name["bin"].target == "usr/bin"
    assert by_name["dev/console"].rdev == (5, 1)
    assert by_name["tmp"].mode & 0o7777 == 0o1777
    assert all(m.mtime == 1234 and m.uid == 0 for m in members)
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert [m.ino for m in members] == list(range(1, len(members) + 1))


def test_output_is_deterministic():
    assert cpio.write(sample_image()) == cpio.write(sample_image())


def test_parents_are_implied_and_paths_normalised():
    img = Image()
    img.add_file("usr//lib/./x", data=b"1")
    assert "/usr" in img and "/usr/lib" in img and "/usr/lib/x" in img
    with pytest.raises(ImageError, match=r"\.\."):
        img.add_file("/usr/../etc/passwd", data=b"")


def test_gnu_cpio_reads_our_archive(tmp_path):
    raw = cpio.write(sample_image())
    out = tmp_path / "out"
    out.mkdir()
    listing = subprocess.run(["cpio", "-itv"], input=raw, capture_output=True, check=True).stdout.decode()
    assert "usr/bin/tool" in listing and "bin -> usr/bin" in listing


@pytest.mark.parametrize("method", compress.METHODS)
def test_compressed_image_reads_back(method):
    raw = cpio.write(sample_image())
    packed = compress.compress(raw, method)
    segs = archive.read_image(packed)
    assert len(segs) == 1 and segs[0].compression == method
    assert {m.name for m in segs[0].members} >= {"usr/bin/tool", "dev/console"}


def test_xz_uses_crc32_check():
    packed = compress.compress(b"x" * 100, "xz")
    # Stream flags: byte 7 holds the check type; 0x01 is CRC32 (the kernel rejects CRC64).
    assert packed[7] == 0x01


def test_concatenated_segments():
    first = cpio.write([e for e in sample_image() if e.path.startswith("/dev")])
    second = compress.compress(cpio.write(sample_image()), "gzip")
    pad = b"\0" * ((-len(first)) % 512)
    segs = archive.read_image(first + pad + second)
    assert [s.compression for s in segs] == ["none", "gzip"]


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-200], "truncated"),
    (lambda b: b"XXXXXX" + b[6:], "bad magic|unrecognised"),
    (lambda b: b[:20] + b"ZZZZ" + b[24:], "not hexadecimal"),
])
def test_reader_rejects_damage_with_clear_error(damage, message):
    raw = cpio.write(sample_image())
    with pytest.raises(cpio.CpioError, match=message):
        archive.read_image(damage(raw))


def test_name_length_limit():
    with pytest.raises(cpio.CpioError, match="limit"):
        cpio.member("a" * 5000, ino=1, mode=0o100644)
