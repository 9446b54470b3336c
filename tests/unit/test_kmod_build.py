"""Module selection at build time, against a small modules.dep tree written by the test."""
import pytest

from mkinitramfs import kmod

pytestmark = pytest.mark.unit


@pytest.fixture
def moddir(tmp_path):
    root = tmp_path / "6.1.0-test"
    root.mkdir()
    (root / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz\n"
        "kernel/lib/crc16.ko.xz:\n"
        "kernel/fs/mbcache.ko.xz:\n"
        "kernel/fs/jbd2/jbd2.ko.xz:\n"
        "kernel/crypto/crc32c_generic.ko.xz:\n"
        "kernel/arch/x86/crypto/crc32c-intel.ko.xz:\n"
        "kernel/drivers/block/virtio_blk.ko.xz:\n")
    (root / "modules.softdep").write_text("# comment\nsoftdep ext4 pre: crypto-crc32c\n")
    (root / "modules.alias").write_text("alias crypto-crc32c crc32c_generic\nalias crypto-crc32c crc32c_intel\n"
                                        "alias virtio:d00000002v* virtio_blk\n")
    (root / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    return tmp_path


def test_closure_order_and_softdeps(moddir):
    idx = kmod.ModuleIndex.load(str(moddir), "6.1.0-test")
    sel = kmod.select(idx, ["virtio_pci", "virtio_blk", "ext4"])
    names = [m.name for m in sel.modules]
    assert sel.builtin == ["virtio_pci"]
    assert names.index("crc32c_generic") < names.index("ext4")
    for dep in ("crc16", "mbcache", "jbd2"):
        assert names.index(dep) < names.index("ext4")
    required = {m.name: m.required for m in sel.modules}
    assert required["ext4"] and required["jbd2"] and not required["crc32c_intel"]


def test_alias_resolution(moddir):
    idx = kmod.ModuleIndex.load(str(moddir), "6.1.0-test")
    assert idx.resolve("virtio:d00000002v00001AF4") == ["virtio_blk"]
    assert idx.resolve("crc32c-intel") == ["crc32c_intel"]


def test_missing_module_named(moddir):
    idx = kmod.ModuleIndex.load(str(moddir), "6.1.0-test")
    with pytest.raises(kmod.KmodError, match="nosuchmod"):
        kmod.select(idx, ["nosuchmod"])


def test_missing_modules_dep_explains(tmp_path):
    with pytest.raises(kmod.KmodError, match="depmod"):
        kmod.ModuleIndex.load(str(tmp_path), "6.1.0-none")


def test_image_path_strips_compression():
    assert kmod.image_path("6.12", "kernel/fs/ext4/ext4.ko.xz") == "/usr/lib/modules/6.12/kernel/fs/ext4/ext4.ko"


def test_the_command_line_names_a_missing_module(moddir, tmp_path, capsys):
    # KmodError is a MkinitramfsError: the command line's one catch prints it, no traceback.
    from mkinitramfs.cli import main
    rc = main(["build", "-o", str(tmp_path / "x.img"), "--kver", "6.1.0-test", "--moddir", str(moddir),
               "--modules", "nosuchmod", "--config", "none"])
    assert rc == 1
    assert capsys.readouterr().err.startswith("pyinit-mkinitramfs: error: module nosuchmod not found for kernel "
                                              "6.1.0-test")
    assert not (tmp_path / "x.img").exists()
