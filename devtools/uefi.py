"""UEFI boots for the VM tier: OVMF firmware, an EFI System Partition made with mtools, a
systemd-boot Type #1 entry or a Unified Kernel Image, and no -kernel.

    disk = make_uefi_disk(tmp / "disk.img", entry_files(kernel.vmlinuz, initrd, "console=ttyS0 rw"),
                          [Partition("root", 64, root=True, type_code=ROOT_X86_64)])
    r = boot_uefi([disk.path], log=console_log)

The disk is a file: sgdisk writes the GPT (devtools.rootdisk.make_gpt_disk, whose other
partitions are made in files of their own and copied in), and the ESP, always partition 1
at 1 MiB, is formatted and filled in place with mtools' image@@offset syntax (mformat,
mmd, mcopy): no loop device, no partition scanning on the host.

The firmware is Debian's OVMF (package ovmf): the 4 MiB code image read-only, and a fresh
copy of its variable store per boot, so no boot sees what an earlier one wrote. With an
empty store OVMF boots the removable-media path EFI/BOOT/BOOTX64.EFI of the first disk
that has one: systemd-boot there (package systemd-boot-efi), or the UKI itself. OVMF,
systemd-boot and the EFI stub print on the serial port (-serial stdio); the kernel needs
console=ttyS0 in its command line (the entry's options, or the UKI's .cmdline).

Timing: BootResult.seconds and marker_seconds are QEMU's wall clock from its start;
firmware_seconds() takes the guest's uptime at the real init from the wall time at which
the real init's report appeared, which leaves the firmware and the boot loader (and QEMU's
own start, a few tens of ms).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from devtools.qemu import BootResult, DiskSpec, _qemu_path, boot
from devtools.rootdisk import GptDisk, Partition, make_gpt_disk, stage_root

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
ROOT_X86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"  # the Discoverable Partitions root type
ESP_TYPE = "ef00"
ESP_OFFSET = 1024 * 1024  # make_gpt_disk puts partition 1 at sector 2048
LOADER_CONF = "timeout 0\ndefault pyinit.conf\neditor no\n"
# NO_AUTO, READ_ONLY, GROW_FS as sgdisk's attribute bit numbers
BIT_NO_AUTO, BIT_READ_ONLY, BIT_GROW_FS = 63, 60, 59


def _need(path: Path, package: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: install the Debian package {package}")
    return path


def ovmf() -> tuple[Path, Path]:
    """(code, variable store template) of Debian's OVMF."""
    return _need(OVMF_CODE, "ovmf"), _need(OVMF_VARS, "ovmf")


def entry_files(vmlinuz: Path, initrd: Path, options: str, *, title: str = "pyinit") -> dict[str, Path | bytes]:
    """The ESP of a systemd-boot machine: the loader as EFI/BOOT/BOOTX64.EFI (and where
    bootctl installs it), loader.conf booting the one entry at once, and a Type #1 entry
    (loader/entries/pyinit.conf) with the kernel, pyinit's image and `options`."""
    loader = _need(SYSTEMD_BOOT, "systemd-boot-efi")
    entry = f"title {title}\nlinux /pyinit/vmlinuz\ninitrd /pyinit/initrd.img\noptions {options}\n"
    return {"EFI/BOOT/BOOTX64.EFI": loader, "EFI/systemd/systemd-bootx64.efi": loader,
            "loader/loader.conf": LOADER_CONF.encode(), "loader/entries/pyinit.conf": entry.encode(),
            "pyinit/vmlinuz": Path(vmlinuz), "pyinit/initrd.img": Path(initrd)}


def uki_files(uki: Path) -> dict[str, Path | bytes]:
    """The ESP of a machine that boots a UKI straight from the firmware."""
    return {"EFI/BOOT/BOOTX64.EFI": Path(uki)}


def _mtools(argv: list[str]) -> None:
    exe = shutil.which(argv[0])
    if exe is None:
        raise FileNotFoundError(f"{argv[0]} not found: install the Debian package mtools")
    proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True,
                          env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def format_esp(disk: Path, offset: int, size: int, files: dict[str, Path | bytes], *, label: str = "ESP",
               serial: str = "1234ABCD") -> None:
    """FAT on the partition at `offset` (bytes) of `disk`, then `files` (ESP path -> a
    host file or bytes) copied in, folders first; all through mtools' image@@offset."""
    image = f"{disk}@@{offset}"
    # -T: the partition's sectors; -H: hidden sectors before it, as a formatter on the
    # partition device would write them.
    _mtools(["mformat", "-i", image, "-T", str(size // 512), "-H", str(offset // 512), "-v", label,
             "-N", serial, "::"])
    folders = sorted({str(Path(p).parent) for p in files if str(Path(p).parent) != "."},
                     key=lambda d: d.count("/"))
    made: set[str] = set()
    for folder in folders:
        parts = folder.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                _mtools(["mmd", "-i", image, f"::/{sub}"])
                made.add(sub)
    with tempfile.TemporaryDirectory(prefix="pyinit-esp.") as tmp:
        for dest, content in sorted(files.items()):
            if isinstance(content, bytes):
                src = Path(tmp) / Path(dest).name
                src.write_bytes(content)
            else:
                src = content
            _mtools(["mcopy", "-i", image, str(src), f"::/{dest}"])


def make_uefi_disk(path: Path, esp: dict[str, Path | bytes], partitions: Sequence[Partition] = (), *,
                   esp_mb: int = 64) -> GptDisk:
    """A GPT disk: partition 1 the ESP holding `esp`, then `partitions` (numbered from 2)."""
    disk = make_gpt_disk(Path(path), [Partition("EFI System Partition", esp_mb, fs=None, type_code=ESP_TYPE),
                                      *partitions])
    format_esp(disk.path, ESP_OFFSET, esp_mb * 1024 * 1024, esp)
    return disk


LUKS_HEADROOM_MB = 32  # what `cryptsetup reencrypt --reduce-device-size` takes for the LUKS2 header


def make_luks_root(path: Path, passphrase: bytes, *, size_mb: int = 96, luks_uuid: str | None = None,
                   extra_files: dict[str, bytes | str] | None = None) -> Path:
    """A LUKS2 container holding an ext4 test root, made without device-mapper: the ext4 is
    made LUKS_HEADROOM_MB smaller than the file, then `cryptsetup reencrypt --encrypt`
    encrypts it in place, offline, moving the data up to make room for the header (the
    host cannot map devices). PBKDF2 with few iterations: the guest unlocks it under TCG."""
    path = Path(path)
    fs_mb = size_mb - LUKS_HEADROOM_MB
    if fs_mb < 16:
        raise ValueError(f"a LUKS root of {size_mb} MiB leaves no room for the filesystem")
    with tempfile.TemporaryDirectory(prefix="pyinit-luks.") as tmp:
        staging = Path(tmp) / "root"
        staging.mkdir()
        stage_root(staging, extra_files=extra_files)
        with open(path, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        _tool(["mkfs.ext4", "-q", "-F", "-d", str(staging), "-E", "root_owner=0:0", str(path), f"{fs_mb}M"],
              "e2fsprogs")
        key = Path(tmp) / "passphrase"
        key.write_bytes(passphrase)
        argv = ["cryptsetup", "reencrypt", "--encrypt", "--type", "luks2", "--reduce-device-size",
                f"{LUKS_HEADROOM_MB}M", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                "--key-file", str(key), "--batch-mode"]
        if luks_uuid:
            argv += ["--uuid", luks_uuid]
        _tool([*argv, str(path)], "cryptsetup-bin")
    return path


def _tool(argv: list[str], package: str) -> None:
    exe = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
    if exe is None:
        raise FileNotFoundError(f"{argv[0]} not found: install the Debian package {package}")
    proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def pflash_args(code: Path, variables: Path) -> list[str]:
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_qemu_path(code)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={_qemu_path(variables)}"]


def boot_uefi(disks: Sequence[Path | str | DiskSpec], *, log: Path | None = None, timeout: float = 300,
              memory_mb: int = 512, console_input: Sequence[tuple[str, str]] = (), qmp: bool = False,
              on_start=None, extra_args: Sequence[str] = ()) -> BootResult:
    """Power on a machine with OVMF and these disks (no -kernel): the firmware finds the
    boot loader or UKI on the ESP. A fresh copy of the variable store per boot."""
    code, template = ovmf()
    with tempfile.TemporaryDirectory(prefix="pyinit-ovmf.") as tmp:
        variables = Path(tmp) / "OVMF_VARS.fd"
        shutil.copyfile(template, variables)
        return boot(None, None, disks=disks, memory_mb=memory_mb, timeout=timeout, log=log,
                    console_input=console_input, qmp=qmp, on_start=on_start,
                    extra_args=[*pflash_args(code, variables), *extra_args])


def firmware_seconds(r: BootResult) -> float | None:
    """Wall seconds from QEMU's start to the kernel's start: the time until the real init
    reported, less the guest's uptime then (the guest clock runs with the host's)."""
    if r.marker_seconds is None or r.report is None or r.report.uptime is None:
        return None
    return r.marker_seconds - r.report.uptime
