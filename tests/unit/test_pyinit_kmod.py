import pytest

from pyinit import kmod

pytestmark = pytest.mark.unit


def test_parse_modules_load():
    lines = kmod.parse_modules_load("# header\next4 /usr/lib/modules/k/ext4.ko required\n"
                                    "crc32c_intel /x.ko optional\nfoo /f.ko required a=1 b=2\n")
    assert [(m.name, m.required, m.params) for m in lines] == [
        ("ext4", True, ""), ("crc32c_intel", False, ""), ("foo", True, "a=1 b=2")]


def test_parse_modules_load_error_names_line():
    with pytest.raises(ValueError, match="line 1"):
        kmod.parse_modules_load("ext4 /x.ko maybe\n")


def test_modules_from_dep_orders_dependencies_first():
    from pyinit.kmod import modules_from_dep
    text = ("kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz\n"
            "kernel/fs/jbd2/jbd2.ko.xz:\n"
            "kernel/fs/mbcache.ko.xz:\n"
            "kernel/lib/crc16.ko.xz:\n"
            "kernel/drivers/block/virtio_blk.ko.xz:\n")
    lines = modules_from_dep(text, "/lib/modules/6.12")
    assert [m.name for m in lines] == ["crc16", "mbcache", "jbd2", "ext4", "virtio_blk"]
    assert lines[3].path == "/lib/modules/6.12/kernel/fs/ext4/ext4.ko.xz"
    assert not any(m.required for m in lines)
    assert modules_from_dep("", "/x") == []
