"""The foundation: Debian's real kernels boot through pyinit into a real ext4 root.

Each test boots QEMU (TCG) with an image made by pyinit-mkinitramfs and checks, from the
real init's own report, that it runs as PID 1 on the right filesystem with a clean process
state, and from the console and boot.json, which switch path pyinit took: pivot_root on
Linux 7.x (the initramfs is a tmpfs over nullfs), MS_MOVE on 6.1 and 6.12.
"""
from __future__ import annotations

import json
import re

import pytest

from devtools.nullfs import RDINIT, append_nullfs_shim
from devtools.qemu import boot
from devtools.rootdisk import make_root_disk, read_file_from_disk, read_report_from_disk
from mkinitramfs import archive
from tests.support.boots import BOOT_JSON, KERNEL_SERIES, NULLFS, assert_handed_over, switch_line

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]


@pytest.mark.parametrize("by", ["UUID", "LABEL"])
@pytest.mark.parametrize("series", KERNEL_SERIES)
def test_boot_by_uuid_and_label_and_the_switch_path(series, by, kernels, pyinit_image, tmp_path, console_log):
    """Every kernel: the root by UUID= and LABEL=, the real init's first look (fds, signal
    masks, cwd and root, and its environment exactly as the kernel gives it), and the switch
    path. On 7.x pyinit must take pivot_root and detach the old root; before 7.0 pivot_root
    on the rootfs is EINVAL and pyinit must say it emptied the initramfs and took MS_MOVE.
    The LABEL boots also carry words the kernel passes to init (argv, environment)."""
    kernel = kernels[series]
    disk = make_root_disk(tmp_path / "root.img", label="pyinit-root",
                          extra_files={"etc/realinit-save": BOOT_JSON + "\n"})
    root = f"UUID={disk.uuid}" if by == "UUID" else "LABEL=pyinit-root"
    for_init = " PYINIT_TEST_ENV=hello -- single" if by == "LABEL" else ""
    r = boot(kernel, pyinit_image(series), f"root={root}{for_init}", disks=[disk.path], log=console_log)
    rep = assert_handed_over(r)
    assert rep.kernel == kernel.kver
    assert f"root={root}" in rep.cmdline_args
    # the kernel's init environment is HOME=/ and TERM=linux plus the words with '=' it does
    # not know; pyinit hands exactly that on, and the words without '=' as argv
    env = {"HOME": "/", "TERM": "linux", **({"PYINIT_TEST_ENV": "hello"} if for_init else {})}
    assert rep.env == env, rep.env
    # argv: busybox runs the script as "/bin/busybox sh /sbin/init ARGS"; ARGS are every word
    # after "--" (the harness's panic=-1 comes after "single")
    init_argv = next(args for pid, _, _, _, args in rep.processes() if pid == 1).split()
    after_dashes = rep.cmdline.split(" -- ", 1)[1].split() if for_init else []
    assert init_argv[:3] == ["/bin/busybox", "sh", "/sbin/init"] and init_argv[3:] == after_dashes, init_argv
    assert ("single" in after_dashes) == bool(for_init)
    saved = read_file_from_disk(disk.path, "/realinit-saved" + BOOT_JSON)
    assert saved is not None, "the real init found no " + BOOT_JSON
    recorded = json.loads(saved)["switch"]
    root_mount = rep.mount_at("/")
    if kernel.nullfs_root:
        assert NULLFS in r.console, r  # the 7.x layout was really there
        assert switch_line(r.console) == recorded == "pivot_root", (recorded, r)
        # the old root was detached, not emptied and stepped over: the new root sits right
        # on the kernel's nullfs (the namespace's first mount), with no initramfs in between
        assert "initramfs emptied" not in r.console, r
        assert root_mount.parent_id == 1, rep.mounts
    else:
        assert NULLFS not in r.console, r
        # pivot_root on the rootfs is EINVAL before Linux 7.0: pyinit must say it took MS_MOVE
        assert switch_line(r.console) == recorded == "MS_MOVE", (recorded, r)
        # and it emptied the initramfs before moving the new root over it: every entry of
        # the image (and what pyinit made there) but the /sysroot mount point
        in_image = len(archive.members(pyinit_image(series).read_bytes()))
        emptied = re.search(r"pyinit: initramfs emptied: (\d+) entries deleted, (\d+) kept", r.console)
        assert emptied and int(emptied.group(1)) >= in_image - 1 and emptied.group(2) == "1", (in_image, r)
    if kernel.module_ext != ".ko":
        # 6.12 and 7.x ship .ko.xz; the builder decompressed them and they loaded
        assert re.search(r"pyinit: loaded (\d+) of \1 modules", r.console), r
    assert read_report_from_disk(disk.path) is not None


@pytest.mark.parametrize("series", ["6.12"])
def test_pivot_root_path_on_the_nullfs_layout(series, kernels, pyinit_image, busybox_bin, tmp_path, console_log):
    """Linux 7.0's layout simulated on an older kernel: a shim copies the initramfs onto a
    tmpfs over the rootfs, and pyinit's pivot_root(".", ".") then succeeds. The real layout is
    booted on 7.x above; this keeps the pivot_root path tested on a 6.x kernel (one is enough:
    the shim, not the kernel, makes the layout)."""
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
    r = boot(kernel_612, pyinit_image("6.12"), "root=/dev/vda rw", disks=[disk.path], log=console_log)
    assert_handed_over(r, readonly=False)
