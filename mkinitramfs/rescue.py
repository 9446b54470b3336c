"""The rescue console's lock, packed into the image: `build --rescue open|password|off`.

    open       today's behaviour and dracut's: a shell (or pyinit's Python console) for
               whoever sits at the console when the boot fails or rd.break asks;
    password   the root password first (systemd's sulogin): `--rescue-password-from FILE`
               takes root's hash from a shadow file (the build host's /etc/shadow, usually)
               into /etc/pyinit/rescue.shadow, mode 0600, and packs libcrypt.so.1, whose
               crypt(3) pyinit calls through cffi (pyinit/syscalls.py: Python's crypt module
               is deprecated and gone in 3.13);
    off        no session at all: the diagnosis, then the emergency action.

pyinit reads the policy from /etc/pyinit/rescue; rd.shell and rd.break cannot open what
the image locked (pyinit/rescue.py). Why `open` is the default: README.md, "The rescue
console".
"""
from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence

from mkinitramfs import elf, parts, paths
from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.image import Image

POLICIES = ("open", "password", "off")
DEFAULT = "open"
LIBCRYPT = "libcrypt.so.1"


class RescueError(MkinitramfsError):
    """--rescue cannot lock the rescue console as asked."""


def root_hash(shadow_text: str, where: str, user: str = "root") -> str:
    """root's password hash from the text of a shadow file. Pure. RescueError when there is
    no such entry or the account has no password to check (locked "!", "*", empty)."""
    for n, line in enumerate(shadow_text.splitlines(), 1):
        fields = line.split(":")
        if fields[0] != user:
            continue
        if len(fields) < 2:
            raise RescueError(f"{where}:{n}: the {user} entry has no password field")
        value = fields[1]
        if not value or value.startswith(("!", "*")):
            raise RescueError(f"{where}: {user} has no password to check ({value or 'empty'!r}: locked or none); "
                              f"set one (passwd {user}) or choose --rescue off")
        if not value.startswith("$") and len(value) != 13:
            raise RescueError(f"{where}: {user}'s password field is not a crypt(3) hash")
        return value
    raise RescueError(f"{where}: no {user} entry")


def find_libcrypt(dirs: Sequence[str] = ()) -> str:
    """This machine's libcrypt.so.1 (realpath), from `dirs` or the usual library folders."""
    machine = os.uname().machine
    dirs = dirs or (f"/lib/{machine}-linux-gnu", f"/usr/lib/{machine}-linux-gnu", "/lib64", "/usr/lib64",
                    "/lib", "/usr/lib")
    for d in dirs:
        path = os.path.join(d, LIBCRYPT)
        if os.path.exists(path):
            return os.path.realpath(path)
    raise RescueError(f"--rescue password needs {LIBCRYPT} (Debian's libcrypt1) and none is in {', '.join(dirs)}")


def add_rescue(image: Image, mode: str, password_from: str | None) -> None:
    if mode not in POLICIES:
        raise RescueError(f"--rescue {mode}: choose one of {', '.join(POLICIES)}")
    if password_from and mode != "password":
        raise RescueError(f"--rescue-password-from goes with --rescue password, not --rescue {mode}")
    image.add_file(paths.RESCUE_POLICY, data=f"{mode}\n".encode(), mode=0o644, part=parts.CONFIG)
    if mode != "password":
        return
    if not password_from:
        raise RescueError("--rescue password needs --rescue-password-from FILE (a shadow file, e.g. /etc/shadow)")
    try:
        with open(password_from) as f:
            text = f.read()
    except OSError as e:
        raise RescueError(f"--rescue-password-from {password_from}: {e.strerror}") from None
    image.add_file(paths.RESCUE_SHADOW, data=root_hash(text, password_from).encode() + b"\n", mode=0o600,
                   part=parts.CONFIG)
    real = find_libcrypt()
    closure = elf.add_closure(image, [real], part=parts.LIBRARIES)
    libdir = elf.default_libdir(closure.interpreter_source, elf.read_elf(real).abi())
    elf.add_elf_file(image, posixpath.join(libdir, LIBCRYPT), real, part=parts.LIBRARIES)
