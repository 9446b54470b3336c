"""The builder against hostile images (issue 12, items 6-7): ls, verify, diff and unpack
stop with a clear error past a limit instead of unpacking a bomb into memory; unpack as
root never chmods or chowns through a symlink, keeps set-id bits and device nodes only
with consent, and keeps the target 0700 until it is done."""
import os
import stat
import subprocess
import sys

import pytest

from mkinitramfs import archive, compress, cpio
from mkinitramfs.image import Image
from mkinitramfs.unpack import UnpackError, unpack
from tests.support.builder import REPO

pytestmark = pytest.mark.unit
BOMB_BYTES = 256 << 20


def bomb(method: str) -> bytes:
    """One 256 MiB file of zeros: a few KiB compressed."""
    img = Image()
    img.add_file("/zeros", data=bytes(BOMB_BYTES))
    return compress.compress(cpio.write(img), method, level=1 if method != "xz" else 0)


@pytest.fixture(scope="module", params=["zstd", "gzip", "xz"])
def bomb_file(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / f"bomb.{request.param}"
    path.write_bytes(bomb(request.param))
    return path


@pytest.mark.parametrize("command", ["ls", "verify", "unpack", "diff"])
def test_inspect_commands_stop_at_max_size_without_unpacking_the_bomb(command, bomb_file, tmp_path):
    args = {"ls": [str(bomb_file)], "verify": [str(bomb_file)], "unpack": [str(bomb_file), str(tmp_path / "o")],
            "diff": [str(bomb_file), str(bomb_file)]}[command]
    # VmHWM: this process's peak resident memory (ru_maxrss would include the test's own,
    # which the fork before the exec carried).
    code = ("import runpy, sys; sys.argv = ['pyinit-mkinitramfs'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('mkinitramfs', run_name='__main__')\n"
            "finally:\n    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "    print('MAXRSS', hwm, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code, command, *args, "--max-size", "16M"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == (2 if command == "diff" else 1), r.stderr
    assert f"unpacks to more than {16 << 20} bytes (the limit; --max-size raises it)" in r.stderr, r.stderr
    maxrss_kib = int(r.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    assert maxrss_kib < 200 * 1024, maxrss_kib  # the 256 MiB were never allocated
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")


def test_the_limit_counts_every_segment_and_the_default_is_4_gib():
    assert archive.DEFAULT_MAX_SIZE == 4 << 30
    assert [archive.parse_size(t) for t in ("4G", "512M", "100k", "1048576")] == [4 << 30, 512 << 20, 102400, 1 << 20]
    img = Image()
    img.add_file("/a", data=bytes(600 << 10))
    one = compress.compress(cpio.write(img), "zstd")
    archive.read_image(one, max_size=1 << 20)
    with pytest.raises(compress.LimitExceeded):
        archive.read_image(one + one, max_size=1 << 20)  # each under the limit, both over it
    with pytest.raises(compress.LimitExceeded):
        archive.read_image(cpio.write(img) + cpio.write(img), max_size=1 << 20)  # uncompressed too


def _image(**extra) -> bytes:
    img = Image()
    img.add_file("/bin/su", data=b"#!/bin/sh\n", mode=0o4755)
    img.add_file("/bin/wall", data=b"#!/bin/sh\n", mode=0o2755)
    img.add_node("/dev/sda", "blockdev", 8, 0, 0o666)
    img.add_dir("/tmp", mode=0o1777)
    img.add_symlink("/etc/link", "../bin/su")
    return cpio.write(img)


def test_unpack_drops_set_id_bits_and_device_nodes_without_consent(tmp_path):
    warnings = []
    unpack(_image(), str(tmp_path / "o"), warn=warnings.append)
    o = tmp_path / "o"
    assert stat.S_IMODE(os.stat(o / "bin/su").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(o / "bin/wall").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(o / "tmp").st_mode) == 0o1777  # sticky is harmless
    assert not os.path.lexists(o / "dev/sda")
    assert any("dev/sda: a blockdev 8,0: skipped (--same-owner" in w for w in warnings), warnings


def test_unpack_with_consent_restores_them(tmp_path):
    assert os.geteuid() == 0, "the unit tier runs as root (see README)"
    unpack(_image(), str(tmp_path / "o"), same_owner=True)
    o = tmp_path / "o"
    assert stat.S_IMODE(os.stat(o / "bin/su").st_mode) == 0o4755
    assert stat.S_ISBLK(os.lstat(o / "dev/sda").st_mode) and os.lstat(o / "dev/sda").st_rdev == os.makedev(8, 0)


def test_unpack_never_changes_metadata_through_a_symlink(tmp_path, monkeypatch):
    """Every chmod/chown/utime is on a descriptor or with follow_symlinks=False: a name
    swapped for a symlink (to /etc/shadow) between its creation and its chmod cannot make
    root change the link's target."""
    calls = []
    for name in ("chmod", "chown", "utime"):
        real = getattr(os, name)

        def spy(path, *a, _name=name, _real=real, **k):
            calls.append((_name, path, k.get("follow_symlinks", True)))
            return _real(path, *a, **k)
        monkeypatch.setattr(os, name, spy)
    unpack(_image(), str(tmp_path / "o"), same_owner=True)
    following = [c for c in calls if not isinstance(c[1], int) and c[2]]
    assert calls and not following, following


def test_unpack_keeps_the_target_0700_until_done(tmp_path, monkeypatch):
    seen = []
    real = os.symlink

    def watch(*a, **k):
        seen.append(stat.S_IMODE(os.stat(tmp_path / "o").st_mode))
        return real(*a, **k)
    monkeypatch.setattr(os, "symlink", watch)
    monkeypatch.setattr(os, "umask", os.umask)
    old = os.umask(0)  # a permissive umask must not open it either
    try:
        unpack(_image(), str(tmp_path / "o"))
    finally:
        os.umask(old)
    assert seen == [0o700]
    assert stat.S_IMODE(os.stat(tmp_path / "o").st_mode) == 0o755  # then the image's "/"


def test_unpack_refuses_a_target_someone_else_owns(tmp_path):
    target = tmp_path / "shared"
    target.mkdir()
    os.chown(target, 12345, 12345)
    with pytest.raises(UnpackError, match="owned by uid 12345, not by you"):
        unpack(_image(), str(target))
