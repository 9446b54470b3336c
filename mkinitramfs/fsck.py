"""fsck.TYPE in an image: this machine's checker for a filesystem type, with its shared
libraries, as /usr/bin/fsck.TYPE; pyinit runs it before it mounts a root of that type
(pyinit/fsck.py)."""
from __future__ import annotations

import os

from mkinitramfs import elf, parts
from mkinitramfs.errors import BuildError
from mkinitramfs.image import Image

CHECKER_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def find_checker(fstype: str, elf_only: bool = False) -> str | None:
    """This machine's fsck.TYPE, or None; with `elf_only`, None for a script (fsck.xfs and
    fsck.btrfs are shell scripts that do nothing: not worth packing unasked)."""
    for d in CHECKER_DIRS:
        path = os.path.join(d, f"fsck.{fstype}")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            if elf_only and not elf.is_elf_file(path):
                return None
            return path
    return None


def add_checker(image: Image, fstype: str) -> None:
    """fsck.<type> with its shared libraries; BuildError when this machine has none."""
    path = find_checker(fstype)
    if path is None:
        raise BuildError(f"--fsck {fstype}: no fsck.{fstype} in {', '.join(CHECKER_DIRS)} on this machine")
    real = os.path.realpath(path)
    try:
        elf.add_closure(image, [real], part=parts.FSCK)
        elf.add_elf_file(image, f"/usr/bin/fsck.{fstype}", real, part=parts.FSCK, mode=0o755)
    except elf.ElfError as e:
        raise BuildError(f"fsck.{fstype} ({real}): {e}") from None
    if "/etc/mtab" not in image:
        image.add_symlink("/etc/mtab", "../proc/self/mounts", part=parts.FSCK)  # e2fsck asks what is mounted
