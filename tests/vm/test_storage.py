"""Roots on the storage stack: LUKS2 (passphrase typed on the serial console, keyfile), LVM,
RAID1 with a disk missing. The host has no device-mapper, so the disks are made inside a
QEMU guest by devtools.diskbuilder (cached on disk by a hash of the recipe); each test boots
copies. The checks: the disk really is what it claims (read on the host), the hook's own
console lines, and the real init's report that / is the mapped device."""
from __future__ import annotations

import hashlib
import re
import subprocess

import pytest

from devtools.diskbuilder import build_disks, copy_disks
from devtools.qemu import boot
from devtools.rootdisk import STANDARD_INIT, make_root_disk

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

FS_UUID = "5e1f0000-0000-4000-8000-000000000001"
LUKS_UUID = "5e1f0000-0000-4000-8000-0000000000aa"
MD_UUID = "5e1f0000:00004000:80000000:000000ab"
PASSPHRASE = b"secret"
KEY = bytes(range(32))

LUKS_RECIPE = f"""
cryptsetup luksFormat --batch-mode --type luks2 --uuid {LUKS_UUID} --pbkdf pbkdf2 \\
    --pbkdf-force-iterations 1000 --key-file /files/passphrase /dev/vda
cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \\
    --key-file /files/passphrase /dev/vda /files/keyfile
cryptsetup open --key-file /files/passphrase /dev/vda root
dd if=$ROOTIMG of=/dev/mapper/root bs=1M
cryptsetup close root
"""
LVM_RECIPE = """
lvm pvcreate --config "$LVM_CONFIG" /dev/vda
lvm vgcreate --config "$LVM_CONFIG" vg0 /dev/vda
lvm lvcreate --config "$LVM_CONFIG" -y -W n -Z n -L 64M -n root vg0
dd if=$ROOTIMG of=/dev/mapper/vg0-root bs=1M
lvm vgchange --config "$LVM_CONFIG" -an vg0
"""
RAID_RECIPE = f"""
mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --assume-clean \\
    --uuid={MD_UUID} --homehost=pyinit --name=root /dev/vda /dev/vdb
dd if=$ROOTIMG of=/dev/md0 bs=1M
mdadm --stop /dev/md0
"""


@pytest.fixture(scope="session")
def fs_image(tmp_path_factory):
    """The ext4 root the builder copies onto each mapped device (fixed UUID)."""
    return make_root_disk(tmp_path_factory.mktemp("storage") / "rootfs.img", uuid=FS_UUID)


@pytest.fixture(scope="session")
def storage_disks(kernels, fs_image, artifacts):
    root_key = hashlib.sha256((STANDARD_INIT + FS_UUID).encode()).hexdigest()
    made = {}

    def get(kind):
        if kind not in made:
            recipe, disks = {"luks": (LUKS_RECIPE, [("crypt.img", 96)]),
                             "lvm": (LVM_RECIPE, [("pv.img", 96)]),
                             "raid": (RAID_RECIPE, [("raid-a.img", 80), ("raid-b.img", 80)])}[kind]
            made[kind] = build_disks(kernels["6.1"], recipe, disks, fs_image.path, root_key=root_key,
                                     files={"passphrase": PASSPHRASE, "keyfile": KEY},
                                     log=artifacts / f"diskbuilder-{kind}.log")
        return made[kind]
    return get


@pytest.fixture(scope="session")
def storage_image(pyinit_image, tmp_path_factory):
    key = tmp_path_factory.mktemp("keys") / "root.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    extra = ("--hook", "luks", "--hook", "lvm", "--hook", "mdraid", "--include", f"{key}:/etc/keys/root.key")
    return lambda series: pyinit_image(series, extra=extra)


def assert_root_on(r, source):
    assert not r.timed_out and not r.panicked, r
    rep = r.report
    assert rep is not None and rep.done and rep.pid == 1, r
    root = rep.mount_at("/")
    assert root is not None and (root.fstype, root.source) == ("ext4", source), rep.mounts
    return rep


def test_luks2_root_unlocked_with_a_passphrase_typed_on_the_console(kernel_61, storage_image, storage_disks,
                                                                    tmp_path, console_log):
    disk, = storage_disks("luks")
    dump = subprocess.run(["cryptsetup", "luksDump", str(disk)], capture_output=True, text=True)
    assert re.search(r"^Version:\s+2$", dump.stdout, re.M) and LUKS_UUID in dump.stdout, dump.stdout + dump.stderr
    disks = copy_disks([disk], tmp_path)
    # a wrong passphrase first: the hook asks again
    r = boot(kernel_61, storage_image("6.1"),
             f"root=UUID={FS_UUID} rd.luks.name={LUKS_UUID}=cryptroot rd.emergency=poweroff rd.shell=0",
             disks=disks, log=console_log, timeout=300,
             console_input=[("Enter passphrase for /dev/vda (cryptroot): ", "wrong\n"),
                            ("Enter passphrase for /dev/vda (cryptroot): ", "secret\n")])
    assert r.console.count("Enter passphrase for /dev/vda (cryptroot): ") == 2, r
    assert "pyinit: luks: wrong passphrase for /dev/vda (try 1 of 3)" in r.console, r
    assert "pyinit: luks: unlocked /dev/vda as /dev/mapper/cryptroot with a passphrase" in r.console, r
    assert "secret" not in r.console and "wrong\n" not in r.console  # typed with echo off
    assert_root_on(r, "/dev/dm-0")


def test_luks2_root_unlocked_with_a_keyfile(kernel_612, storage_image, storage_disks, tmp_path, console_log):
    disks = copy_disks(storage_disks("luks"), tmp_path)
    r = boot(kernel_612, storage_image("6.12"),
             f"root=UUID={FS_UUID} rd.luks.uuid=luks-{LUKS_UUID} rd.luks.key=/etc/keys/root.key "
             "rd.emergency=poweroff rd.shell=0",
             disks=disks, log=console_log, timeout=300)
    assert f"pyinit: luks: unlocked /dev/vda as /dev/mapper/luks-{LUKS_UUID} with the keyfile /etc/keys/root.key" \
        in r.console, r
    assert "Enter passphrase" not in r.console, r
    assert_root_on(r, "/dev/dm-0")


def test_luks2_keyfile_on_another_device(kernel_61, storage_image, storage_disks, tmp_path, console_log):
    """rd.luks.key=PATH:DEVICE: the key sits on a second disk (ext4, LABEL=keys), which the
    hook mounts read-only while cryptsetup reads it, and unmounts."""
    disks = copy_disks(storage_disks("luks"), tmp_path)
    keys = make_root_disk(tmp_path / "keys.img", size_mb=8, label="keys", init=None,
                          extra_files={"keys/root.key": KEY})
    r = boot(kernel_61, storage_image("6.1"),
             f"root=UUID={FS_UUID} rd.luks.uuid={LUKS_UUID} rd.luks.key=/keys/root.key:LABEL=keys "
             "rd.emergency=poweroff rd.shell=0",
             disks=[*disks, keys.path], log=console_log, timeout=300)
    assert (f"pyinit: luks: unlocked /dev/vda as /dev/mapper/luks-{LUKS_UUID} with the keyfile /keys/root.key "
            "on LABEL=keys") in r.console, r
    assert "Enter passphrase" not in r.console, r
    rep = assert_root_on(r, "/dev/dm-0")
    assert not any("keydev" in m.mountpoint for m in rep.mountinfo()), rep.mounts


def test_lvm_root(kernel_612, storage_image, storage_disks, tmp_path, console_log):
    disk, = storage_disks("lvm")
    assert b"LABELONE" in disk.read_bytes()[:2048]  # an LVM physical volume, seen from the host
    disks = copy_disks([disk], tmp_path)
    r = boot(kernel_612, storage_image("6.12"),
             "root=/dev/vg0/root rd.lvm.lv=vg0/root rd.emergency=poweroff rd.shell=0",
             disks=disks, log=console_log, timeout=300)
    assert "pyinit: lvm: physical volumes vda appeared; activation done" in r.console, r
    assert re.search(r"pyinit: found root device /dev/vg0/root: /dev/dm-0 .*UUID=\"" + FS_UUID, r.console), r
    assert_root_on(r, "/dev/dm-0")


def test_raid1_root_with_one_disk_missing_starts_degraded(kernel_61, storage_image, storage_disks, tmp_path,
                                                         console_log):
    first, _second = storage_disks("raid")
    examine = subprocess.run(["mdadm", "--examine", str(first)], capture_output=True, text=True)
    assert "Raid Level : raid1" in examine.stdout and "Raid Devices : 2" in examine.stdout, examine.stdout
    disks = copy_disks([first], tmp_path)  # the second mirror is not attached
    r = boot(kernel_61, storage_image("6.1"),
             f"root=UUID={FS_UUID} rd.md.uuid={MD_UUID} rd.retry=8 rd.emergency=poweroff rd.shell=0",
             disks=disks, log=console_log, timeout=300)
    assert "not enough to start safely" in r.console, r  # the missing disk was really missing
    assert re.search(r"pyinit: initqueue: waited \d+\.\d s \(rd.retry=8\): running the timeout hooks \(mdraid\)",
                     r.console), r
    assert "md/raid1:md127: active with 1 out of 2 mirrors" in r.console, r
    assert_root_on(r, "/dev/md127")
