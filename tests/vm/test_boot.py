"""The foundation: Debian's real kernels boot through pyinit into a real ext4 root.

Each test boots QEMU (TCG) with an image made by pyinit-mkinitramfs and checks, from the
real init's own report, that it runs as PID 1 on the right filesystem with a clean process
state, and from the console, which switch path pyinit took.
"""
from __future__ import annotations

import re

import pytest

from devtools.nullfs import RDINIT, append_nullfs_shim
from devtools.qemu import boot
from devtools.rootdisk import make_root_disk, read_report_from_disk
from mkinitramfs import archive

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]


def assert_handed_over(r, *, fstype="ext4", source="/dev/vda", readonly=True):
    assert not r.timed_out, r
    assert not r.panicked, r
    assert "Attempted to kill init" not in r.console, r
    rep = r.report
    assert rep is not None and rep.done, r
    assert rep.pid == 1, r
    root = rep.mount_at("/")
    assert root is not None, rep.mounts
    assert (root.fstype, root.source, root.readonly) == (fstype, source, readonly), root
    # /proc, /sys, /dev and /run were moved over by pyinit; the real init mounted nothing
    assert {m.mountpoint for m in rep.mountinfo()} >= {"/proc", "/sys", "/dev", "/run"}, rep.mounts
    assert rep.mounted_by_init == [], rep.mounted_by_init
    # nothing of the initramfs is reachable: no rootfs / tmpfs at / or /sysroot
    assert not any(m.mountpoint == "/sysroot" for m in rep.mountinfo()), rep.mounts
    # the real init's first look at itself: fds 0-2 on the console, clean signal state
    assert rep.inherited_fds == {0: "/dev/console", 1: "/dev/console", 2: "/dev/console"}, rep.fds
    assert rep.exec_blocked() == set() and rep.exec_ignored() == set(), rep.exec_status
    assert rep.cwd == "/" and rep.root == "/"
    return rep


def switch_line(console: str) -> str:
    m = re.search(r"pyinit: switched root with (\S+);", console)
    assert m, "no 'switched root' line on the console"
    return m.group(1)


@pytest.mark.parametrize("series, by", [("6.1", "UUID"), ("6.1", "LABEL"), ("6.12", "UUID"), ("6.12", "LABEL")])
def test_boot_by_uuid_and_label_takes_ms_move_before_7_0(series, by, kernels, pyinit_image, tmp_path, console_log):
    kernel = kernels[series]
    disk = make_root_disk(tmp_path / "root.img", label="pyinit-root")
    root = f"UUID={disk.uuid}" if by == "UUID" else "LABEL=pyinit-root"
    r = boot(kernel, pyinit_image(series), f"root={root}", disks=[disk.path], log=console_log)
    rep = assert_handed_over(r)
    assert rep.kernel == kernel.kver
    assert f"root={root}" in rep.cmdline_args
    # pivot_root on the rootfs is EINVAL before Linux 7.0: pyinit must say it took MS_MOVE
    assert switch_line(r.console) == "MS_MOVE", r
    # and it emptied the initramfs before moving the new root over it: every entry of the
    # image (and what pyinit made there) but the /sysroot mount point
    in_image = len(archive.members(pyinit_image(series).read_bytes()))
    emptied = re.search(r"pyinit: initramfs emptied: (\d+) entries deleted, (\d+) kept", r.console)
    assert emptied and int(emptied.group(1)) >= in_image - 1 and emptied.group(2) == "1", (in_image, r)
    if series == "6.12":
        # Debian's 6.12 ships .ko.xz; the builder decompressed them and they loaded
        assert re.search(r"pyinit: loaded (\d+) of \1 modules", r.console), r
    assert read_report_from_disk(disk.path) is not None


@pytest.mark.parametrize("series", ["6.1", "6.12"])
def test_pivot_root_path_on_the_nullfs_layout(series, kernels, pyinit_image, busybox_bin, tmp_path, console_log):
    """Linux 7.0's layout (the initramfs on a tmpfs over the rootfs), made by a shim on
    older kernels: pyinit's pivot_root(".", ".") then succeeds."""
    kernel = kernels[series]
    image = append_nullfs_shim(pyinit_image(series), tmp_path / "shim.img", busybox_bin)
    disk = make_root_disk(tmp_path / "root.img")
    # nullfs_rootfs / immutable_rootfs: words from the 7.0 patch history, accepted and ignored
    r = boot(kernel, image, f"rdinit={RDINIT} root=UUID={disk.uuid} nullfs_rootfs", disks=[disk.path],
             log=console_log)
    assert "NULLFS-SHIM: initramfs copied onto a tmpfs" in r.console, r  # the layout was really there
    assert_handed_over(r)
    assert switch_line(r.console) == "pivot_root", r


def test_rw_mounts_read_write(kernel_612, pyinit_image, tmp_path, console_log):
    disk = make_root_disk(tmp_path / "root.img")
    r = boot(kernel_612, pyinit_image("6.12"), f"root=/dev/vda rw", disks=[disk.path], log=console_log)
    assert_handed_over(r, readonly=False)


def test_init_args_and_environment_reach_the_real_init(kernel_612, pyinit_image, tmp_path, console_log):
    """Words the kernel does not know go to init as argv (no '=') and environment (with '=');
    pyinit passes them on unchanged, as the kernel would have."""
    disk = make_root_disk(tmp_path / "root.img")
    r = boot(kernel_612, pyinit_image("6.12"), f"root=/dev/vda PYINIT_TEST_ENV=hello -- single",
             disks=[disk.path], log=console_log)
    rep = assert_handed_over(r)
    assert rep.env.get("PYINIT_TEST_ENV") == "hello", rep.env
    assert rep.env.get("TERM") == "linux" and rep.env.get("HOME") == "/", rep.env
