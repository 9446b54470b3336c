"""The host's tools the tests drive (the real mkfs, sgdisk, blkid, losetup...), and
util-linux's blkid as the reference pyinit's probes are checked against.

A missing tool fails the test, naming its Debian package (devtools/setup.sh installs them):
a skipped test would pass for a tier that checked nothing.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGES = {"mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs", "mkfs.btrfs": "btrfs-progs", "mkfs.vfat": "dosfstools",
            "mkfs.f2fs": "f2fs-tools", "mksquashfs": "squashfs-tools", "mkfs.erofs": "erofs-utils",
            "mkswap": "util-linux", "cryptsetup": "cryptsetup-bin", "blkid": "util-linux", "partx": "util-linux",
            "sgdisk": "gdisk", "sfdisk": "fdisk", "losetup": "mount", "pvcreate": "lvm2"}


def tool(name: str) -> str:
    """The path of the host's `name` (also in /usr/sbin and /sbin), or the test fails."""
    exe = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not exe:
        pytest.fail(f"{name} not found: install the Debian package {PACKAGES.get(name, name)} "
                    "(devtools/setup.sh does)", pytrace=False)
    return exe


def run(*argv: str, stdin: str | None = None) -> str:
    """Run a host tool that must succeed; its standard output."""
    proc = subprocess.run([tool(argv[0]), *argv[1:]], input=stdin, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc.stdout


def blank(path: Path, mb: int) -> Path:
    """A sparse file of `mb` MiB of zeros at `path`."""
    with open(path, "wb") as f:
        f.truncate(mb * 1024 * 1024)
    return path


def blkid_export(path: Path) -> dict[str, str]:
    """`blkid -p -o export`, with its backslash escapes undone. It prints non-ASCII bytes in
    cat -v style ("M-CM-)"), so LABEL is taken from the udev output's exact \\xNN form."""
    proc = subprocess.run([tool("blkid"), "-p", "-o", "export", str(path)], capture_output=True, check=False)
    out = {}
    for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
        key, _, value = line.partition("=")
        out[key] = _unescape_export(value)
    enc = blkid_udev(path).get("ID_FS_LABEL_ENC")
    if enc is not None:
        out["LABEL"] = _unhex(enc)
    return out


def blkid_udev(path: Path) -> dict[str, str]:
    """`blkid -p -o udev`: the ID_FS_* names udev's rules see."""
    proc = subprocess.run([tool("blkid"), "-p", "-o", "udev", str(path)], capture_output=True, check=False)
    return dict(line.split("=", 1) for line in proc.stdout.decode().splitlines() if "=" in line)


def _unhex(enc: str) -> str:
    raw = enc.encode("utf-8")
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i:i + 2] == b"\\x" and i + 4 <= len(raw):
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8")


def _unescape_export(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)
