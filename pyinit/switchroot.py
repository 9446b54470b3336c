"""Switching to the real root: pivot_root first, the MS_MOVE dance where / is the rootfs.

    chdir(newroot); pivot_root(".", "."); umount2(".", MNT_DETACH)
works whenever / is an ordinary mount (Linux 7.0+ puts the initramfs on a tmpfs over nullfs).
On older kernels / is the rootfs itself, which can never be unmounted, and pivot_root says
EINVAL. Then, like systemd and busybox's switch_root, we empty the initramfs to give its
memory back, move the new root over / and chroot into it.
"""
from __future__ import annotations

import _signal  # not `signal`: its enum import costs ~0.1 s at boot under TCG
import errno
import os
import stat

from pyinit import read_text
from pyinit import syscalls as sc
from pyinit.errors import SwitchRootError
from pyinit.mounts import API_MOUNTS, is_mountpoint
from pyinit.names import CONSOLE

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from pyinit.log import Logger

DEFAULT_INITS = ("/sbin/init", "/etc/init", "/bin/init", "/bin/sh")
_ROOTFS_TYPES = ("rootfs", "ramfs", "tmpfs")


def resolve_in_root(root: str, path: str, max_links: int = 40) -> str | None:
    """The host path of `path` as seen from inside `root`, following symlinks as if `root`
    were /, so an absolute link like /sbin/init -> /lib/systemd/systemd stays inside it.
    None when a component is missing or the links loop."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        host = os.path.join(root, *resolved, name)
        try:
            st = os.lstat(host)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(name)
    return os.path.join(root, *resolved)


def check_init(root: str, path: str) -> str | None:
    """None when `path` is a usable init inside root, else the reason it is not."""
    if not path.startswith("/"):
        return f"{path} is not an absolute path"
    host = resolve_in_root(root, path)
    if host is None:
        return f"{path} does not exist in the new root (or is a dangling symlink)"
    try:
        st = os.stat(host)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if not st.st_mode & 0o111:
        return f"{path} is not executable (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def choose_init(root: str, requested: str | None, log: Logger) -> str:
    """init= when usable, else the kernel's order. Raises SwitchRootError naming each reason."""
    reasons = []
    if requested:
        why = check_init(root, requested)
        if why is None:
            return requested
        log.error(f"init={requested} cannot be used: {why}; trying {', '.join(DEFAULT_INITS)}")
        reasons.append(why)
    for candidate in DEFAULT_INITS:
        why = check_init(root, candidate)
        if why is None:
            return candidate
        reasons.append(why)
    raise SwitchRootError("no usable init in the new root: " + "; ".join(reasons))


def root_fstype(mountinfo: str) -> str | None:
    """The filesystem type of / from the text of /proc/self/mountinfo (the last mount of /)."""
    fstype = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and fields[4] == "/" and " - " in line:
            fstype = line.split(" - ", 1)[1].split(" ", 1)[0]
    return fstype



def delete_tree_same_device(path: str, dev: int, log: Logger) -> tuple[int, int]:
    """Delete everything under `path` that lives on device `dev`, never crossing into another
    mount. Returns (entries deleted, entries kept)."""
    deleted = kept = 0
    try:
        it = list(os.scandir(path))
    except OSError:
        return 0, 1
    for entry in it:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            kept += 1
            continue
        if st.st_dev != dev:
            kept += 1  # a mount point (the new root, a leftover mount): never look inside
            continue
        if stat.S_ISDIR(st.st_mode):
            d, k = delete_tree_same_device(entry.path, dev, log)
            deleted += d
            kept += k
            if k == 0:
                try:
                    os.rmdir(entry.path)
                    deleted += 1
                except OSError:
                    kept += 1
            else:
                kept += 1
        else:
            try:
                os.unlink(entry.path)
                deleted += 1
            except OSError:
                kept += 1
    return deleted, kept


def move_api_mounts(newroot: str, log: Logger) -> None:
    for target, *_ in API_MOUNTS:
        if not is_mountpoint(target):
            continue
        dest = newroot + target
        if not os.path.isdir(dest):
            log.warning(f"the new root has no {target} directory; detaching {target} instead of moving it")
            _detach(target, log)
            continue
        try:
            # Moving takes every mount below along (e.g. mounts made under /run survive).
            sc.mount(target, dest, None, sc.MS_MOVE)
        except OSError as e:
            log.warning(f"cannot move {target} to {dest} ({e}); detaching it")
            _detach(target, log)


def _detach(target: str, log: Logger) -> None:
    try:
        sc.umount2(target, sc.MNT_DETACH)
    except OSError as e:
        log.warning(f"cannot detach {target}: {e}")


def switch_root(newroot: str, log: Logger) -> str:
    """Make `newroot` the root of this process. Returns the path taken: "pivot_root" or
    "MS_MOVE". Everything Python needs afterwards must be imported before this call, since
    the fallback deletes the initramfs."""
    newroot = os.path.abspath(newroot)
    if not is_mountpoint(newroot):
        raise SwitchRootError(f"{newroot} is not a mount point")
    old_root_type = root_fstype(read_text("/proc/self/mountinfo"))
    # Shared propagation makes the kernel refuse MS_MOVE and pivot_root: make it private.
    for path in ("/", newroot):
        try:
            sc.mount(None, path, None, sc.MS_REC | sc.MS_PRIVATE)
        except OSError as e:
            log.warning(f"cannot make {path} private: {e}")
    move_api_mounts(newroot, log)
    os.chdir(newroot)
    try:
        sc.pivot_root(".", ".")
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    else:
        # The old root is now stacked on top of "."; detach it so nothing can reach it.
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
        return "pivot_root"
    _ms_move_fallback(newroot, old_root_type, log)
    return "MS_MOVE"


def _ms_move_fallback(newroot: str, old_root_type: str | None, log: Logger) -> None:
    # Deleting the initramfs is only safe when it really is the initramfs: / must be the
    # kernel's ramfs/tmpfs rootfs, we must be PID 1, and /init must be a regular file. Any
    # doubt: keep the files (they cost memory, not correctness) and say so.
    reasons = []
    if old_root_type not in _ROOTFS_TYPES:
        reasons.append(f"/ is {old_root_type or 'of unknown type'}, not the initramfs rootfs")
    if os.getpid() != 1:
        reasons.append(f"we are PID {os.getpid()}, not 1")
    try:
        if not stat.S_ISREG(os.lstat("/init").st_mode):
            reasons.append("/init is not a regular file")
    except OSError:
        reasons.append("/init is missing")
    if reasons:
        log.warning("not deleting the old root's files: " + "; ".join(reasons))
    else:
        root_dev = os.lstat("/").st_dev
        deleted, kept = delete_tree_same_device("/", root_dev, log)
        log.info(f"initramfs emptied: {deleted} entries deleted, {kept} kept (mount points)")
    # "." is the new root; move it over / and step into it.
    sc.mount(".", "/", None, sc.MS_MOVE)
    sc.chroot(".")
    os.chdir("/")


def reset_process_state(console: str | None = CONSOLE) -> None:
    """Give the real init what the kernel would: default signal dispositions, an empty signal
    mask, and fds 0-2 on the console, nothing else open. console=None keeps fds 0-2 as they
    are (container mode: our stdio is the container's console)."""
    for signum in range(1, _signal.NSIG):
        if signum in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            _signal.signal(signum, _signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            # 32 and 33 belong to glibc's threads: Python refuses them, the kernel does not
            try:
                sc.default_signal_raw(signum)
            except OSError:
                pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    if console is None:
        for target in (0, 1, 2):
            os.set_inheritable(target, True)
        os.closerange(3, _max_fd())
        return
    try:
        fd = os.open(console, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        fd = os.open("/dev/null", os.O_RDWR)
    for target in (0, 1, 2):
        if fd != target:
            os.dup2(fd, target, inheritable=True)
        else:
            os.set_inheritable(fd, True)
    if fd > 2:
        os.close(fd)
    os.closerange(3, _max_fd())


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 1024
