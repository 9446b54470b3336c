"""What root= asks for (`parse_root`): a device path, a tag (UUID=, LABEL=, PARTUUID=,
PARTLABEL=, PARTUUID=.../PARTNROFF=n), a /dev/disk name, a device number, or nothing (the
Discoverable Partitions rules, pyinit/gptauto.py). Pure. The same forms name the resume
device and the devices of the luks hook.
"""
from __future__ import annotations

NAME_DIRS = ("by-id", "by-path")  # names udev derives from the hardware: pyinit/diskid.py
TAGS = ("UUID", "LABEL", "PARTUUID", "PARTLABEL")
_BY_DIRS = {"by-uuid": "UUID", "by-label": "LABEL", "by-partuuid": "PARTUUID", "by-partlabel": "PARTLABEL"}


class RootSpec:
    """What root= asks for. kind is one of: path, UUID, LABEL, PARTUUID, PARTLABEL, devnum,
    by-id, by-path (the value is then udev's name in that folder, as pyinit.diskid makes it);
    gpt-auto (no root=, or root=gpt-auto: pyinit/gptauto.py finds it).
    `partnroff` is root=PARTUUID=<uuid>/PARTNROFF=<n>: the partition n numbers after it."""

    __slots__ = ("kind", "partnroff", "text", "value")

    def __init__(self, kind: str, value: str | tuple[int, int] | None, text: str, partnroff: int = 0) -> None:
        self.kind, self.value, self.text, self.partnroff = kind, value, text, partnroff

    def __repr__(self) -> str:
        extra = f", PARTNROFF={self.partnroff}" if self.partnroff else ""
        return f"RootSpec({self.kind}, {self.value!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RootSpec) and (self.kind, self.value, self.partnroff) == \
            (other.kind, other.value, other.partnroff)

    def __hash__(self) -> int:
        return hash((self.kind, self.value, self.partnroff))

    def describe(self) -> str:
        if self.kind == "gpt-auto":
            return "the root partition of the Discoverable Partitions Specification"
        if self.kind == "devnum" and isinstance(self.value, tuple):
            return f"device number {self.value[0]}:{self.value[1]}"
        if self.kind == "path":
            return f"device {self.value}"
        if self.kind in NAME_DIRS:
            return f"/dev/disk/{self.kind}/{self.value}"
        what = f'{self.kind}="{self.value}"'
        if self.partnroff:
            what += f" plus {self.partnroff} partition(s) (PARTNROFF)"
        return what


def unhex_udev(value: str) -> str:
    r"""udev escapes unsafe bytes in /dev/disk/by-* names as \xNN (blkid.encode_name)."""
    raw = bytearray()
    i = 0
    while i < len(value):
        if value.startswith("\\x", i) and i + 4 <= len(value):
            try:
                raw.append(int(value[i + 2:i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        raw += value[i].encode("utf-8")
        i += 1
    return raw.decode("utf-8", "surrogateescape")


def _unquote(value: str) -> str:
    """root=LABEL="my root": the kernel keeps quotes that do not open the value."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_root(text: str) -> RootSpec:
    """root= value -> RootSpec. Raises ValueError with a message naming the value."""
    if not text:
        raise ValueError("root= is empty")
    if text == "gpt-auto":
        return RootSpec("gpt-auto", None, text)
    for tag in TAGS:
        if text.upper().startswith(tag + "="):
            return _tag(tag, text)
    if text.startswith("/dev/disk/"):
        parts = text.split("/")
        if len(parts) == 5 and parts[3] in _BY_DIRS:
            tag = _BY_DIRS[parts[3]]
            value = unhex_udev(parts[4])
            return RootSpec(tag, value.lower() if tag in ("UUID", "PARTUUID") else value, text)
        if len(parts) == 5 and parts[3] in NAME_DIRS and parts[4]:
            return RootSpec(parts[3], parts[4], text)  # compared as written: udev's name itself
    if text.startswith("/"):
        return RootSpec("path", text, text)
    if ":" in text:
        major, _, minor = text.partition(":")
        if major.isdigit() and minor.isdigit():
            return RootSpec("devnum", (int(major), int(minor)), text)
    try:
        # The kernel's old form: a hex device number, major<<8 | minor ("fe01", "0x801").
        n = int(text, 16)
    except ValueError:
        raise ValueError(f"root={text}: not a device path, UUID=, LABEL=, PARTUUID=, PARTLABEL= "
                         "or MAJ:MIN") from None
    return RootSpec("devnum", ((n >> 8) & 0xFFF, (n & 0xFF) | ((n >> 12) & 0xFFF00)), text)


def _tag(tag: str, text: str) -> RootSpec:
    value = _unquote(text[len(tag) + 1:])
    offset = 0
    if tag == "PARTUUID" and "/" in value:
        value, _, rest = value.partition("/")
        key, _, n = rest.partition("=")
        if key.upper() != "PARTNROFF":
            raise ValueError(f"root={text}: after PARTUUID=<uuid>/ only PARTNROFF=<n> is accepted")
        try:
            offset = int(n)
        except ValueError:
            raise ValueError(f"root={text}: PARTNROFF={n} is not an integer") from None
    if not value:
        raise ValueError(f"root={text}: empty {tag}")
    if tag in ("UUID", "PARTUUID"):
        value = value.lower()
    return RootSpec(tag, value, text, offset)
