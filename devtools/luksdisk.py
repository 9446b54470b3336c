"""LUKS2 test disks made on the host, without device-mapper: offline encryption
(`cryptsetup reencrypt --encrypt --reduce-device-size 32M`) of a filesystem image 32 MiB
smaller than the file, then tokens enrolled with Debian's systemd-cryptenroll, a TPM2 one
into a swtpm (devtools.swtpm) whose state the tests boot with. A fraction of a second
where a disk-builder guest boot takes ten; LVM and md still need the guest
(devtools.diskbuilder), because they must write through the opened mapping.

Results are cached by recipe (devtools.diskbuilder.build_on_host). Needs the Debian
packages cryptsetup-bin and systemd (systemd-cryptenroll), and for TPM2 those of
devtools.swtpm.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

from devtools.diskbuilder import build_on_host
from devtools.swtpm import Swtpm

RESERVE_MIB = 32  # room for the LUKS2 header that offline encryption makes at the start
CHEAP_PBKDF = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]  # tests open it under TCG
RECOVERY_KEY = re.compile(r"\b[cbdefghijklnrtuv]{8}(?:-[cbdefghijklnrtuv]{8}){7}\b")


class LuksDiskError(RuntimeError):
    pass


def _run(argv, *, input: bytes | None = None, env: dict | None = None) -> str:
    r = subprocess.run(argv, input=input, capture_output=True, env={**os.environ, **(env or {})}, check=False)
    if r.returncode != 0:
        raise LuksDiskError(f"{' '.join(argv)} exited with {r.returncode}:\n"
                            f"{r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}")
    return r.stdout.decode(errors="replace")


def encrypt(fs_image: Path, out: Path, *, uuid: str, passphrase: bytes, pbkdf: list[str] = CHEAP_PBKDF) -> None:
    """`out` = LUKS2 around a copy of `fs_image` (the file grows by RESERVE_MIB)."""
    size = fs_image.stat().st_size
    with open(fs_image, "rb") as src, open(out, "wb") as dst:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            if chunk.count(0) == len(chunk):
                dst.seek(len(chunk), os.SEEK_CUR)
            else:
                dst.write(chunk)
        dst.truncate(size + RESERVE_MIB * 1024 * 1024)
    _run(["cryptsetup", "reencrypt", "--batch-mode", "--encrypt", "--type", "luks2",
          "--reduce-device-size", f"{RESERVE_MIB}M", "--uuid", uuid, *pbkdf, "--key-file", "-", str(out)],
         input=passphrase)


def format_blank(out: Path, size_mib: int, *, uuid: str, passphrase: bytes, pbkdf: list[str] = CHEAP_PBKDF) -> None:
    with open(out, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    _run(["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--uuid", uuid, *pbkdf,
          "--key-file", "-", str(out)], input=passphrase)


def add_passphrase(disk: Path, existing: bytes, new: bytes, folder: Path) -> None:
    old_file, new_file = folder / ".old", folder / ".new"
    old_file.write_bytes(existing)
    new_file.write_bytes(new)
    try:
        _run(["cryptsetup", "luksAddKey", "--batch-mode", *CHEAP_PBKDF, "--key-file", str(old_file),
              str(disk), str(new_file)])
    finally:
        old_file.unlink()
        new_file.unlink()


def enrol_tpm2(disk: Path, state: Path, passphrase: bytes, pcrs: str = "7", *, changed: bool = False) -> str:
    """A systemd-tpm2 token sealed to PCR 7 as SeaBIOS leaves it, in the swtpm at `state`.
    changed=True: sealed to a PCR 7 that one more measurement changed (as a firmware or
    Secure Boot change would): the boot's PCR 7 does not match it."""
    with Swtpm(state, host=True) as tpm:
        tpm.seabios_pcr7()
        if changed:
            tpm.extend_pcr7(b"pyinit test: a later measurement")
        return _run(["systemd-cryptenroll", f"--tpm2-device={tpm.tcti}", f"--tpm2-pcrs={pcrs}", str(disk)],
                    env={"PASSWORD": passphrase.decode()})


def enrol_recovery(disk: Path, passphrase: bytes) -> str:
    """A systemd-recovery keyslot; returns the recovery key systemd-cryptenroll printed."""
    out = _run(["systemd-cryptenroll", "--recovery-key", str(disk)], env={"PASSWORD": passphrase.decode()})
    m = RECOVERY_KEY.search(out)
    if not m:
        raise LuksDiskError(f"no recovery key in systemd-cryptenroll's output:\n{out}")
    return m.group(0)


def add_fake_fido2_token(disk: Path, passphrase: bytes, folder: Path) -> None:
    """A systemd-fido2 token as systemd-cryptenroll --fido2-device would write it, for a
    security key that does not exist here (QEMU has no FIDO2 device to offer): the plumbing
    up to the missing device is what the tests can check."""
    add_passphrase(disk, passphrase, os.urandom(32).hex().encode(), folder)
    dump = _run(["cryptsetup", "luksDump", "--dump-json-metadata", str(disk)])
    slot = max(int(k) for k in json.loads(dump)["keyslots"])
    token = {"type": "systemd-fido2", "keyslots": [str(slot)],
             "fido2-credential": base64.b64encode(os.urandom(64)).decode(),
             "fido2-salt": base64.b64encode(os.urandom(32)).decode(), "fido2-rp": "io.systemd.cryptsetup",
             "fido2-clientPin-required": False, "fido2-up-required": True, "fido2-uv-required": False}
    _run(["cryptsetup", "token", "import", "--json-file", "-", str(disk)], input=json.dumps(token).encode())


def cached(what: dict, names: list[str], make) -> list[Path]:
    return build_on_host(what, names, make)
