"""The dracut drop-in: Debian 12's dracut 059 builds an image with `--add pyinit` (the module
in dracut/99pyinit), for the cached Debian kernel, and it boots the ext4 root through pyinit.
dracut runs with a private dracutbasedir (links to /usr/lib/dracut plus our module), so the
host's dracut installation is not touched."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.qemu import boot
from devtools.rootdisk import make_root_disk
from mkinitramfs import shipped
from tests.support.builder import REPO, run_builder

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
DRACUT_BASE = "/usr/lib/dracut"


@pytest.fixture(scope="module")
def dracut_basedir(tmp_path_factory):
    exe = shutil.which("dracut")
    if not exe or not os.path.isdir(f"{DRACUT_BASE}/modules.d"):
        pytest.fail("dracut is not installed: install the Debian package dracut-core", pytrace=False)
    base = tmp_path_factory.mktemp("dracutbase")
    for name in os.listdir(DRACUT_BASE):
        if name != "modules.d":
            (base / name).symlink_to(f"{DRACUT_BASE}/{name}")
    (base / "modules.d").mkdir()
    for name in os.listdir(f"{DRACUT_BASE}/modules.d"):
        (base / "modules.d" / name).symlink_to(f"{DRACUT_BASE}/modules.d/{name}")
    (base / "modules.d" / "99pyinit").symlink_to(Path(shipped.path("dracut")) / "99pyinit")
    return base


@pytest.fixture(scope="module")
def dracut_image(kernel_61, dracut_basedir, tmp_path_factory, artifacts):
    out = tmp_path_factory.mktemp("dracut") / "dracut-pyinit.img"
    env = {**os.environ, "dracutbasedir": str(dracut_basedir), "PYTHONPATH": str(REPO),
           "PYINIT_MKINITRAMFS": f"{sys.executable} -m mkinitramfs"}
    # dracut's storage modules are left out (this host has cryptsetup, lvm2 and mdadm, so
    # dracut would add them, and pyinit loads every module dracut collects: raid6's speed
    # test alone costs seconds under TCG); --drivers names the test machine's drivers.
    argv = ["dracut", "-f", "--kver", kernel_61.kver, "--kmoddir", str(kernel_61.modules),
            "--add", "pyinit", "--omit", "crypt dm lvm mdraid nvdimm btrfs", "--no-hostonly",
            "--drivers", "virtio_pci virtio_blk ext4", "--no-early-microcode", str(out)]
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    (artifacts / "dracut-build.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0 and out.exists(), r.stdout + r.stderr
    assert "Including module: pyinit" in r.stderr + r.stdout
    assert "/init is pyinit" in r.stdout + r.stderr
    return out


def test_dracut_add_pyinit_boots_the_ext4_root(kernel_61, dracut_image, tmp_path, console_log):
    listing = run_builder("ls", str(dracut_image)).stdout
    # dracut made it (its module list, its depmod) and pyinit is /init
    assert re.search(r" usr/lib/dracut/modules.txt$", listing, re.M), listing[:2000]
    assert re.search(rf" usr/lib/modules/{re.escape(kernel_61.kver)}/modules.dep$", listing, re.M)
    from mkinitramfs import archive
    members = {m.name: m for seg in archive.read_image(dracut_image.read_bytes()) for m in seg.members}
    assert members["init"].kind == "file" and members["init"].data.startswith(b"#!/usr/bin/python3"), members["init"]
    assert " usr/lib/python3.11/pyinit/boot.pyc" in listing
    assert not re.search(r" etc/pyinit/modules.load$", listing, re.M)  # modules: dracut's
    disk = make_root_disk(tmp_path / "root.img")
    r = boot(kernel_61, dracut_image, f"root=UUID={disk.uuid} rd.emergency=poweroff rd.shell=0", disks=[disk.path],
             log=console_log, timeout=300)
    assert "pyinit: pyinit started" in r.console, r
    m = re.search(r"pyinit: loaded (\d+) of (\d+) modules", r.console)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) >= 3, r  # what dracut collected
    assert not r.timed_out and not r.panicked, r
    rep = r.report
    assert rep is not None and rep.done and rep.pid == 1, r
    root = rep.mount_at("/")
    assert (root.fstype, root.source) == ("ext4", "/dev/vda"), rep.mounts


def test_initramfs_tools_hook_makes_pyinit_init(kernel_61, tmp_path, console_log):
    """The initramfs-tools equivalent: initramfs-tools/hooks/pyinit in a private configuration
    folder (MODULES=list), mkinitramfs run for the cached kernel in a private mount
    namespace (devtools.bench's, as the benchmark anchors are built)."""
    from devtools.bench import _private_modules_ns_script
    if not os.path.exists("/usr/sbin/mkinitramfs") or not os.path.isdir("/etc/initramfs-tools"):
        pytest.fail("initramfs-tools is not installed: install the Debian package initramfs-tools", pytrace=False)
    conf = tmp_path / "conf"
    shutil.copytree("/etc/initramfs-tools", conf)
    text = (conf / "initramfs.conf").read_text()
    text = re.sub(r"(?m)^MODULES=.*$", "MODULES=list", text)
    text = re.sub(r"(?m)^COMPRESS=.*$", "COMPRESS=gzip", text)
    (conf / "initramfs.conf").write_text(text)
    (conf / "modules").write_text("virtio_pci\nvirtio_blk\next4\n")
    (conf / "hooks").mkdir(exist_ok=True)
    shutil.copy2(Path(shipped.path("initramfs-tools")) / "hooks" / "pyinit", conf / "hooks" / "pyinit")
    out = tmp_path / "itools.img"
    command = (f"export PYTHONPATH={REPO} PYINIT_MKINITRAMFS='{sys.executable} -m mkinitramfs'\n"
               f"mkinitramfs -d {conf} -o {out} {kernel_61.kver}")
    r = subprocess.run(_private_modules_ns_script(kernel_61, command), capture_output=True, text=True)
    assert r.returncode == 0 and out.exists(), r.stdout + r.stderr
    assert "/init is pyinit" in r.stdout + r.stderr
    from mkinitramfs import archive
    members = {m.name: m for seg in archive.read_image(out.read_bytes()) for m in seg.members}
    assert members["init"].data.startswith(b"#!/usr/bin/python3"), members["init"]
    assert "scripts/init-top" in {n.rsplit("/", 1)[0] for n in members}  # initramfs-tools made it
    disk = make_root_disk(tmp_path / "root.img")
    boot_r = boot(kernel_61, out, f"root=UUID={disk.uuid} rd.emergency=poweroff rd.shell=0", disks=[disk.path],
                  log=console_log, timeout=300)
    m = re.search(r"pyinit: loaded (\d+) of (\d+) modules", boot_r.console)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) >= 3, boot_r
    rep = boot_r.report
    assert rep is not None and rep.done and rep.pid == 1, boot_r
    assert (rep.mount_at("/").fstype, rep.mount_at("/").source) == ("ext4", "/dev/vda"), rep.mounts
