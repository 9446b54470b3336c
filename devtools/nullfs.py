"""Reproduce Linux 7.0's root layout on older kernels, for testing the pivot_root path.

Linux 7.0 puts the initramfs on a tmpfs mounted over an empty nullfs, so pivot_root works.
Older kernels unpack it into the rootfs itself, where pivot_root says EINVAL. This appends
a test-only cpio to an image (padded to 512 bytes first) holding a static busybox and a
script; booted with `rdinit=/nullfs-shim/init`, the script mounts a tmpfs, copies the
initramfs tree into it, moves it over / , chroots into it and execs /init: from then on /
is a tmpfs over the rootfs, as on 7.0, and pyinit's pivot_root(".", ".") succeeds.
"""
from __future__ import annotations

from pathlib import Path

from mkinitramfs import cpio
from mkinitramfs.image import Image

RDINIT = "/nullfs-shim/init"
SHIM = """#!/nullfs-shim/busybox sh
B=/nullfs-shim/busybox
$B mkdir -p /.nullfs-root
$B mount -t tmpfs -o mode=0755 tmpfs /.nullfs-root || exec $B sh -c 'echo NULLFS-SHIM: mount failed; $B sleep 100000'
for f in /* /.[!.]*; do
  case "$f" in /.nullfs-root|/nullfs-shim|'/.[!.]*') ;; *) $B cp -a "$f" /.nullfs-root/ ;; esac
done
echo "NULLFS-SHIM: initramfs copied onto a tmpfs; moving it over /"
cd /.nullfs-root
$B mount --move . /
exec $B chroot . /init "$@"
"""


def append_nullfs_shim(image: Path, out: Path, busybox: Path) -> Path:
    raw = image.read_bytes()
    shim = Image()
    shim.add_file("/nullfs-shim/busybox", source=str(busybox), mode=0o755)
    shim.add_file(RDINIT, data=SHIM.encode(), mode=0o755)
    pad = b"\0" * ((-len(raw)) % 512)
    out.write_bytes(raw + pad + cpio.write(shim))
    return out
