"""Unified Kernel Images (mkinitramfs/uki.py) around Debian's real systemd-stub: where the
sections go by the PE rules, read back by pefile and by binutils' objdump (an independent
reader), what is refused, the kernel version from a bzImage header, sbsign signing checked
by sbverify, and the `uki` command's checks and settings file. The boot itself is in
tests/vm/test_uefi.py."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mkinitramfs import config, uki
from mkinitramfs.__main__ import main
from mkinitramfs.cli import parsers

pytestmark = pytest.mark.unit

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")


@pytest.fixture(scope="module")
def stub() -> bytes:
    if not STUB.is_file():
        pytest.fail(f"{STUB} not found: install the Debian package systemd-boot-efi (devtools/setup.sh does)",
                    pytrace=False)
    return STUB.read_bytes()


def tool(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} not found: install the Debian package {package}", pytrace=False)
    return exe


def fake_kernel(version: str = "6.1.0-test", size: int = 300_000) -> bytes:
    """Enough of an x86 bzImage for kernel_version(): the setup header's magic and the
    offset of its version string."""
    data = bytearray(size)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x1000 - 0x200).to_bytes(2, "little")
    text = f"{version} (debian-kernel@lists.debian.org) #1 SMP Debian".encode()
    data[0x1000:0x1000 + len(text)] = text
    return bytes(data)


SECTIONS = [(".osrel", b"ID=debian\n"), (".cmdline", b"console=ttyS0 rw"), (".uname", b"6.1.0-test"),
            (".initrd", bytes(range(256)) * 4000 + b"tail"), (".linux", fake_kernel())]


def pe_headers(data: bytes):
    import pefile
    return pefile.PE(data=data, fast_load=True)


def test_sections_follow_the_stub_aligned_as_the_pe_format_requires(stub):
    out = uki.make_uki(stub, SECTIONS, linux_virtual_size=0x900000)
    before, after = pe_headers(stub), pe_headers(out)
    opt = after.OPTIONAL_HEADER
    assert after.FILE_HEADER.NumberOfSections == before.FILE_HEADER.NumberOfSections + 5
    new = after.sections[len(before.sections):]
    assert [s.Name.rstrip(b"\0").decode() for s in new] == [n for n, _ in SECTIONS]
    stub_end = max(s.VirtualAddress + s.Misc_VirtualSize for s in before.sections)
    assert new[0].VirtualAddress == -(-stub_end // opt.SectionAlignment) * opt.SectionAlignment
    end = 0
    for s, (name, data) in zip(new, SECTIONS, strict=True):
        assert s.VirtualAddress % opt.SectionAlignment == 0 and s.VirtualAddress >= end, name
        assert s.PointerToRawData % opt.FileAlignment == 0 and s.SizeOfRawData % opt.FileAlignment == 0, name
        assert s.SizeOfRawData >= len(data) > s.SizeOfRawData - opt.FileAlignment, name
        assert out[s.PointerToRawData:s.PointerToRawData + len(data)] == data, name
        assert s.Misc_VirtualSize == (0x900000 if name == ".linux" else len(data)), name
        end = s.VirtualAddress + s.Misc_VirtualSize
    assert opt.SizeOfImage == -(-end // opt.SectionAlignment) * opt.SectionAlignment
    assert len(out) == new[-1].PointerToRawData + new[-1].SizeOfRawData
    assert new[-1].Characteristics & 0x20 and new[0].Characteristics & 0x40  # .linux is code, the rest data
    assert after.FILE_HEADER.PointerToSymbolTable == 0  # the stub's leftover COFF symbols are gone
    # the stub's own sections and code are untouched
    for a, b in zip(before.sections, after.sections, strict=False):  # the UKI adds sections after
        assert (a.Name, a.VirtualAddress, a.PointerToRawData) == (b.Name, b.VirtualAddress, b.PointerToRawData)
        assert stub[a.PointerToRawData:a.PointerToRawData + a.SizeOfRawData] == \
            out[b.PointerToRawData:b.PointerToRawData + b.SizeOfRawData]
    got = uki.sections_of(out)
    assert got[".cmdline"] == b"console=ttyS0 rw" and got[".initrd"] == SECTIONS[3][1]


def test_objdump_reads_the_same_layout(stub, tmp_path):
    """binutils reads the file as PE32+ with every section where pefile put it."""
    path = tmp_path / "x.efi"
    path.write_bytes(uki.make_uki(stub, SECTIONS))
    listing = subprocess.run([tool("objdump", "binutils"), "-h", str(path)], capture_output=True, text=True)
    assert listing.returncode == 0 and "pei-x86-64" in listing.stdout, listing.stderr
    rows = {m.group(1): (int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16))
            for m in re.finditer(r"^\s*\d+ (\.\w+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)",
                                 listing.stdout, re.M)}
    pe = pe_headers(path.read_bytes())
    for s in pe.sections:
        name = s.Name.rstrip(b"\0").decode()
        assert rows[name][1] == pe.OPTIONAL_HEADER.ImageBase + s.VirtualAddress, name
        assert rows[name][2] == s.PointerToRawData, name


def test_refusals(stub, tmp_path):
    with pytest.raises(uki.UkiError, match=r"already has a \.sbat section"):
        uki.make_uki(stub, [(".sbat", b"x")])
    with pytest.raises(uki.UkiError, match="at most 8 bytes"):
        uki.make_uki(stub, [(".toolongname", b"x")])
    with pytest.raises(uki.UkiError, match="not a PE file"):
        uki.make_uki(b"MZ" + bytes(100), [(".linux", b"x")])
    with pytest.raises(uki.UkiError, match="no room for 40 more section headers"):
        uki.make_uki(stub, [(f".s{i}", b"x") for i in range(40)])
    key, cert = keypair(tmp_path)
    signed = tmp_path / "stub.signed"
    unsigned = tmp_path / "stub"
    unsigned.write_bytes(stub)
    uki.sign(str(unsigned), str(signed), str(key), str(cert))
    with pytest.raises(uki.UkiError, match="the stub is signed"):
        uki.make_uki(signed.read_bytes(), SECTIONS)


def test_kernel_version_from_the_setup_header():
    assert uki.kernel_version(fake_kernel("6.12.95+deb12-amd64")) == "6.12.95+deb12-amd64"
    assert uki.kernel_version(b"\x7fELF" + bytes(1000)) is None


def keypair(tmp_path):
    key, cert = tmp_path / "db.key", tmp_path / "db.crt"
    if not key.exists():
        proc = subprocess.run([tool("openssl", "openssl"), "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes",
                               "-subj", "/CN=pyinit test db/", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    return key, cert


def test_signed_uki_verifies_with_its_certificate(stub, tmp_path):
    tool("sbsign", "sbsigntool")
    key, cert = keypair(tmp_path)
    out = tmp_path / "signed.efi"
    data = uki.make_uki(stub, SECTIONS)
    uki.write(str(out), data, str(key), str(cert))
    check = subprocess.run([tool("sbverify", "sbsigntool"), "--cert", str(cert), str(out)], capture_output=True,
                           text=True)
    assert check.returncode == 0 and "Signature verification OK" in check.stdout + check.stderr, check
    assert uki.sections_of(out.read_bytes())[".cmdline"] == b"console=ttyS0 rw"  # still the same UKI
    with pytest.raises(uki.UkiError, match="needs both"):
        uki.write(str(out), data, str(key), None)


def test_uki_command_refuses_a_kernel_of_another_version(tmp_path, capsys):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(fake_kernel("6.1.0-50-amd64"))
    code = main(["uki", "-o", str(tmp_path / "x.efi"), "--kernel", str(kernel), "--kver", "6.12.0-1-amd64",
                 "--config", "none", "--stub", str(STUB)])
    assert code == 1
    err = capsys.readouterr().err
    assert "is Linux 6.1.0-50-amd64, but --kver is 6.12.0-1-amd64" in err
    assert not (tmp_path / "x.efi").exists()
    code = main(["uki", "-o", str(tmp_path / "x.efi"), "--kernel", str(kernel), "--kver", "6.1.0-50-amd64",
                 "--config", "none", "--stub", str(tmp_path / "nowhere")])
    assert code == 1 and "--stub" in capsys.readouterr().err


def test_uki_takes_builds_settings_file_but_not_its_output(tmp_path):
    """One table: the settings file of `build` fills in `uki` too, except the image's path."""
    path = tmp_path / "mkinitramfs.toml"
    path.write_text('kver = "6.1.0-test"\noutput = "/boot/initrd.img"\ncompress = "xz"\nmodules = ["ext4"]\n')
    p = parsers()
    a = config.parse_build_args(p.top, p.uki, ["uki", "-o", "/efi/x.efi", "--kernel", "/k"], str(path),
                                file_table=p.build, not_from_file=("output",))
    assert (a.output, a.kver, a.compress, a.modules, a.kernel) == ("/efi/x.efi", "6.1.0-test", "xz", ["ext4"], "/k")
    build_opts = {a.dest for a in p.build._actions} - {"help", "output"}
    assert build_opts <= {a.dest for a in p.uki._actions}  # every build option, once
    with pytest.raises(SystemExit):  # the file's output does not stand in for the UKI's -o
        config.parse_build_args(p.top, p.uki, ["uki", "--kernel", "/k"], str(path),
                                file_table=p.build, not_from_file=("output",))
