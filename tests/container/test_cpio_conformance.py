"""Conformance: our newc writer and reader against GNU cpio and bsdtar (Debian's cpio and
libarchive-tools) on the same trees: modes (set-id, sticky), owners, hard links, symlinks,
device nodes, fifos, empty files, long and non-ASCII names.

Both directions: archives we write are extracted by the other tools and the extracted tree
is compared, as a manifest, with what the builder meant; archives the other tools write
from a tree on disk are read by our reader (through the model of the kernel's unpacker)
and by `unpack`, and compared with the tree itself. Root is needed (owners, mknod).
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from mkinitramfs import archive, cpio, manifest
from mkinitramfs.image import Image
from mkinitramfs.unpack import unpack

pytestmark = pytest.mark.container

MTIME = 1_600_000_000
LONG_COMPONENT = "L" * 255
LONG_DIR = "/deep/" + "/".join(["d" * 200] * 15)  # a path of ~3000 bytes


def _need(tool: str, package: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        pytest.fail(f"{tool} not found: install the Debian package {package} (make setup)", pytrace=False)
    return exe


def sample_image() -> Image:
    img = Image()
    img.add_file("/bin/tool", data=b"\x7fELF fake\n" * 100, mode=0o755)
    img.add_file("/bin/suid", data=b"setuid program\n", mode=0o4755)
    img.add_file("/bin/sgid", data=b"setgid program\n", mode=0o2711)
    img.add_file("/etc/empty", data=b"")
    img.add_file("/etc/secret-ish", data=b"not really\n", mode=0o600)
    home = img.add_dir("/home/user", 0o750)
    home.uid, home.gid = 1000, 100
    owned = img.add_file("/home/user/file", data=b"owned by 1000:100\n", mode=0o640)
    owned.uid, owned.gid = 1000, 100
    img.add_dir("/tmp", 0o1777)
    img.add_dir("/private", 0o700)
    img.add_file("/private/x", data=b"x")
    # a hard-link group of three names, one in another directory, and an empty pair
    img.add_file("/usr/lib/libfoo.so.1", data=b"library bytes " * 300, mode=0o755)
    img.add_hardlink("/usr/lib/libfoo-link", "/usr/lib/libfoo.so.1")
    img.add_hardlink("/zz/libfoo-elsewhere", "/usr/lib/libfoo.so.1")
    img.add_file("/usr/share/empty-a", data=b"")
    img.add_hardlink("/usr/share/empty-b", "/usr/share/empty-a")
    img.add_symlink("/lib", "usr/lib")
    img.add_symlink("/usr/bin/abs", "/bin/tool")
    img.add_symlink("/dangling", "does/not/exist")
    img.add_symlink("/longtarget", "t" * 1000)
    img.add_node("/dev/console", "chardev", 5, 1, 0o600)
    img.add_node("/dev/null", "chardev", 1, 3, 0o666)
    img.add_node("/dev/sda1", "blockdev", 8, 1, 0o660)
    img.add_node("/dev/bignode", "chardev", 260, 70000, 0o600)
    from mkinitramfs.image import Entry
    img._put(Entry("/run/fifo", "fifo", 0o644))
    img.add_file(f"/names/{LONG_COMPONENT}", data=b"long component")
    img.add_file(LONG_DIR + "/leaf", data=b"deep")
    img.add_file("/names/caf\u00e9 \u65e5\u672c with space", data=b"utf-8 name")
    img.add_file("/names/-dash", data=b"leading dash")
    return img


def expected_records(img: Image) -> dict[str, manifest.Record]:
    return manifest.from_image(img, MTIME)


def without_dir_mtimes(records: dict) -> dict:
    for r in records.values():
        if r.kind == "dir":
            r.mtime = None
    return records


def diff_records(got: dict, want: dict) -> str:
    """Readable difference between two manifests ('' when equal)."""
    a = manifest.render(got.values()).splitlines()
    b = manifest.render(want.values()).splitlines()
    if a == b:
        return ""
    import difflib
    return "\n".join(difflib.unified_diff(b, a, "expected", "got", lineterm="", n=0))


def test_gnu_cpio_extracts_what_we_wrote(tmp_path):
    exe = _need("cpio", "cpio")
    img = sample_image()
    raw = cpio.write(img, mtime=MTIME)
    out = tmp_path / "x"
    out.mkdir()
    r = subprocess.run([exe, "-idm", "--no-absolute-filenames", "--quiet"], input=raw, cwd=out,
                       capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    # GNU cpio sets a directory's time when it meets it, before writing its children: the
    # one thing it does not restore. Everything else must match.
    got = without_dir_mtimes(manifest.from_directory(str(out)))
    want = without_dir_mtimes(expected_records(img))
    assert not diff_records(got, want), diff_records(got, want)
    # the three names of libfoo are one inode on disk, its data written once
    st = os.stat(out / "zz/libfoo-elsewhere")
    assert st.st_nlink == 3 and st.st_ino == os.stat(out / "usr/lib/libfoo.so.1").st_ino


def test_gnu_cpio_lists_what_we_wrote():
    exe = _need("cpio", "cpio")
    img = sample_image()
    raw = cpio.write(img, mtime=MTIME)
    r = subprocess.run([exe, "-itv", "--quiet", "--numeric-uid-gid"], input=raw, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    listing = r.stdout.decode("utf-8", "surrogateescape")
    names = {m.name for m in cpio.read_archive(raw)[0]}
    assert listing.count("\n") == len(names)
    assert "lrwxrwxrwx   1 0        0" in listing and "bin/tool" in listing
    assert "-rwsr-xr-x" in listing and "drwxrwxrwt" in listing and "8,   1" in listing


def test_bsdtar_extracts_what_we_wrote(tmp_path):
    exe = _need("bsdtar", "libarchive-tools")
    img = sample_image()
    raw = cpio.write(img, mtime=MTIME)
    out = tmp_path / "x"
    out.mkdir()
    r = subprocess.run([exe, "-xpf", "-", "--numeric-owner"], input=raw, cwd=out, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    got = manifest.from_directory(str(out))
    assert not diff_records(got, expected_records(img)), diff_records(got, expected_records(img))


def make_tree_on_disk(root) -> None:
    """The sample tree, made on disk with real syscalls (for the other tools to archive)."""
    from mkinitramfs.image import materialize
    materialize(sample_image(), str(root))
    # materialize leaves its own times; give every name the archive's mtime, dirs last
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (MTIME, MTIME), follow_symlinks=False)
    os.utime(root, (MTIME, MTIME))


def archive_with(tool: str, root) -> bytes:
    names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=root, capture_output=True, check=True).stdout
    if tool == "cpio":
        argv = [_need("cpio", "cpio"), "-o", "-H", "newc", "--quiet"]
    else:
        argv = [_need("bsdtar", "libarchive-tools"), "-cf", "-", "--format", "newc", "-n", "-T", "-"]
    r = subprocess.run(argv, input=names, cwd=root, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


@pytest.mark.parametrize("tool", ["cpio", "bsdtar"])
def test_our_reader_reads_what_the_tool_wrote(tool, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree_on_disk(src)
    want = manifest.from_directory(str(src))
    raw = archive_with(tool, src)
    members = archive.members(raw)
    assert {"./" + m.name.removeprefix("./") for m in members} >= {"./usr/lib/libfoo.so.1", "./dev/sda1"}
    # the kernel's view of the tool's archive equals the tree it was made from
    got = manifest.from_tree(archive.unpack_model(raw))
    assert not diff_records(got, want), diff_records(got, want)
    # and `unpack` reproduces it on disk, hard links included
    out = tmp_path / "out"
    unpack(raw, str(out), same_owner=True)  # owners and device nodes too (as root)
    again = manifest.from_directory(str(out))
    assert not diff_records(again, want), diff_records(again, want)
    assert os.stat(out / "zz/libfoo-elsewhere").st_nlink == 3


def test_gnu_cpio_puts_hardlink_data_on_the_last_name_as_we_do(tmp_path):
    """The layout we copy: GNU cpio gives every name of an inode nlink=N, one ino, and the
    data to the last name only."""
    src = tmp_path / "src"
    src.mkdir()
    make_tree_on_disk(src)
    theirs = {m.name.removeprefix("./"): m for m in cpio.read_archive(archive_with("cpio", src))[0]}
    ours = {m.name: m for m in cpio.read_archive(cpio.write(sample_image(), mtime=MTIME))[0]}
    for members in (theirs, ours):
        group = [members[n] for n in ("usr/lib/libfoo-link", "usr/lib/libfoo.so.1", "zz/libfoo-elsewhere")]
        assert {m.nlink for m in group} == {3} and len({m.ino for m in group}) == 1
        in_archive_order = sorted(group, key=lambda m: m.offset)
        assert [len(m.data) for m in in_archive_order][:-1] == [0, 0]
        assert in_archive_order[-1].data == b"library bytes " * 300
