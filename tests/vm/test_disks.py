"""Disks of real machines: a --generic image finds its root behind each of the six disk
controllers PCs have (virtio-blk, virtio-scsi, NVMe, AHCI, usb-storage and UAS on xHCI),
names every disk in /dev/disk/by-id and /dev/disk/by-path as udev does, and boots
root=/dev/disk/by-id/... and root=/dev/disk/by-path/....

The kernel is 7.x, trixie-backports' newest: what new machines run, with the newest
drivers, and the pivot_root path; the six drivers are modules on 6.1 and 6.12 too, so the
autoload they need is the same there (tests/vm/test_find_root.py runs --generic on all three).

The names are checked against udev itself: one boot of a dracut image (Debian 12's dracut
059, its shell init, with the host's systemd-udevd 252, 60-persistent-storage.rules, ata_id
and scsi_id) with the six disks at once lists udev's links (tests/vm/udevlinks, a test-only
dracut module), and must give the names recorded in tests/support/udev_names.py; each pyinit boot
must give the same for its disk. Every controller has a fixed PCI slot (and USB port), so a machine with one of
the disks names it as the machine with all six does.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from devtools.qemu import DiskSpec, boot
from devtools.rootdisk import Partition, make_gpt_disk
from tests.support.boots import assert_handed_over
from tests.support.udev_names import DISK_NAMES, DISKS

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
SERIES = "7.x"
DRACUT_BASE = "/usr/lib/dracut"
LS = "/dev/disk/by-id\n/dev/disk/by-path\n"
# the driver each controller needs, loaded by the image from the device's MODALIAS
DRIVERS = {"virtio": ["virtio_blk"], "scsi": ["virtio_scsi", "sd_mod"], "nvme": ["nvme"],
           "ahci": ["ahci", "sd_mod"], "usb-storage": ["xhci_pci", "usb_storage", "sd_mod"],
           "uas": ["xhci_pci", "uas", "sd_mod"]}


def spec(kind: str, path) -> DiskSpec:
    d = DISKS[kind]
    return DiskSpec(path, d["interface"], serial=d["serial"], wwn=d.get("wwn"), slot=d["slot"],
                    usb_port=d.get("usb_port"))


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    """One GPT disk per controller, its partition 1 a test root labelled root-<kind>."""
    base = tmp_path_factory.mktemp("disks")
    extra = {"etc/realinit-ls": LS,
             "etc/realinit-check": "".join(f"/sys/module/{m}\n" for ms in DRIVERS.values() for m in ms)}
    return {kind: make_gpt_disk(base / f"{kind}.img", [
        Partition(f"root {kind}", 24, label=f"root-{kind}", root=True, extra_files=extra)])
        for kind in DISKS}


@pytest.fixture(scope="module")
def generic_image(pyinit_image):
    return pyinit_image(SERIES, "", extra=("--generic",))


def _disk_of(node: str) -> str:
    """/dev/nvme0n1p1 -> nvme0n1, /dev/sda1 -> sda, ../../vda1 -> vda."""
    name = node.rsplit("/", 1)[-1]
    nvme = re.match(r"(nvme\d+n\d+)(p\d+)?$", name)
    return nvme.group(1) if nvme else name.rstrip("0123456789")


def _by_disk(links: dict[str, str]) -> dict[str, set[str]]:
    """{"sda": {"by-id/x", "by-id/x-part1", ...}}: names grouped by the disk they lead to."""
    out: dict[str, set[str]] = {}
    for name, target in links.items():
        out.setdefault(_disk_of(target), set()).add(name)
    return out


def _expected(kind: str) -> set[str]:
    names = DISK_NAMES[kind]
    return set(names) | {f"{n}-part1" for n in names}


# ---------------------------------------------------------------------------- udev's names

@pytest.fixture(scope="module")
def dracut_basedir(tmp_path_factory):
    """A private dracutbasedir: links to Debian's dracut plus the test module udevlinks."""
    if not shutil.which("dracut") or not os.path.isdir(f"{DRACUT_BASE}/modules.d"):
        pytest.fail("dracut is not installed: install the Debian package dracut-core", pytrace=False)
    base = tmp_path_factory.mktemp("udevbase")
    for name in os.listdir(DRACUT_BASE):
        if name != "modules.d":
            (base / name).symlink_to(f"{DRACUT_BASE}/{name}")
    (base / "modules.d").mkdir()
    for name in os.listdir(f"{DRACUT_BASE}/modules.d"):
        (base / "modules.d" / name).symlink_to(f"{DRACUT_BASE}/modules.d/{name}")
    (base / "modules.d" / "99udevlinks").symlink_to(os.path.join(os.path.dirname(__file__), "udevlinks"))
    return base


def test_udev_names_the_six_disks_as_recorded(kernels, dracut_basedir, disks, tmp_path, artifacts, console_log):
    """The reference: udev (systemd-udevd in dracut's initrd) with all six disks at once.
    dracut without systemd: the same udevd and rules, 10 s less to boot under TCG."""
    kernel = kernels[SERIES]
    image = tmp_path / "udev.img"
    drivers = "virtio_blk virtio_scsi nvme ahci xhci_pci usb_storage uas sd_mod ext4"
    argv = ["dracut", "-f", "--kver", kernel.kver, "--kmoddir", str(kernel.modules), "--add", "udevlinks",
            "--omit", "systemd systemd-initrd dracut-systemd crypt dm lvm mdraid nvdimm btrfs multipath iscsi nfs "
            "plymouth resume", "--no-hostonly",
            "--drivers", drivers, "--no-early-microcode", str(image)]
    b = subprocess.run(argv, env={**os.environ, "dracutbasedir": str(dracut_basedir)}, capture_output=True,
                       text=True)
    (artifacts / "udevlinks-dracut-build.log").write_text(b.stdout + b.stderr)
    assert b.returncode == 0 and image.exists(), b.stdout + b.stderr
    assert "Including module: udevlinks" in b.stdout + b.stderr
    assert "Including module: udev-rules" in b.stdout + b.stderr
    labels = ",".join(f"root-{kind}" for kind in DISKS)
    r = boot(kernel, image, f"root=LABEL=root-virtio rd.shell=0 udevlinks.wait={labels}",
             disks=[spec(kind, disks[kind].path) for kind in DISKS], memory_mb=1024, timeout=600,
             log=console_log, marker="UDEV-LINKS-DONE")
    assert "UDEV-LINKS-DONE" in r.console, r
    assert "UDEV-LINK-MISSING" not in r.console, r
    assert "Starting systemd-udevd version " in r.console, r  # it was udev that made them
    links = dict(re.findall(r"UDEV-LINK: (\S+) -> (\S+)", r.console))
    by_disk = _by_disk({n: t for n, t in links.items() if n.startswith(("by-id/", "by-path/"))})
    labelled = {kind: _disk_of(links[f"by-label/root-{kind}"]) for kind in DISKS}
    got = {kind: by_disk.get(labelled[kind], set()) for kind in DISKS}
    assert got == {kind: _expected(kind) for kind in DISKS}, got


# ---------------------------------------------------------------------------- pyinit's names

# (controller, root= folder): every controller boots once; virtio-scsi and NVMe by both names
BOOTS = [("virtio", "by-path"), ("scsi", "by-id"), ("scsi", "by-path"), ("nvme", "by-id"), ("nvme", "by-path"),
         ("ahci", "by-id"), ("usb-storage", "by-id"), ("uas", "by-path")]


@pytest.mark.parametrize("kind, folder", BOOTS)
def test_root_by_udev_name_behind_each_controller(kind, folder, kernels, generic_image, disks, console_log):
    """The machine has the one disk; nothing is named at build time (--generic): the
    controller's driver comes by its MODALIAS, the disk's names are udev's, and
    root=/dev/disk/<folder>/<name>-part1 finds its partition 1."""
    kernel = kernels[SERIES]
    name = [n for n in DISK_NAMES[kind] if n.startswith(folder + "/")][-1]
    root = f"/dev/disk/{name}-part1"
    # rootwait: USB disks come seconds after the controller, later still on a loaded machine
    r = boot(kernel, generic_image, f"root={root} rootwait", disks=[spec(kind, disks[kind].path)],
             log=console_log)
    part = {"virtio": "vda1", "nvme": "nvme0n1p1"}.get(kind, "sda1")
    rep = assert_handed_over(r, source=f"/dev/{part}")
    assert f"pyinit: found root device {root}: /dev/{part} " in r.console, r
    assert "pyinit: loaded 0 of 0 modules" in r.console, r
    assert all(rep.files[f"/sys/module/{m}"] for m in DRIVERS[kind]), rep.files
    # every by-id and by-path link the real init finds is udev's name for this disk
    got = _by_disk({path[len("/dev/disk/"):]: target for path, target in rep.links.items()})
    assert got == {_disk_of(part): _expected(kind)}, got
