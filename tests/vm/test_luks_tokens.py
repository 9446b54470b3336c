"""LUKS2 the way laptops unlock (issue 14) and secrets that do not outlive their use
(issue 12 item 5), in three boots:

1. a root with a systemd-tpm2 token (PCR 7) boots with no typing, the guest's TPM being a
   swtpm with the state the token was enrolled into (on the host, devtools.luksdisk);
2. a disk sealed to another PCR 7 (one more measurement than the boot makes) in the same
   swtpm: the token fails on the policy, the prompt comes on both consoles of
   console=tty0 console=ttyS0 and the recovery key opens it; a second disk with
   a systemd-fido2 token and no security key: the clear message after token-timeout=, and
   the passphrase cache opens it with no second prompt;
3. crypttab (packed with --include): a root LV on a volume group over two LUKS disks and a
   RAID1 over two LUKS members prompt once (the cache; the md members open with a packed
   keyfile that is gone from the initramfs once they are open, as a rescue session at
   rd.break=mount sees); `discard` reaches dm-crypt (the real init reads the queue limits);
   `tries=2,nofail` on another disk asks twice and the boot goes on; a keyslot whose Argon2id
   needs 1 GiB in a 512 MiB guest is named with its cost and the fix, with no prompt.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess

import pytest

from devtools import luksdisk
from devtools.diskbuilder import build_disks, copy_disks
from devtools.qemu import boot
from devtools.rootdisk import STANDARD_INIT, make_root_disk
from devtools.swtpm import expected_pcr7

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]

FS_UUID = "7e2f0000-0000-4000-8000-000000000001"
TPM_UUID = "7e2f0000-0000-4000-8000-0000000000a1"
PCR_UUID = "7e2f0000-0000-4000-8000-0000000000a3"
FIDO_UUID = "7e2f0000-0000-4000-8000-0000000000a2"
PASSPHRASE = b"secret"
BASE = "rd.emergency=poweroff rd.shell=0"
PCR7 = "/sys/class/tpm/tpm0/pcr-sha256/7"  # the real init reads it: what the guest's TPM measured


@pytest.fixture(scope="session")
def tpm_fs(tmp_path_factory):
    return make_root_disk(tmp_path_factory.mktemp("tpm") / "rootfs.img", uuid=FS_UUID,
                          extra_files={"etc/realinit-cat": PCR7 + "\n"})


@pytest.fixture(scope="session")
def tpm_disks(tpm_fs):
    """(root disk, root disk sealed to another PCR 7, FIDO2 disk, swtpm state folder, the
    second root's recovery key), cached by recipe. Both roots hold the same filesystem; their
    tokens are sealed into the same swtpm."""
    what = {"recipe": "tpm2+recovery roots (PCR 7 as booted, changed), fido2 second disk, v2", "fs": FS_UUID,
            "init": STANDARD_INIT, "cat": PCR7, "uuids": [TPM_UUID, PCR_UUID, FIDO_UUID],
            "passphrase": PASSPHRASE.decode(),
            "tools": subprocess.run(["cryptsetup", "--version"], capture_output=True, text=True).stdout}

    def make(folder):
        root, changed, fido = folder / "tpm-root.img", folder / "pcr-changed.img", folder / "fido2.img"
        luksdisk.encrypt(tpm_fs.path, root, uuid=TPM_UUID, passphrase=PASSPHRASE)
        luksdisk.enrol_tpm2(root, folder / "swtpm", PASSPHRASE)
        luksdisk.enrol_recovery(root, PASSPHRASE)
        luksdisk.encrypt(tpm_fs.path, changed, uuid=PCR_UUID, passphrase=PASSPHRASE)
        luksdisk.enrol_tpm2(changed, folder / "swtpm", PASSPHRASE, changed=True)
        key = luksdisk.enrol_recovery(changed, PASSPHRASE)
        (folder / "recovery-key").write_text(key)
        luksdisk.format_blank(fido, 24, uuid=FIDO_UUID, passphrase=PASSPHRASE)
        luksdisk.add_passphrase(fido, PASSPHRASE, key.encode(), folder)  # the cache can open it
        luksdisk.add_fake_fido2_token(fido, PASSPHRASE, folder)

    names = ["tpm-root.img", "pcr-changed.img", "fido2.img", "swtpm", "recovery-key"]
    root, changed, fido, state, key = luksdisk.cached(what, names, make)
    return root, changed, fido, state, key.read_text().strip()


@pytest.fixture(scope="session")
def token_image(pyinit_image):
    extra = ("--hook", "luks-tokens", "--hook", "lvm", "--hook", "mdraid")
    return lambda series: pyinit_image(series, extra=extra)


def dump(disk):
    return subprocess.run(["cryptsetup", "luksDump", str(disk)], capture_output=True, text=True).stdout


def assert_root(r, source):
    assert not r.timed_out and not r.panicked, r
    rep = r.report
    assert rep is not None and rep.done and rep.pid == 1, r
    root = rep.mount_at("/")
    assert root is not None and (root.fstype, root.source) == ("ext4", source), rep.mounts
    return rep


def test_tpm2_token_unlocks_the_root_without_typing(kernel_61, token_image, tpm_disks, tmp_path, console_log):
    root, _changed, _fido, state, _key = tpm_disks
    d = dump(root)
    assert "systemd-tpm2" in d and "tpm2-hash-pcrs:   7" in d and "systemd-recovery" in d, d
    disks = copy_disks([root], tmp_path)
    tpm = tmp_path / "swtpm"
    shutil.copytree(state, tpm)
    r = boot(kernel_61, token_image("6.1"),
             f"root=UUID={FS_UUID} rd.luks.uuid={TPM_UUID} rd.luks.options=tpm2-device=auto {BASE}",
             disks=disks, log=console_log, timeout=300, tpm_state=tpm)
    assert re.search(rf"pyinit: luks: unlocked /dev/vda as /dev/mapper/luks-{TPM_UUID} with the TPM2 token 0 "
                     r"\(systemd-cryptsetup, /dev/tpmrm0\)", r.console), r
    assert "Enter passphrase" not in r.console, r
    rep = assert_root(r, "/dev/dm-0")
    assert rep.cat[PCR7].lower() == expected_pcr7(), rep.cat  # the PCR 7 the token was sealed to


def test_changed_pcr_falls_back_to_the_prompt_and_the_recovery_key_opens(kernel_612, token_image, tpm_disks,
                                                                        tmp_path, console_log):
    _root, changed, fido, state, key = tpm_disks
    assert "systemd-fido2" in dump(fido)
    disks = copy_disks([changed, fido], tmp_path)
    tpm = tmp_path / "swtpm"  # the TPM it was enrolled into; its PCR 7 at boot is not the one sealed to
    shutil.copytree(state, tpm)
    prompt = f"Enter passphrase for /dev/vda (luks-{PCR_UUID}): "
    r = boot(kernel_612, token_image("6.12"),
             f"root=UUID={FS_UUID} rd.luks.uuid={PCR_UUID} rd.luks.uuid={FIDO_UUID} "
             f"rd.luks.options={FIDO_UUID}=fido2-device=auto,token-timeout=3s {BASE} "
             "console=tty0 console=ttyS0",  # the last is /dev/console, where the real init reports
             console=None, disks=disks, log=console_log, timeout=300, tpm_state=tpm,
             console_input=[(prompt, key + "\n")])
    assert ("pyinit: luks: the TPM2 token 0 did not open /dev/vda: Current policy digest does not match stored "
            "policy digest") in r.console, r  # the PCR, not the TPM, changed
    assert r.console.count("Enter passphrase") == 1, r  # one prompt for both disks
    assert re.search(rf"pyinit: luks: unlocked /dev/vda as /dev/mapper/luks-{PCR_UUID} with the recovery key "
                     r"\(keyslot \d+\)", r.console), r
    assert ("pyinit: luks: no FIDO2 device appeared within 3 s (fido2-device=auto, token-timeout=): /dev/vdb's "
            "systemd-fido2 token") in r.console, r
    assert (f"pyinit: luks: unlocked /dev/vdb as /dev/mapper/luks-{FIDO_UUID} with a passphrase that opened an "
            "earlier device") in r.console, r
    assert key not in r.console.replace(prompt, "")  # typed with echo off, never logged
    rep = assert_root(r, "/dev/dm-0")
    assert "console=tty0 console=ttyS0" in rep.cmdline
    assert rep.cat[PCR7].lower() == expected_pcr7(), rep.cat  # as booted: not what this token was sealed to


# -- many devices, crypttab, Argon2 ---------------------------------------------------------------

STACK_FS_UUID = "7e2f0000-0000-4000-8000-000000000002"
U = {n: f"7e2f0000-0000-4000-8000-0000000000b{i}" for i, n in enumerate(("lv-a", "lv-b", "md-a", "md-b",
                                                                          "data", "big"))}
MD_UUID = "7e2f0000:00004000:80000000:000000bb"
MD_KEY = bytes(range(64))
CAT = "".join(f"/sys/block/dm-{i}/dm/name\n/sys/block/dm-{i}/queue/discard_max_bytes\n" for i in range(6)) + \
    "/sys/block/md127/md/array_state\n/sys/block/md127/md/degraded\n"
FORMAT = "cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000"
STACK_RECIPE = "".join(
    f"{FORMAT} --uuid {U[name]} --key-file /files/passphrase /dev/{dev}\n"
    + (f"cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "
       f"--key-file /files/passphrase /dev/{dev} /files/mdkey\n" if name == "md-b" else "")
    + f"cryptsetup open --key-file /files/passphrase /dev/{dev} {name}\n"
    for dev, name in (("vda", "lv-a"), ("vdb", "lv-b"), ("vdc", "md-a"), ("vdd", "md-b"))) + f"""
{FORMAT} --uuid {U['data']} --key-file /files/other /dev/vde
lvm pvcreate --config "$LVM_CONFIG" /dev/mapper/lv-a /dev/mapper/lv-b
lvm vgcreate --config "$LVM_CONFIG" vgc /dev/mapper/lv-a /dev/mapper/lv-b
lvm lvcreate --config "$LVM_CONFIG" -y -W n -Z n -l 100%FREE -n data vgc
lvm vgchange --config "$LVM_CONFIG" -an vgc
mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --assume-clean \\
    --uuid={MD_UUID} --homehost=pyinit --name=root /dev/mapper/md-a /dev/mapper/md-b
dd if=$ROOTIMG of=/dev/md0 bs=1M
mdadm --stop /dev/md0
for n in lv-a lv-b md-a md-b; do cryptsetup close $n; done
"""
CRYPTTAB = f"""# a volume group over two LUKS disks; the root on a RAID1 over two more
lv-a UUID={U['lv-a']} none discard
lv-b UUID={U['lv-b']} - discard,luks
md-a   UUID={U['md-a']}   none
md-b   UUID={U['md-b']}   /etc/keys/md.key
data   UUID={U['data']}   none tries=2,nofail
big    UUID={U['big']}    none nofail,timeout=20
"""


@pytest.fixture(scope="session")
def stack_disks(kernels, tmp_path_factory, artifacts):
    extra = {"etc/realinit-cat": CAT}
    fs = make_root_disk(tmp_path_factory.mktemp("stack") / "rootfs.img", uuid=STACK_FS_UUID, extra_files=extra)
    root_key = hashlib.sha256((STANDARD_INIT + STACK_FS_UUID + CAT).encode()).hexdigest()
    disks = build_disks(kernels["6.1"], STACK_RECIPE, [("a.img", 32), ("b.img", 32), ("c.img", 96), ("d.img", 96),
                                                       ("e.img", 24)], fs.path, root_key=root_key,
                        files={"passphrase": PASSPHRASE, "mdkey": MD_KEY, "other": b"other"},
                        log=artifacts / "diskbuilder-luks-stack.log")

    def make(folder):  # formatted on a 24 GiB host: Argon2id at 1 GiB, which a 512 MiB guest cannot give
        luksdisk.format_blank(folder / "big.img", 24, uuid=U["big"], passphrase=PASSPHRASE,
                              pbkdf=["--pbkdf", "argon2id", "--pbkdf-memory", "1048576",
                                     "--pbkdf-force-iterations", "4"])
    big, = luksdisk.cached({"recipe": "argon2id 1 GiB keyslot, v1", "uuid": U["big"]}, ["big.img"], make)
    return [*disks, big]


@pytest.fixture(scope="session")
def stack_image(pyinit_image, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack-image")
    (folder / "crypttab").write_text(CRYPTTAB)
    key = folder / "md.key"
    key.write_bytes(MD_KEY)
    key.chmod(0o600)
    extra = ("--hook", "luks", "--hook", "lvm", "--hook", "mdraid", "--include", f"{folder / 'crypttab'}:/etc/crypttab",
             "--include", f"{key}:/etc/keys/md.key")
    return lambda series: pyinit_image(series, extra=extra)


def test_crypttab_one_prompt_for_lvm_and_raid_over_luks_tries_discard_and_argon2(
        kernel_61, stack_image, stack_disks, tmp_path, console_log):
    big = stack_disks[-1]
    assert re.search(r"Memory:\s+1048576", dump(big)), dump(big)  # the fault is really there
    disks = copy_disks(stack_disks, tmp_path)
    r = boot(kernel_61, stack_image("6.1"),
             f"root=UUID={STACK_FS_UUID} rd.md.uuid={MD_UUID} rd.lvm.lv=vgc/data rd.break=mount {BASE}",
             disks=disks, log=console_log, timeout=400, memory_mb=512,
             console_input=[("Enter passphrase for /dev/vda (lv-a): ", "secret\n"),
                            ("Enter passphrase for /dev/vde (data): ", "wrong-1\n"),
                            ("Enter passphrase for /dev/vde (data): ", "wrong-2\n"),
                            ("pyinit rescue> ", "ls /etc/keys\n"),
                            ("pyinit rescue> ", "cat /etc/keys/md.key\n"),
                            ("pyinit rescue> ", "continue\n")])
    c = r.console
    # one passphrase for the two disks of the volume group and the two members of the RAID1
    assert c.count("Enter passphrase for /dev/vd") == 3 and c.count("Enter passphrase for /dev/vda") == 1, r
    assert "pyinit: luks: unlocked /dev/vda as /dev/mapper/lv-a with a passphrase (keyslot 0)" in c, r
    for dev, name in (("vdb", "lv-b"), ("vdc", "md-a")):
        assert (f"pyinit: luks: unlocked /dev/{dev} as /dev/mapper/{name} with a passphrase that opened an earlier "
                "device") in c, r
    # the packed key file opens md-b, and is gone from the initramfs as soon as md-b is open
    assert "pyinit: luks: unlocked /dev/vdd as /dev/mapper/md-b with the keyfile /etc/keys/md.key (keyslot 1)" in c, r
    assert "pyinit: luks: removed the key file /etc/keys/md.key from the initramfs" in c, r
    assert "cat: /etc/keys/md.key: No such file or directory" in c, r  # the rescue session at rd.break=mount
    # tries=2 with nofail: two prompts, then the boot goes on without it
    assert c.count("Enter passphrase for /dev/vde (data): ") == 2, r
    assert "wrong passphrase for /dev/vde (try 2 of 2): No key available with this passphrase." in c, r
    assert "after 2 passphrase tries (nofail" in c, r
    # Argon2id 1 GiB in 512 MiB: said, with the fix, and no prompt
    assert "Enter passphrase for /dev/vdf" not in c, r
    assert re.search(r"pyinit: luks: /dev/vdf: no passphrase can open it on this machine: .*keyslot 0: argon2id "
                     r"1024 MiB; \d+ MiB available\)\. Fix: .*`cryptsetup luksConvertKey --key-slot 0 "
                     r"--pbkdf-memory \d+ /dev/vdf`.*more memory \(nofail", c), r
    # secrets: never in the log
    assert "secret" not in c.replace("Enter passphrase", "") and "wrong-1" not in c, r
    rep = assert_root(r, "/dev/md127")
    assert (rep.cat.get("/sys/block/md127/md/array_state"), rep.cat.get("/sys/block/md127/md/degraded")) in \
        {("clean", "0"), ("active", "0"), ("readonly", "0"), ("read-auto", "0")}, rep.cat
    names = {rep.cat.get(f"/sys/block/dm-{i}/dm/name"): rep.cat.get(f"/sys/block/dm-{i}/queue/discard_max_bytes")
             for i in range(6)}
    assert "vgc-data" in names, rep.cat  # the volume group over two LUKS disks is active
    assert int(names["lv-a"]) > 0 and int(names["lv-b"]) > 0, rep.cat  # discard: --allow-discards
    assert names["md-a"] == "0" and names["md-b"] == "0", rep.cat  # not asked for: dm-crypt's default
