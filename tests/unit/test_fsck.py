"""fsck's command-line settings (systemd-fsck's meaning) and exit-status decisions."""
import pytest

from pyinit import cmdline, fsck

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("line, mode, repair, flags", [
    ("root=/dev/vda", "auto", "preen", ["-a"]),
    ("fsck.mode=force", "force", "preen", ["-a", "-f"]),
    ("fsck.mode=skip", "skip", "preen", ["-a"]),
    ("fsck.repair=yes", "auto", "yes", ["-y"]),
    ("fsck.repair=no fsck.mode=force", "force", "no", ["-n", "-f"]),
    ("forcefsck fsckfix", "force", "yes", ["-y", "-f"]),
    ("fastboot", "skip", "preen", ["-a"]),
    ("fastboot fsck.mode=force", "force", "preen", ["-a", "-f"]),  # the new words win
])
def test_settings_and_argv(line, mode, repair, flags):
    s = fsck.parse_settings(cmdline.parse(line))
    assert (s.mode, s.repair, s.problems) == (mode, repair, [])
    assert fsck.argv("/usr/sbin/fsck.ext4", "/dev/vda2", s) == ["/usr/sbin/fsck.ext4", *flags, "/dev/vda2"]


def test_bad_values_are_reported_and_ignored():
    s = fsck.parse_settings(cmdline.parse("fsck.mode=always fsck.repair=maybe"))
    assert (s.mode, s.repair) == ("auto", "preen")
    assert len(s.problems) == 2 and "fsck.mode=always" in s.problems[0]


@pytest.mark.parametrize("status, outcome", [(0, "ok"), (1, "corrected"), (2, "reboot"), (3, "reboot"),
                                             (4, "failed"), (5, "failed"), (8, "failed"), (12, "failed"),
                                             (128, "failed"), (137, "failed")])
def test_decide(status, outcome):
    assert fsck.decide(status) == outcome


def test_mounted_read_write():
    mi = ("22 1 254:2 / / ro,relatime shared:1 - ext4 /dev/vda2 ro\n"
          "30 22 254:3 / /data rw,relatime shared:2 - ext4 /dev/vda3 rw\n")
    assert fsck.mounted_read_write((254, 2), mi) is None
    assert fsck.mounted_read_write((254, 3), mi) == "/data"
    assert fsck.mounted_read_write((8, 0), mi) is None


def test_find_checker(tmp_path):
    (tmp_path / "fsck.ext4").write_text("#!/bin/sh\n")
    (tmp_path / "fsck.ext4").chmod(0o755)
    (tmp_path / "fsck.xfs").write_text("not executable")
    assert fsck.find_checker("ext4", (str(tmp_path),)) == f"{tmp_path}/fsck.ext4"
    assert fsck.find_checker("xfs", (str(tmp_path),)) is None


def test_run_reports_the_exit_status(tmp_path):
    script = tmp_path / "fsck.fake"
    script.write_text("#!/bin/sh\n[ \"$1\" = -a ] || exit 16\nexit 4\n")
    script.chmod(0o755)
    assert fsck.run([str(script), "-a", "/dev/null"]) == 4
    assert fsck.run([str(script), "-n", "/dev/null"]) == 16
