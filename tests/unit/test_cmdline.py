import pytest

from pyinit import cmdline

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, params, init_args", [
    ("root=UUID=abc ro quiet", [("root", "UUID=abc"), ("ro", None), ("quiet", None)], []),
    ('a="b c" d', [("a", "b c"), ("d", None)], []),
    ('"x y=z" w', [("x y", "z"), ("w", None)], []),
    ("init=/bin/sh -- single foo=bar", [("init", "/bin/sh")], ["single", "foo=bar"]),
    ("  lots   of\tspace\n", [("lots", None), ("of", None), ("space", None)], []),
    ("a==b", [("a", "=b")], []),
    ("=a", [("=a", None)], []),
    ('root="LABEL=my root" rw', [("root", "LABEL=my root"), ("rw", None)], []),
    ('p="unterminated value', [("p", "unterminated value")], []),
    ('x=a"b c"d e', [("x", 'a"b c"d'), ("e", None)], []),
    ("BOOT_IMAGE=/vmlinuz-6.1 root=/dev/vda", [("BOOT_IMAGE", "/vmlinuz-6.1"), ("root", "/dev/vda")], []),
    ("", [], []),
    ("a\0b c", [("a", None)], []),
])
def test_tokenize_follows_kernel_next_arg(text, params, init_args):
    assert cmdline.tokenize(text) == (params, init_args)


def test_last_value_wins_and_lists():
    c = cmdline.parse("root=/dev/sda root=/dev/vda rd.lvm.vg=a,b rd.lvm.vg=c")
    assert c.root == "/dev/vda"
    assert c.rd_list("rd.lvm.vg") == ["a", "b", "c"]


@pytest.mark.parametrize("text, readonly", [
    ("root=/dev/vda", True),
    ("root=/dev/vda rw", False),
    ("root=/dev/vda ro", True),
    ("root=/dev/vda rw ro", True),
    ("root=/dev/vda ro rw", False),
    ("root=/dev/vda rootflags=rw", False),
    ("root=/dev/vda rootflags=rw,ro", True),
    ("root=/dev/vda rootflags=ro,rw", False),
    ("root=/dev/vda rootflags=rw ro", True),
    ("root=/dev/vda rootflags=ro rw", False),
])
def test_readonly_precedence(text, readonly):
    assert cmdline.parse(text).readonly is readonly


def test_root_wait_and_delay():
    c = cmdline.parse("root=LABEL=x rootwait rootdelay=2 rd.timeout=9")
    assert c.rootwait and c.rootwait_timeout is None and c.rootdelay == 2.0
    c = cmdline.parse("rootwait=5")
    assert c.rootwait and c.rootwait_timeout == 5.0
    assert cmdline.parse("rootdelay=abc").rootdelay == 0.0


def test_flags_and_rd_options():
    c = cmdline.parse("rd.debug rd.shell=0 rd.break=pre-mount quiet loglevel=3 console=ttyS0 console=tty0")
    assert c.flag("rd.debug") is True
    assert c.flag("rd.shell", True) is False
    assert c.flag("rd.missing", True) is True
    assert c.get("rd.break") == "pre-mount"
    assert c.quiet and c.loglevel == 3
    assert c.consoles == ("ttyS0", "tty0")


def test_cmdline_is_read_only():
    c = cmdline.parse("root=/dev/vda")
    with pytest.raises(AttributeError):
        c.root = "/dev/sda"


def test_init_and_unknown_words_kept():
    c = cmdline.parse("init=/lib/systemd/systemd nullfs_rootfs immutable_rootfs foo.bar=1 -- -s")
    assert c.init == "/lib/systemd/systemd"
    assert c.has("nullfs_rootfs") and c.get("foo.bar") == "1"
    assert c.init_args == ("-s",)
