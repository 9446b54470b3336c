"""Kernel integration: the /etc/kernel/postinst.d and postrm.d hooks and the kernel-install
plugin (kernel/ in this repository), run as the package manager and systemd's
kernel-install run them, against a fake /boot in a temporary folder and a real Debian
kernel's module tree. No boot here: test_manifest.py boots such an image."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mkinitramfs import archive, shipped
from mkinitramfs.verify import verify
from tests.support.builder import REPO

pytestmark = pytest.mark.vm

KERNEL_HOOKS = Path(shipped.path("kernel"))
POSTINST = KERNEL_HOOKS / "postinst.d" / "pyinit"
POSTRM = KERNEL_HOOKS / "postrm.d" / "pyinit"
PLUGIN = KERNEL_HOOKS / "install.d" / "50-pyinit.install"


def hook_env(tmp_path: Path, kernel, modules: str = "virtio_blk,ext4", **extra) -> dict:
    conf = tmp_path / "mkinitramfs.toml"
    conf.write_text(f'moddir = "{kernel.moddir}"\nmodules = {modules.split(",")!r}\ncompress = "zstd"\n'
                    .replace("'", '"'))
    return {**os.environ, "PYINIT_MKINITRAMFS": f"{sys.executable} -m mkinitramfs",
            "PYINIT_MKINITRAMFS_CONFIG": str(conf), "PYTHONPATH": str(REPO), **extra}


def fake_boot(tmp_path: Path, kver: str) -> Path:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / f"vmlinuz-{kver}").write_bytes(b"not really a kernel")
    return boot


def test_postinst_builds_atomically_and_a_failed_build_keeps_the_old_image(kernel_61, tmp_path):
    kver = kernel_61.kver
    boot = fake_boot(tmp_path, kver)
    env = hook_env(tmp_path, kernel_61)
    r = subprocess.run([str(POSTINST), kver, str(boot / f"vmlinuz-{kver}")], env=env, cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    image = boot / f"initrd.img-{kver}"
    assert oct(image.stat().st_mode & 0o777) == "0o600"
    good = image.read_bytes()
    rep = verify(good)
    assert rep.ok, rep.problems
    assert any(n.endswith("/virtio_blk.ko") for n in archive.unpack_model(good))
    # the settings file drove the build: modules from it
    # a build that fails (a module the kernel does not have) leaves the old image alone
    bad_env = hook_env(tmp_path, kernel_61, modules="virtio_blk,no_such_module")
    r = subprocess.run([str(POSTINST), kver, str(boot / f"vmlinuz-{kver}")], env=bad_env, cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "no_such_module" in r.stderr, r.stderr
    assert image.read_bytes() == good
    assert sorted(p.name for p in boot.iterdir()) == [f"initrd.img-{kver}", f"vmlinuz-{kver}"]  # no temp files
    # INITRD=No: the kernel package wants no initrd
    image.unlink()
    r = subprocess.run([str(POSTINST), kver, str(boot / f"vmlinuz-{kver}")], env={**env, "INITRD": "No"},
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and not image.exists()


def test_postrm_removes_the_image_and_leftovers(tmp_path):
    boot = fake_boot(tmp_path, "6.1.0-x")
    (boot / "initrd.img-6.1.0-x").write_bytes(b"old")
    (boot / ".initrd.img-6.1.0-x.tmp1234").write_bytes(b"killed build")
    (boot / "initrd.img-6.1.0-other").write_bytes(b"another kernel's")
    r = subprocess.run([str(POSTRM), "6.1.0-x", str(boot / "vmlinuz-6.1.0-x")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in boot.iterdir()) == ["initrd.img-6.1.0-other", "vmlinuz-6.1.0-x"]


def test_real_kernel_install_with_the_plugin(kernel_61, tmp_path):
    """systemd's own kernel-install, with our plugin and its 90-loaderentry.install: the
    image lands in the boot loader entry's folder and the entry names it."""
    exe = shutil.which("kernel-install")
    loaderentry = Path("/usr/lib/kernel/install.d/90-loaderentry.install")
    if exe is None or not loaderentry.exists():
        pytest.fail("kernel-install not found: install the Debian package systemd", pytrace=False)
    kver = kernel_61.kver
    boot = tmp_path / "boot"
    machine_id = "0123456789abcdef0123456789abcdef"
    (boot / machine_id).mkdir(parents=True)  # makes kernel-install choose the bls layout
    env = hook_env(tmp_path, kernel_61, BOOT_ROOT=str(boot), MACHINE_ID=machine_id,
                   KERNEL_INSTALL_PLUGINS=f"{PLUGIN} {loaderentry}")
    r = subprocess.run([exe, "-v", "add", kver, str(kernel_61.vmlinuz)], env=env, cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    initrd = boot / machine_id / kver / "initrd"
    assert initrd.exists(), r.stdout + r.stderr
    assert verify(initrd.read_bytes()).ok
    entry = (boot / "loader" / "entries" / f"{machine_id}-{kver}.conf").read_text()
    assert f"/{machine_id}/{kver}/initrd" in entry, entry


@pytest.mark.parametrize("how", ["other generator", "initrd given", "remove"])
def test_plugin_builds_nothing_when_not_asked(how, tmp_path):
    # PYINIT_MKINITRAMFS=false: if the plugin ran the builder, it would fail
    env = {**os.environ, "PYINIT_MKINITRAMFS": "false", "KERNEL_INSTALL_STAGING_AREA": str(tmp_path)}
    argv = [str(PLUGIN), "add", "6.1.0-x", str(tmp_path / "entry"), "/boot/vmlinuz-6.1.0-x"]
    if how == "other generator":
        env["KERNEL_INSTALL_INITRD_GENERATOR"] = "dracut"
    elif how == "initrd given":
        argv.append("/boot/prebuilt-initrd")
    else:
        argv[1] = "remove"
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []
    # and the same call with our generator does run the builder (which fails here)
    if how == "other generator":
        env["KERNEL_INSTALL_INITRD_GENERATOR"] = "pyinit"
        assert subprocess.run(argv, env=env, capture_output=True).returncode != 0
