"""Host files and folders copied into an image as they are: `--include SRC:DST`, a hook's
`files`, and the key files a host-only crypttab names. Modes are kept, so a 0600 key stays
0600; such files are never stripped or rewritten.
"""
from __future__ import annotations

import errno
import os
import posixpath
import stat

from mkinitramfs import parts
from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.image import Image


class IncludeError(MkinitramfsError):
    """A host file or folder that cannot be copied into the image; the message names it."""


def parse_include(text: str) -> tuple[str, str]:
    """"SRC:DST" or "PATH" (same path in the image) -> (host path, image path)."""
    src, sep, dst = text.partition(":")
    if not sep:
        dst = src
    if not src or not dst:
        raise IncludeError(f"--include {text!r}: expected SRC:DST")
    if not dst.startswith("/"):
        raise IncludeError(f"--include {text!r}: the destination must be an absolute path in the image")
    return src, dst


def included_files(includes: list[str]) -> list[str]:
    """Image paths of the single files named by --include: asked for by name (a key file,
    say), unlike what a folder include sweeps in."""
    out = []
    for arg in includes:
        src, dst = parse_include(arg)
        if os.path.isfile(src):
            out.append(dst)
    return out


def add_include(image: Image, src: str, dst: str, *, part: str = parts.INCLUDE) -> None:
    """One host file (or a folder, recursively) at `dst`, keeping modes: a 0600 key stays 0600.

    Inside a folder, a symlink is followed only while it stays inside the folder; one that
    leaves it is packed as a symlink, its target never read (an include of /etc/foo must
    not bring /root/secret along through /etc/foo/key -> /root/secret, past the secret
    checks of what the folder holds); a link back to a folder being walked (a loop) is an
    error naming it."""
    try:
        st = os.stat(src)
    except OSError as e:
        raise IncludeError(f"--include {src}:{dst}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        top = os.path.realpath(src)
        _add_folder(image, src, dst, st, top, [top], part, f"--include {src}:{dst}")
        return
    if not stat.S_ISREG(st.st_mode):
        raise IncludeError(f"--include {src}:{dst}: not a regular file or folder")
    image.add_file(dst, source=src, mode=st.st_mode & 0o7777, part=part)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _add_folder(image: Image, host: str, dst: str, st: os.stat_result, top: str, walking: list[str], part: str,
                what: str) -> None:
    image.add_dir(dst, mode=st.st_mode & 0o7777, part=part)
    for entry in sorted(os.listdir(host)):
        path, into = os.path.join(host, entry), posixpath.join(dst, entry)
        lst = os.lstat(path)
        if stat.S_ISLNK(lst.st_mode):
            real = os.path.realpath(path)
            if not _inside(real, top):
                image.add_symlink(into, os.readlink(path), part=part)  # not followed out of the folder
                continue
            if real in walking:
                raise IncludeError(f"{what}: {path} -> {os.readlink(path)} is a symlink loop (it leads back to "
                                f"{real}, which holds it); remove it or include the folder without it")
            try:
                lst = os.stat(path)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise IncludeError(f"{what}: {path} is a symlink loop") from None
                image.add_symlink(into, os.readlink(path), part=part)  # dangling: kept as it is
                continue
        else:
            real = path
        if stat.S_ISDIR(lst.st_mode):
            real = os.path.realpath(real)
            _add_folder(image, path, into, lst, top, [*walking, real], part, what)
        elif stat.S_ISREG(lst.st_mode):
            image.add_file(into, source=path, mode=lst.st_mode & 0o7777, part=part)
        else:
            raise IncludeError(f"{what}: {path}: not a regular file, folder or symlink")
