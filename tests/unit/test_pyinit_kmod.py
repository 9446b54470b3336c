"""The init's module handling: the image's index files, modprobe.d, the command line, alias
matching (checked against fnmatch on Debian's real modules.alias), and load order."""
import fnmatch
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinit import cmdline, kmod, kmodindex, modprobe, modprobe_d
from pyinit.errors import ModuleError
from pyinit.modalias import AliasIndex, glob_match

pytestmark = pytest.mark.unit


def test_parse_modules_load():
    lines = kmod.parse_modules_load("# header\next4 /usr/lib/modules/k/ext4.ko required\n"
                                    "crc32c_intel /x.ko optional\nfoo /f.ko required a=1 b=2\n")
    assert [(m.name, m.required, m.params) for m in lines] == [
        ("ext4", True, ""), ("crc32c_intel", False, ""), ("foo", True, "a=1 b=2")]


def test_parse_modules_load_error_names_line():
    with pytest.raises(ValueError, match="line 1"):
        kmod.parse_modules_load("ext4 /x.ko maybe\n")


def test_parse_modules_dep():
    paths, deps = kmodindex.parse_modules_dep("kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko\n"
                                              "kernel/lib/crc16.ko:\nkernel/crypto/crc32c-generic.ko.xz:\n")
    assert paths["ext4"] == "kernel/fs/ext4/ext4.ko"
    assert deps["ext4"] == ["crc16", "jbd2"]
    assert paths["crc32c_generic"] == "kernel/crypto/crc32c-generic.ko.xz"


def test_modprobe_conf():
    conf = modprobe_d.Config()
    modprobe_d.parse_modprobe_conf("# comment\noptions virtio_blk queue_depth=64  # trailing\n"
                                   "options virtio-blk \\\n  poll_queues=1\nblacklist floppy\n"
                                   "alias my-disk virtio_blk\n"
                                   "softdep ext4 pre: crc32c post: foo\ninstall bar /bin/true\n", conf, "t.conf")
    assert conf.option_string("virtio_blk") == "queue_depth=64 poll_queues=1"
    assert conf.blacklist == {"floppy"}
    assert conf.aliases == [("my-disk", "virtio_blk")]
    assert conf.softdeps["ext4"] == (["crc32c"], ["foo"])
    assert conf.ignored == ["t.conf: install bar /bin/true"]


def test_command_line_module_settings():
    c = cmdline.parse('root=/dev/vda ext4.debug=1 virtio_blk.queue_depth=32 mod.name="a b" '
                      "modprobe.blacklist=floppy,pcspkr module_blacklist=evil rd.driver.blacklist=bad-one "
                      "rd.driver.pre=virtio_pci rd.driver.pre=ahci,nvme modules-load=loop rd.modules-load=dm_mod "
                      "rd.driver.post=sr_mod rd.timeout=5")
    conf = modprobe_d.Config()
    wanted = modprobe_d.parse_cmdline_modules(c.params, conf)
    assert wanted == {"pre": ["virtio_pci", "ahci", "nvme"], "load": ["loop", "dm_mod"], "post": ["sr_mod"]}
    assert conf.option_string("ext4") == "debug=1"
    assert conf.option_string("virtio_blk") == "queue_depth=32"
    assert conf.option_string("mod") == 'name="a b"'  # the kernel dropped the quotes; kmod puts them back
    assert conf.blacklist == {"floppy", "pcspkr"}
    assert conf.never == {"evil", "bad_one"}
    assert "rd" not in conf.options and "modprobe" not in conf.options


# --------------------------------------------------------------------------- alias matching

@pytest.mark.parametrize("pattern, text", [
    ("pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
    ("pci:v*d*sv*sd*bc01sc08i02*", "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"),
    ("mdio:000000000100110111010000011?0110", "mdio:00000000010011011101000001100110"),
    ("acpi*:PNP0A05:*", "acpi:PNP0A05:PNP0A03:"),
    ("usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*", "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"),
    ("a[0-9]b", "a5b"), ("a[!0-9]b", "axb"), ("a[!0-9]b", "a5b"),
    ("*", ""), ("a*", "a"), ("*a*b", "zzazzb"), ("a[", "a["), ("[]]", "]"),
])
def test_glob_match_is_fnmatch(pattern, text):
    assert glob_match(pattern, text) == fnmatch.fnmatchcase(text, pattern)


def test_glob_match_backslash_escapes_like_fnmatch3():
    # Python's fnmatch has no escapes; C's fnmatch(3) without FNM_NOESCAPE, which kmod uses, does
    assert glob_match("x\\*y", "x*y") and not glob_match("x\\*y", "xzy")
    assert glob_match("x\\?", "x?") and not glob_match("x\\?", "xa")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab*?[]!-\\", max_size=8), st.text(alphabet="ab-[]!*\\", max_size=8))
def test_glob_match_agrees_with_fnmatch_everywhere(pattern, text):
    # Python's fnmatch has no backslash escapes (fnmatch(3) has); leave them out of this check
    if "\\" in pattern:
        return
    assert glob_match(pattern, text) == fnmatch.fnmatchcase(text, pattern), (pattern, text)


MODALIASES = [
    "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",  # virtio-blk (legacy)
    "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00",  # virtio-blk (modern)
    "virtio:d00000002v00001AF4",
    "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",  # ICH9 AHCI
    "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02",  # QEMU NVMe
    "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80",  # PIIX IDE
    "scsi:t-0x00", "scsi:t-0x05",
    "acpi:PNP0303:", "acpi:QEMU0002:", "platform:i8042", "serio:ty01pr00id00ex00",
    "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00",
    "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0002,0003,0004,0005,0006,0007,0008,0009,000B,000C,"
    "000D,000E,000F,0010,0011,0013,0017,0018,0019,001A,001B,001C,002B,0034,003B,003D,0068,006F,0070,0072,0074,"
    "0075,0076,0080,0081,0089,008C,008D,0091,0093,0094,0095,0096,0097,0098,0099,009A,009B,009C,009D,009E",
    "fs-ext4", "crypto-crc32c", "nothing:matches:this",
]


def test_alias_index_agrees_with_fnmatch_on_debians_modules_alias(kernels):
    kernel = kernels["6.12"]
    text = (kernel.modules / "modules.alias").read_text()
    idx = AliasIndex(kmodindex.parse_aliases(text))
    pairs = [(w[1], kmodindex.normalize(w[2])) for w in (line.split() for line in text.splitlines())
             if len(w) == 3 and w[0] == "alias"]
    assert idx.count == len(pairs) > 20000
    for modalias in MODALIASES:
        want = []
        for pattern, module in pairs:
            if fnmatch.fnmatchcase(modalias, pattern) and module not in want:
                want.append(module)
        assert sorted(idx.lookup(modalias)) == sorted(want), modalias
    assert "virtio_blk" in idx.lookup("virtio:d00000002v00001AF4")
    assert "ahci" in idx.lookup(MODALIASES[3]) and "nvme" in idx.lookup(MODALIASES[4])
    assert idx.lookup("fs-ext4") == ["ext4"]


# --------------------------------------------------------------------------- load order

def make_db(tmp_path, dep, alias="", softdep="", builtin="", conf="", params=""):
    root = tmp_path / "modules" / "k"
    root.mkdir(parents=True)
    (root / "modules.dep").write_text(dep)
    (root / "modules.alias").write_text(alias)
    (root / "modules.softdep").write_text(softdep)
    (root / "modules.builtin").write_text(builtin)
    confdir = tmp_path / "modprobe.d"
    confdir.mkdir()
    (confdir / "test.conf").write_text(conf)
    db = kmod.ModuleDB(str(root), cmdline_params=cmdline.parse(params).params, conf_dirs=(str(confdir),))
    db.loaded = set()
    calls = []

    def load_file(path, options):
        calls.append((os.path.basename(path), options))
        return True
    db.load_file = load_file
    return db, calls


DEP = ("kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko\nkernel/lib/crc16.ko:\n"
       "kernel/fs/jbd2/jbd2.ko:\nkernel/crypto/crc32c_generic.ko:\nkernel/crypto/crc32c-intel.ko:\n"
       "kernel/drivers/block/virtio_blk.ko:\nkernel/drivers/block/floppy.ko:\n")
ALIAS = ("alias fs-ext4 ext4\nalias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\n"
         "alias virtio:d00000002v* virtio_blk\nalias pci:v*d*sv*sd*bc01sc02i* floppy\n")


def test_load_order_softdeps_then_deps_then_module(tmp_path):
    db, calls = make_db(tmp_path, DEP, ALIAS, "softdep ext4 pre: crypto-crc32c\n", "kernel/lib/crc32.ko\n")
    assert db.load("fs-ext4") == ["crc32c_intel", "crc32c_generic", "crc16", "jbd2", "ext4"]
    assert [c[0] for c in calls] == ["crc32c-intel.ko", "crc32c_generic.ko", "crc16.ko", "jbd2.ko", "ext4.ko"]
    assert db.load("ext4") == []  # loaded already
    assert db.load("crc32") == []  # built in counts as loaded
    with pytest.raises(ModuleError, match="no module in the image"):
        db.load("fs-nothing")


def test_options_and_blacklists(tmp_path):
    db, calls = make_db(tmp_path, DEP, ALIAS, conf="options virtio_blk queue_depth=8\nblacklist floppy\n",
                        params="virtio_blk.poll_queues=2 rd.driver.blacklist=jbd2")
    assert db.load_modalias("virtio:d00000002v00001AF4") == ["virtio_blk"]
    # a device's driver probes asynchronously (kmod.ASYNC_PROBE), after the configured options
    assert calls == [("virtio_blk.ko", "queue_depth=8 poll_queues=2 async_probe=1")]
    # blacklisted: not through an alias, but by name it loads (kmod's rule)
    assert db.load_modalias("pci:v00001234d00005678sv0sd0bc01sc02i00") == []
    assert db.load("floppy") == ["floppy"]
    # rd.driver.blacklist: not even as a dependency
    with pytest.raises(ModuleError, match="blacklisted on the command line"):
        db.load("ext4")


def test_modalias_loads_probe_asynchronously_and_loads_by_name_do_not(tmp_path):
    # Since Linux 5.18 a module loaded without async_probe waits in finit_module() for every
    # asynchronous probe in the kernel; a device's driver and its dependencies get it, a
    # module asked for by name (its caller wants the device when the call returns) does not.
    dep = DEP + "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko\n" \
        "kernel/drivers/virtio/virtio_ring.ko:\n"
    db, calls = make_db(tmp_path, dep.replace("kernel/drivers/block/virtio_blk.ko:\n", "", 1), ALIAS)
    assert db.load_modalias("virtio:d00000002v00001AF4") == ["virtio_ring", "virtio_blk"]
    assert db.load("ext4") == ["crc16", "jbd2", "ext4"]
    assert calls == [("virtio_ring.ko", "async_probe=1"), ("virtio_blk.ko", "async_probe=1"),
                     ("crc16.ko", ""), ("jbd2.ko", ""), ("ext4.ko", "")]
    db2, calls2 = make_db(tmp_path / "b", DEP, ALIAS, conf="options floppy async_probe=0\n")
    assert db2.load_modalias("pci:v00001234d00005678sv0sd0bc01sc02i00") == ["floppy"]
    assert calls2 == [("floppy.ko", "async_probe=0")]  # modprobe.d decides first


def test_a_failed_module_is_tried_once(tmp_path):
    db, calls = make_db(tmp_path, DEP, ALIAS)

    def failing(path, options):
        calls.append(path)
        raise OSError(19, "No such device")
    db.load_file = failing
    for _ in range(2):
        with pytest.raises(ModuleError, match="No such device"):
            db.load("virtio_blk")
    assert len(calls) == 1


def test_modprobe_arguments():
    assert modprobe.parse_args(["-q", "--", "fs-ext4"]) == ({"quiet": True, "verbose": False, "all": False},
                                                             ["fs-ext4"])
    assert modprobe.parse_args(["-qa", "a", "b"])[1] == ["a", "b"]
    assert modprobe.parse_args(["ext4", "debug=1"])[1] == ["ext4", "debug=1"]
    with pytest.raises(ValueError, match="-r"):
        modprobe.parse_args(["-r", "ext4"])


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


def test_one_decompressor_for_the_builder_and_the_init():
    import errno
    import gzip
    import lzma

    import zstandard

    from mkinitramfs.kmod import decompress_module
    data = os.urandom(3000) * 3
    assert kmodindex.decompress(lzma.compress(data), "m.ko.xz") == data
    # gzip.decompress reads every member; so does the one decompressor
    assert kmodindex.decompress(gzip.compress(data) + gzip.compress(b"tail"), "m.ko.gz") == data + b"tail"
    assert kmodindex.decompress(data, "m.ko") == data
    assert decompress_module(zstandard.ZstdCompressor().compress(data), "fw.bin.zst") == data
    with pytest.raises(OSError, match=r"m.ko.zst: this kernel cannot decompress zstd") as e:
        kmodindex.decompress(zstandard.ZstdCompressor().compress(data), "m.ko.zst")  # PID 1 has no zstd
    assert e.value.errno == errno.ENOTSUP
    for bad in (gzip.compress(data)[:-30], b"not gzip at all"):
        with pytest.raises(OSError, match=r"m.ko.gz: damaged compressed data"):
            kmodindex.decompress(bad, "m.ko.gz")
    with pytest.raises(OSError, match=r"m.ko.xz: damaged compressed data"):
        kmodindex.decompress(lzma.compress(data)[:100], "m.ko.xz")


def test_index_lines_read_back_as_written():
    dep = kmodindex.format_dep("kernel/fs/ext4/ext4.ko", ["kernel/lib/crc16.ko", "kernel/fs/jbd2/jbd2.ko"])
    paths, deps = kmodindex.parse_modules_dep(dep + "\n" + kmodindex.format_dep("kernel/lib/crc16.ko", []))
    assert paths == {"ext4": "kernel/fs/ext4/ext4.ko", "crc16": "kernel/lib/crc16.ko"}
    assert deps == {"ext4": ["crc16", "jbd2"], "crc16": []}
    soft = "\n".join([kmodindex.format_softdep("ext4", ["crc32c"], []), kmodindex.format_softdep("ext4", [], ["x"]),
                      kmodindex.format_softdep("xfs", ["crc32c", "a-b"], ["c"])])
    assert kmodindex.parse_softdeps(soft) == {"ext4": (["crc32c"], ["x"]), "xfs": (["crc32c", "a-b"], ["c"])}
    assert kmodindex.parse_aliases(kmodindex.format_alias("pci:v*d*", "virtio-pci") + "\n# note\n") == \
        [("pci:v*d*", "virtio_pci")]
    assert kmodindex.parse_builtin("kernel/lib/crc32.ko\n\nkernel/fs/ext4/ext4.ko\n") == {"crc32", "ext4"}


def test_on_demand_is_false_once_every_module_of_the_image_is_eager_or_loaded(tmp_path):
    # A host-only image loads all of its modules from modules.load: no MODALIAS can load
    # anything more, and pyinit then reads /sys/class/block instead of replaying uevents.
    db, _ = make_db(tmp_path, DEP, ALIAS)
    assert db.on_demand()  # nothing eager, nothing loaded: a generic image
    db.eager = {"ext4", "crc16", "jbd2", "crc32c_generic", "crc32c_intel", "virtio_blk"}
    assert db.on_demand()  # floppy is still for a device to ask for
    db.load_modalias("pci:v00001234d00005678sv0sd0bc01sc02i00")
    assert "floppy" in db.loaded and not db.on_demand()
    db2, _ = make_db(tmp_path / "b", DEP, ALIAS)
    db2.eager = {"ext4", "crc16", "jbd2", "crc32c_generic", "crc32c_intel", "virtio_blk", "floppy"}
    assert not db2.on_demand()  # an eager module that failed to load is not on demand either


def test_a_module_the_kernel_asks_for_by_name_is_not_on_demand(tmp_path):
    # A host-only image also packs efivarfs (for gpt-auto), whose only alias is a name the
    # kernel requests ("fs-efivarfs"): no device's MODALIAS can load it, so it must not bring
    # the coldplug replay back.
    dep = DEP + "kernel/fs/efivarfs/efivarfs.ko:\n"
    alias = ALIAS + "alias fs-efivarfs efivarfs\nalias devname:fuse fuse\n"
    db, _ = make_db(tmp_path, dep, alias)
    db.eager = {"ext4", "crc16", "jbd2", "crc32c_generic", "crc32c_intel", "virtio_blk", "floppy"}
    assert not db.on_demand()
    db.eager.discard("floppy")  # a driver with a device alias is on demand
    assert db.on_demand()


def test_device_aliases_and_names_the_kernel_asks_for():
    from pyinit.modalias import is_device_alias
    for pattern in ("pci:v00001AF4d*sv*sd*bc*sc*i*", "virtio:d00000002v*", "acpi*:PNP0700:*", "usb:v*p*d*"):
        assert is_device_alias(pattern), pattern
    for pattern in ("fs-ext4", "crypto-crc32c", "char-major-10-229", "devname:btrfs-control", "block-major-9-*"):
        assert not is_device_alias(pattern), pattern
