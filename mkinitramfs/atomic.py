"""Writing an output file atomically: the image, its manifest, a UKI.

A temporary file in the same directory, fsync, rename: a failed build never leaves a
half-written image where a boot loader would find it, and the previous one stays in place.
"""
from __future__ import annotations

import os
import tempfile

from mkinitramfs.errors import BuildError


def write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` through a temporary file beside it, with `mode`.

    The folder may be writable by others (a build into /tmp, a shared ESP mount): the
    temporary file is made by tempfile.mkstemp (a random name, O_CREAT|O_EXCL|O_NOFOLLOW:
    never an existing file, never through a symlink someone planted), its mode is set on
    the open descriptor (fchmod: never on whatever the name points at later), and the name
    must still be that file when it is renamed into place."""
    directory = os.path.dirname(os.path.abspath(path))
    # ".NAME.tmpXXXXXXXX": the kernel postrm hook removes leftovers by that pattern
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp", dir=directory)
    st = os.fstat(fd)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        now = os.lstat(tmp)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise BuildError(f"{tmp}: replaced by something else while it was written; not installing it as {path}")
        os.replace(tmp, path)
    except BaseException:
        try:
            left = os.lstat(tmp)
            if (left.st_dev, left.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(tmp)  # ours: remove it; someone else's: leave it alone
        except OSError:
            pass
        raise
