"""ls, unpack, verify and diff on small images made here; the kernel-unpacker model."""
from __future__ import annotations

import os
import shutil
import stat

import pytest

from mkinitramfs import archive, cli_inspect, compress, cpio, manifest
from mkinitramfs.__main__ import main
from mkinitramfs.image import Image, ImageError
from mkinitramfs.unpack import UnpackError, unpack
from mkinitramfs.verify import verify

pytestmark = pytest.mark.unit


def raw_archive(*members: tuple) -> bytes:
    """An archive of hand-made members: (name, mode, data[, nlink, ino])."""
    out = []
    for i, m in enumerate(members, 1):
        name, mode, data = m[:3]
        nlink = m[3] if len(m) > 3 else 1
        ino = m[4] if len(m) > 4 else i
        out.append(cpio.member(name, ino=ino, mode=mode, nlink=nlink, data=data))
    out.append(cpio.trailer())
    return b"".join(out)


REG, DIR, LNK = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777


# -- the model of init/initramfs.c ------------------------------------------------------

def test_model_skips_members_whose_parent_is_missing():
    tree = archive.unpack_model(raw_archive(("a/b", REG, b"x"), ("c", DIR, b""), ("c/d", REG, b"y")))
    assert "/a/b" not in tree and tree["/c/d"].data == b"y"


def test_model_later_member_replaces_earlier_and_nonempty_dir_survives():
    tree = archive.unpack_model(raw_archive(
        ("f", REG, b"old"), ("f", REG, b"new"),  # O_TRUNC rewrite
        ("d", DIR, b""), ("d/x", REG, b"1"), ("d", REG, b"file over a dir"),  # rmdir fails: skipped
        ("s", REG, b"was a file"), ("s", LNK, b"target")))  # other type: unlinked first
    assert tree["/f"].data == b"new"
    assert tree["/d"].kind == "dir" and tree["/d/x"].data == b"1"
    assert tree["/s"].kind == "symlink" and tree["/s"].target == "target"


@pytest.mark.parametrize("data_on", ["first", "last"])
def test_model_hardlinks_take_data_from_whichever_name_has_it(data_on):
    data = b"shared bytes"
    first, last = (data, b"") if data_on == "first" else (b"", data)
    tree = archive.unpack_model(raw_archive(("a", REG, first, 2, 7), ("b", REG, last, 2, 7)))
    assert tree["/a"] is tree["/b"] and tree["/a"].data == data


def test_model_forgets_links_at_each_trailer():
    """Same ino in two archives: two files (the kernel frees its link table at TRAILER!!!)."""
    one = raw_archive(("a", REG, b"1", 2, 5))
    two = raw_archive(("b", REG, b"2", 2, 5))
    tree = archive.unpack_model(one + two)
    assert tree["/a"] is not tree["/b"] and tree["/b"].data == b"2"
    tree = archive.unpack_model(compress.compress(one + two, "gzip"))
    assert tree["/a"] is not tree["/b"]


def test_resolve_follows_symlinks_inside_the_tree():
    img = Image()
    img.add_file("/usr/lib/libc.so.6", data=b"c")
    img.add_symlink("/lib", "usr/lib")
    img.add_symlink("/lib64", "/lib")
    img.add_symlink("/loop", "loop")
    tree = archive.unpack_model(cpio.write(img))
    assert archive.resolve(tree, "/lib64/libc.so.6") == "/usr/lib/libc.so.6"
    assert archive.resolve(tree, "/loop/x") is None
    assert archive.resolve(tree, "/missing") is None


# -- limits --------------------------------------------------------------------------------

def test_kernel_limits_name_the_path():
    img = Image()
    with pytest.raises(ImageError, match=r"/x/" + "a" * 256 + ".*255"):
        img.add_file("/x/" + "a" * 256, data=b"")
    with pytest.raises(ImageError, match=r"/long.*4095"):
        img.add_file("/long" + "/b" * 2100, data=b"")
    with pytest.raises(ImageError, match=r"/link: symlink target is 4096 bytes"):
        img.add_symlink("/link", "t" * 4096)
    img.add_symlink("/ok", "t" * 4095)  # the longest target symlink(2) takes
    with pytest.raises(ImageError, match="/TRAILER!!!: the name of the cpio end marker"):
        img.add_dir("/TRAILER!!!")
    img.add_dir("/d/TRAILER!!!")  # only the top-level name ends an archive
    with pytest.raises(ImageError, match="/dev/x: device 4096,0 is beyond"):
        img.add_node("/dev/x", "chardev", 4096, 0)


def test_model_makes_device_numbers_as_the_kernel_does():
    raw = b"".join([cpio.member("null", ino=1, mode=stat.S_IFCHR | 0o666, rdev=(1, 3)),
                    cpio.member("odd", ino=2, mode=stat.S_IFCHR | 0o600, rdev=(0x80000001, 0x100005)),
                    cpio.trailer()])
    tree = archive.unpack_model(raw)
    assert tree["/null"].rdev == (1, 3)
    # MKDEV into a 32-bit dev_t: the major keeps its low 12 bits, the minor bit 20 lands in it
    assert tree["/odd"].rdev == (1, 5)


# -- unpack ------------------------------------------------------------------------------------

@pytest.mark.parametrize("members, message", [
    ((("/etc/passwd", REG, b"x"),), "absolute"),
    ((("../escape", REG, b"x"),), r"'\.\.'"),
    ((("a/../../escape", REG, b"x"),), r"'\.\.'"),
    ((("evil", LNK, b"/etc"), ("evil/passwd", REG, b"x")), "symlink"),
    ((("d", DIR, b""), ("d/up", LNK, b".."), ("d/up/x", REG, b"x")), "symlink"),
])
def test_unpack_refuses_names_that_escape(members, message, tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(UnpackError, match=message):
        unpack(raw_archive(*members), str(dest))
    assert not dest.exists() or not os.listdir(dest)  # nothing written


def test_unpack_refuses_a_nonempty_directory(tmp_path):
    (tmp_path / "junk").write_text("")
    with pytest.raises(UnpackError, match="not empty"):
        unpack(raw_archive(("a", REG, b"")), str(tmp_path))


def test_unpack_writes_modes_links_and_times(tmp_path):
    img = Image()
    img.add_file("/bin/tool", data=b"x" * 10, mode=0o4755)
    img.add_hardlink("/bin/tool2", "/bin/tool")
    img.add_symlink("/sbin", "bin")
    img.add_dir("/ro", 0o555)
    img.add_file("/ro/file", data=b"inside a read-only dir", mode=0o444)
    raw = cpio.write(img, mtime=1_500_000_000)
    unpack(compress.compress(raw, "xz"), str(tmp_path / "o"), same_owner=True)  # set-id bits kept on consent
    want = manifest.from_image(img, 1_500_000_000)
    got = manifest.from_directory(str(tmp_path / "o"))
    assert manifest.render(got.values()) == manifest.render(want.values())


# -- verify ------------------------------------------------------------------------------------

def _host_program_image(with_libc: bool) -> Image:
    """/init is a script for the host's /bin/true, with or without its libraries."""
    from mkinitramfs import elf
    img = Image()
    true = shutil.which("true")
    img.add_file("/usr/bin/true", source=os.path.realpath(true), mode=0o755)
    img.add_file("/init", data=b"#!/usr/bin/true\n", mode=0o755)
    img.add_node("/dev/console", "chardev", 5, 1)
    closure = elf.resolve([os.path.realpath(true)])
    img.add_file(closure.interpreter, source=closure.interpreter_source, mode=0o755)
    if with_libc:
        for name, src in closure.libraries.items():
            img.add_file(f"/usr/lib/{name}", source=src)
    return img


def test_verify_finds_missing_libraries_and_interpreters():
    ok = verify(cpio.write(_host_program_image(True)))
    assert ok.ok, ok.problems
    bad = verify(cpio.write(_host_program_image(False)))
    assert any("needs libc.so.6" in p for p in bad.problems), bad.problems
    img = _host_program_image(True)
    img.add_file("/init", data=b"#!/usr/bin/python3.11 -IS\n", mode=0o755)
    rep = verify(cpio.write(img))
    assert any("interpreter /usr/bin/python3.11 is not in the image" in p for p in rep.problems), rep.problems


def test_verify_finds_missing_modules_and_dependencies(tmp_path):
    img = _host_program_image(True)
    img.add_file("/etc/pyinit/modules.load", data=b"# order\nvirtio /usr/lib/modules/k/virtio.ko required\n")
    img.add_file("/etc/pyinit/kernel-version", data=b"6.1.0-test\n")
    rep = verify(cpio.write(img))
    assert "module virtio: /usr/lib/modules/k/virtio.ko is not in the image" in rep.problems


def test_verify_without_init():
    img = Image()
    img.add_node("/dev/console", "chardev", 5, 1)
    assert verify(cpio.write(img)).problems == ["/init: missing: the kernel has nothing to run"]


# -- the commands ----------------------------------------------------------------------------

def test_ls_diff_and_exit_codes(tmp_path, capsys):
    img = Image()
    img.add_file("/a", data=b"one")
    img.add_hardlink("/b", "/a")
    a = tmp_path / "a.img"
    a.write_bytes(compress.compress(cpio.write(img), "gzip"))
    assert main(["ls", str(a)]) == 0
    out = capsys.readouterr().out
    assert "gzip" in out and " a (2 names)" in out and " b (hard link to a)" in out
    img.add_file("/c", data=b"new")
    img.entries["/a"].mode = 0o600
    b = tmp_path / "b.img"
    b.write_bytes(cpio.write(img))
    assert main(["diff", str(a), str(a)]) == 0
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "segments: gzip  ->  uncompressed" in out
    assert "+ /c (file, 3 bytes)" in out and "~ /a: mode 0644 -> 0600" in out
    assert main(["diff", str(a), str(tmp_path / "missing")]) == 2
    (tmp_path / "junk").write_bytes(b"junk")
    assert main(["verify", str(tmp_path / "junk")]) == 1
    assert "unrecognised data at offset 0" in capsys.readouterr().err


def test_segment_labels():
    early = Image()
    early.add_file("/kernel/x86/microcode/GenuineIntel.bin", data=b"u")
    segs = archive.read_image(cpio.write(early) + compress.compress(cpio.write(Image()), "zstd"))
    assert [cli_inspect.segment_label(s) for s in segs] == ["early microcode, uncompressed", "zstd"]


# -- inputs the fuzzer found (devtools/fuzz.py), kept as regression tests ----------------------

FUZZ_REGRESSIONS = os.path.join(os.path.dirname(__file__), "fuzz-regressions")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(FUZZ_REGRESSIONS) if not n.startswith("disk-")))
def test_fuzz_regressions(name, tmp_path):
    """Archives (disk-* are disks: tests/unit/test_hostile_disks.py); bombs stop at the limit."""
    with open(os.path.join(FUZZ_REGRESSIONS, name), "rb") as f:
        data = f.read()
    try:
        unpack(data, str(tmp_path / "out"), warn=lambda m: None, max_size=64 << 20)
    except (UnpackError, cpio.CpioError, compress.CompressError):
        pass
    assert os.listdir(tmp_path) in ([], ["out"])


def test_names_and_targets_end_at_the_first_nul():
    """The kernel reads names and symlink targets as C strings."""
    raw = raw_archive(("dir\0junk", DIR, b""), ("dir/link", LNK, b"target\0junk"), ("\0hidden", REG, b"x"))
    members = cpio.read_archive(raw)[0]
    assert [m.name for m in members] == ["dir", "dir/link", ""]
    tree = archive.unpack_model(raw)
    assert tree["/dir/link"].target == "target" and set(tree) == {"/", "/dir", "/dir/link"}
