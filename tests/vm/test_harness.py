"""The VM harness, checked on its own: the busybox anchor initramfs boots Debian's real
kernels into a test root disk, independently of pyinit. When a pyinit VM test fails and
these pass, the fault is not in the harness."""

from __future__ import annotations

import json
import signal

import pytest

from devtools.anchor import build_busybox_anchor
from devtools.qemu import boot
from devtools.rootdisk import make_root_disk, parse_report, read_report_from_disk
from tests.support.boots import KERNEL_SERIES

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

CHECK = "/bin/busybox\n/etc/realinit-check\n/does/not/exist\n"


def _record(artifacts, **fields) -> None:
    with open(artifacts / "timings.jsonl", "a") as f:
        f.write(json.dumps(fields) + "\n")


@pytest.mark.parametrize("series", KERNEL_SERIES)
def test_anchor_boots_real_init_by_device_path(series, kernels, tmp_path, artifacts,
                                               console_log):
    kernel = kernels[series]
    initrd = build_busybox_anchor(kernel, tmp_path / "anchor.img")
    disk = make_root_disk(tmp_path / "root.img", extra_files={"etc/realinit-check": CHECK})

    r = boot(kernel, initrd, "root=/dev/vda", disks=[disk.path], timeout=180, log=console_log)
    _record(artifacts, test="anchor", series=series, kver=kernel.kver,
            uptime=r.report.uptime if r.report else None, wall=round(r.seconds, 2),
            marker=round(r.marker_seconds, 2) if r.marker_seconds else None,
            run_init=r.run_init_uptime,
            init_to_real_init=round(r.init_to_real_init, 3) if r.init_to_real_init else None)

    assert not r.timed_out, r
    assert not r.panicked, r
    assert r.returncode == 0, r
    rep = r.report
    assert rep is not None and rep.done, r
    assert rep.errors == [], r
    assert rep.kernel == kernel.kver
    assert rep.uptime is not None and 0.1 < rep.uptime < 60, r
    assert rep.pid == 1
    assert rep.status["NSpid"] == "1"
    assert "root=/dev/vda" in rep.cmdline_args and "panic=-1" in rep.cmdline_args
    root = rep.mount_at("/")
    assert root is not None, rep.mounts
    assert (root.fstype, root.source, root.readonly) == ("ext4", "/dev/vda", True), root
    # the anchor moved its API filesystems over: the real init mounted none itself
    assert {m.mountpoint for m in rep.mountinfo()} >= {"/proc", "/sys", "/dev", "/run"}
    assert rep.mounted_by_init == []
    assert rep.cwd == "/" and rep.root == "/"
    assert rep.inherited_fds == {0: "/dev/console", 1: "/dev/console", 2: "/dev/console"}
    assert rep.files == {"/bin/busybox": True, "/etc/realinit-check": True,
                         "/does/not/exist": False}
    # busybox's switch_root leaves the signal state alone and busybox sh (the anchor)
    # blocks and ignores nothing that survives exec
    assert rep.exec_blocked() == set() and rep.exec_ignored() == set()
    assert signal.SIGQUIT in rep.signals("SigIgn")  # busybox ash's own, see rootdisk.py
    assert r.marker_seconds is not None and r.marker_seconds < r.seconds

    saved = read_report_from_disk(disk.path)
    assert saved is not None, "no /realinit.report on the disk"
    from_disk = parse_report(saved)
    assert from_disk == rep


def test_anchor_finds_root_by_uuid_and_qmp_answers(kernel_612, tmp_path, console_log):
    initrd = build_busybox_anchor(kernel_612, tmp_path / "anchor.img")
    disk = make_root_disk(tmp_path / "root.img", label="pyinit-test")
    seen = {}

    def on_start(vm):
        seen["status"] = vm.execute("query-status")
        seen["block"] = vm.execute("query-block")

    r = boot(kernel_612, initrd, f"root=UUID={disk.uuid} quiet", disks=[disk.path],
             timeout=180, qmp=True, on_start=on_start, log=console_log)

    assert r.report is not None and r.report.done, r
    assert r.report.mount_at("/").source == "/dev/vda"
    assert f"root=UUID={disk.uuid}" in r.report.cmdline_args
    assert seen["status"]["status"] in ("running", "prelaunch"), seen
    assert [b.get("device") for b in seen["block"]] == ["disk0"], seen


def test_harness_reports_a_panic(kernel_61, tmp_path, console_log):
    """init= naming no file: busybox switch_root fails, the anchor's PID 1 exits, the
    kernel panics and panic=-1 with -no-reboot ends QEMU at once."""
    initrd = build_busybox_anchor(kernel_61, tmp_path / "anchor.img")
    disk = make_root_disk(tmp_path / "root.img")

    r = boot(kernel_61, initrd, "root=/dev/vda init=/no/such/init", disks=[disk.path],
             timeout=180, log=console_log)

    assert r.panicked, r
    assert not r.timed_out, r
    assert r.report is None, r
    assert "Attempted to kill init" in r.console
