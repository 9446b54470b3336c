"""The switch, with real mounts, in private namespaces (unshare): pivot_root(".", ".") from
a tmpfs root onto a loop-mounted ext4, and the MS_MOVE fallback's deletion that must never
cross a mount point."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.rootdisk import make_root_disk
from mkinitramfs import build, cpio

pytestmark = pytest.mark.container
REPO = Path(__file__).resolve().parents[2]

CONTAINER_INIT = r"""#!/bin/busybox sh
# A real init for the container test: report what it sees, then exit (ending the pid
# namespace). It never calls poweroff: outside a pid namespace that would stop the host.
B=/bin/busybox
$B mount -t proc proc /proc || echo "CINIT: cannot mount /proc"
echo "CINIT: pid $$"
echo "CINIT: root-entries $($B ls / | $B tr '\n' ' ')"
while read -r line; do echo "CINIT-MOUNT: $line"; done < /proc/self/mountinfo
exit 0
"""


@pytest.fixture(scope="module")
def image_cpio(tmp_path_factory):
    """pyinit's image, uncompressed, with no modules (the host kernel's own are in use)."""
    out = tmp_path_factory.mktemp("img") / "pyinit.cpio"
    image = build.assemble(build.BuildOptions(output=str(out), kver=os.uname().release)).image
    out.write_bytes(cpio.write(image))
    return out


def test_pivot_root_from_a_tmpfs_root(image_cpio, tmp_path):
    disk = make_root_disk(tmp_path / "root.img", init=CONTAINER_INIT, label="ctr-root")
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
         sys.executable, str(Path(__file__).with_name("switch_driver.py")), str(image_cpio), str(disk.path), str(work)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    out = r.stdout + r.stderr
    assert "SWITCHED: pivot_root" in out, out
    assert "CINIT: pid 1" in out, out
    mounts = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("CINIT-MOUNT:")]
    root = [m for m in mounts if m.split(" ")[4] == "/"]
    # after pivot_root + umount2(MNT_DETACH), / is the ext4 disk and the tmpfs is gone
    assert len(root) == 1 and " - ext4 " in root[0] and " ro" in root[0], mounts
    assert not any(" - tmpfs " in m and m.split(" ")[4] == "/" for m in mounts), mounts
    assert "usr" not in out.split("CINIT: root-entries", 1)[1].split("\n", 1)[0].split(), out
    assert "bin" in out.split("CINIT: root-entries", 1)[1].split("\n", 1)[0].split(), out


DELETE_DRIVER = r"""
import os, subprocess, sys
from pyinit import log, switchroot
t = sys.argv[1]
run = lambda *a: subprocess.run(a, check=True)
run("mount", "-t", "tmpfs", "tmpfs", t)
for d in ("usr/lib", "sysroot", "other", "bound"):
    os.makedirs(os.path.join(t, d))
for i in range(50):
    open(os.path.join(t, "usr/lib", f"f{i}"), "w").write("x")
os.symlink("/etc/passwd", os.path.join(t, "link-out"))
run("mount", "-o", "loop", sys.argv[2], os.path.join(t, "sysroot"))
run("mount", "-t", "tmpfs", "tmpfs", os.path.join(t, "sysroot/mnt"))
open(os.path.join(t, "sysroot/mnt/canary-tmpfs"), "w").write("alive")
open(os.path.join(t, "sysroot/canary-root"), "w").write("alive")
run("mount", "--bind", sys.argv[3], os.path.join(t, "bound"))
deleted, kept = switchroot.delete_tree_same_device(t, os.lstat(t).st_dev, log)
print("RESULT", deleted, kept, sorted(os.listdir(t)))
print("CANARY-TMPFS", open(os.path.join(t, "sysroot/mnt/canary-tmpfs")).read())
print("CANARY-ROOT", open(os.path.join(t, "sysroot/canary-root")).read())
print("CANARY-BOUND", open(os.path.join(t, "bound/canary-bind")).read())
print("HOST-PASSWD", os.path.exists("/etc/passwd"))
"""


def test_fallback_deletion_never_crosses_a_mount_point(tmp_path):
    disk = make_root_disk(tmp_path / "root.img", init=CONTAINER_INIT)
    bound = tmp_path / "bound-src"
    bound.mkdir()
    (bound / "canary-bind").write_text("alive")
    t = tmp_path / "t"
    t.mkdir()
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", DELETE_DRIVER,
                        str(t), str(disk.path), str(bound)],
                       capture_output=True, text=True, timeout=60, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    result = next(line for line in out.splitlines() if line.startswith("RESULT"))
    # 50 files, usr/lib, usr, other and the symlink to a host path: deleted; sysroot and bound: kept
    assert result.startswith("RESULT 54 2"), out
    assert "['bound', 'sysroot']" in result, out
    for canary in ("CANARY-TMPFS alive", "CANARY-ROOT alive", "CANARY-BOUND alive", "HOST-PASSWD True"):
        assert canary in out, out
    assert (bound / "canary-bind").read_text() == "alive"
