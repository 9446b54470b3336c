"""The default build mode in a real chroot (mkinitramfs/mode.py): a tree made of bind mounts
in a folder of this machine's root filesystem, entered with chroot(8) in a private mount
namespace, as mmdebstrap and debootstrap enter their target. The builder, run there without
--modules, --host-only or --generic, writes a generic image and says why; an explicit
--host-only stops with an error naming the folder. Outside the chroot the same build is
host-only (the VM tier boots such images)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mkinitramfs import archive

pytestmark = pytest.mark.container
REPO = Path(__file__).resolve().parents[2]

# The folders named before "--" (the checkout, the venv, the kernel cache) are bound at their
# own paths: a clean clone may live anywhere (CI's is not under /work).
ENTER = r"""
set -eu
T=$1; shift
mkdir -p "$T/usr" "$T/etc" "$T/proc" "$T/sys" "$T/dev" "$T/tmp" "$T/out"
for d in usr etc; do mount --rbind "/$d" "$T/$d"; done
while [ "$1" != "--" ]; do mkdir -p "$T$1"; mount --rbind "$1" "$T$1"; shift; done
shift
mount --rbind /sys "$T/sys"
mount --rbind /dev "$T/dev"
mount -t proc proc "$T/proc"
for l in bin sbin lib lib64; do [ -e "/usr/$l" ] && ln -s "usr/$l" "$T/$l"; done
exec chroot "$T" "$@"
"""


def in_chroot(tmp_path: Path, kernel, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    tree = tmp_path / "chroot"  # a folder of this machine's root filesystem, as mmdebstrap's target
    tree.mkdir()
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER, "enter", str(tree),
            str(REPO), sys.prefix, str(kernel.root.resolve()), "--",
            sys.executable, "-m", "mkinitramfs", "build", "-o", "/out/initrd.img",
            "--kver", kernel.kver, "--moddir", str(kernel.moddir), "--config", "none", "--quiet", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd="/", env=env)
    return r, tree / "out" / "initrd.img"


def test_default_in_a_chroot_is_generic_and_says_why(kernel_612, tmp_path):
    r, image = in_chroot(tmp_path, kernel_612)
    assert r.returncode == 0, r.stdout + r.stderr
    why = [line for line in r.stderr.splitlines() if "generic image" in line]
    assert why, r.stderr
    assert "this build runs in a chroot or container (no filesystem is mounted at /" in why[0], why
    tree = archive.unpack_model(image.read_bytes())
    base = f"/usr/lib/modules/{kernel_612.kver}"
    dep = tree[f"{base}/modules.dep"].data.decode()
    # generic: storage drivers of every kind, none loaded up front
    for ko in ("virtio_blk.ko", "nvme.ko", "ahci.ko", "xfs.ko"):
        assert f"/{ko}" in dep, ko
    load = [line for line in tree["/etc/pyinit/modules.load"].data.decode().splitlines() if not line.startswith("#")]
    assert load == []


def test_explicit_host_only_in_a_chroot_fails_clearly(kernel_612, tmp_path):
    r, image = in_chroot(tmp_path, kernel_612, "--host-only")
    assert r.returncode != 0
    assert "--host-only cannot work here" in r.stderr and "--generic" in r.stderr, r.stderr
    assert "no filesystem is mounted at /" in r.stderr, r.stderr
    assert not image.exists()
