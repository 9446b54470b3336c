"""pyinit inside an image dracut builds (`dracut --add pyinit`, see dracut/99pyinit/).

dracut collects the kernel modules (its kernel-modules module, --drivers, --add-drivers,
host-only or not) and runs depmod; the pyinit dracut module calls

    pyinit-mkinitramfs dracut-install --initdir "$initdir" --kver "$kernel" [--hook ...]

which writes pyinit's own tree (interpreter, stdlib closure, pyinit, hooks with their
binaries) into dracut's staging folder and replaces /init. No /etc/pyinit/modules.load is
written: pyinit then loads every module of the image's /lib/modules/KVER/modules.dep,
dependencies first (pyinit.kmod.modules_from_dep), i.e. exactly what dracut collected.
`--print-modules` lists the kernel modules the hooks declare, for the dracut module's
installkernel() to hand to instmods.
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence

from mkinitramfs import build, hookpack, include, paths, safety
from mkinitramfs.errors import BuildError
from mkinitramfs.image import Image


def assemble(kver: str, *, hooks: Sequence[str] = (), includes: Sequence[str] = (), python: str | None = None) -> Image:
    """pyinit's tree as `build` assembles it, without the modules and their list (dracut's)."""
    opts = build.BuildOptions(output="", kver=kver, hooks=list(hooks), includes=list(includes))
    if python:
        opts.python = python
    # The hooks' kernel modules are dracut's to install (installkernel: instmods).
    decls = hookpack.load_hooks(opts.hooks)
    for d in decls:
        d.modules = []
    image = build.assemble(opts, decls).image
    image.entries.pop(paths.MODULES_LOAD, None)
    return image


def hook_modules(hooks: Sequence[str]) -> list[str]:
    """The kernel modules the hooks declare, for dracut's instmods."""
    return list(dict.fromkeys(m for d in hookpack.load_hooks(list(hooks)) for m in d.modules))


def write_tree(image: Image, root: str) -> int:
    """Merge the image into a staging folder that already holds dracut's tree: our files
    replace theirs (/init first of all), their directories and symlinked directories (/bin
    -> usr/bin) stay, device nodes that exist stay. Returns the number of files written."""
    written = 0
    for e in image.sorted_entries():
        dest = os.path.join(root, e.path.lstrip("/"))
        if e.kind == "dir":
            if not os.path.isdir(dest):  # follows symlinks: /lib -> usr/lib is a directory
                if os.path.lexists(dest):
                    os.unlink(dest)
                os.makedirs(dest, exist_ok=True)
                os.chmod(dest, e.mode)
        elif e.kind == "file":
            if os.path.islink(dest) or (os.path.lexists(dest) and not os.path.isfile(dest)):
                os.unlink(dest)
            with open(dest, "wb") as f:
                f.write(e.content())
            os.chmod(dest, e.mode)
            written += 1
        elif e.kind == "symlink":
            if os.path.islink(dest) and os.readlink(dest) == e.target:
                continue
            if os.path.isdir(dest):
                continue  # dracut made a real directory here (or a link to one): keep it
            if os.path.lexists(dest):
                os.unlink(dest)
            os.symlink(e.target, dest)
        elif e.kind in ("chardev", "blockdev") and not os.path.lexists(dest):
            os.mknod(dest, e.full_mode, os.makedev(*e.rdev))
    return written


def install(initdir: str, kver: str, *, hooks: Sequence[str] = (), includes: Sequence[str] = (),
            python: str | None = None, allow_secrets: Sequence[str] = (), allow_owners: Sequence[str] = ()) -> int:
    """pyinit's tree merged into dracut's staging folder, checked as `build` checks an image;
    returns the number of files written."""
    if not os.path.isdir(initdir):
        raise BuildError(f"--initdir {initdir} is not a directory")
    image = assemble(kver, hooks=hooks, includes=includes, python=python)
    for w in image.warnings:  # a library only for some CPUs, a file strip could not shrink
        print(f"pyinit-mkinitramfs: warning: {w}", file=sys.stderr)
    # The same refusal as `build`: dracut's image lands in /boot as readable as pyinit's.
    safety.check(image, allow_secrets=list(allow_secrets) + include.included_files(list(includes)),
                 allow_owners=list(allow_owners))
    init = os.path.join(initdir, "init")
    if os.path.lexists(init) and not stat.S_ISDIR(os.lstat(init).st_mode):
        os.unlink(init)  # 99base's init.sh, or the symlink to systemd
    return write_tree(image, initdir)
