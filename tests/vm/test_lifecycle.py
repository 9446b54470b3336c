"""pyinit as a Debian system's initramfs generator, through the whole life of a kernel, on
Debian 12 (6.1, python3.11) and Debian 13 (the newest 7.x of trixie-backports, python3.13).

The session builds pyinit's .deb from this tree as `make deb` does (devtools/debpkg.py).
devtools/lifecycle.py makes each system: mmdebstrap's base, then apt installs the .deb and
Debian's kernel in a chroot, where the kernel's postinst runs pyinit's hook (generic there,
by the chroot rule). The system then boots under QEMU with the kernel and initrd taken from
its root and GRUB's command line, twice:
  1. on the chroot's image: systemd reaches multi-user.target with no failed unit, and
     `dpkg-reconfigure linux-image-$(uname -r)` rebuilds the image host-only;
  2. on that rebuilt image (read back from the disk): the same checks; then an
     update-initramfs trigger as lvm2's postinst activates it, processed by dpkg; then
     `apt-get remove` of the kernel package, whose image must go.
The guest's phase script reports on its second serial port and in /var/log/lifecycle.log;
the verdicts are taken here, from outside. The sizes and times are written to
<artifacts>/lifecycle-<distro>.json.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools import debpkg
from devtools import lifecycle as lc
from devtools.qemu import BootResult, boot
from devtools.rootdisk import read_file_from_disk
from mkinitramfs import archive

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600), pytest.mark.xdist_group("lifecycle")]

BOOT_TIMEOUT = 1500  # systemd under TCG, and an image build inside the guest


@pytest.fixture(scope="session")
def deb_package(tmp_path_factory):
    """pyinit's .deb, built by this session from this tree, as `make deb` builds it."""
    try:
        return debpkg.build(dest=tmp_path_factory.mktemp("deb"))
    except debpkg.DebBuildError as e:
        pytest.fail(f"building the Debian package failed: {e}", pytrace=False)


@dataclass
class Boot:
    result: BootResult
    report: str  # the guest's LIFECYCLE lines, from its second serial port

    def value(self, kind: str) -> str | None:
        return lc.value(self.report, kind)

    def lines(self, kind: str) -> list[str]:
        return lc.lines(self.report, kind)

    def why(self) -> str:
        return f"{self.result.summary()}\n--- guest report ---\n{self.report[-6000:]}"


@dataclass
class Lifecycle:
    root: lc.Root
    chroot_image: bytes
    host_only_image: bytes | None = None
    boots: list[Boot] = field(default_factory=list)
    disk_log: str = ""
    image_left_on_disk: bool | None = None  # /boot/initrd.img-KVER after the last boot
    seconds: dict = field(default_factory=dict)


def run_boot(root: lc.Root, initrd: Path, disk: Path, folder: Path, n: int) -> Boot:
    port = folder / f"{root.distro.name}-phase{n}.report"
    r = boot(root.vmlinuz, initrd, lc.grub_cmdline(root), disks=[disk], memory_mb=1024, timeout=BOOT_TIMEOUT,
             extra_args=lc.report_port(port), marker="", log=folder / f"{root.distro.name}-boot{n}.console.log")
    return Boot(r, port.read_text(errors="replace") if port.exists() else "")


@pytest.fixture(scope="module", params=sorted(lc.DISTROS))
def life(request, deb_package, tmp_path_factory, artifacts):
    name = request.param
    t0 = time.monotonic()
    try:
        root = lc.ensure_root(name, deb_package.deb)
    except lc.LifecycleError as e:
        pytest.fail(f"making the {name} root failed: {e}", pytrace=False)
    t_root = time.monotonic() - t0
    work = tmp_path_factory.mktemp(name)
    disk = lc.copy_disk(root, work / "disk.img")
    life = Lifecycle(root, root.initrd.read_bytes())
    t = time.monotonic()
    life.boots.append(run_boot(root, root.initrd, disk, artifacts, 1))
    t_boot1 = time.monotonic() - t
    rebuilt = read_file_from_disk(disk, f"/boot/initrd.img-{root.kver}")
    t_boot2 = 0.0
    if rebuilt and rebuilt != life.chroot_image:
        life.host_only_image = rebuilt
        second = work / "initrd-host-only.img"
        second.write_bytes(rebuilt)
        t = time.monotonic()
        life.boots.append(run_boot(root, second, disk, artifacts, 2))
        t_boot2 = time.monotonic() - t
    life.disk_log = (read_file_from_disk(disk, "/var/log/lifecycle.log") or b"").decode(errors="replace")
    life.image_left_on_disk = read_file_from_disk(disk, f"/boot/initrd.img-{root.kver}") is not None
    life.seconds = {"root": round(t_root, 1), "boot1": round(t_boot1, 1), "boot2": round(t_boot2, 1),
                    "total": round(time.monotonic() - t0, 1), "root_stages": root.seconds}
    record = {"distro": name, "kernel": root.kver, "chroot_generic_image": len(life.chroot_image),
              "host_only_image": len(rebuilt) if rebuilt else None,
              "multi_user_us": [b.value("MULTIUSER-US") for b in life.boots],
              "systemd_analyze": [b.lines("ANALYZE") for b in life.boots],
              "pyinit": [b.value("PYINIT") for b in life.boots], "seconds": life.seconds}
    (artifacts / f"lifecycle-{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (artifacts / f"lifecycle-{name}.disk.log").write_text(life.disk_log)
    yield life
    disk.unlink()  # 3 GiB sparse, about 1 GiB written: not for pytest's kept temporary folders


def boot_reached_multi_user(b: Boot, root: lc.Root) -> None:
    assert b.value("DONE") is not None, b.why()
    assert not b.result.timed_out and not b.result.panicked, b.why()
    assert b.value("STATE") == "running", b.why()
    assert b.value("FAILED") == "0" and not b.lines("FAILED-UNIT"), b.why()
    assert int(b.value("MULTIUSER-US") or 0) > 0, b.why()
    assert b.value("KERNEL") == root.kver
    cmdline = b.value("CMDLINE").split()
    assert f"root=UUID={root.uuid}" in cmdline and "ro" in cmdline and "console=ttyS0" in cmdline, cmdline
    # pyinit was the initramfs, and it mounted the root it was asked for
    assert b.value("PYINIT") == (f"result=ok root=UUID={root.uuid} device=/dev/vda fstype=ext4 "
                                 f"handover={b.value('PYINIT').rsplit('=', 1)[1]}"), b.why()
    assert b.value("ROOT").split()[0] == "/dev/vda", b.why()
    assert b.value("PYTHON") == root.distro.python


def modules_of(image: bytes, kver: str) -> tuple[set[str], list[str]]:
    tree = archive.unpack_model(image)
    dep = tree[f"/usr/lib/modules/{kver}/modules.dep"].data.decode()
    packed = {line.split(":")[0].rsplit("/", 1)[1].split(".ko")[0].replace("-", "_")
              for line in dep.splitlines() if ":" in line}
    load = [line.split()[0] for line in tree["/etc/pyinit/modules.load"].data.decode().splitlines()
            if line.strip() and not line.startswith("#")]
    return packed, load


def test_the_kernel_postinst_builds_a_generic_image_in_the_chroot(life):
    log = life.root.install_log
    assert "/etc/kernel/postinst.d/pyinit:" in log, log[-4000:]
    assert "pyinit-mkinitramfs: generic image: this build runs in a chroot or container" in log, log[-4000:]
    # the package's own postinst went through the update-initramfs trigger
    assert "update-initramfs: deferring update (trigger activated)" in log
    assert "Processing triggers for pyinit" in log
    packed, load = modules_of(life.chroot_image, life.root.kver)
    assert {"nvme", "ahci", "virtio_scsi", "xfs", "btrfs", "usb_storage"} <= packed, sorted(packed)
    assert load == []  # generic: everything loads on demand
    # packed by the distribution's own interpreter
    tree = archive.unpack_model(life.chroot_image)
    assert f"/usr/bin/python{life.root.distro.python}" in tree


def test_the_chroot_image_boots_the_system_to_multi_user(life):
    assert life.boots, "no boot"
    boot_reached_multi_user(life.boots[0], life.root)


def test_dpkg_reconfigure_rebuilds_the_image_host_only_and_smaller(life):
    b = life.boots[0]
    assert b.value("RECONF-STATUS") == "0", b.why()
    reconf = "\n".join(b.lines("RECONF"))
    assert "/etc/kernel/postinst.d/pyinit:" in reconf, b.why()
    assert "host-only image: built on the machine it is for" in reconf, b.why()
    assert life.host_only_image is not None, b.why()
    assert int(b.value("INITRD-AFTER")) == len(life.host_only_image)
    assert len(life.host_only_image) < len(life.chroot_image)
    packed, load = modules_of(life.host_only_image, life.root.kver)
    assert "virtio_blk" in load and "ext4" in load, load
    assert "nvme" not in packed and "ahci" not in packed, sorted(packed)
    assert "/usr/bin/fsck.ext4" in archive.unpack_model(life.host_only_image)


def test_the_host_only_image_boots_the_system_again(life):
    assert len(life.boots) == 2, "the host-only image was never booted"
    boot_reached_multi_user(life.boots[1], life.root)


def test_update_initramfs_in_a_maintainer_script_goes_through_the_trigger(life):
    assert len(life.boots) == 2
    b = life.boots[1]
    trigger = "\n".join(b.lines("TRIGGER"))
    assert "update-initramfs: deferring update (trigger activated)" in trigger, b.why()
    assert b.value("TRIGGER-PENDING").endswith("update-initramfs"), b.why()
    assert b.value("TRIGGER-STATUS") == "0", b.why()
    assert "Processing triggers for pyinit" in trigger, b.why()
    assert f"update-initramfs: Generating /boot/initrd.img-{life.root.kver}" in trigger, b.why()
    assert b.value("TRIGGER-REBUILT") == "yes", b.why()


def test_removing_the_kernel_package_removes_its_image(life):
    assert len(life.boots) == 2
    b = life.boots[1]
    assert b.value("REMOVE-STATUS") == "0", b.why()
    assert b.value("INITRD-LEFT") == "none", b.why()
    assert not b.value("PACKAGE").startswith("ii"), b.why()
    assert life.image_left_on_disk is False  # seen from outside too, after the power-off
