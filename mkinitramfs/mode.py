"""Which kernel modules an image carries: the build mode, and the one rule for the default.

    --modules A,B alone   explicit: exactly those (and what they depend on)
    --host-only           the drivers and filesystem of this machine's root, plus --modules
    --generic             every storage, bus and filesystem driver, plus --modules
    none of them          host-only when the build runs on the machine it is for and sees
                          its root; generic otherwise

"Otherwise" is the image builders' case. mmdebstrap, debootstrap, debian-installer and mkosi
install the kernel inside a chroot or a container, and the kernel's postinst hook builds the
initramfs there. The disks the build could see there belong to the build host, not to the
machine the image is for, so a host-only image would carry the wrong drivers (or none) and
not boot; a generic one boots anywhere. The build says which mode it chose and why.

A chroot or container is recognised by facts, not guesses:
  * / is not PID 1's root (stat of / and /proc/1/root differ: the test of
    systemd-detect-virt --chroot and linux-base's linux-check-removal);
  * the filesystem mounted at / is not this tree: /proc/self/mountinfo lists no mount at /
    (a chroot into a folder, as mmdebstrap's and debootstrap's targets: the kernel hides
    the mounts outside the chroot), or the mount seen at / has a folder of its filesystem
    as its root (a bind-mounted folder, a container over a directory), not the whole
    filesystem (a btrfs subvolume mounted with subvol= is a whole tree);
  * a container manager said so: /run/systemd/container (written by systemd inside
    nspawn, podman and LXC containers) or container= in PID 1's environment (the
    convention of the same managers; linux-check-removal reads both).
/.dockerenv is not used: it is a file in an image, which outlives its container (a VM made
from a Docker image keeps it). A Docker container's root is an overlay, which host-only
cannot use anyway, so the default is generic there all the same.

An explicit --host-only is honoured where it can be right: in a chroot whose / is a whole
mounted filesystem (a rescue chroot into the installed system, debian-installer's /target)
it packs the drivers of that disk, and says so. Where this tree is a folder of another
filesystem, it stops with an error naming what it found.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from mkinitramfs import hostonly
from mkinitramfs.errors import MkinitramfsError

MODES = ("explicit", "host-only", "generic")


class ModeError(MkinitramfsError):
    """The build mode options contradict each other, or --host-only cannot work here."""


def tree_is_not_its_filesystem(mountinfo: str) -> str | None:
    """Why the tree at / is only a folder of the filesystem mounted there, or None when it
    is the whole filesystem (or a btrfs subvolume mounted as one)."""
    found = hostonly.root_mount(mountinfo)
    if found is None:
        # The kernel lists only the mounts reachable from this process's root: in a chroot
        # into a folder (not a mount point), the filesystem holding it is mounted outside.
        return "no filesystem is mounted at /: this tree is a folder of one mounted elsewhere"
    _, inner, fstype, source, options = found
    if inner == "/":
        return None
    if fstype == "btrfs" and f"subvol={inner}" in options.split(","):
        return None
    return f"/ is the folder {inner} of the {fstype} filesystem on {source}, not a filesystem of its own"


def container_said(run: str = "/run", proc: str = "/proc") -> str | None:
    """The container manager's word, when it gave one."""
    try:
        with open(os.path.join(run, "systemd", "container")) as f:
            return f"a container ({f.read().strip() or 'unnamed'}, from {run}/systemd/container)"
    except OSError:
        pass
    try:
        with open(os.path.join(proc, "1", "environ"), "rb") as f:
            environ = f.read(65536)  # bounded: it is someone else's memory
    except OSError:
        return None  # unreadable (another user namespace, or no /proc): nothing said
    for item in environ.split(b"\0"):
        if item.startswith(b"container="):
            return f"a container (container={item[10:].decode(errors='replace')} in PID 1's environment)"
    return None


def confinement(root: str = "/", proc: str = "/proc", run: str = "/run") -> str | None:
    """A sentence saying why this build runs in a chroot or a container, or None."""
    try:
        mine, pid1 = os.stat(root), os.stat(os.path.join(proc, "1", "root"))
        if (mine.st_dev, mine.st_ino) != (pid1.st_dev, pid1.st_ino):
            return "a chroot (/ is not PID 1's root)"
    except OSError:
        pass  # /proc/1/root unreadable (no /proc, or PID 1 is not ours to look at): the next tests
    try:
        with open(os.path.join(proc, "self", "mountinfo")) as f:
            why = tree_is_not_its_filesystem(f.read())
    except OSError:
        why = f"{proc} is not mounted"
    if why:
        return f"a chroot or container ({why})"
    return container_said(run, proc)


def choose(*, host_only: bool, generic: bool, modules: list[str],
           confined: Callable[[], str | None] = confinement,
           tree_problem: Callable[[], str | None] | None = None,
           root_visible: Callable[[], str | None] | None = None) -> tuple[str, str]:
    """(mode, why): the build mode for these options, with the reason when the rule chose it
    ("" for an explicit choice). `root_visible` returns None when host-only can see this
    machine's root, else why not; `tree_problem` says why / is not a filesystem of its own."""
    if host_only and generic:
        raise ModeError("--host-only and --generic exclude each other")
    if generic:
        return "generic", ""
    if host_only:
        where = confined()
        if where is None:
            return "host-only", ""
        problem = (tree_problem or _tree_problem)()
        if problem:
            detail = "" if problem in where else f" ({problem})"
            raise ModeError(f"--host-only cannot work here: this build runs in {where}, so the disks it "
                            f"sees are not the target's{detail}; use --generic, or leave the mode out "
                            "for the default rule")
        return "host-only", (f"as asked, in {where}: the image carries the drivers of the disk mounted at / "
                             "here")
    if any(m for arg in modules for m in arg.split(",")):
        return "explicit", ""
    where = confined()
    if where is not None:
        return "generic", (f"generic image: this build runs in {where}, where the disks are not the target "
                           "machine's; rebuilt on the machine itself (update-initramfs -u, or the kernel's "
                           "dpkg-reconfigure), the image becomes host-only and smaller")
    problem = (root_visible or _root_visible)()
    if problem is not None:
        return "generic", f"generic image: this machine's root cannot be followed to its disk ({problem})"
    return "host-only", "host-only image: built on the machine it is for, whose root it can see"


def _tree_problem() -> str | None:
    try:
        with open("/proc/self/mountinfo") as f:
            return tree_is_not_its_filesystem(f.read())
    except OSError:
        return "/proc is not mounted"


def _root_visible() -> str | None:
    try:
        hostonly.detect()
    except hostonly.HostOnlyError as e:
        return str(e)
    return None
