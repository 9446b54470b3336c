"""Booting like a real UEFI machine: OVMF firmware with no -kernel, systemd-boot with a
Type #1 entry or a Unified Kernel Image made by `pyinit-mkinitramfs uki` as
EFI/BOOT/BOOTX64.EFI, and no root=: pyinit finds the root by the Discoverable Partitions
rules (pyinit/gptauto.py) on the disk the boot loader names in LoaderDevicePartUUID.

OVMF under TCG is slow (about 3.5 s before the boot manager, 1-3 s more in the loader),
so each boot checks several things at once. Each test prints its times: QEMU's wall clock
from its start to the real init's report, the guest's uptime then, and the difference,
which is the firmware, the boot loader and the EFI stub (devtools.uefi.firmware_seconds).
"""
from __future__ import annotations

import re
import subprocess

import pytest

from devtools import uefi
from devtools.rootdisk import Partition
from mkinitramfs import uki
from tests.support.builder import run_builder

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

RO, GROW, NO_AUTO = uefi.BIT_READ_ONLY, uefi.BIT_GROW_FS, uefi.BIT_NO_AUTO
LUKS_UUID = "5e1f0000-0000-4000-8000-0000000000cc"
PASSPHRASE = b"secret"


def timing(name: str, r) -> str:
    line = (f"{name}: real init reported {r.marker_seconds:.2f} s after QEMU started; guest uptime "
            f"{r.report.uptime:.2f} s; firmware + loader + EFI stub {uefi.firmware_seconds(r):.2f} s")
    print(line)
    return line


def attributes(disk, number: int) -> str:
    out = subprocess.run(["sgdisk", "-i", str(number), str(disk)], capture_output=True, text=True).stdout
    return re.search(r"Attribute flags: (\S+)", out).group(1)


def assert_real_init_on(r, source: str, *, readonly: bool = True, fstype: str = "ext4"):
    assert not r.timed_out and not r.panicked, r
    rep = r.report
    assert rep is not None and rep.done and rep.pid == 1, r
    root = rep.mount_at("/")
    assert root is not None and (root.fstype, root.source, root.readonly) == (fstype, source, readonly), rep.mounts
    assert rep.inherited_fds == {0: "/dev/console", 1: "/dev/console", 2: "/dev/console"}, rep.fds
    return rep


def test_systemd_boot_entry_without_root_finds_a_read_only_root(kernel_61, pyinit_image, tmp_path, console_log):
    """systemd-boot's Type #1 entry has no root= and says rw. The boot disk's root partition
    is flagged read-only and grow-fs; a second disk holds a root partition too, so without
    LoaderDevicePartUUID there would be no answer: the one on the loader's disk is taken,
    mounted read-only whatever rw says (seen in the real init's mountinfo) and not fsck'd,
    grow-fs is passed on, and efivarfs, which the builder packed on its own, was loaded and
    unmounted again."""
    image = pyinit_image("6.1", extra=("--fsck", "ext4"))  # --modules virtio_pci,virtio_blk,ext4: no efivarfs
    options = "console=ttyS0 rw panic=-1 rd.shell=0 rd.emergency=poweroff"
    check = {"etc/realinit-check": "/sys/module/efivarfs\n/run/pyinit/gpt-auto-root\n",
             "etc/realinit-cat": "/run/pyinit/gpt-auto-root\n"}
    disk = uefi.make_uefi_disk(tmp_path / "boot.img", uefi.entry_files(kernel_61.vmlinuz, image, options), [
        Partition("root", 48, root=True, type_code=uefi.ROOT_X86_64, attributes=(RO, GROW), extra_files=check)])
    other = uefi.make_uefi_disk(tmp_path / "other.img", {"README": b"not the boot disk"}, [
        Partition("other root", 48, root=True, type_code=uefi.ROOT_X86_64)])
    assert attributes(disk.path, 2) == "1800000000000000"  # bits 60 and 59, as sgdisk reads them back
    r = uefi.boot_uefi([disk.path, other.path], log=console_log)
    rep = assert_real_init_on(r, "/dev/vda2", readonly=True)
    assert "rw" in rep.cmdline_args and not any(a.startswith("root=") for a in rep.cmdline_args), rep.cmdline
    assert "BdsDxe: starting Boot0001" in r.console and "EFI stub:" in r.console, r  # the firmware's boot
    esp = disk.part(1).partuuid
    assert f"pyinit: gpt-auto: LoaderDevicePartUUID={esp}: the root is looked for on that disk" in r.console, r
    assert "pyinit: gpt-auto: skipped /dev/vdb2: not on the disk the boot loader came from (/dev/vda)" in r.console
    assert "flagged read-only (GPT attribute 60): mounting it read-only, whatever rw asks" in r.console
    assert "flagged grow-fs (GPT attribute 59): left to the real system" in r.console
    assert "pyinit: not checking /dev/vda2: its partition is flagged read-only" in r.console, r
    assert "fsck.ext4" not in r.console, r  # the image has one, and it did not run
    assert rep.cat["/run/pyinit/gpt-auto-root"] == "ROOT_PARTITION=/dev/vda2", rep.cat
    assert rep.files == {"/sys/module/efivarfs": True, "/run/pyinit/gpt-auto-root": True}, rep.files
    assert "pyinit: gpt-auto: loaded efivarfs to read the boot loader's EFI variables" in r.console, r
    assert not any(m.mountpoint.startswith("/sys/firmware") for m in rep.mountinfo()), rep.mounts
    timing("systemd-boot entry, Linux 6.1", r)


def test_no_auto_root_is_skipped_with_the_diagnosis(kernel_612, pyinit_image, tmp_path, console_log):
    """root=gpt-auto, and the only root partition is a bootable root flagged no-auto (bit 63):
    nothing is mounted, and the diagnosis names the disk, each partition with the spec's
    name for its type, and why the root partition was skipped."""
    image = pyinit_image("6.12")
    options = "console=ttyS0 root=gpt-auto rd.timeout=3 rd.shell=0 rd.emergency=poweroff panic=-1"
    disk = uefi.make_uefi_disk(tmp_path / "boot.img", uefi.entry_files(kernel_612.vmlinuz, image, options), [
        Partition("root", 48, root=True, type_code=uefi.ROOT_X86_64, attributes=(NO_AUTO,)),
        Partition("swap", 4, fs=None, type_code="8200"),
        Partition("home", 8, type_code="933ac7e1-2eb4-4f13-b844-0e14e2aef915")])
    assert attributes(disk.path, 2) == "8000000000000000"  # the fault is really there
    r = uefi.boot_uefi([disk.path], log=console_log, timeout=240)
    assert not r.timed_out and not r.panicked and r.report is None, r
    text = r.console
    assert ("pyinit: boot failed at stage initqueue: no root partition found within 3 s; gpt-auto: no usable root "
            f"partition (type {uefi.ROOT_X86_64}) on /dev/vda, the disk the boot loader came from.") in text, r
    esp = disk.part(1).partuuid
    for line in (f"the boot loader's LoaderDevicePartUUID is {esp}: only its disk counts",
                 "/dev/vda: GPT partition table, 4 partition(s)",
                 '/dev/vda1 "EFI System Partition": EFI System Partition (c12a7328-f81f-11d2-ba4b-00a0c93ec93b), '
                 "vfat (the boot loader's ESP)",
                 f'/dev/vda2 "root": Root Partition (x86-64) ({uefi.ROOT_X86_64}), flags no-auto, ext4: skipped, '
                 "flagged no-auto (GPT attribute 63)",
                 '/dev/vda3 "swap": Swap (0657fd6d-a4ab-43c4-84e5-0933c84b4f4f)',
                 '/dev/vda4 "home": Home Partition (933ac7e1-2eb4-4f13-b844-0e14e2aef915), ext4'):
        assert f"pyinit: {line}" in text or f"pyinit:   {line}" in text or f"pyinit:     {line}" in text, \
            (line, r)
    assert ("pyinit: next step: /dev/vda2 is flagged no-auto: clear the flag if it is the root (sgdisk -A 2:clear:63 "
            f"<disk>), or boot with root=PARTUUID={disk.part(2).partuuid}") in text, r
    assert "rd.emergency=poweroff" in text and "reboot: Power down" in text, r
    print(f"no-auto diagnosis, Linux 6.12: powered off {r.seconds:.2f} s after QEMU started")


def test_uki_from_the_firmware_unlocks_a_luks_root_found_by_type(kernel_612, tmp_path, console_log):
    """`pyinit-mkinitramfs uki` (with the luks hook) as EFI/BOOT/BOOTX64.EFI, started by the
    firmware itself. Its .cmdline has no root=. The disk holds a plain root flagged no-auto
    first (taken if the flag were ignored), then a LUKS2 root partition: found by its type,
    unlocked with a passphrase typed on the serial console, mounted as the root."""
    out = tmp_path / "pyinit.efi"
    initrd = tmp_path / "initrd.img"
    cmdline = "console=ttyS0 panic=-1 rd.shell=0 rd.emergency=poweroff"
    b = run_builder("uki", "-o", str(out), "--kernel", str(kernel_612.vmlinuz), "--cmdline", cmdline,
                    "--kver", kernel_612.kver, "--moddir", str(kernel_612.moddir), "--modules", "virtio_blk,ext4",
                    "--hook", "luks", "--initrd-output", str(initrd))
    assert b.returncode == 0, b.stderr
    data = out.read_bytes()
    sections = uki.sections_of(data)
    assert sections[".cmdline"] == cmdline.encode() and sections[".uname"] == kernel_612.kver.encode()
    assert sections[".initrd"] == initrd.read_bytes()
    vmlinuz = kernel_612.vmlinuz.read_bytes()  # .linux: the kernel, zero-padded to the file alignment
    assert sections[".linux"][:len(vmlinuz)] == vmlinuz and not sections[".linux"][len(vmlinuz):].strip(b"\0")
    assert b"ID=" in sections[".osrel"]
    luks = uefi.make_luks_root(tmp_path / "luks.img", PASSPHRASE, luks_uuid=LUKS_UUID)
    dump = subprocess.run(["cryptsetup", "luksDump", str(luks)], capture_output=True, text=True).stdout
    assert re.search(r"^Version:\s+2$", dump, re.M) and LUKS_UUID in dump, dump
    disk = uefi.make_uefi_disk(tmp_path / "boot.img", uefi.uki_files(out), [
        Partition("decoy", 48, root=True, type_code=uefi.ROOT_X86_64, attributes=(NO_AUTO,)),
        Partition("secret root", 96, fs=None, type_code=uefi.ROOT_X86_64, image=luks)])
    prompt = f"Enter passphrase for /dev/vda3 (luks-{LUKS_UUID}): "
    r = uefi.boot_uefi([disk.path], log=console_log, console_input=[(prompt, "secret\n")])
    rep = assert_real_init_on(r, "/dev/dm-0")
    assert rep.cmdline == cmdline, rep.cmdline  # the UKI's .cmdline, no boot loader in between
    assert "EFI stub:" in r.console and f"Command line: {cmdline}" in r.console, r
    assert "pyinit: gpt-auto: skipped /dev/vda2: flagged no-auto (GPT attribute 63)" in r.console, r
    assert re.search(r"pyinit: gpt-auto: root partition /dev/vda3 \(Root Partition \(x86-64\)", r.console), r
    assert f"pyinit: luks: unlocked /dev/vda3 as /dev/mapper/luks-{LUKS_UUID} with a passphrase" in r.console, r
    assert "secret\n" not in r.console
    timing(f"UKI ({len(data) / 1024 / 1024:.2f} MiB) with a LUKS root, Linux 6.12", r)


def test_without_uefi_the_only_disk_with_a_root_partition(kernel_612, pyinit_image, tmp_path, console_log):
    """A BIOS boot (QEMU's -kernel, no /sys/firmware/efi) without root=: no loader names a
    disk, so the only disk holding a root partition of this architecture counts. The first
    disk holds a bootable root too, but typed Generic Linux Data: never taken."""
    from devtools.qemu import boot
    from devtools.rootdisk import make_gpt_disk
    check = {"etc/realinit-check": "/sys/module/efivarfs\n"}
    decoy = make_gpt_disk(tmp_path / "decoy.img", [Partition("linux data", 48, root=True, type_code="8300")])
    disk = make_gpt_disk(tmp_path / "root.img", [
        Partition("swap", 4, fs=None, type_code="8200"),
        Partition("root", 48, root=True, type_code=uefi.ROOT_X86_64, extra_files=check)])
    r = boot(kernel_612, pyinit_image("6.12"), "rd.shell=0 rd.emergency=poweroff", disks=[decoy.path, disk.path],
             log=console_log)
    rep = assert_real_init_on(r, "/dev/vdb2")
    assert not any(a.startswith("root=") for a in rep.cmdline_args), rep.cmdline
    assert "pyinit: gpt-auto: not booted through UEFI (no /sys/firmware/efi): no LoaderDevicePartUUID" in r.console
    assert rep.files == {"/sys/module/efivarfs": False}, rep.files  # nothing to read, nothing loaded
