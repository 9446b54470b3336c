"""The TOML configuration (one table with the command line), early microcode selection,
and the safety checks."""
from __future__ import annotations

import struct

import pytest

from mkinitramfs import config, cpio, microcode, safety
from mkinitramfs.cli import parsers
from mkinitramfs.image import Image

pytestmark = pytest.mark.unit


def parse(tmp_path, argv, toml: str | None):
    p = parsers()
    path = None
    if toml is not None:
        path = tmp_path / "mkinitramfs.toml"
        path.write_text(toml)
    return config.parse_build_args(p.top, p.build, ["build", *argv], str(path) if path else None)


def test_file_fills_in_and_command_line_wins(tmp_path):
    toml = '''
kver = "6.1.0-test"
output = "/boot/initrd.img"
compress = "xz"
level = 9
modules = ["virtio_blk", "ext4"]
quiet = true
microcode = "auto"
microcode_dir = "/srv/firmware"
'''
    a = parse(tmp_path, [], toml)
    assert (a.kver, a.output, a.compress, a.level, a.modules, a.quiet) == \
        ("6.1.0-test", "/boot/initrd.img", "xz", 9, ["virtio_blk", "ext4"], True)
    assert (a.microcode, a.microcode_dir) == ("auto", "/srv/firmware")
    b = parse(tmp_path, ["--compress", "zstd", "--modules", "nvme", "-o", "/tmp/x", "--microcode", "none"], toml)
    # the command line wins, even when it gives the option's default value
    assert (b.compress, b.modules, b.output, b.microcode) == ("zstd", ["nvme"], "/tmp/x", "none")
    assert b.level == 9 and b.kver == "6.1.0-test"
    c = parse(tmp_path, ["-o", "x", "--kver", "k"], None)
    assert (c.compress, c.modules, c.microcode, c.quiet) == ("zstd", [], "none", False)


@pytest.mark.parametrize("toml, message", [
    ('compres = "xz"', "unknown setting 'compres'"),
    ('compress = "lz4"', "compress = 'lz4': choose one of"),
    ('level = "high"', "level = 'high'"),
    ("level = 9.5", "level must be an integer"),
    ("quiet = 1", "quiet must be true or false"),
    ('modules = [1, {a = 2}]', "modules"),
    ("kver = [", "not valid TOML"),
])
def test_bad_settings_name_file_and_key(tmp_path, toml, message):
    with pytest.raises(config.ConfigError, match=message) as e:
        parse(tmp_path, ["-o", "x", "--kver", "k"], toml)
    assert "mkinitramfs.toml" in str(e.value)


def test_every_build_option_is_a_setting():
    """One table: each long option of `build` is a key of the file (new options too)."""
    p = parsers()
    table = config.settings(p.build)
    longs = {o[2:] for a in p.build._actions for o in a.option_strings if o.startswith("--")}
    assert set(table) == longs - {"help", "config"}
    assert {"kver", "modules", "compress", "microcode", "microcode-dir", "allow-secret"} <= set(table)


def test_config_path_rules(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ENV_PATH, str(tmp_path / "absent.toml"))
    assert config.config_path(None) is None
    (tmp_path / "present.toml").write_text("")
    monkeypatch.setenv(config.ENV_PATH, str(tmp_path / "present.toml"))
    assert config.config_path(None) == str(tmp_path / "present.toml")
    assert config.config_path("none") is None
    assert config.config_path("/x.toml") == "/x.toml"


def test_required_options_still_required(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(tmp_path, ["-o", "x"], 'compress = "xz"')
    assert "--kver" in capsys.readouterr().err


# -- microcode ---------------------------------------------------------------------------------

INTEL_CPU = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 142\nstepping\t: 10\n\n"
AMD_CPU = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nstepping\t: 1\n\n"


def intel_update(tag: bytes) -> bytes:
    """A minimal Intel update: header version 1, data size 0 and total size 0 (= 2048)."""
    head = struct.pack("<9I", 1, 0x10, 0, 0x806EA, 0, 1, 0, 0, 0)
    return (head + tag).ljust(2048, b"\0")


def amd_container(tag: bytes) -> bytes:
    """A minimal AMD container: magic, an empty equivalence table, one patch section."""
    return struct.pack("<III", microcode.AMD_MAGIC, 0, 0) + struct.pack("<II", 1, len(tag)) + tag


@pytest.fixture
def firmware(tmp_path):
    intel = tmp_path / "intel-ucode"
    amd = tmp_path / "amd-ucode"
    intel.mkdir()
    amd.mkdir()
    (intel / "06-8e-0a").write_bytes(intel_update(b"8E-0A"))
    (intel / "06-9e-09").write_bytes(intel_update(b"9E-09") + intel_update(b"9E-09b"))
    (intel / "README").write_text("not microcode")
    (amd / "microcode_amd.bin").write_bytes(amd_container(b"OLD"))
    (amd / "microcode_amd_fam19h.bin").write_bytes(amd_container(b"19H"))
    (amd / "microcode_amd_fam19h.bin.asc").write_text("signature")
    return tmp_path


def test_microcode_auto_takes_the_hosts_file(firmware):
    sel = microcode.select("auto", str(firmware), INTEL_CPU)
    assert sel == {"intel": [str(firmware / "intel-ucode/06-8e-0a")]}
    sel = microcode.select("auto", str(firmware), AMD_CPU)
    assert sel == {"amd": [str(firmware / "amd-ucode/microcode_amd_fam19h.bin")]}
    notes = []
    assert microcode.select("auto", str(firmware / "nothing"), AMD_CPU, notes) == {}
    assert "none packed" in notes[0]


def test_microcode_vendor_takes_every_file_and_concatenates(firmware):
    sel = microcode.select("all", str(firmware))
    img = microcode.early_image(sel)
    intel = img.get("/kernel/x86/microcode/GenuineIntel.bin").data
    amd = img.get("/kernel/x86/microcode/AuthenticAMD.bin").data
    assert intel == intel_update(b"8E-0A") + intel_update(b"9E-09") + intel_update(b"9E-09b")
    assert amd == amd_container(b"OLD") + amd_container(b"19H")
    # the blobs walk as the kernel's loaders walk them: 3 Intel updates, 2 AMD containers
    assert microcode.check_blob("intel", intel) == 3 and microcode.check_blob("amd", amd) == 2
    raw = microcode.pad(cpio.write(img))
    assert len(raw) % 512 == 0 and raw.startswith(b"070701")
    with pytest.raises(microcode.MicrocodeError, match="intel-microcode"):
        microcode.select("intel", str(firmware / "nothing"))
    assert microcode.select("none", str(firmware)) == {}


def test_damaged_microcode_is_refused_naming_the_file(firmware):
    (firmware / "amd-ucode/microcode_amd.bin").write_bytes(amd_container(b"OLD")[:-2])
    with pytest.raises(microcode.MicrocodeError, match=r"microcode_amd\.bin"):
        microcode.early_image(microcode.select("amd", str(firmware)))
    (firmware / "intel-ucode/06-8e-0a").write_bytes(b"\2" + intel_update(b"x")[1:])
    with pytest.raises(microcode.MicrocodeError, match="06-8e-0a: not Intel microcode"):
        microcode.early_image(microcode.select("intel", str(firmware)))


# -- safety ----------------------------------------------------------------------------------

KEY = (b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
       b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
       b"-----END OPENSSH PRIVATE KEY-----\n")


def test_secrets_and_owners_stop_the_build_unless_asked():
    img = Image()
    img.add_file("/etc/shadow", data=b"root:*:19000:0:99999:7:::\n")
    img.add_file("/etc/keys/luks.key", data=KEY, mode=0o600)
    img.add_file("/usr/lib/libcrypto.so.3", data=b"\x7fELF...-----BEGIN RSA PRIVATE KEY-----\n" + b"A" * 80)
    img.add_file("/etc/ssh/ssh_host_ed25519_key.pub", data=b"ssh-ed25519 AAAA")
    img.add_file("/home/u/notes", data=b"mentions -----BEGIN PRIVATE KEY----- in text")
    user = img.add_file("/home/u/file", data=b"x")
    user.uid = 1000
    with pytest.raises(safety.SafetyError) as e:
        safety.check(img)
    msg = str(e.value)
    assert "/etc/shadow: looks like a secret: its path matches /etc/shadow" in msg
    assert "/etc/keys/luks.key: looks like a secret: it holds a private key" in msg
    assert "/home/u/file: owned by 1000:0" in msg
    assert "libcrypto" not in msg and ".pub" not in msg and "/home/u/notes" not in msg
    safety.check(img, allow_secrets=["/etc/shadow", "/etc/keys/*"], allow_owners=["/home/u/*"])
