import pytest

from pyinit import mounts
from pyinit import syscalls as sc

pytestmark = pytest.mark.unit


def test_parse_options_splits_flags_and_data():
    flags, data = mounts.parse_options("ro,noatime,data=ordered,subvol=@root,defaults,nofail")
    assert flags == sc.MS_RDONLY | sc.MS_NOATIME
    assert data == "data=ordered,subvol=@root"


def test_later_words_win():
    assert mounts.parse_options("ro,rw")[0] & sc.MS_RDONLY == 0
    assert mounts.parse_options("rw,ro")[0] & sc.MS_RDONLY
    assert mounts.parse_options("", sc.MS_RDONLY) == (sc.MS_RDONLY, "")


def test_mountinfo_fields_unescaped():
    # a mount point as /proc/self/mountinfo writes it: "30 22 0:30 / /mnt/with\040space rw - ..."
    assert mounts.unescape("/mnt/with\\040space") == "/mnt/with space"
    assert mounts.unescape("/proc") == "/proc"
