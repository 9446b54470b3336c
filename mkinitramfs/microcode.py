"""Early microcode: an uncompressed cpio placed before the main archive.

The x86 early loader (arch/x86/kernel/cpu/microcode) looks, before any filesystem exists,
for kernel/x86/microcode/GenuineIntel.bin or AuthenticAMD.bin in the *first, uncompressed*
cpio of the initrd. Each file is the vendor's updates concatenated: the Intel loader walks
the blob for an update matching the CPU signature, the AMD loader walks the containers.
The kernel then unpacks that cpio into the rootfs too, like any other segment.

Debian ships the files as /lib/firmware/intel-ucode/FF-MM-SS (package intel-microcode)
and /lib/firmware/amd-ucode/microcode_amd*.bin (amd64-microcode).

  --microcode auto   the build host's CPU vendor, and only the file for its CPU
                     (Intel: family-model-stepping; AMD: its family's container) -- what a
                     host-only image needs; nothing, with a note, when none is installed
  --microcode intel  every Intel file (an image for any Intel machine; ~10 MB uncompressed)
  --microcode amd    every AMD file
  --microcode all    both vendors
  --microcode none   no early cpio
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from mkinitramfs import parts
from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.image import Image

CHOICES = ("auto", "intel", "amd", "all", "none")
VENDORS = {"intel": ("GenuineIntel", "intel-ucode"), "amd": ("AuthenticAMD", "amd-ucode")}
VENDOR_OF_ID = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}
EARLY_DIR = "/kernel/x86/microcode"
_INTEL_NAME = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{2}-[0-9a-f]{2}$")


class MicrocodeError(MkinitramfsError):
    """--microcode cannot pack what was asked; the message names the file or folder."""


@dataclass(frozen=True)
class Cpu:
    vendor_id: str
    family: int
    model: int
    stepping: int


def parse_cpuinfo(text: str) -> Cpu | None:
    """The first processor of /proc/cpuinfo; None when it says no x86 vendor."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    try:
        return Cpu(fields["vendor_id"], int(fields["cpu family"]), int(fields["model"]), int(fields["stepping"]))
    except (KeyError, ValueError):
        return None


def host_file(vendor: str, cpu: Cpu) -> str:
    """The file name, within the vendor's folder, the kernel itself would ask for."""
    if vendor == "intel":
        return f"{cpu.family:02x}-{cpu.model:02x}-{cpu.stepping:02x}"
    return f"microcode_amd_fam{cpu.family:02x}h.bin" if cpu.family >= 0x15 else "microcode_amd.bin"


def vendor_files(firmware_dir: str, vendor: str) -> list[str]:
    folder = os.path.join(firmware_dir, VENDORS[vendor][1])
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    keep = []
    for n in names:
        path = os.path.join(folder, n)
        if not os.path.isfile(path):
            continue
        if (vendor == "intel" and _INTEL_NAME.match(n)) or (vendor == "amd" and n.startswith("microcode_amd")
                                                              and n.endswith(".bin")):
            keep.append(path)
    return keep


def select(choice: str, firmware_dir: str, cpuinfo: str | None = None,
           notes: list[str] | None = None) -> dict[str, list[str]]:
    """{vendor: [host files, in order]} for --microcode CHOICE."""
    notes = notes if notes is not None else []
    if choice not in CHOICES:
        raise MicrocodeError(f"--microcode {choice}: choose one of {', '.join(CHOICES)}")
    if choice == "none":
        return {}
    if choice == "auto":
        return _this_cpu(firmware_dir, cpuinfo, notes)
    vendors = ["intel", "amd"] if choice == "all" else [choice]
    out = {}
    for vendor in vendors:
        files = vendor_files(firmware_dir, vendor)
        if not files:
            pkg = "intel-microcode" if vendor == "intel" else "amd64-microcode"
            raise MicrocodeError(f"--microcode {choice}: no {vendor} microcode in "
                                 f"{os.path.join(firmware_dir, VENDORS[vendor][1])} (Debian package {pkg})")
        out[vendor] = files
    return out


def _this_cpu(firmware_dir: str, cpuinfo: str | None, notes: list[str]) -> dict[str, list[str]]:
    """--microcode auto: the build host's CPU's own file, when its vendor's package is
    installed; nothing, with a note, otherwise."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    cpu = parse_cpuinfo(cpuinfo)
    vendor = VENDOR_OF_ID.get(cpu.vendor_id) if cpu else None
    if cpu is None or vendor is None:
        notes.append("microcode: the build host's CPU is neither Intel nor AMD: none packed")
        return {}
    path = os.path.join(firmware_dir, VENDORS[vendor][1], host_file(vendor, cpu))
    if not os.path.isfile(path):
        notes.append(f"microcode: no {path} for this {cpu.vendor_id} CPU "
                     f"(family {cpu.family:#x} model {cpu.model:#x} stepping {cpu.stepping}): none packed")
        return {}
    return {vendor: [path]}


AMD_MAGIC = 0x00414D44  # "DMA\0": the start of an AMD microcode container


def check_blob(vendor: str, blob: bytes, name: str = "") -> int:
    """Walk a vendor blob the way the kernel's early loader does; returns the number of
    updates (Intel) or containers (AMD). Raises MicrocodeError on a file it could not walk
    (truncated, not microcode), naming it."""
    where = name or vendor
    if vendor == "intel":
        # struct microcode_header_intel: hdrver, rev, date, sig, cksum, ldrver, pf,
        # datasize, totalsize (0 means 2048), ...: updates follow each other back to back.
        off = count = 0
        while off < len(blob):
            if off + 48 > len(blob):
                raise MicrocodeError(f"{where}: truncated Intel microcode header at offset {off}")
            hdrver, = struct.unpack_from("<I", blob, off)
            datasize, totalsize = struct.unpack_from("<II", blob, off + 28)
            total = totalsize or 2048
            if hdrver != 1 or total < 48 + (datasize or 2000) or off + total > len(blob):
                raise MicrocodeError(f"{where}: not Intel microcode at offset {off} "
                                     f"(header version {hdrver}, total size {total})")
            off += total
            count += 1
        return count
    # AMD: containers back to back: magic, an equivalence table (type 0, length), then
    # patch sections (type 1, length) until the next magic or the end.
    off = count = 0
    while off < len(blob):
        if off + 12 > len(blob):
            raise MicrocodeError(f"{where}: truncated AMD container at offset {off}")
        magic, typ, length = struct.unpack_from("<III", blob, off)
        if magic != AMD_MAGIC or typ != 0:
            raise MicrocodeError(f"{where}: no AMD microcode container at offset {off}")
        off += 12 + length
        while off + 8 <= len(blob):
            typ, length = struct.unpack_from("<II", blob, off)
            if typ != 1:
                break
            off += 8 + length
        if off > len(blob) or (off < len(blob) and struct.unpack_from("<I", blob, off)[0] != AMD_MAGIC):
            raise MicrocodeError(f"{where}: AMD container ends badly at offset {off}")
        count += 1
    return count


def early_image(selection: dict[str, list[str]]) -> Image | None:
    """The early cpio's entries: kernel/x86/microcode/<VendorId>.bin, the vendor's files
    concatenated in name order."""
    if not selection:
        return None
    img = Image()
    for vendor in sorted(selection):
        blob = []
        for path in selection[vendor]:
            with open(path, "rb") as f:
                data = f.read()
            check_blob(vendor, data, path)  # a damaged file would stop the loader's walk
            blob.append(data)
        img.add_file(f"{EARLY_DIR}/{VENDORS[vendor][0]}.bin", data=b"".join(blob), mode=0o644, part=parts.MICROCODE)
    return img


def pad(raw: bytes, block: int = 512) -> bytes:
    """Pad the early cpio to a whole 512-byte block, as GNU cpio writes it: tools that
    split images (initramfs-tools' unmkinitramfs) count blocks to find the next segment.
    The kernel skips the zeros."""
    return raw + b"\0" * (-len(raw) % block)
