"""--host-only on fake machines (a /sys tree and a mountinfo made of plain files), mapped into
Debian's real 6.12 module tree: by module name, by driver name, by MODALIAS, through md and
dm slaves, and a clear error for a driver the target kernel lacks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mkinitramfs import hostfiles, hostonly, kmod, paths

pytestmark = pytest.mark.unit


class FakeSys:
    def __init__(self, base: Path):
        self.root = base / "sys"
        (self.root / "dev" / "block").mkdir(parents=True)
        (self.root / "module").mkdir()
        (self.root / "bus" / "drivers").mkdir(parents=True)

    def device(self, rel: str, *, driver: str | None = None, module: str | None = None,
               modalias: str | None = None) -> Path:
        d = self.root / "devices" / rel
        d.mkdir(parents=True, exist_ok=True)
        if driver:
            drv = self.root / "bus" / "drivers" / driver
            drv.mkdir(parents=True, exist_ok=True)
            if module and not (drv / "module").exists():
                (self.root / "module" / module).mkdir(exist_ok=True)
                os.symlink(os.path.relpath(self.root / "module" / module, drv), drv / "module")
            os.symlink(os.path.relpath(drv, d), d / "driver")
        if modalias:
            (d / "modalias").write_text(modalias + "\n")
        return d

    def block(self, rel: str, devnum: str, partition: int | None = None) -> Path:
        d = self.device(rel)
        (d / "dev").write_text(devnum + "\n")
        if partition:
            (d / "partition").write_text(f"{partition}\n")
        os.symlink(os.path.relpath(d, self.root / "dev" / "block"), self.root / "dev" / "block" / devnum)
        return d


def mountinfo(tmp_path: Path, devnum: str, fstype: str, source: str) -> str:
    p = tmp_path / "mountinfo"
    p.write_text(f"22 1 {devnum} / / rw,relatime shared:1 - {fstype} {source} rw\n"
                 "23 22 0:5 / /dev rw - devtmpfs devtmpfs rw\n")
    return str(p)


@pytest.fixture(scope="module")
def idx612(kernels):
    k = kernels["6.12"]
    return kmod.ModuleIndex.load(str(k.moddir), k.kver)


def test_nvme_root_by_module_name(tmp_path, idx612):
    s = FakeSys(tmp_path)
    s.device("pci0000:00/0000:00:1c.0", driver="pcieport")  # a PCIe root port: built in, skipped
    s.device("pci0000:00/0000:00:1c.0/0000:01:00.0", driver="nvme", module="nvme",
             modalias="pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02")
    s.device("pci0000:00/0000:00:1c.0/0000:01:00.0/nvme/nvme0")
    s.block("pci0000:00/0000:00:1c.0/0000:01:00.0/nvme/nvme0/nvme0n1", "259:0")
    s.block("pci0000:00/0000:00:1c.0/0000:01:00.0/nvme/nvme0/nvme0n1/nvme0n1p2", "259:2", partition=2)
    host = hostonly.detect(str(s.root), mountinfo(tmp_path, "259:2", "xfs", "/dev/nvme0n1p2"))
    names, notes = hostonly.map_to_target(host, idx612, running_kver="6.18.0-test")
    assert names == ["nvme", "xfs"]
    assert notes[0].startswith("nvme: module of driver nvme") and "root filesystem (xfs)" in notes[1]
    assert host.block_devices == ["nvme0n1p2"]


def test_builtin_host_drivers_map_by_driver_name_and_modalias(tmp_path, idx612):
    """A kernel that builds everything in (like this VM's): no driver/module links. virtio-pci
    is found by its driver name; "sd" (sd_mod's driver) by the disk's MODALIAS."""
    s = FakeSys(tmp_path)
    s.device("pci0000:00/0000:00:02.0", driver="virtio-pci",
             modalias="pci:v00001AF4d00001004sv00001AF4sd00000008bc01sc00i00")
    s.device("pci0000:00/0000:00:02.0/virtio1", driver="virtio_scsi", modalias="virtio:d00000008v00001AF4")
    s.device("pci0000:00/0000:00:02.0/virtio1/host0/target0:0:0")
    s.device("pci0000:00/0000:00:02.0/virtio1/host0/target0:0:0/0:0:0:0", driver="sd", modalias="scsi:t-0x00")
    s.block("pci0000:00/0000:00:02.0/virtio1/host0/target0:0:0/0:0:0:0/block/sda", "8:0")
    host = hostonly.detect(str(s.root), mountinfo(tmp_path, "8:0", "ext4", "/dev/sda"))
    names, notes = hostonly.map_to_target(host, idx612)
    assert names == ["sd_mod", "virtio_scsi", "virtio_pci", "ext4"], notes
    assert any("modalias scsi:t-0x00" in n for n in notes)


def test_md_and_dm_stacks_are_followed(tmp_path, idx612):
    s = FakeSys(tmp_path)
    s.device("pci0000:00/0000:00:1f.2", driver="ahci", module="ahci",
             modalias="pci:v00008086d00002922sv0sd0bc01sc06i01")
    for n, letter in ((0, "a"), (1, "b")):
        s.device(f"pci0000:00/0000:00:1f.2/ata{n + 1}/host{n}/target{n}:0:0/{n}:0:0:0", driver="sd",
                 module="sd_mod", modalias="scsi:t-0x00")
        s.block(f"pci0000:00/0000:00:1f.2/ata{n + 1}/host{n}/target{n}:0:0/{n}:0:0:0/block/sd{letter}", f"8:{n * 16}")
    md = s.block("virtual/block/md0", "9:0")
    (md / "md").mkdir()
    (md / "md" / "level").write_text("raid1\n")
    (md / "slaves").mkdir()
    for letter, n in (("a", 0), ("b", 1)):
        os.symlink(os.path.relpath(s.root / f"devices/pci0000:00/0000:00:1f.2/ata{n + 1}/host{n}/target{n}:0:0/"
                                           f"{n}:0:0:0/block/sd{letter}", md / "slaves"), md / "slaves" / f"sd{letter}")
    dm = s.block("virtual/block/dm-0", "253:0")
    (dm / "dm").mkdir()
    (dm / "dm" / "uuid").write_text("CRYPT-LUKS2-0123456789abcdef-root\n")
    (dm / "slaves").mkdir()
    os.symlink(os.path.relpath(md, dm / "slaves"), dm / "slaves" / "md0")
    host = hostonly.detect(str(s.root), mountinfo(tmp_path, "253:0", "btrfs", "/dev/mapper/root"))
    names, _ = hostonly.map_to_target(host, idx612)
    assert host.block_devices == ["dm-0", "md0", "sda", "sdb"]
    assert names[:2] == ["sd_mod", "ahci"]
    assert set(names) == {"sd_mod", "ahci", "dm_mod", "dm_crypt", "md_mod", "raid1", "btrfs"}


def test_a_driver_the_target_lacks_is_named(tmp_path, idx612):
    s = FakeSys(tmp_path)
    s.device("platform/fc-blk.0", driver="fc_vblk", module="fc_vblk", modalias="platform:fc-vblk")
    s.block("platform/fc-blk.0/block/fca", "240:0")
    host = hostonly.detect(str(s.root), mountinfo(tmp_path, "240:0", "ext4", "/dev/fca"))
    with pytest.raises(hostonly.HostOnlyError) as e:
        hostonly.map_to_target(host, idx612, running_kver="6.18.44-fc")
    msg = str(e.value)
    assert "fc_vblk" in msg and "6.18.44-fc" in msg and idx612.kver in msg and "--generic" in msg


def test_a_root_on_no_block_device_is_refused(tmp_path):
    s = FakeSys(tmp_path)
    with pytest.raises(hostonly.HostOnlyError, match="overlay on overlay, which is not a block device"):
        hostonly.detect(str(s.root), mountinfo(tmp_path, "0:31", "overlay", "overlay"))


LUKS = "5e1f0000-0000-4000-8000-0000000000aa"


def test_the_root_chains_crypttab_entries_are_packed(tmp_path):
    """dm-crypt under the root (LVM on LUKS on vda2): its crypttab entries are chosen by
    volume name, LUKS UUID or device, and packed with their key files and headers;
    entries of other devices, and key files on other devices, are not."""
    from mkinitramfs.image import Image
    from pyinit import crypttab
    s = FakeSys(tmp_path)
    s.device("pci0000:00/0000:00:04.0/virtio1", driver="virtio_blk", module="virtio_blk",
             modalias="virtio:d00000002v00001AF4")
    s.block("pci0000:00/0000:00:04.0/virtio1/block/vda", "254:0")
    part = s.block("pci0000:00/0000:00:04.0/virtio1/block/vda/vda2", "254:2", partition=2)
    crypt = s.block("virtual/block/dm-0", "253:0")
    (crypt / "dm").mkdir()
    (crypt / "dm" / "uuid").write_text(f"CRYPT-LUKS2-{LUKS.replace('-', '')}-cryptroot\n")
    (crypt / "dm" / "name").write_text("cryptroot\n")
    (crypt / "slaves").mkdir()
    os.symlink(os.path.relpath(part, crypt / "slaves"), crypt / "slaves" / "vda2")
    lv = s.block("virtual/block/dm-1", "253:1")
    (lv / "dm").mkdir()
    (lv / "dm" / "uuid").write_text("LVM-abc\n")
    (lv / "dm" / "name").write_text("vg-root\n")
    (lv / "slaves").mkdir()
    os.symlink(os.path.relpath(crypt, lv / "slaves"), lv / "slaves" / "dm-0")
    host = hostonly.detect(str(s.root), mountinfo(tmp_path, "253:1", "ext4", "/dev/mapper/vg-root"))
    assert [(c.name, c.uuid, c.slaves) for c in host.crypt] == [("cryptroot", LUKS, ["/dev/vda2"])]

    key, header = tmp_path / "root.key", tmp_path / "hdr.img"
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    header.write_bytes(b"LUKS")
    table = tmp_path / "crypttab"
    table.write_text(f"""# the machine's table
home  UUID=11111111-0000-4000-8000-000000000000 none luks
cryptroot UUID={LUKS} {key} discard,tries=2,header={header}
byname  /dev/vda2  none   luks
swap  /dev/vda3  /dev/urandom  swap
usbkey UUID=22222222-0000-4000-8000-000000000000 /key.bin:LABEL=usb
broken
""")
    entries, problems = crypttab.parse(table.read_text())
    assert problems == ["line 7: expected NAME DEVICE [KEYFILE [OPTIONS]], got 1 fields"]
    chosen = hostfiles.crypttab_for_root(entries, host.crypt, {"/dev/vda2": "/dev/vda2"}.get)
    assert [e.name for e in chosen] == ["cryptroot", "byname"]

    image = Image()
    notes = hostfiles.add_crypttab(image, str(table), host.crypt)
    packed, _ = crypttab.parse(image.get("/etc/crypttab").data.decode())
    assert [(e.name, e.keyfile, e.options_text) for e in packed] == \
        [("cryptroot", str(key), f"discard,tries=2,header={header}")]
    assert image.get(str(key)).mode & 0o7777 == 0o600 and str(header) in image
    assert any("line 7" in n for n in notes) and any("cryptroot" in n for n in notes)
    # no crypttab on the machine: nothing, and no error
    empty = Image()
    assert hostfiles.add_crypttab(empty, str(tmp_path / "none"), host.crypt) == [] and paths.CRYPTTAB not in empty


def test_luks_uuid_from_dm_uuid():
    assert hostonly.luks_uuid_from_dm(f"CRYPT-LUKS1-{LUKS.replace('-', '')}-x-y") == LUKS
    assert hostonly.luks_uuid_from_dm("CRYPT-PLAIN-root") is None
    assert hostonly.luks_uuid_from_dm("CRYPT-LUKS2-nothex-root") is None
