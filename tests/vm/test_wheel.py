"""A regular install, as a new user makes it: a fresh venv of Debian's /usr/bin/python3,
`pip install '.[network]'` (not editable) from a copy of the checkout
(devtools/wheelvenv.py, cached by the hash of what it installs). Its console script builds
an image with shipped hooks found by name, from a folder that is not the checkout and with
no PYTHONPATH, and that image boots with ip=dhcp on QEMU's user network."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devtools import wheelvenv
from devtools.qemu import boot
from devtools.rootdisk import make_root_disk
from mkinitramfs import archive
from tests.support.builder import REPO

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

NIC = ["-nic", "user,model=virtio-net-pci"]


@pytest.fixture(scope="module")
def installed():
    try:
        return wheelvenv.ensure()
    except wheelvenv.WheelVenvError as e:
        pytest.fail(f"pip install '.[network]' into a fresh venv failed: {e}", pytrace=False)


def run_installed(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, env=wheelvenv.run_env(),
                          capture_output=True, text=True)


def test_the_install_carries_the_shipped_folders(installed, tmp_path):
    r = run_installed(installed, "python", "-m", "mkinitramfs.shipped", "hooks", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    hooks = Path(r.stdout.strip())
    assert hooks.is_relative_to(installed) and "site-packages" in hooks.parts, hooks  # not the checkout
    for folder, inside in [("hooks", "network/hook.toml"), ("kernel", "postinst.d/pyinit"),
                           ("dracut", "99pyinit/module-setup.sh"), ("initramfs-tools", "hooks/pyinit")]:
        r = run_installed(installed, "python", "-m", "mkinitramfs.shipped", folder, cwd=tmp_path)
        shipped = Path(r.stdout.strip()) / inside
        assert shipped.is_file(), shipped
        assert shipped.read_bytes() == (REPO / folder / inside).read_bytes()
        if folder != "hooks":
            assert shipped.stat().st_mode & 0o111, f"{shipped} lost its executable bits"


def test_installed_builder_with_network_nfs_resume_boots_with_dhcp(installed, kernel_61, tmp_path, console_log):
    root = make_root_disk(tmp_path / "root.img")
    out = tmp_path / "wheel.img"
    r = run_installed(installed, "pyinit-mkinitramfs", "build", "-o", str(out), "--kver", kernel_61.kver,
                      "--moddir", str(kernel_61.moddir), "--modules", "virtio_pci,virtio_blk,virtio_net,ext4",
                      "--hook", "network", "--hook", "nfs", "--hook", "resume", "--config", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    tree = archive.unpack_model(out.read_bytes())
    hook_scripts = [n for n in tree if n.startswith("/usr/lib/pyinit/hooks/") and n.endswith(".py")]
    for name in ("network", "nfs", "resume"):
        assert any(n.endswith(f"-{name}.py") for n in hook_scripts), (name, hook_scripts)
    # the hooks packed are the install's package data
    site = next(installed.glob("lib/python3*/site-packages"))
    assert tree["/usr/lib/pyinit/hooks/initqueue/10-network.py"].data == \
        (site / "mkinitramfs" / "_shipped" / "hooks" / "network" / "network.py").read_bytes()
    res = boot(kernel_61, out, f"root=UUID={root.uuid} ip=dhcp rd.emergency=poweroff rd.shell=0",
               disks=[root.path], extra_args=NIC, log=console_log, timeout=300)
    assert "pyinit: network: eth0: 10.0.2.15/24 via 10.0.2.2 (DHCP from 10.0.2.2)" in res.console, res
    assert not res.timed_out and not res.panicked, res
    assert res.report is not None and res.report.done and res.report.pid == 1, res
    assert res.report.ipv4().get("eth0") == ["10.0.2.15/24"], res.report.addresses
