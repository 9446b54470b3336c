"""Unified Kernel Images: systemd-stub with the kernel, pyinit's initramfs, the command line,
os-release and the kernel's version as PE sections, one EFI binary the firmware (or a boot
loader) starts.

    data = make_uki(stub_bytes, [(".osrel", ...), (".cmdline", ...), (".uname", ...),
                                 (".initrd", image), (".linux", vmlinuz)])

The PE work goes through pefile (the library systemd's ukify uses): it parses the stub
and writes its headers back; this module only decides where each new section goes, by
the PE format's rules as ukify applies them:
- the section's file offset (PointerToRawData) and stored size (SizeOfRawData) are
  multiples of the stub's FileAlignment, its data zero-padded to that size;
- its address (VirtualAddress) follows the end of the previous section, rounded up to the
  stub's SectionAlignment; VirtualSize is the data's real size (for .linux the kernel's
  own SizeOfImage when larger: a kernel started in place through the EFI handover needs
  that room after its image);
- the new section headers must fit between the existing ones and SizeOfHeaders (rounded
  up to FileAlignment, which the first section's offset always allows);
- NumberOfSections, SizeOfInitializedData and SizeOfImage (the end of the last section,
  rounded up to SectionAlignment) follow; the checksum is left 0, as firmware ignores it
  and sbsign computes its own.
Old stubs still carry a COFF symbol table at the end of the file; it is cut off before
sections are appended after it. A signed stub is refused (appending would break it).

Signing for Secure Boot is sbsign's job (Debian's sbsigntool): `sign()` runs it when the
command line gives a key and a certificate.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from types import ModuleType
from typing import Any

from mkinitramfs import atomic
from mkinitramfs.errors import MkinitramfsError

STUB_PATHS = ("/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "/usr/lib/systemd/boot/efi/linuxx64.efi.stub.signed")
OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
SECTION_ORDER = (".osrel", ".cmdline", ".uname", ".initrd", ".linux")  # .linux last: the largest VirtualSize


class UkiError(MkinitramfsError):
    """A Unified Kernel Image cannot be made from these parts; the message names the part."""


def _pefile() -> ModuleType:
    """pefile, imported when a UKI is made: a pip install has it, the Debian package leaves
    it to the user (python3-pefile), like sbsigntool."""
    try:
        import pefile
    except ImportError:
        raise UkiError("the uki command needs pefile (pip install pefile, or Debian's python3-pefile)") from None
    module: ModuleType = pefile  # pefile has no type information
    return module


def find_stub(explicit: str | None = None) -> str:
    """--stub PATH, else systemd-boot-efi's linuxx64.efi.stub."""
    if explicit:
        if not os.path.isfile(explicit):
            raise UkiError(f"--stub {explicit}: no such file")
        return explicit
    for path in STUB_PATHS:
        if os.path.isfile(path):
            return path
    raise UkiError(f"no systemd-stub at {STUB_PATHS[0]}: install the Debian package systemd-boot-efi, "
                   "or name one with --stub PATH")


def read_os_release(explicit: str | None = None) -> bytes:
    """--os-release FILE, else this machine's (as ukify does)."""
    for path in ([explicit] if explicit else OS_RELEASE_PATHS):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            if explicit:
                raise UkiError(f"--os-release {explicit}: {e.strerror}") from None
    raise UkiError(f"no os-release at {' or '.join(OS_RELEASE_PATHS)}: name one with --os-release FILE")


def kernel_version(vmlinuz: bytes) -> str | None:
    """The version an x86 bzImage carries in its setup header ("6.1.0-50-amd64"), or None:
    the header's "HdrS" magic at 0x202 and, at 0x20e, where its version string is (from
    0x200); the string begins with the version, then " (builder@host) #1 ..."."""
    if len(vmlinuz) < 0x210 or vmlinuz[0x202:0x206] != b"HdrS":
        return None
    where = int.from_bytes(vmlinuz[0x20E:0x210], "little") + 0x200
    text = vmlinuz[where:where + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    version = text.split(" ", 1)[0]
    return version or None


def _round_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def make_uki(stub: bytes, sections: list[tuple[str, bytes]], linux_virtual_size: int | None = None) -> bytes:
    """The stub with `sections` (name, data) appended as PE sections. Pure (bytes in, bytes out)."""
    pefile = _pefile()
    try:
        pe = pefile.PE(data=stub, fast_load=True)
    except pefile.PEFormatError as e:
        raise UkiError(f"the stub is not a PE file: {e}") from None
    _check_stub(pe, pefile, [name for name, _ in sections])
    opt = pe.OPTIONAL_HEADER
    file_align, section_align = opt.FileAlignment, opt.SectionAlignment
    data = _without_symbol_table(pe)
    opt.SizeOfHeaders = _round_up(opt.SizeOfHeaders, file_align)
    first_data = min((s.PointerToRawData for s in pe.sections if s.SizeOfRawData), default=opt.SizeOfHeaders)
    if opt.SizeOfHeaders > first_data:
        raise UkiError("the stub's headers overlap its first section")

    header_size = pefile.SectionStructure(pe.__IMAGE_SECTION_HEADER_format__).sizeof()
    table_end = pe.sections[-1].get_file_offset() + header_size
    if table_end + header_size * len(sections) > opt.SizeOfHeaders:
        raise UkiError(f"the stub has no room for {len(sections)} more section headers "
                       f"(headers end at {opt.SizeOfHeaders}, its section table at {table_end})")
    payload = bytearray()
    file_end = _round_up(len(data), file_align)
    stub_sections = len(pe.sections)
    next_va = _round_up(max(_va_end(s) for s in pe.sections), section_align)
    for i, (name, content) in enumerate(sections):
        header = pefile.SectionStructure(pe.__IMAGE_SECTION_HEADER_format__, pe=pe)
        header.__unpack__(bytes(header_size))
        header.set_file_offset(table_end + i * header_size)
        header.Name = name.encode()
        size = len(content)
        virtual = max(size, linux_virtual_size or 0) if name == ".linux" else size
        header.Misc_VirtualSize = virtual
        header.VirtualAddress = next_va
        header.PointerToRawData = file_end + len(payload)
        header.SizeOfRawData = _round_up(size, file_align)
        # .linux holds code (a kernel started through the EFI handover runs from there):
        # CNT_CODE, else CNT_INITIALIZED_DATA; MEM_READ for both
        header.Characteristics = (0x20 if name == ".linux" else 0x40) | 0x40000000
        payload += content + bytes(header.SizeOfRawData - size)
        pe.__structures__.append(header)
        pe.sections.append(header)
        pe.FILE_HEADER.NumberOfSections += 1
        opt.SizeOfInitializedData += header.SizeOfRawData
        next_va = _round_up(next_va + virtual, section_align)
    opt.SizeOfImage = next_va
    opt.CheckSum = 0
    pe.__data__ = data
    head = pe.write()  # the stub, with the headers pefile holds written back into it
    out = bytes(head) + bytes(file_end - len(head)) + bytes(payload)
    check_layout(out, first_new=stub_sections)
    return out


def _check_stub(pe: Any, pefile: ModuleType, names: list[str]) -> None:  # pe: pefile.PE, untyped
    """Refuse a stub that is signed, has alignments that are not powers of two, or already
    has one of the sections to add; refuse section names PE cannot hold."""
    opt = pe.OPTIONAL_HEADER
    security = opt.DATA_DIRECTORY[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]]
    if security.VirtualAddress or security.Size:
        raise UkiError("the stub is signed: sign the finished UKI instead (an appended section breaks the signature)")
    file_align, section_align = opt.FileAlignment, opt.SectionAlignment
    if not file_align or not section_align or file_align & (file_align - 1) or section_align & (section_align - 1):
        raise UkiError(f"the stub's alignments are not powers of two (file {file_align}, section {section_align})")
    existing = {s.Name.rstrip(b"\0").decode("ascii", "replace") for s in pe.sections}
    for name in names:
        if len(name.encode()) > 8 or not name.startswith("."):
            raise UkiError(f"section name {name!r}: at most 8 bytes, starting with a dot")
        if name in existing:
            raise UkiError(f"the stub already has a {name} section")


def _without_symbol_table(pe: Any) -> bytes:  # pe: pefile.PE, untyped
    """The stub's bytes without an old stub's COFF symbol table (18 bytes a symbol, then the
    string table whose first 4 bytes are its size) at the end of the file: no image needs
    it, and the sections must not be appended after it."""
    data = bytearray(pe.__data__)
    symbols = pe.FILE_HEADER.PointerToSymbolTable
    if symbols:
        end = symbols + 18 * pe.FILE_HEADER.NumberOfSymbols
        if end + 4 <= len(data):
            end += int.from_bytes(data[end:end + 4], "little")
        if end == len(data):
            del data[symbols:]
            pe.FILE_HEADER.PointerToSymbolTable = 0
            pe.FILE_HEADER.NumberOfSymbols = 0
    return bytes(data)


def _va_end(section: Any) -> int:  # section: pefile.SectionStructure, untyped
    """Where a section ends in memory: the loader maps VirtualSize bytes (the file's
    SizeOfRawData is only padding up to FileAlignment beyond that), or the raw size when
    VirtualSize is 0."""
    return int(section.VirtualAddress + (section.Misc_VirtualSize or section.SizeOfRawData))


def check_layout(image: bytes, first_new: int = 0) -> None:
    """Read the result back: sections in address order without overlaps, inside SizeOfImage,
    their data inside the file; the sections from `first_new` on (ours; a stub may have
    its own ideas) aligned to SectionAlignment and FileAlignment. pefile's own warnings
    are errors."""
    pefile = _pefile()
    pe = pefile.PE(data=image, fast_load=True)
    problems = list(pe.get_warnings())
    opt = pe.OPTIONAL_HEADER
    prev_end_va = prev_end_raw = 0
    for i, s in enumerate(pe.sections):
        name = s.Name.rstrip(b"\0").decode("ascii", "replace")
        ours = i >= first_new
        if s.VirtualAddress < prev_end_va or (ours and s.VirtualAddress % opt.SectionAlignment):
            problems.append(f"{name}: address {s.VirtualAddress:#x} misaligned or overlapping")
        if s.SizeOfRawData and (s.PointerToRawData < prev_end_raw or s.PointerToRawData + s.SizeOfRawData > len(image)
                                or (ours and (s.PointerToRawData % opt.FileAlignment
                                              or s.SizeOfRawData % opt.FileAlignment))):
            problems.append(f"{name}: file data at {s.PointerToRawData:#x}+{s.SizeOfRawData:#x} misplaced")
        prev_end_va = _va_end(s)
        prev_end_raw = max(prev_end_raw, s.PointerToRawData + s.SizeOfRawData)
    if opt.SizeOfImage < prev_end_va or opt.SizeOfImage % opt.SectionAlignment:
        problems.append(f"SizeOfImage {opt.SizeOfImage:#x} does not cover the sections ({prev_end_va:#x})")
    if problems:
        raise UkiError("the UKI would not load: " + "; ".join(problems))


def sections_of(image: bytes) -> dict[str, bytes]:
    """name -> data (VirtualSize bytes at most) of a PE file's sections."""
    pefile = _pefile()
    pe = pefile.PE(data=image, fast_load=True)
    return {s.Name.rstrip(b"\0").decode("ascii", "replace"):
            image[s.PointerToRawData:s.PointerToRawData + min(s.Misc_VirtualSize, s.SizeOfRawData)]
            for s in pe.sections}


def linux_image_size(vmlinuz: bytes) -> int | None:
    """The kernel's own PE SizeOfImage (its EFI stub's), or None when it is no PE file."""
    pefile = _pefile()
    try:
        return int(pefile.PE(data=vmlinuz, fast_load=True).OPTIONAL_HEADER.SizeOfImage)
    except pefile.PEFormatError:
        return None


def assemble(stub: bytes, vmlinuz: bytes, initrd: bytes, *, cmdline: str | None, os_release: bytes,
             uname: str | None) -> bytes:
    """The UKI's sections in ukify's order, then make_uki."""
    parts = {".osrel": os_release, ".initrd": initrd, ".linux": vmlinuz}
    if cmdline is not None:
        parts[".cmdline"] = cmdline.encode()
    if uname:
        parts[".uname"] = uname.encode()
    sections = [(name, parts[name]) for name in SECTION_ORDER if name in parts]
    return make_uki(stub, sections, linux_image_size(vmlinuz))


def sign(unsigned: str, signed: str, key: str, certificate: str) -> None:
    """sbsign --key KEY --cert CERT --output SIGNED UNSIGNED (Debian's sbsigntool)."""
    exe = shutil.which("sbsign")
    if exe is None:
        raise UkiError("sbsign not found: install the Debian package sbsigntool to sign the UKI")
    proc = subprocess.run([exe, "--key", key, "--cert", certificate, "--output", signed, unsigned],
                          check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UkiError(f"sbsign failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")


def write(output: str, image: bytes, key: str | None = None, certificate: str | None = None) -> None:
    """Write the UKI atomically (mode 0644: firmware reads it from a FAT ESP anyway),
    signed first when a key and certificate are given."""
    if bool(key) != bool(certificate):
        raise UkiError("signing needs both --secureboot-key and --secureboot-certificate")
    if key and certificate:
        directory = os.path.dirname(os.path.abspath(output))
        with tempfile.TemporaryDirectory(prefix=".pyinit-uki.", dir=directory) as tmp:
            unsigned, signed = os.path.join(tmp, "unsigned.efi"), os.path.join(tmp, "signed.efi")
            with open(unsigned, "wb") as f:
                f.write(image)
            sign(unsigned, signed, key, certificate)
            with open(signed, "rb") as f:
                image = f.read()
    atomic.write_atomically(output, image, mode=0o644)
