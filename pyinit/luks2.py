"""What a LUKS2 header says about unlocking: its tokens (systemd-tpm2, systemd-fido2,
systemd-recovery...) and the memory each keyslot's Argon2 needs. Read-only and bounded.

The binary header (LUKS2 on-disk format, section 2): magic "LUKS\\xba\\xbe", version 2 at
offset 6 (big endian), the header size (binary header + JSON area, 16 KiB to 4 MiB) at
offset 8; the JSON area follows the 4096-byte binary header and ends at the first NUL.
"""
from __future__ import annotations

import json

from pyinit.errors import Luks2Error

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from typing import Any

    # The header's JSON metadata as json.loads gives it: input, checked where it is read
    # (isinstance at each step), so its values are json's own type.
    Meta = dict[str, Any]

MAGIC = b"LUKS\xba\xbe"
BINARY_HEADER = 4096
MAX_HEADER = 4 << 20  # the format's largest header size
SYSTEMD_TOKENS = ("systemd-tpm2", "systemd-fido2", "systemd-pkcs11")


def header_size(head: bytes) -> int | None:
    """The LUKS2 header size from the first bytes of a device, or None when it is not LUKS2."""
    if len(head) < 16 or head[:6] != MAGIC or int.from_bytes(head[6:8], "big") != 2:
        return None
    size = int.from_bytes(head[8:16], "big")
    if size < BINARY_HEADER + 4096 or size > MAX_HEADER or size & (size - 1):
        raise Luks2Error(f"LUKS2 header size {size} is not a power of two from 8 KiB to 4 MiB")
    return size


def parse_metadata(header: bytes) -> Meta:
    """The JSON metadata of a whole LUKS2 header (binary header + JSON area)."""
    size = header_size(header)
    if size is None:
        raise Luks2Error("not a LUKS2 header")
    area = header[BINARY_HEADER:min(size, len(header))]
    text = area.split(b"\0", 1)[0]
    try:
        meta = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Luks2Error(f"LUKS2 JSON metadata unreadable: {e}") from None
    if not isinstance(meta, dict):
        raise Luks2Error("LUKS2 JSON metadata is not an object")
    return meta


def read_metadata(node: str) -> Meta | None:
    """The metadata of the LUKS2 header on `node` (None for LUKS1 or no LUKS). Reads at
    most 4 MiB, as the format allows."""
    with open(node, "rb", buffering=0) as f:
        head = f.read(BINARY_HEADER)
        size = header_size(head)
        if size is None:
            return None
        rest = f.read(size - BINARY_HEADER)
    return parse_metadata(head + rest)


def _objects(meta: Meta, key: str) -> list[tuple[str, Meta]]:
    items = meta.get(key)
    if not isinstance(items, dict):
        return []
    return sorted(((str(k), v) for k, v in items.items() if isinstance(v, dict)),
                  key=lambda kv: int(kv[0]) if kv[0].isdigit() else 1 << 30)


class Token:
    def __init__(self, id: str, data: Meta):
        self.id, self.data = id, data
        self.type = str(data.get("type", ""))
        self.keyslots = [str(k) for k in data.get("keyslots", []) if isinstance(k, (str, int))]

    @property
    def needs_pin(self) -> bool:
        """A PIN must be typed (tpm2-pin, fido2-clientPin-required)."""
        return bool(self.data.get("tpm2-pin") or self.data.get("fido2-clientPin-required"))

    def __repr__(self) -> str:
        return f"Token({self.id}, {self.type}, keyslots={self.keyslots})"


def tokens(meta: Meta) -> list[Token]:
    return [Token(k, v) for k, v in _objects(meta, "tokens")]


class Keyslot:
    def __init__(self, id: str, data: Meta):
        raw = data.get("kdf")
        kdf = raw if isinstance(raw, dict) else {}
        self.id = id
        self.kdf = str(kdf.get("type", ""))
        memory = kdf.get("memory")
        self.memory_kib = memory if isinstance(memory, int) and memory > 0 else 0  # Argon2 only

    def __repr__(self) -> str:
        return f"Keyslot({self.id}, {self.kdf}, {self.memory_kib} KiB)"


def keyslots(meta: Meta) -> list[Keyslot]:
    return [Keyslot(k, v) for k, v in _objects(meta, "keyslots")]


def passphrase_keyslots(meta: Meta) -> list[Keyslot]:
    """Keyslots a typed passphrase may open: those no systemd token owns (a TPM2 or FIDO2
    keyslot holds a random key; a systemd-recovery keyslot does take the typed recovery key)."""
    owned = {k for t in tokens(meta) if t.type in SYSTEMD_TOKENS for k in t.keyslots}
    return [s for s in keyslots(meta) if s.id not in owned]


def mem_available_kib(meminfo: str) -> int | None:
    """MemAvailable from /proc/meminfo text, in KiB."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def memory_problem(meta: Meta, available_kib: int | None, device: str) -> str | None:
    """When every passphrase keyslot's Argon2 needs more memory than this machine has
    available, the message saying so and what to do; else None."""
    slots = passphrase_keyslots(meta)
    if not slots or available_kib is None:
        return None
    if not all(s.memory_kib > available_kib for s in slots):
        return None
    need = ", ".join(f"keyslot {s.id}: {s.kdf} {s.memory_kib // 1024} MiB" for s in slots)
    smallest = min(slots, key=lambda s: s.memory_kib)
    fit = max(32 * 1024, min(available_kib // 2, 1 << 20)) // 1024 * 1024  # KiB, whole MiB
    return (f"{device}: no passphrase can open it on this machine: its keyslots need more memory than is "
            f"available ({need}; {available_kib // 1024} MiB available). Fix: on a machine with more memory "
            f"run `cryptsetup luksConvertKey --key-slot {smallest.id} --pbkdf-memory {fit} {device}` "
            f"(KiB: {fit // 1024} MiB), or give this machine more memory")
