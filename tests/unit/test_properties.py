"""Property tests (hypothesis): cpio round trips over random trees, the command-line
tokenizer against an independent model of the kernel's next_arg(), and the image reader
on corrupt input.

The example count is bounded so that `make test` stays fast; PYINIT_PROPERTY_EXAMPLES
raises it for a longer run (e.g. PYINIT_PROPERTY_EXAMPLES=20000).
"""
from __future__ import annotations

import io
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mkinitramfs import archive, compress, cpio, manifest
from mkinitramfs.image import Image, ImageError
from pyinit import cmdline
from tests.support.kernel_cmdline_model import model_tokenize

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("PYINIT_PROPERTY_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize="PYINIT_PROPERTY_EXAMPLES" not in os.environ,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------
# cpio round trips

name_chars = st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",))
component = st.text(name_chars, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@st.composite
def trees(draw):
    """A random Image: nested dirs, files (any bytes, odd modes, owners), symlinks, device
    nodes and hard-link groups, added in a random order."""
    img = Image()
    dirs = ["/"]
    ops = draw(st.lists(st.tuples(st.sampled_from(["dir", "file", "symlink", "node", "link"]),
                                  st.integers(0, 10_000), component), min_size=1, max_size=25))
    files = []
    for kind, n, name in ops:
        parent = dirs[n % len(dirs)]
        path = parent.rstrip("/") + "/" + name
        if path in img:
            continue
        try:
            if kind == "dir":
                e = img.add_dir(path, mode=draw(st.sampled_from([0o755, 0o700, 0o1777, 0o2755])))
                dirs.append(path)
            elif kind == "file":
                e = img.add_file(path, data=draw(st.binary(max_size=300)),
                                 mode=draw(st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o000])))
                files.append(path)
            elif kind == "symlink":
                e = img.add_symlink(path, draw(st.text(name_chars | st.just("/"), min_size=1, max_size=40)))
            elif kind == "node":
                e = img.add_node(path, draw(st.sampled_from(["chardev", "blockdev"])),
                                 draw(st.integers(0, 4095)), draw(st.integers(0, 2**20 - 1)))
            else:
                if not files:
                    continue
                img.add_hardlink(path, files[n % len(files)])
                continue
        except ImageError:
            continue  # e.g. a name that is already a directory
        e.uid, e.gid = draw(st.sampled_from([(0, 0), (1000, 100), (65534, 65534)]))
    return img


@SETTINGS
@given(trees(), st.integers(0, 2**32 - 1))
def test_cpio_round_trip_through_the_kernel_model(img, mtime):
    raw = cpio.write(img, mtime=mtime)
    members, end = cpio.read_archive(raw)
    assert end == len(raw)
    assert [m.name for m in members] == sorted(m.name for m in members)
    want = manifest.render(manifest.from_image(img, mtime).values())
    got = manifest.render(manifest.from_tree(archive.unpack_model(raw)).values())
    assert got == want


@SETTINGS
@given(trees(), st.randoms(use_true_random=False))
def test_cpio_bytes_do_not_depend_on_insertion_order(img, rnd):
    entries = list(img.entries.values())
    rnd.shuffle(entries)
    shuffled = Image()
    shuffled.entries = {e.path: e for e in entries}
    assert cpio.write(shuffled, mtime=7) == cpio.write(img, mtime=7)


# ---------------------------------------------------------------------------------------
# The kernel command line against tests/support/kernel_cmdline_model.py (an independent model of
# the kernel's next_arg(), written for these tests).

def _decode(b: bytes | None) -> str | None:
    return None if b is None else b.decode("utf-8", "surrogateescape")


cmdline_bytes = st.lists(st.sampled_from([b" ", b"\t", b"\n", b"\xa0", b"\xc2\xa0", b'"', b"=", b"--", b"\0",
                                          b"root", b"ro", b"rw", b"a", b"\xff", b"\xc3\xa9", b"x=y"]),
                         max_size=30).map(b"".join) | st.binary(max_size=80)


@SETTINGS
@given(cmdline_bytes)
def test_tokenize_matches_the_kernel_model(raw):
    text = raw.decode("utf-8", "surrogateescape")
    params, init_args = model_tokenize(raw)
    want = ([(_decode(p), _decode(v)) for p, v in params], [_decode(a) for a in init_args])
    assert cmdline.tokenize(text) == want


@SETTINGS
@given(st.text(max_size=200) | cmdline_bytes.map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_cmdline_parse_never_raises(text):
    c = cmdline.parse(text)
    assert isinstance(c.params, tuple)
    c.get("root"), c.rd_list("rd.x"), c.flag("rd.debug")


@pytest.mark.parametrize("raw, params", [
    (b"a\xa0b", [("a", None), ("b", None)]),  # 0xA0 is a space to the kernel
    (b"x=\xc2\xa0y", [("x", "\udcc2"), ("y", None)]),  # so UTF-8 NBSP splits a word
    (b'"a b"=c', [('a b"', "c")]),  # the closing quote stays in the name
    (b'a="', [("a", "")]),
    (b'"', [("", None)]),
])
def test_model_examples(raw, params):
    """Hand-checked cases that pin the model (and pyinit) to the C code."""
    assert model_tokenize(raw)[0] == [(p.encode("utf-8", "surrogateescape"), None if v is None else
                                       v.encode("utf-8", "surrogateescape")) for p, v in params]
    assert cmdline.tokenize(raw.decode("utf-8", "surrogateescape"))[0] == params


# ---------------------------------------------------------------------------------------
# The reader on damaged archives: a clear CpioError / CompressError, never anything else.

def _sample_archive() -> bytes:
    img = Image()
    img.add_file("/usr/bin/tool", data=b"#!/bin/sh\necho hi\n" * 20, mode=0o755)
    img.add_file("/etc/empty", data=b"")
    img.add_hardlink("/etc/empty2", "/etc/empty")
    img.add_symlink("/bin", "usr/bin")
    img.add_node("/dev/console", "chardev", 5, 1)
    return cpio.write(img, mtime=99)


SAMPLE = _sample_archive()
SAMPLES = {m: compress.compress(SAMPLE, m) for m in compress.METHODS}


def read_everything(buf: bytes) -> None:
    try:
        archive.read_image(buf)
        manifest.from_tree(archive.unpack_model(buf))
    except (cpio.CpioError, compress.CompressError):
        pass


@st.composite
def damaged(draw):
    method = draw(st.sampled_from(compress.METHODS))
    buf = bytearray(SAMPLES[method])
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["truncate", "flip", "digit", "insert", "checksum", "magic"]))
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        if how == "truncate":
            del buf[at:]
        elif how == "flip":
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "digit":  # a header digit replaced by another hex digit or junk
            buf[at] = draw(st.sampled_from(b"0123456789ABCDEFfgxZ \0"))
        elif how == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "checksum":  # turn on the CRC format without valid checksums
            i = buf.find(b"070701", at)
            if i >= 0:
                buf[i:i + 6] = b"070702"
        else:
            buf[at:at] = draw(st.sampled_from([b"070701", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"\x1f\x8b",
                                               b"BZh", b"\x5d\x00\x00"]))
    return bytes(buf)


@SETTINGS
@given(damaged())
def test_reader_never_crashes_on_damaged_images(buf):
    read_everything(buf)


@SETTINGS
@given(st.binary(max_size=400))
def test_reader_never_crashes_on_random_bytes(buf):
    read_everything(buf)
    read_everything(b"070701" + buf)


def test_reader_reports_checksum_mismatch():
    raw = bytearray(SAMPLE)
    raw[0:6] = b"070702"  # first member (a directory) then files under the CRC magic
    i = raw.find(b"070701", 6)
    while i >= 0:
        raw[i:i + 6] = b"070702"
        i = raw.find(b"070701", i + 6)
    with pytest.raises(cpio.CpioError, match="checksum"):
        archive.read_image(bytes(raw))


def test_random_module_is_not_used_by_the_writer():
    """Determinism guard: two writes in different random states are identical."""
    random.seed(1)
    a = cpio.write(Image(), mtime=0)
    random.seed(2)
    assert cpio.write(Image(), mtime=0) == a


# ---------------------------------------------------------------------------------------
# verify on damaged ELF files inside an image: problems in the report, never a crash.

def _true_bytes() -> bytes:
    import shutil
    with open(os.path.realpath(shutil.which("true")), "rb") as f:
        return f.read()


TRUE_ELF = _true_bytes()


# A changed byte lands anywhere, or in the first KiB (the ELF header, the program headers and
# the interpreter's name: what verify reads); the file is cut short, or kept whole so that
# examples whose headers survive reach the check of what the program needs.
FLIP_AT = st.one_of(st.integers(0, len(TRUE_ELF) - 1), st.integers(0, 1023))
CUT = st.one_of(st.just(len(TRUE_ELF)), st.integers(16, len(TRUE_ELF)))


@SETTINGS
@given(st.lists(st.tuples(FLIP_AT, st.integers(0, 255)), min_size=1, max_size=8), CUT)
def test_verify_reports_damaged_elf_files(flips, cut):
    """/init's interpreter is `true` cut short and with bytes changed, in an image without
    its loader or libc. verify never raises, and never stays silent about the program: when
    its bytes are no ELF, or no ELF pyinit's parser can read, or an ELF that needs anything
    outside the image, a problem names it. (The parser is the oracle only for what the
    damaged program needs; whether verify reports it is what is checked.)"""
    import posixpath

    from mkinitramfs.elf import ElfError, parse_elf
    from mkinitramfs.verify import verify
    data = bytearray(TRUE_ELF[:cut])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    img = Image()
    img.add_file("/init", data=b"#!/usr/bin/prog\n", mode=0o755)
    img.add_file("/usr/bin/prog", data=bytes(data), mode=0o755)
    img.add_node("/dev/console", "chardev", 5, 1)
    buf = cpio.write(img)
    rep = verify(buf)
    named = [p for p in rep.problems if "/usr/bin/prog" in p]
    if not data.startswith(b"\x7fELF"):
        assert named, rep.problems  # the kernel cannot run /init's interpreter
        return
    try:
        obj = parse_elf(io.BytesIO(bytes(data)), "/usr/bin/prog")
    except ElfError:
        assert named, rep.problems  # unreadable headers are a problem, not a file skipped
        return
    if obj.etype == "ET_REL":
        return  # a relocatable object: the loader never sees it, nor does verify
    tree = archive.unpack_model(buf)
    wants = ([obj.interp] if obj.interp else []) + list(obj.needed)
    outside = [w for w in wants if posixpath.basename(w) not in ("init", "prog")
               and posixpath.normpath("/" + w) not in tree]
    if outside:
        assert named, (outside, rep.problems)


@SETTINGS
@given(damaged())
def test_unpack_never_crashes_nor_escapes(buf):
    import shutil
    import tempfile

    from mkinitramfs.unpack import UnpackError, unpack
    base = tempfile.mkdtemp(prefix="pyinit-prop-")
    try:
        try:
            unpack(buf, os.path.join(base, "out"), warn=lambda m: None)
        except (cpio.CpioError, compress.CompressError, UnpackError):
            pass
        assert set(os.listdir(base)) <= {"out"}
    finally:
        shutil.rmtree(base)
