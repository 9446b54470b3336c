"""The builder's errors: one base class, caught once.

Every error pyinit-mkinitramfs raises on purpose derives from `MkinitramfsError`, and its
message names the problem: the file, option, module, hook or image path, and what to do
about it when there is something to do. The command line (mkinitramfs/cli.py) catches the
base class in one place and prints "pyinit-mkinitramfs: error: MESSAGE".

Each module keeps its own subclass beside the code that raises it (hookpack.HookError,
elf.ElfError, image.ImageError...), so a caller can catch exactly the failure it expects;
`BuildError` lives here because several modules raise it.
"""
from __future__ import annotations


class MkinitramfsError(Exception):
    """pyinit-mkinitramfs cannot do what it was asked; the message says why."""


class BuildError(MkinitramfsError):
    """An image cannot be built as asked (build.py and the steps without an error class of
    their own: the atomic write, fsck checkers, dracut-install)."""
