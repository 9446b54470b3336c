"""Finding the root device: parse root=, scan the block devices, wait until it appears."""
import os
import time

from pyinit import blkid

SYS_BLOCK = "/sys/class/block"


class RootSpec:
    """What root= asks for. kind is one of: path, UUID, LABEL, PARTUUID, PARTLABEL, devnum."""

    __slots__ = ("kind", "value", "text")

    def __init__(self, kind: str, value, text: str):
        self.kind, self.value, self.text = kind, value, text

    def __repr__(self):
        return f"RootSpec({self.kind}, {self.value!r})"

    def __eq__(self, other):
        return isinstance(other, RootSpec) and (self.kind, self.value) == (other.kind, other.value)


_TAGS = ("UUID", "LABEL", "PARTUUID", "PARTLABEL")
_BY_DIRS = {"by-uuid": "UUID", "by-label": "LABEL", "by-partuuid": "PARTUUID",
            "by-partlabel": "PARTLABEL"}


def unhex_udev(value: str) -> str:
    r"""udev escapes unsafe characters in by-label names as \xNN."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("\\x", i) and i + 4 <= len(value):
            try:
                out.append(chr(int(value[i + 2:i + 4], 16)))
                i += 4
                continue
            except ValueError:
                pass
        out.append(value[i])
        i += 1
    return "".join(out)


def parse_root(text: str) -> RootSpec:
    """root= value -> RootSpec. Raises ValueError with a message naming the value."""
    if not text:
        raise ValueError("root= is empty")
    for tag in _TAGS:
        if text.upper().startswith(tag + "="):
            value = text[len(tag) + 1:]
            if not value:
                raise ValueError(f"root={text}: empty {tag}")
            if tag in ("UUID", "PARTUUID"):
                value = value.lower()
            return RootSpec(tag, value, text)
    if text.startswith("/dev/disk/"):
        parts = text.split("/")
        if len(parts) == 5 and parts[3] in _BY_DIRS:
            tag = _BY_DIRS[parts[3]]
            value = unhex_udev(parts[4])
            return RootSpec(tag, value.lower() if tag in ("UUID", "PARTUUID") else value, text)
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


class BlockDevice:
    __slots__ = ("name", "devnum", "node", "info")

    def __init__(self, name, devnum, node, info):
        self.name, self.devnum, self.node, self.info = name, devnum, node, info

    def describe(self) -> str:
        info = self.info or {}
        tags = " ".join(f'{k}="{info[k]}"' for k in ("TYPE", "UUID", "LABEL", "PARTUUID", "PARTLABEL")
                        if info.get(k))
        return f"{self.node} ({self.devnum[0]}:{self.devnum[1]}) {tags or 'no filesystem found'}"


def read_devnum(sys_dir: str) -> tuple[int, int] | None:
    try:
        with open(os.path.join(sys_dir, "dev")) as f:
            major, minor = f.read().strip().split(":")
        return int(major), int(minor)
    except (OSError, ValueError):
        return None


class Scanner:
    """Scans /sys/class/block; probes each device once (probing is the expensive part)."""

    def __init__(self, sys_block: str = SYS_BLOCK, dev_dir: str = "/dev"):
        self.sys_block, self.dev_dir = sys_block, dev_dir
        self.cache: dict[tuple, BlockDevice] = {}

    def scan(self) -> list[BlockDevice]:
        try:
            names = sorted(os.listdir(self.sys_block))
        except OSError:
            return []
        out = []
        for name in names:
            devnum = read_devnum(os.path.join(self.sys_block, name))
            if devnum is None:
                continue
            key = (name, devnum)
            dev = self.cache.get(key)
            if dev is None:
                node = os.path.join(self.dev_dir, name.replace("!", "/"))
                if not os.path.exists(node):
                    continue  # devtmpfs has not made the node yet: look again next round
                info = self._probe(node, name)
                dev = BlockDevice(name, devnum, node, info or {})
                if info is not None:
                    # An empty device is not cached: an md array or a device-mapper device
                    # exists with size 0 until it is started or its table is loaded.
                    self.cache[key] = dev
            out.append(dev)
        return out

    def _probe(self, node: str, name: str) -> dict:
        size_path = os.path.join(self.sys_block, name, "size")
        try:
            with open(size_path) as f:
                if int(f.read().strip() or 0) == 0:
                    return None  # empty (no medium, no loop file, an md/dm device not started yet)
        except (OSError, ValueError):
            pass
        return blkid.probe_path(node) or {}


def matches(spec: RootSpec, dev: BlockDevice) -> bool:
    if spec.kind == "devnum":
        return dev.devnum == spec.value
    if spec.kind == "path":
        try:
            st = os.stat(spec.value)
        except OSError:
            return False
        return (os.major(st.st_rdev), os.minor(st.st_rdev)) == dev.devnum
    value = (dev.info or {}).get(spec.kind)
    if value is None:
        return False
    if spec.kind in ("UUID", "PARTUUID"):
        return value.lower() == spec.value
    return value == spec.value


def find(spec: RootSpec, scanner: Scanner) -> BlockDevice | None:
    for dev in scanner.scan():
        if matches(spec, dev):
            return dev
    return None


def wait_for(spec: RootSpec, scanner: Scanner, timeout: float | None, log, *,
             interval: float = 0.05, on_poll=None) -> BlockDevice | None:
    """Poll until the device shows up; None at the timeout (None: wait forever)."""
    start = time.monotonic()
    announced = False
    delay = interval
    while True:
        dev = find(spec, scanner)
        if dev is not None:
            return dev
        if on_poll is not None:
            on_poll()
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            return None
        if not announced and waited > 1.0:
            log.info(f"waiting for root device {spec.text}"
                     + (f" (up to {timeout:g} s)" if timeout is not None else " (rootwait: no time limit)"))
            announced = True
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
