"""devtools' pure parts: the REALINIT report parser, and the harness's small pure helpers
(kernel command line, QEMU disk arguments, module closure, newc writer)."""

from __future__ import annotations

import signal
import subprocess

import pytest

from devtools.rootdisk import STANDARD_INIT, find_report, mask_to_signals, parse_mountinfo_line, parse_report

pytestmark = pytest.mark.unit

# A serial log as QEMU delivers it: \r\n endings, firmware escape codes, kernel lines,
# the anchor's own lines, then the report (values taken from a real 6.1 boot).
CONSOLE = (
    "SeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n"
    "Booting from ROM..\x1bc\x1b[?7l\x1b[2J[    0.000000] Linux version 6.1.0-50-amd64\r\n"
    "[    2.157708] Run /init as init process\r\n"
    "ANCHOR: /init started\r\n"
    "[    2.932611] EXT4-fs (vda): mounted filesystem with ordered data mode.\r\n"
    "ANCHOR: switch_root to /dev/vda (ro), init /sbin/init\r\n"
    "REALINIT: uptime 3.06\r\n"
    "REALINIT-PID: 1\r\n"
    "REALINIT-CMDLINE: console=ttyS0 root=/dev/vda panic=-1\r\n"
    "REALINIT-KERNEL: 6.1.0-50-amd64\r\n"
    "REALINIT-STATUS: NSpid:\t1\r\n"
    "REALINIT-STATUS: SigBlk:\t0000000000000000\r\n"
    "REALINIT-STATUS: SigIgn:\t0000000000001004\r\n"
    "REALINIT-STATUS: SigCgt:\t0000000000010002\r\n"
    "REALINIT-EXEC-STATUS: SigBlk:\t0000000000000200\r\n"
    "REALINIT-EXEC-STATUS: SigIgn:\t0000000001001000\r\n"
    "REALINIT-FD: 0 -> /dev/console\r\n"
    "REALINIT-FD: 1 -> /dev/console\r\n"
    "REALINIT-FD: 10 -> /sbin/init\r\n"
    "REALINIT-FD: 2 -> /dev/console\r\n"
    "REALINIT-FD: 3 -> /run/pyinit.log\r\n"
    "REALINIT-MOUNT: 21 25 0:19 / /proc rw,relatime - proc proc rw\r\n"
    "REALINIT-MOUNT: 22 25 0:20 / /sys rw,relatime - sysfs sysfs rw\r\n"
    "REALINIT-MOUNT: 23 25 0:5 / /dev rw,relatime - devtmpfs devtmpfs rw,size=229368k,mode=755\r\n"
    "REALINIT-MOUNT: 25 1 254:0 / / ro,relatime - ext4 /dev/vda ro\r\n"
    "REALINIT-MOUNT: 26 25 0:30 / /mnt/with\\040space rw - tmpfs tmpfs rw\r\n"
    "REALINIT-MOUNTED: /run\r\n"
    "REALINIT-CWD: /\r\n"
    "REALINIT-ROOT: /\r\n"
    "REALINIT-ENV: HOME=/\r\n"
    "REALINIT-ENV: TERM=linux\r\n"
    "REALINIT-ENV: EMPTY=\r\n"
    "REALINIT-ENV: X=a=b\r\n"
    "REALINIT-FILE: /etc/realinit-check exists\r\n"
    "REALINIT-FILE: /path with space missing\r\n"
    "REALINIT-DONE\r\n"
    "[    3.199330] EXT4-fs (vda): re-mounted. Quota mode: none.\r\n"
    "[    3.271333] reboot: Power down\r\n"
)


def test_parse_report_fields():
    rep = parse_report(CONSOLE)
    assert rep.uptime == 3.06
    assert rep.pid == 1
    assert rep.cmdline == "console=ttyS0 root=/dev/vda panic=-1"
    assert rep.cmdline_args == ["console=ttyS0", "root=/dev/vda", "panic=-1"]
    assert rep.kernel == "6.1.0-50-amd64"
    assert rep.status == {"NSpid": "1", "SigBlk": "0000000000000000",
                          "SigIgn": "0000000000001004", "SigCgt": "0000000000010002"}
    assert rep.fds == {0: "/dev/console", 1: "/dev/console", 2: "/dev/console",
                       3: "/run/pyinit.log", 10: "/sbin/init"}
    assert len(rep.mounts) == 5
    assert rep.mounted_by_init == ["/run"]
    assert rep.cwd == "/" and rep.root == "/"
    assert rep.env == {"HOME": "/", "TERM": "linux", "EMPTY": "", "X": "a=b"}
    assert rep.files == {"/etc/realinit-check": True, "/path with space": False}
    assert rep.errors == []
    assert rep.done


def test_mount_at_root_and_mountinfo_details():
    rep = parse_report(CONSOLE)
    root = rep.mount_at("/")
    assert (root.fstype, root.source, root.options, root.super_options) == \
        ("ext4", "/dev/vda", "ro,relatime", "ro")
    assert root.readonly and root.devno == "254:0"
    assert not rep.mount_at("/proc").readonly
    assert rep.mount_at("/mnt/with space").fstype == "tmpfs"  # \040 unescaped
    assert rep.mount_at("/nowhere") is None


def test_mount_at_takes_the_topmost_of_stacked_mounts():
    text = ("REALINIT: uptime 1.0\n"
            "REALINIT-MOUNT: 1 1 0:2 / / rw - rootfs rootfs rw\n"
            "REALINIT-MOUNT: 30 1 8:1 / / ro,noatime - xfs /dev/sda1 ro,attr2\n"
            "REALINIT-DONE\n")
    m = parse_report(text).mount_at("/")
    assert (m.fstype, m.source, m.options) == ("xfs", "/dev/sda1", "ro,noatime")


def test_signals_live_and_at_exec():
    rep = parse_report(CONSOLE)
    assert rep.signals("SigIgn") == {signal.SIGQUIT, signal.SIGPIPE}
    assert rep.signals("SigCgt") == {signal.SIGINT, signal.SIGCHLD}
    assert rep.exec_blocked() == {signal.SIGUSR1}
    assert rep.exec_ignored() == {signal.SIGPIPE, signal.SIGXFSZ}
    assert mask_to_signals("0") == set()
    assert mask_to_signals("8000000000000000") == {64}


def test_inherited_fds_leave_out_the_shells_script_handle():
    rep = parse_report(CONSOLE)
    assert rep.inherited_fds == {0: "/dev/console", 1: "/dev/console", 2: "/dev/console",
                                 3: "/run/pyinit.log"}
    other = parse_report(CONSOLE.replace("panic=-1", "panic=-1 init=/bin/init2")
                         .replace("10 -> /sbin/init", "11 -> /bin/init2"))
    assert 11 not in other.inherited_fds


def test_noise_before_marker_and_lone_carriage_returns():
    text = ("junk REALINIT: uptime 0.5\r\r\n"
            "[    1.0] some kernel line\n"
            "REALINIT-PID: 7\n"
            "REALINIT-ERROR: cannot remount / read-write\n"
            "xxREALINIT-DONE\n")
    rep = parse_report(text)
    assert rep.uptime == 0.5 and rep.pid == 7 and rep.done
    assert rep.errors == ["cannot remount / read-write"]


def test_truncated_report_is_not_done():
    text = CONSOLE.split("REALINIT-FD: 2", maxsplit=1)[0]
    rep = parse_report(text)
    assert not rep.done
    assert rep.pid == 1 and rep.mounts == []


def test_last_report_wins():
    second = CONSOLE.replace("uptime 3.06", "uptime 9.50").replace("PID: 1", "PID: 42")
    rep = parse_report(CONSOLE + second)
    assert rep.uptime == 9.5 and rep.pid == 42
    assert len(rep.mounts) == 5  # not accumulated over both reports


def test_no_report():
    with pytest.raises(ValueError):
        parse_report("[ 1.0] Kernel panic - not syncing: Attempted to kill init!\n")
    assert find_report("nothing here") is None
    assert find_report(CONSOLE).done


def test_unknown_uptime_is_none():
    assert parse_report("REALINIT: uptime unknown\nREALINIT-DONE\n").uptime is None


def test_parse_mountinfo_line_with_optional_fields():
    m = parse_mountinfo_line("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:2 - ext3 "
                             "/dev/root rw,errors=continue")
    assert (m.mount_id, m.parent_id, m.root, m.mountpoint) == (36, 35, "/mnt1", "/mnt2")
    assert (m.fstype, m.source, m.super_options) == ("ext3", "/dev/root", "rw,errors=continue")
    with pytest.raises(ValueError):
        parse_mountinfo_line("not mountinfo")


def test_standard_init_is_valid_busybox_sh(busybox_bin):
    proc = subprocess.run([str(busybox_bin), "sh", "-n", "-c", STANDARD_INIT],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert STANDARD_INIT.startswith("#!/bin/busybox sh\n")


# --------------------------------------------------------------- harness helpers

def test_kernel_cmdline_adds_panic_only_when_absent():
    from devtools.qemu import kernel_cmdline
    assert kernel_cmdline("root=/dev/vda") == "console=ttyS0 root=/dev/vda no_timer_check panic=-1"
    assert kernel_cmdline("root=/dev/vda panic=10") == "console=ttyS0 root=/dev/vda panic=10 no_timer_check"
    assert kernel_cmdline("") == "console=ttyS0 no_timer_check panic=-1"


def test_disk_args(tmp_path):
    from devtools.qemu import DiskSpec, disk_args
    a = tmp_path / "a,b.img"
    argv = disk_args([a, DiskSpec(tmp_path / "c.img", interface="scsi", serial="S1"),
                      DiskSpec(tmp_path / "d.img", interface="nvme", readonly=True)])
    assert argv[:4] == ["-drive", f"file={tmp_path}/a,,b.img,if=none,id=disk0,format=raw",
                        "-device", "virtio-blk-pci,drive=disk0"]
    assert "virtio-scsi-pci,id=scsi0" in argv
    assert "scsi-hd,drive=disk1,bus=scsi0.0,serial=S1" in argv
    assert f"file={tmp_path}/d.img,if=none,id=disk2,format=raw,readonly=on" in argv
    assert "nvme,drive=disk2,serial=nvme2" in argv
    with pytest.raises(ValueError):
        disk_args([DiskSpec(a, interface="floppy")])


def _moddir(tmp_path):
    d = tmp_path / "6.1.0-1-amd64"
    d.mkdir()
    (d / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n"
        "kernel/fs/jbd2/jbd2.ko:\n"
        "kernel/fs/mbcache.ko:\n"
        "kernel/lib/crc16.ko:\n"
        "kernel/crypto/crc32c_generic.ko:\n"
        "kernel/arch/x86/crypto/crc32c-intel.ko:\n"
        "kernel/drivers/block/virtio_blk.ko:\n")
    (d / "modules.softdep").write_text("# comment\nsoftdep ext4 pre: crypto-crc32c\n"
                                       "softdep jbd2 pre: crypto-crc32c\n")
    (d / "modules.alias").write_text("alias crypto-crc32c crc32c_intel\n"
                                     "alias crypto-crc32c crc32c_generic\n"
                                     "alias fs-ext4 ext4\n")
    (d / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    return d


def test_module_closure_order_softdeps_and_builtins(tmp_path):
    from devtools.anchor import ModuleIndex
    idx = ModuleIndex.load(_moddir(tmp_path))
    order = idx.closure(["virtio_pci", "virtio_blk", "fs-ext4"])
    names = [n for n, _ in order]
    assert names == ["virtio_blk", "crc32c_intel", "crc32c_generic", "jbd2", "mbcache",
                     "crc16", "ext4"]
    assert dict(order)["crc32c_intel"] is True and dict(order)["ext4"] is False
    with pytest.raises(LookupError):
        idx.closure(["nosuchmodule"])


def test_newc_archive_lists_with_cpio(tmp_path):
    import stat

    from devtools.anchor import Entry, newc
    data = newc([Entry("dev", stat.S_IFDIR | 0o755),
                 Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
                 Entry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n"),
                 Entry("sh", stat.S_IFLNK | 0o777, b"busybox")])
    assert data.startswith(b"070701") and len(data) % 4 == 0
    proc = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert [line.split()[-1] for line in lines] == ["dev", "dev/console", "init", "busybox"]
    assert lines[1].startswith("crw-------") and "5,   1" in lines[1]
