import os

import pytest

from pyinit import switchroot

pytestmark = pytest.mark.unit


def test_resolve_in_root_keeps_absolute_links_inside(tmp_path):
    root = tmp_path
    (root / "lib/systemd").mkdir(parents=True)
    (root / "lib/systemd/systemd").write_text("#!/bin/sh\n")
    os.chmod(root / "lib/systemd/systemd", 0o755)
    (root / "sbin").mkdir()
    os.symlink("/lib/systemd/systemd", root / "sbin/init")
    assert switchroot.resolve_in_root(str(root), "/sbin/init") == str(root / "lib/systemd/systemd")
    assert switchroot.check_init(str(root), "/sbin/init") is None


def test_check_init_reasons(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "noexec").write_text("x")
    os.symlink("/nowhere", tmp_path / "dangling")
    assert "does not exist" in switchroot.check_init(str(tmp_path), "/missing")
    assert "is a directory" in switchroot.check_init(str(tmp_path), "/dir")
    assert "not executable" in switchroot.check_init(str(tmp_path), "/noexec")
    assert "does not exist" in switchroot.check_init(str(tmp_path), "/dangling")
    assert "absolute" in switchroot.check_init(str(tmp_path), "relative/init")


def test_symlink_loop_is_refused(tmp_path):
    os.symlink("/b", tmp_path / "a")
    os.symlink("/a", tmp_path / "b")
    assert switchroot.resolve_in_root(str(tmp_path), "/a") is None


def test_root_fstype_from_mountinfo():
    text = ("1 1 0:2 / / rw - rootfs rootfs rw\n"
            "20 1 0:20 / /proc rw - proc proc rw\n")
    assert switchroot.root_fstype(text) == "rootfs"
    text += "40 1 254:0 / / ro - ext4 /dev/vda ro\n"
    assert switchroot.root_fstype(text) == "ext4"
