"""The builder's modes against Debian's real module trees (no boot): what --generic packs and
loads up front, the kmod index files and firmware it writes, and --keep-module-compression."""
from __future__ import annotations

import lzma

import pytest

from mkinitramfs import archive, kmod
from tests.support.builder import run_builder

pytestmark = pytest.mark.vm


def tree_of(image_path):
    return archive.unpack_model(image_path.read_bytes())


def text(tree, path):
    node = tree.get(path)
    assert node is not None, f"{path} is not in the image"
    return node.data.decode()


def test_generic_packs_storage_bus_and_filesystems_with_firmware(kernel_612, tmp_path):
    idx = kmod.ModuleIndex.load(str(kernel_612.moddir), kernel_612.kver)
    generic = kmod.generic_modules(idx)
    for name in ("virtio_blk", "virtio_scsi", "ahci", "nvme", "sd_mod", "usb_storage", "xhci_pci", "mmc_block",
                 "dm_crypt", "raid1", "ext4", "xfs", "btrfs", "vfat", "f2fs", "squashfs", "erofs", "nls_cp437"):
        assert name in generic, name
    assert "scsi_debug" not in generic
    # the firmware one packed module names: give half of them (one compressed), miss the rest
    with_fw = next(n for n in generic if kmod.modinfo(kmod.read_module(f"{idx.root}/{idx.paths[n]}")).get("firmware"))
    names = kmod.modinfo(kmod.read_module(f"{idx.root}/{idx.paths[with_fw]}"))["firmware"]
    fw = tmp_path / "firmware"
    given = names[: max(1, len(names) // 2)]
    for i, name in enumerate(given):
        (fw / name).parent.mkdir(parents=True, exist_ok=True)
        blob = f"firmware {name}".encode()
        if i == 0:
            (fw / (name + ".xz")).write_bytes(lzma.compress(blob, check=lzma.CHECK_CRC32))
        else:
            (fw / name).write_bytes(blob)
    out = tmp_path / "generic.img"
    r = run_builder("build", "-o", str(out), "--kver", kernel_612.kver, "--moddir", str(kernel_612.moddir),
                    "--generic", "--firmware-dir", str(fw), "--config", "none")
    assert r.returncode == 0, r.stderr
    assert "(zstd, generic)" in r.stdout and "0 loaded at every boot" in r.stdout, r.stdout
    assert f"firmware: {len(given)} files" in r.stdout
    missing = [n for n in names if n not in given]
    if missing:
        assert f"{missing[0]} ({with_fw})" in r.stdout, r.stdout
    tree = tree_of(out)
    for name in given:
        assert text(tree, f"/usr/lib/firmware/{name}") == f"firmware {name}"  # decompressed
    base = f"/usr/lib/modules/{kernel_612.kver}"
    assert [line for line in text(tree, "/etc/pyinit/modules.load").splitlines() if not line.startswith("#")] == []
    dep = text(tree, f"{base}/modules.dep")
    assert "kernel/fs/ext4/ext4.ko: " in dep and "kernel/drivers/block/virtio_blk.ko:" in dep
    assert "alias virtio:d00000002v* virtio_blk" in text(tree, f"{base}/modules.alias")
    assert "alias fs-ext4 ext4" in text(tree, f"{base}/modules.alias")
    assert "softdep ext4 pre: crypto-crc32c" in text(tree, f"{base}/modules.softdep")
    assert "kernel/drivers/virtio/virtio_pci.ko" in text(tree, f"{base}/modules.builtin")
    # every module modules.dep names is in the image
    for line in dep.splitlines():
        assert tree.get(f"{base}/{line.split(':')[0]}") is not None, line
    assert tree.get("/usr/lib/pyinit/modprobe") is not None


def test_explicit_modules_keep_their_meaning_and_keep_compression(kernel_612, tmp_path):
    out = tmp_path / "x.img"
    r = run_builder("build", "-o", str(out), "--kver", kernel_612.kver, "--moddir", str(kernel_612.moddir),
                    "--modules", "virtio_blk,ext4", "--keep-module-compression", "--config", "none")
    assert r.returncode == 0, r.stderr
    assert "(zstd, explicit)" in r.stdout and "host-only:" not in r.stdout
    tree = tree_of(out)
    load = [line.split()[0] for line in text(tree, "/etc/pyinit/modules.load").splitlines() if not line.startswith("#")]
    assert load[-1] == "ext4" and "virtio_blk" in load and "jbd2" in load
    base = f"/usr/lib/modules/{kernel_612.kver}"
    assert tree.get(f"{base}/kernel/fs/ext4/ext4.ko.xz") is not None
    assert "kernel/fs/ext4/ext4.ko.xz:" in text(tree, f"{base}/modules.dep")


def test_host_only_and_generic_exclude_each_other(kernel_612, tmp_path):
    r = run_builder("build", "-o", str(tmp_path / "x.img"), "--kver", kernel_612.kver, "--moddir",
                    str(kernel_612.moddir), "--host-only", "--generic", "--config", "none")
    assert r.returncode == 1 and "exclude each other" in r.stderr, r.stderr
