"""What the VM tier boots, and what a good boot looks like from outside the guest.

The verdict is read from the real init's own report (devtools.qemu.boot's `report`: its
mountinfo, fds, signal state, cwd and root) and from the console, never from pyinit's word.
"""
from __future__ import annotations

import re

from devtools.kernels import SERIES

# Every kernel series the VM tier boots ("6.1", "6.12", "7.x"), in the order of
# devtools.kernels.SERIES, the one list of them: a test that matters per kernel is
# parametrised with @pytest.mark.parametrize("series", KERNEL_SERIES).
KERNEL_SERIES = tuple(SERIES)

# the boot record pyinit leaves for the real init
BOOT_JSON = "/run/pyinit/boot.json"
# Linux 7.0+: the initramfs is a tmpfs over nullfs, and the kernel says so on the console
NULLFS = "VFS: Finished mounting rootfs on nullfs"


def assert_handed_over(r, *, fstype="ext4", source="/dev/vda", readonly=True):
    """The boot `r` reached the real init as PID 1 on the expected root, with nothing of the
    initramfs left and the process state the kernel would have given it; returns its report."""
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
    """The switch path pyinit says it took: "pivot_root" or "MS_MOVE"."""
    m = re.search(r"pyinit: switched root with (\S+);", console)
    assert m, "no 'switched root' line on the console"
    return m.group(1)
