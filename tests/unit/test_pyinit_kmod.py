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
