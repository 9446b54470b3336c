import pytest

from pyinit import devices
from pyinit.devices import RootSpec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, kind, value", [
    ("/dev/vda", "path", "/dev/vda"),
    ("UUID=0A1B-XYZ", "UUID", "0a1b-xyz"),
    ("LABEL=My Root", "LABEL", "My Root"),
    ("PARTUUID=ABCD-01", "PARTUUID", "abcd-01"),
    ("PARTLABEL=root", "PARTLABEL", "root"),
    ("/dev/disk/by-uuid/1234-ABCD", "UUID", "1234-abcd"),
    ("/dev/disk/by-label/my\\x20root", "LABEL", "my root"),
    ("8:1", "devnum", (8, 1)),
    ("0801", "devnum", (8, 1)),
    ("fe00", "devnum", (254, 0)),
])
def test_parse_root(text, kind, value):
    spec = devices.parse_root(text)
    assert (spec.kind, spec.value) == (kind, value)


@pytest.mark.parametrize("text", ["", "UUID=", "nonsense-value"])
def test_parse_root_rejects_with_message(text):
    with pytest.raises(ValueError) as e:
        devices.parse_root(text)
    assert "root=" in str(e.value)


def test_scanner_on_fake_sysfs(tmp_path):
    sys_block = tmp_path / "sys"
    dev = tmp_path / "dev"
    (sys_block / "vda").mkdir(parents=True)
    (sys_block / "vda" / "dev").write_text("254:0\n")
    (sys_block / "vda" / "size").write_text("131072\n")
    dev.mkdir()
    img = bytearray(4096)
    img[1024 + 0x38:1024 + 0x3A] = (0xEF53).to_bytes(2, "little")
    img[1024 + 0x68:1024 + 0x78] = bytes(range(16))
    img[1024 + 0x78:1024 + 0x7D] = b"rootx"
    (dev / "vda").write_bytes(bytes(img))
    scanner = devices.Scanner(str(sys_block), str(dev))
    found = devices.find(RootSpec("LABEL", "rootx", "LABEL=rootx"), scanner)
    assert found is not None and found.devnum == (254, 0)
    assert found.info["UUID"] == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert devices.find(RootSpec("devnum", (254, 0), "254:0"), scanner) is found
    assert devices.find(RootSpec("LABEL", "other", "LABEL=other"), scanner) is None
