"""resume=: a real hibernation round trip. Boot 1: the real init turns swap on and writes
`disk` to /sys/power/state; the kernel saves the machine to the swap disk and powers off.
Boot 2, same disks: the resume hook finds the image's signature and writes the device to
/sys/power/resume before anything is mounted; the kernel restores boot 1's memory and the
real init carries on after its `echo disk`, where it says so."""
from __future__ import annotations

import subprocess

import pytest

from devtools.qemu import boot
from devtools.rootdisk import make_root_disk

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

SWAP_UUID = "5e1f0000-0000-4000-8000-0000000000cc"
HIBERNATING_INIT = r"""#!/bin/busybox sh
BB=/bin/busybox
$BB mount -t proc proc /proc
$BB mount -t sysfs sysfs /sys
echo "HIBERNATE-TEST: first start of the real init, pid $$, resume device $($BB cat /sys/power/resume)"
$BB swapon /dev/vdb || echo "HIBERNATE-TEST: swapon failed"
echo "HIBERNATE-TEST: hibernating"
echo disk > /sys/power/state
echo "HIBERNATE-TEST: resumed after hibernation, pid $$"
$BB poweroff -f
"""


def test_resume_from_a_hibernation_image(kernel_61, pyinit_image, tmp_path, console_log):
    image = pyinit_image("6.1", extra=("--hook", "resume"))
    disk = make_root_disk(tmp_path / "root.img", init=HIBERNATING_INIT)
    swap = tmp_path / "swap.img"
    with open(swap, "wb") as f:
        f.truncate(256 * 1024 * 1024)
    subprocess.run(["mkswap", "-U", SWAP_UUID, str(swap)], check=True, capture_output=True)
    cmdline = f"root=UUID={disk.uuid} resume=UUID={SWAP_UUID} rd.emergency=poweroff rd.shell=0"

    first = boot(kernel_61, image, cmdline, disks=[disk.path, swap], log=console_log.with_suffix(".1.log"),
                 timeout=400, marker="HIBERNATE-TEST: hibernating")
    assert "no hibernation image signature on it" in first.console, first
    assert "HIBERNATE-TEST: first start of the real init, pid 1, resume device 254:16" in first.console, first
    assert "HIBERNATE-TEST: hibernating" in first.console, first
    assert "resumed after hibernation" not in first.console and not first.timed_out, first
    with open(swap, "rb") as f:  # the image's signature, seen from the host
        assert f.read(4096)[-10:].startswith(b"S1SUSPEND"), "no hibernation image was written"

    second = boot(kernel_61, image, cmdline, disks=[disk.path, swap], log=console_log.with_suffix(".2.log"),
                  timeout=400, marker="HIBERNATE-TEST: resumed")
    assert "it holds a hibernation image: resuming" in second.console, second
    assert "PM: hibernation: resume from hibernation" in second.console, second  # the kernel says so too
    assert "HIBERNATE-TEST: resumed after hibernation, pid 1" in second.console, second
    assert "first start of the real init" not in second.console, second  # boot 1's init, restored
    assert not second.panicked, second
