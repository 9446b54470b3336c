"""Where the files shipped with pyinit are, for a source checkout and for an install.

The repository keeps them as top-level folders beside the packages (users and the docs know
them there):

    hooks/            the hooks --hook NAME finds by name
    kernel/           /etc/kernel/postinst.d and postrm.d hooks, the kernel-install plugin,
                      update-initramfs
    dracut/           the dracut module 99pyinit
    initramfs-tools/  the initramfs-tools hook

A wheel (or the Debian package, which is built from one) carries them as package data in
mkinitramfs/_shipped/<folder>; setup.py copies them there and reads FOLDERS and
INSTALLED_DIR from this file. In a checkout (and an editable install, whose mkinitramfs/ is
the checkout's) they are found beside mkinitramfs/. This module is the one place that knows
both layouts:

    python3 -m mkinitramfs.shipped dracut      # prints the folder, e.g. for a symlink
"""
from __future__ import annotations

import os
import sys

FOLDERS = ("hooks", "kernel", "dracut", "initramfs-tools")
INSTALLED_DIR = "_shipped"  # inside the mkinitramfs package of an install

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def path(folder: str, package_dir: str = _PACKAGE) -> str:
    """The shipped folder `folder` (one of FOLDERS) of this install or checkout: the package
    data of an install when it is there, else the checkout's folder beside the package."""
    if folder not in FOLDERS:
        raise ValueError(f"{folder!r} is not a shipped folder; one of {', '.join(FOLDERS)}")
    installed = os.path.join(package_dir, INSTALLED_DIR, folder)
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(package_dir), folder)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in FOLDERS:
        print(f"usage: python3 -m mkinitramfs.shipped {'|'.join(FOLDERS)}", file=sys.stderr)
        return 2
    found = path(argv[0])
    if not os.path.isdir(found):
        print(f"mkinitramfs.shipped: {found} does not exist (an incomplete install?)", file=sys.stderr)
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
