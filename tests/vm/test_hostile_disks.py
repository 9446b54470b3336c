"""Hostile disks beside a good root, under a real kernel (issue 12, items 1-3), in ONE boot:

    vda  a GPT whose header CRC is right and whose entry array LBA overflows a file offset
    vdb  a GPT (300 MiB disk) whose CRC-valid header asks for a 256 MiB entry array
    vdc  an md 1.2 member with a right checksum that the kernel's md refuses (an unknown
         feature bit): mdadm --incremental exits non-zero
    vdd  the same member with a byte of its name changed after the checksum: stale,
         never handed to mdadm
    vde  an NBD disk (nbdkit's eval plugin) that answers the kernel's partition scan (the
         first 32 KiB) and never answers a read past it: pyinit's 68 KiB probe hangs there
    vdf  the root (ext4), hot-plugged once pyinit waits for it and mdadm has run

The real init must run from vdf, pyinit must say it gave up on vde, the nbdkit log must
show that the guest's read past 32 KiB really arrived and was never answered, the worker
stuck in that read must not hold up the switch, and mdadm's failure must be a warning.
nbdkit is stopped once the real init has reported, so that the stuck request fails and
QEMU can power off.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from devtools.qemu import boot
from devtools.rootdisk import make_root_disk
from tests.support.builder import run_builder
from tests.support.disks import MD1_SB_SIZE, gpt_disk, md12_member, set_md1_checksum

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
SERIES = "6.12"
STALL_FROM = 32768
NBD_SIZE = 64 << 20


def write_disk(path, head: bytes, size: int):
    path.write_bytes(head)
    os.truncate(path, size)
    return path


def md_with_unknown_feature(corrupt=False) -> bytes:
    """md12_member's superblock with feature bit 31 (unknown to the kernel) and a level,
    disk count and data area, the checksum made afterwards (so pyinit believes it)."""
    import struct
    raw = bytearray(md12_member(8 << 20))
    sb = raw[4096:4096 + MD1_SB_SIZE]
    struct.pack_into("<I", sb, 8, 0x80000000)
    struct.pack_into("<II", sb, 72, 1, 0)  # raid1
    struct.pack_into("<I", sb, 92, 2)
    struct.pack_into("<QQ", sb, 128, 2048, (8 << 20 >> 9) - 2048)
    struct.pack_into("<HH", sb, 256, 0, 0xFFFF)
    set_md1_checksum(sb)
    if corrupt:
        sb[35] ^= 0x20
    raw[4096:4096 + MD1_SB_SIZE] = sb
    return bytes(raw)


@pytest.fixture
def stalled_nbd(tmp_path):
    """An nbdkit export whose reads past STALL_FROM never end; (socket, log). Stopped (its
    whole process group, which we made) at the end."""
    sock, log = tmp_path / "stall.sock", tmp_path / "stall.log"
    pread = (f'if [ $(($4 + $3)) -gt {STALL_FROM} ]; then echo "$4 $3" >> {log}; exec sleep 100000; fi; '
             'head -c $3 /dev/zero')
    proc = subprocess.Popen(["nbdkit", "--foreground", "--unix", str(sock), "eval",
                             f"get_size=echo {NBD_SIZE}", f"pread={pread}"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.05)
    assert sock.exists(), proc.stderr.read() if proc.poll() is not None else "nbdkit made no socket"
    state = {"proc": proc}
    yield sock, log, state
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def test_hostile_disks_beside_a_good_root(kernels, tmp_path, stalled_nbd, console_log):
    kernel = kernels[SERIES]
    sock, stall_log, state = stalled_nbd
    image = tmp_path / "img"
    r = run_builder("build", "-o", str(image), "--kver", kernel.kver, "--moddir", str(kernel.moddir),
                    "--modules", "virtio_blk,ext4", "--hook", "mdraid", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    root = make_root_disk(tmp_path / "root.img")
    disks = [root.path,
             write_disk(tmp_path / "gpt-overflow.img", bytes(gpt_disk(1 << 20, entries_lba=(1 << 64) - 1)), 1 << 20),
             write_disk(tmp_path / "gpt-256mib.img", bytes(gpt_disk(300 << 20, count=4096, entry_size=65536)),
                        300 << 20),
             write_disk(tmp_path / "md-refused.img", md_with_unknown_feature(), 8 << 20),
             write_disk(tmp_path / "md-stale.img", md_with_unknown_feature(corrupt=True), 8 << 20)]
    nbd = ["-drive", f"driver=nbd,server.type=unix,server.path={sock},if=none,id=stall,read-only=on",
           "-device", "virtio-blk-pci,drive=stall"]

    def plug_root_then_release(machine):
        # The root comes last (hot-plugged), so the initqueue's settled hooks run while
        # pyinit waits, as on a machine whose root is slow to appear: mdadm meets vdc.
        assert machine.wait_for("pyinit: waiting for root device", 300) is not None, machine.text()
        machine.wait_for("pyinit: mdraid: mdadm --incremental /dev/vdc", 60)
        machine.execute("blockdev-add", **{"node-name": "root0", "driver": "raw",
                                           "file": {"driver": "file", "filename": str(root.path)}})
        machine.execute("device_add", driver="virtio-blk-pci", drive="root0", id="rootdisk")
        # Once the real init has reported, end the NBD server: the stuck request fails and
        # QEMU can drain its disks and power off.
        machine.wait_for("REALINIT-DONE", 600)
        os.killpg(state["proc"].pid, signal.SIGKILL)

    r = boot(kernel, image, f"root=UUID={root.uuid} rd.timeout=120 rd.debug", disks=disks[1:], extra_args=nbd,
             qmp=True, on_start=plug_root_then_release, log=console_log, timeout=600)
    c = r.console
    assert not r.timed_out and not r.panicked, r
    rep = r.report
    assert rep is not None and rep.done and rep.pid == 1, r
    assert rep.mount_at("/").source == "/dev/vdf", rep.mounts
    # vde never answered past 32 KiB: the guest's read really reached the device and hung there
    stalled = [tuple(map(int, line.split())) for line in stall_log.read_text().split("\n") if line]
    assert stalled and all(off + n > STALL_FROM for off, n in stalled), stalled
    assert re.search(r"pyinit: gave up on /dev/vde: no answer to a read within \d+ s; it is left unknown and "
                     r"the boot goes on", c), r
    # the worker asleep in that read did not hold up the switch; the real init inherited it
    assert re.search(r"pyinit: leaving pid (\d+) \(pyinit-probe, state D\) to the real init", c), r
    assert "still alive after SIGKILL" not in c, r
    # the GPTs that ask too much are not believed, and nothing stopped the boot
    for name in ("vda", "vdb"):
        assert re.search(rf"pyinit: block device /dev/{name} \(254:\d+\)", c), r
        assert f"cannot identify /dev/{name}" not in c and f"gave up on /dev/{name}" not in c, r
    assert "PTTYPE=\"gpt\"" not in c.split("pyinit: block device /dev/vdb", 1)[1].split("\n", 1)[0], r
    # the md member mdadm cannot use: a warning; the stale one (bad checksum): not a member at all
    assert re.search(r"pyinit: mdraid: mdadm --incremental /dev/vdc \(array 5e1f000000004000800000000000ab00\) "
                     r"exited with \d+: .*going on without it", c), r
    assert "mdadm --incremental /dev/vdd" not in c, r
    assert 'TYPE="linux_raid_member"' not in c.split("pyinit: block device /dev/vdd", 1)[1].split("\n", 1)[0], r
