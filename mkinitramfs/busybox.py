"""`--busybox`: Debian's static busybox as /bin/sh and its applets, so that rd.shell gives a
real shell in the rescue (without it pyinit offers its built-in Python console).

The binary goes to /usr/bin/busybox (/bin and /sbin are links to usr/bin in the image) with
its ELF closure (none for busybox-static); every applet the binary lists (`--list`) gets a
relative symlink /usr/bin/<applet> -> busybox, except where the image already has a file
(python3, a hook's own binary) and except `init` and `linuxrc`, which must never be taken
for the real init.
"""
from __future__ import annotations

import os
import subprocess

from mkinitramfs import elf, parts
from mkinitramfs.errors import BuildError
from mkinitramfs.image import Image

DEFAULT = "/bin/busybox"
SKIP = ("init", "linuxrc", "busybox")


class BusyboxError(BuildError):
    pass


def applets(path: str) -> list[str]:
    try:
        proc = subprocess.run([path, "--list"], check=False, capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise BusyboxError(f"--busybox {path}: cannot run it: {e.strerror}") from None
    names = sorted({line.strip() for line in proc.stdout.splitlines() if line.strip()})
    if proc.returncode != 0 or "sh" not in names:
        raise BusyboxError(f"--busybox {path}: not a busybox with a shell "
                           f"(`{path} --list` gave {len(names)} applets, no 'sh'); "
                           "install the Debian package busybox-static")
    return names


def add_busybox(image: Image, path: str = DEFAULT) -> list[str]:
    """Add busybox and its applet links; returns the applets linked."""
    if not os.path.isfile(path):
        raise BusyboxError(f"--busybox {path}: no such file (install the Debian package busybox-static)")
    names = applets(path)
    elf.add_elf_file(image, "/usr/bin/busybox", path, part=parts.BUSYBOX, mode=0o755)
    elf.add_closure(image, [path], part=parts.BUSYBOX)
    linked = []
    for name in names:
        if name in SKIP or "/" in name:
            continue
        dest = f"/usr/bin/{name}"
        if dest in image:
            continue
        image.add_symlink(dest, "busybox", part=parts.BUSYBOX)
        linked.append(name)
    return linked
