"""update-initramfs for systems whose initramfs generator is pyinit.

Debian's packages call initramfs-tools' command: lvm2, mdadm, cryptsetup, e2fsprogs and
others run `update-initramfs -u` (or `dpkg-trigger update-initramfs`) when what the early
boot needs has changed. The pyinit package installs /usr/sbin/update-initramfs (the shim
kernel/update-initramfs), which runs this with initramfs-tools' command line and meaning
(initramfs-tools 0.142 in Debian 12, 0.148 in Debian 13):

    update-initramfs {-c|-d|-u} [-k VERSION|all] [-b DIR] [-v] [-t]

  -c   create the image of -k VERSION (required); with -k all, of every installed kernel
  -u   update the image of -k VERSION; without -k, of the newest installed kernel that has
       one in the boot folder (else the one /initrd.img or /boot/initrd.img links to, else
       the running kernel's when it has one; else nothing to do); -k all: of every
       installed kernel that has one
  -d   delete the image of -k VERSION (and its .bak); -k all: of every kernel that has one
  -b   the boot folder (default /boot)
  -v   verbose: which versions, and the builder's size table
  -t   accepted and ignored, as initramfs-tools 0.142 does

"Installed kernels" are those `linux-version list` names (linux-base: a /boot/vmlinuz-*),
sorted by `linux-version sort`. Images are /boot/initrd.img-VERSION, built by
`pyinit-mkinitramfs build --kver VERSION -o IMAGE` with the settings of
/etc/pyinit/mkinitramfs.toml and the default mode rule (mkinitramfs/mode.py: host-only on the
machine, generic in a chroot), written atomically and checked before they replace the old
one. After each new image, the hooks in /etc/initramfs/post-update.d run with the version
and the image (flash-kernel and systemd-boot copy it from there), as initramfs-tools runs them.

Inside a maintainer script (DPKG_MAINTSCRIPT_PACKAGE set) a lone `-u` only activates the
dpkg trigger "update-initramfs" and returns; the pyinit package is interested in it, and its
postinst runs `update-initramfs -u` once, when dpkg processes the trigger, after the packages
of the run are configured. A read-only /boot is left alone with a warning (not in a chroot).
"""
from __future__ import annotations

import getopt
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mkinitramfs import cli, mode
from mkinitramfs.errors import MkinitramfsError

PROG = "update-initramfs"
BOOTDIR = "/boot"
POST_UPDATE_DIR = "/etc/initramfs/post-update.d"
TRIGGER = "update-initramfs"
USAGE = """Usage: update-initramfs {-c|-d|-u} [-k version] [-v] [-b directory]

Options:
 -k version	Specify kernel version or 'all'
 -c		Create a new initramfs
 -u		Update an existing initramfs
 -d		Remove an existing initramfs
 -b directory	Set alternate boot directory
 -v		Be verbose

pyinit's update-initramfs: images are built by pyinit-mkinitramfs
(settings: /etc/pyinit/mkinitramfs.toml).
"""


class UsageError(MkinitramfsError):
    """update-initramfs was called with options initramfs-tools would refuse."""


@dataclass
class Request:
    mode: str  # "c", "u" or "d"
    version: str | None = None  # a version, "all", or None
    bootdir: str = BOOTDIR
    verbose: bool = False


def parse(argv: list[str]) -> Request | None:
    """The command line -> Request; None for -h. UsageError for anything else wrong."""
    try:
        opts, rest = getopt.gnu_getopt(argv, "k:cudvtb:h?", ["help"])
    except getopt.GetoptError as e:
        raise UsageError(str(e)) from None
    req = Request(mode="")
    for opt, value in opts:
        if opt == "-k":
            req.version = value
        elif opt in ("-c", "-u", "-d"):
            req.mode = opt[1]  # the last one wins, as in initramfs-tools
        elif opt == "-v":
            req.verbose = True
        elif opt == "-b":
            req.bootdir = value
        elif opt in ("-h", "-?", "--help"):
            return None
        # -t: accepted for compatibility, ignored
    if rest:
        raise UsageError(f"Extra argument '{rest[0]}'")
    if not req.mode:
        raise UsageError("You must specify at least one of -c, -u, or -d.")
    return req


def defers(argv: list[str], environ: Mapping[str, str]) -> bool:
    """initramfs-tools' rule: inside a maintainer script, a lone -u goes through the trigger."""
    return bool(environ.get("DPKG_MAINTSCRIPT_PACKAGE")) and argv == ["-u"]


def image_path(bootdir: str, version: str) -> str:
    return os.path.join(bootdir, f"initrd.img-{version}")


def versions_for(req: Request, installed: list[str], has_image: Callable[[str], bool], linked: str | None,
                 running: str) -> list[str]:
    """The kernel versions to act on. `installed` is sorted newest first; `has_image(v)` says
    whether the boot folder holds v's image; `linked` is the version /initrd.img points at."""
    with_image = [v for v in installed if has_image(v)]
    if req.version == "all":
        return list(installed) if req.mode == "c" else with_image
    if req.version:
        return [req.version]
    if req.mode in ("c", "d"):
        raise UsageError(f"{'Create' if req.mode == 'c' else 'Delete'} mode requires a version argument")
    # -u without -k: the newest kernel with an image, else the linked one, else the running one
    if with_image:
        return with_image[:1]
    if linked:
        return [linked]
    if has_image(running):
        return [running]
    return []


# ---------------------------------------------------------------------------- side effects

def _linux_version(*args: str, stdin: str | None = None) -> list[str] | None:
    exe = shutil.which("linux-version") or ("/usr/bin/linux-version" if os.path.exists("/usr/bin/linux-version")
                                            else None)
    if exe is None:
        return None
    r = subprocess.run([exe, *args], check=False, input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


def _natural(version: str) -> list[tuple[int, int, str]]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p]


def installed_versions(bootdir: str = BOOTDIR) -> list[str]:
    """Installed kernels, newest first: linux-base's `linux-version`, else /boot/vmlinuz-*."""
    listed = _linux_version("list")
    if listed is None:
        try:
            names = os.listdir(bootdir)
        except OSError:
            names = []
        listed = [n.split("-", 1)[1] for n in names if re.match(r"vmlinu[xz]-.", n)]
    ordered = _linux_version("sort", "--reverse", stdin="".join(v + "\n" for v in listed)) if listed else []
    if ordered is None or sorted(ordered) != sorted(listed):
        ordered = sorted(listed, key=_natural, reverse=True)
    return ordered


def linked_version() -> str | None:
    for link in ("/boot/initrd.img", "/initrd.img"):
        if os.path.islink(link) and os.path.exists(link):
            name = os.path.basename(os.readlink(link))
            if name.startswith("initrd.img-"):
                return name[len("initrd.img-"):]
    return None


def in_chroot() -> bool:
    return mode.confinement() is not None


def boot_is_readonly(bootdir: str) -> bool:
    """/boot mounted read-only (initramfs-tools leaves it alone; not checked in a chroot)."""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[1] == os.path.abspath(bootdir) and "ro" in parts[3].split(","):
                    return True
    except OSError:
        pass
    return False


def build(version: str, bootdir: str, verbose: bool) -> int:
    target = image_path(bootdir, version)
    print(f"{PROG}: Generating {target}", flush=True)
    argv = ["build", "--kver", version, "-o", target]
    if not verbose:
        argv.append("--quiet")
    code = cli.main(argv)  # the build command as `pyinit-mkinitramfs build` runs it
    if code != 0:
        print(f"{PROG}: failed for {target} with {code}.", file=sys.stderr)
    return code


def post_update(version: str, image: str) -> int:
    if not os.path.isdir(POST_UPDATE_DIR):
        return 0
    # Debian's run-parts, with the arguments initramfs-tools gives these hooks
    return subprocess.run(["run-parts", f"--arg={version}", f"--arg={image}", POST_UPDATE_DIR], check=False).returncode


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if defers(argv, os.environ if environ is None else environ):
        r = subprocess.run(["dpkg-trigger", "--no-await", TRIGGER], check=False, capture_output=True, text=True)
        if r.returncode == 0:
            print(f"{PROG}: deferring update (trigger activated)")
            return 0
    try:
        req = parse(argv)
        if req is None:
            print(USAGE)
            return 0
        if not os.path.isdir(req.bootdir):
            print(f"E: {req.bootdir} is not a directory.", file=sys.stderr)
            return 1
        versions = versions_for(req, installed_versions(req.bootdir),
                                lambda v: os.path.exists(image_path(req.bootdir, v)),
                                linked_version(), os.uname().release)
    except UsageError as e:
        print(f"{e}\n\n{USAGE}", file=sys.stderr)
        return 2
    if req.verbose:
        print(f"{PROG}: versions: {' '.join(versions) or 'none'}")
    if not versions:
        if req.verbose:
            print("Nothing to do, exiting.")
        return 0
    for version in versions:
        image = image_path(req.bootdir, version)
        if req.mode == "d":
            print(f"{PROG}: Deleting {image}")
            for path in (image, image + ".bak"):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            continue
        if req.mode == "u" and boot_is_readonly(req.bootdir) and not in_chroot():
            print(f"W: {req.bootdir} is ro mounted.\nW: {PROG}: Not updating {image}", file=sys.stderr)
            return 0
        code = build(version, req.bootdir, req.verbose)
        if code != 0:
            return code
        code = post_update(version, image)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
