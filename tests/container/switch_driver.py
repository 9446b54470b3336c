"""Runs as PID 1 of a fresh pid + mount namespace (see test_switchroot.py): builds the
initramfs layout on a tmpfs, mounts the root disk under it, chroots into it and runs the
image's own interpreter, which switches root with pyinit and execs the disk's init.

argv: <image cpio (uncompressed)> <root disk> <work dir>
"""
import os
import subprocess
import sys

from mkinitramfs import archive
from mkinitramfs.image import Entry, Image, materialize

cpio_path, disk, work = sys.argv[1:4]
root = os.path.join(work, "initramfs")
os.makedirs(root, exist_ok=True)
# The namespace was made with private propagation: nothing here leaks to the host.
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", root], check=True)
image = Image()
with open(cpio_path, "rb") as f:
    for m in archive.members(f.read()):
        kind = m.kind
        e = Entry("/" + m.name, kind, m.mode & 0o7777, data=m.data if kind == "file" else None,
                  target=m.target, rdev=m.rdev)
        image.entries[e.path] = e
materialize(image, root)
subprocess.run(["mount", "-o", "loop,ro", disk, os.path.join(root, "sysroot")], check=True)
os.chroot(root)
os.chdir("/")
code = (
    "import os, sys\n"
    "from pyinit import log, switchroot\n"
    "path = switchroot.switch_root('/sysroot', log)\n"
    "print('SWITCHED:', path, flush=True)\n"
    "os.execv('/sbin/init', ['/sbin/init'])\n"
)
os.execv("/usr/bin/python3", ["python3", "-IS", "-c", code])
