"""Checks that stop a build packing what nobody asked for.

An initramfs sits in /boot, often readable by everyone and copied around (backups, ESPs):
shadow files and private keys must not end up in one by accident (a hook that copies /etc,
an --include of a folder). Entries must be owned by root unless asked: a file owned by a
user in the early userspace is a file that user could have swapped.

Secrets are recognised by path (/etc/shadow, /etc/gshadow and their backups, SSH host and
user keys, GnuPG's private key folders) and by content (a PEM, OpenSSH or PGP armored
private-key block: the BEGIN line followed by base64, so a library that merely contains
the header text, like libcrypto or libgpgme, is fine; GnuPG's own private-key files).
The same check runs for `build` and for `dracut-install`.
`--allow-secret GLOB` / `--allow-owner GLOB` (fnmatch on the image path) let through what
was asked for, e.g. a LUKS key file.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.image import Image

SECRET_PATHS = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd",
    "/etc/ssh/ssh_host_*_key", "/root/.ssh/id_*[!b]", "/home/*/.ssh/id_*[!b]", "/etc/ssl/private/*",
    "*/.gnupg/private-keys-v1.d/*", "*/.gnupg/secring.gpg",
)
_PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----\r?\n(?:[A-Za-z0-9+/=:, -]*\r?\n){0,4}"
                      rb"[A-Za-z0-9+/=]{40,}")
# RFC 4880 armor: "-----BEGIN PGP PRIVATE KEY BLOCK-----", armor headers (Version:, Comment:),
# an empty line, then base64.
_PGP_KEY = re.compile(rb"-----BEGIN PGP PRIVATE KEY BLOCK-----\r?\n(?:[^\r\n]{0,200}\r?\n){0,8}"
                      rb"[A-Za-z0-9+/=]{40,}")
# GnuPG 2.1+'s private-keys-v1.d files: an S-expression, in its canonical or its
# "Key: (private-key ..." extended form.
_GNUPG_KEY = re.compile(rb"\A(?:\(11:private-key|\(21:protected-private-key|\(20:shadowed-private-key"
                        rb"|Created: [^\n]*\nKey: \((?:protected-|shadowed-)?private-key"
                        rb"|Key: \((?:protected-)?private-key)")


class SafetyError(MkinitramfsError):
    """The image would carry a secret or an entry not owned by root; the message names each."""


def _allowed(path: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in globs)


def secret_reason(path: str, data: bytes | None) -> str | None:
    for pattern in SECRET_PATHS:
        if fnmatch.fnmatchcase(path, pattern) and not path.endswith(".pub"):
            return f"its path matches {pattern}"
    if data is not None and not data.startswith(b"\x7fELF"):
        if _PEM_KEY.search(data):
            return "it holds a private key"
        if _PGP_KEY.search(data):
            return "it holds a PGP private key block"
        if _GNUPG_KEY.match(data):
            return "it is a GnuPG private key"
    return None


def check(image: Image, *, allow_secrets: Iterable[str] = (), allow_owners: Iterable[str] = ()) -> None:
    """Raise SafetyError naming every offending path."""
    problems = []
    for e in image.sorted_entries():
        if (e.uid or e.gid) and not _allowed(e.path, allow_owners):
            problems.append(f"{e.path}: owned by {e.uid}:{e.gid}, not root (allow with --allow-owner {e.path})")
        if e.kind != "file" or e.link_to is not None or _allowed(e.path, allow_secrets):
            continue
        reason = secret_reason(e.path, e.content())
        if reason:
            problems.append(f"{e.path}: looks like a secret: {reason} (pack it on purpose with "
                            f"--allow-secret {e.path})")
    if problems:
        raise SafetyError("refusing to build:\n  " + "\n  ".join(problems))
