"""Finding the root device: follow the block devices as uevents announce them, probe each
once, make their /dev/disk/by-* links (pyinit/disklinks.py), and wait until the device
root= asks for (pyinit/rootspec.py) is among them.

`Devices` is a small udev: it listens on the kernel's uevent socket, replays the devices
that existed before it (coldplug), loads modules for every MODALIAS through a
`kmod.ModuleDB`, and for every block device reads its partition table (disks) or its
partition entry (partitions) and its superblock. Where no uevent socket can be opened it
falls back to polling /sys/class/block.

Each device is read once per uevent ("add", "change"), through pyinit.probe: in a child
process, bounded, with a deadline. A device whose probe fails or times out is kept as
unknown (no TYPE), with one log line naming it, and is not read again until its next
"change" event. The storage hooks (luks, lvm, mdraid, resume) look their devices up here
(`unheld_of_type`, `find`) instead of reading every disk again at every turn of the
initqueue.
"""
from __future__ import annotations

import os
import time

from pyinit import diskid, disklinks, probe, read_text
from pyinit import uevent as uevent_mod
from pyinit.rootspec import NAME_DIRS, RootSpec

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pyinit.kmod import ModuleDB
    from pyinit.log import Logger
    from pyinit.partitions import Table

SYS = "/sys"
DEV = "/dev"


class BlockDevice:
    """A block device as probed: `info` holds blkid's keys (TYPE, UUID, LABEL, PARTUUID...;
    empty when nothing was found or the probe failed), `devtype` "disk" or "partition"
    (with its disk's name as `parent` and its number as `partn`), `sysdir` its /sys folder."""

    __slots__ = ("devnum", "devtype", "info", "name", "names", "node", "parent", "partn", "sysdir")

    def __init__(self, name: str, devnum: tuple[int, int], node: str, info: dict[str, str], devtype: str = "disk",
                 parent: str | None = None, partn: int | None = None, sysdir: str | None = None,
                 names: Iterable[str] = ()) -> None:
        self.name, self.devnum, self.node, self.info = name, devnum, node, info
        self.devtype, self.parent, self.partn, self.sysdir = devtype, parent, partn, sysdir
        self.names = tuple(names)  # udev's by-id/... and by-path/... names (pyinit.diskid)

    def describe(self, names: bool = False) -> str:
        """One line for logs; `names` adds its /dev/disk/by-id and by-path names."""
        info = self.info
        tags = " ".join(f'{k}="{info[k]}"' for k in ("TYPE", "UUID", "LABEL", "PARTUUID", "PARTLABEL", "PTTYPE")
                        if info.get(k))
        line = f"{self.node} ({self.devnum[0]}:{self.devnum[1]}) {tags or 'no filesystem found'}"
        return line + "".join(f" {n}" for n in self.names) if names else line

    def __repr__(self) -> str:
        return f"BlockDevice({self.describe()})"


def read_devnum(sys_dir: str) -> tuple[int, int] | None:
    try:
        with open(os.path.join(sys_dir, "dev")) as f:
            major, minor = f.read().strip().split(":")
        return int(major), int(minor)
    except (OSError, ValueError):
        return None


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return default


class Devices:
    """Block devices as the kernel announces them, probed once, linked under /dev/disk."""

    def __init__(self, sys_root: str = SYS, dev_root: str = DEV, *, kmod: ModuleDB | None = None,
                 log: Logger | None = None, links: bool = True, link_root: str | None = None) -> None:
        self.sys_root, self.dev_root = sys_root, dev_root
        self.link_root = link_root or f"{dev_root}/disk"
        self.kmod, self.log, self.links = kmod, log, links
        self.blocks: dict[str, BlockDevice] = {}
        self.tables: dict[str, Table | None] = {}  # disk name -> its partition table (None: none)
        self.modaliases: set[str] = set()
        self.listener: uevent_mod.Listener | None = None
        self.events = 0
        self._last_rescan = 0.0
        self.prober = probe.Prober()
        self.unknown: dict[str, str] = {}  # device name -> why its probe failed (until its next event)
        self.empty: set[str] = set()  # devices of size 0 when probed (md, dm not started yet)
        self._wait_until: float | None = None  # the end of the root wait, which no probe may pass

    # -- events
    def start(self) -> bool:
        """Open the uevent socket. False (and polling from then on) when it cannot be."""
        try:
            self.listener = uevent_mod.Listener()
        except OSError as e:
            if self.log:
                self.log.warning(f"no uevent socket ({e}); polling /sys/class/block instead")
            self.listener = None
        return self.listener is not None

    def coldplug(self, trigger: bool = True) -> int:
        """Replay the devices that existed before us. With `trigger` (PID 1 of the machine),
        write "add" to their uevent files; otherwise (a container) read /sys directly."""
        if self.listener is not None and trigger:
            n = uevent_mod.trigger(uevent_mod.coldplug_paths(self.sys_root))
            self.pump(0.05)
            # The replay saw everything a rescan would: wait_for's safety net starts now.
            self._last_rescan = time.monotonic()
            return n
        return self.rescan()

    def pump(self, timeout: float | None) -> int:
        """Handle the events that arrive within `timeout` (then whatever else is queued)."""
        if self.listener is None:
            if timeout:
                time.sleep(timeout)
            self.rescan()
            return 0
        events = self.listener.receive(timeout)
        for ev in events:
            self.handle(ev)
        if self.listener.overflowed:
            self.listener.overflowed = False
            if self.log:
                self.log.warning("uevent socket overflowed: rescanning /sys")
            self.rescan()
        return len(events)

    def handle(self, ev: uevent_mod.Uevent) -> None:
        self.events += 1
        action = ev.action
        if action in ("add", "change", "bind", "online", "move"):
            modalias = ev.get("MODALIAS")
            if modalias and action == "add":
                self._modalias(modalias)
            if ev.subsystem == "block" and action in ("add", "change", "move"):
                self.add_block(ev.env, force=action == "change")
        elif action == "remove" and ev.subsystem == "block":
            self.remove_block(ev.get("DEVNAME") or ev.devpath.rsplit("/", 1)[-1])

    def _modalias(self, modalias: str) -> None:
        if modalias in self.modaliases or self.kmod is None:
            return
        self.modaliases.add(modalias)
        try:
            self.kmod.load_modalias(modalias)
        except Exception as e:  # a broken module must not stop device discovery
            if self.log:
                self.log.warning(f"loading modules for {modalias} failed: {e}")

    def rescan(self) -> int:
        """Read /sys instead of waiting for events: every bus device's modalias, every block
        device. Cheap when nothing changed (only new names are probed)."""
        self._last_rescan = time.monotonic()
        if self.kmod is not None and self.kmod.on_demand():
            bus = f"{self.sys_root}/bus"
            for b in _listdir(bus):
                d = f"{bus}/{b}/devices"
                for n in _listdir(d):
                    modalias = read_text(f"{d}/{n}/modalias").strip()
                    if modalias:
                        self._modalias(modalias)
        block = f"{self.sys_root}/class/block"
        names = _listdir(block)
        for n in names:
            known = self.blocks.get(n.replace("!", "/"))
            # An md array or a device-mapper device exists with size 0 until it is started or
            # its table is loaded: look at it again once it has a size. A device whose probe
            # failed waits for its next event instead.
            grown = known is not None and known.name in self.empty \
                and _int(read_text(f"{block}/{n}/size"), 0) > 0
            if known is None or grown:
                env = uevent_mod.parse_uevent_file(read_text(f"{block}/{n}/uevent"))
                sysdir = os.path.realpath(f"{block}/{n}")
                env.setdefault("DEVPATH", sysdir[len(self.sys_root):] if sysdir.startswith(self.sys_root)
                               else sysdir)
                env.setdefault("DEVNAME", n.replace("!", "/"))
                self.add_block(env, force=grown)
        for gone in set(self.blocks) - {n.replace("!", "/") for n in names}:
            self.remove_block(gone)
        return len(names)

    # -- block devices
    def add_block(self, env: dict[str, str], force: bool = False) -> BlockDevice | None:
        name = env.get("DEVNAME")
        devpath = env.get("DEVPATH")
        if not name or not devpath:
            return None
        old = self.blocks.get(name)
        if old is not None and not force:
            return old
        sysdir = self.sys_root + devpath
        try:
            devnum: tuple[int, int] | None = (int(env["MAJOR"]), int(env["MINOR"]))
        except (KeyError, ValueError):
            devnum = read_devnum(sysdir)
        if devnum is None:
            return None
        devtype = env.get("DEVTYPE") or ("partition" if os.path.exists(f"{sysdir}/partition") else "disk")
        parent: str | None = None
        partn: int | None = None
        if devtype == "partition":
            parent = os.path.basename(os.path.dirname(sysdir))
            partn = _int(env.get("PARTN") or read_text(f"{sysdir}/partition"), 0) or None
        node = f"{self.dev_root}/{name}"
        if devtype == "disk":
            self.tables.pop(name, None)
        dev = BlockDevice(name, devnum, node, self._probe(node, sysdir, devtype, parent, partn), devtype, parent,
                          partn, sysdir, diskid.names_for(sysdir, devtype, partn, self.sys_root)
                          if diskid.kernel_named(name) else ())
        if old is not None:
            disklinks.remove(old.node, disklinks.link_names(old.info, old.names), self.link_root)
        self.blocks[name] = dev
        if self.links:
            disklinks.make(dev.node, disklinks.link_names(dev.info, dev.names), self.link_root,
                           lambda n: n in self.blocks, self.log)
        if self.log:
            self.log.debug(f"block device {dev.describe()}")
        return dev

    def remove_block(self, name: str) -> None:
        dev = self.blocks.pop(name, None)
        self.tables.pop(name, None)
        self.unknown.pop(name, None)
        self.empty.discard(name)
        if dev is not None:
            disklinks.remove(dev.node, disklinks.link_names(dev.info, dev.names), self.link_root)

    def _read(self, name: str, node: str, devtype: str, sysdir: str) -> probe.Result:
        """One probe of one device, through the worker, never past the root wait's end."""
        deadline = self.prober.deadline
        if self._wait_until is not None:
            deadline = max(1.0, min(deadline, self._wait_until - time.monotonic()))
        result = self.prober.probe(node, devtype, self._sector_size(sysdir), deadline)
        if result.error is None:
            self.unknown.pop(name, None)
            return result
        if self.unknown.get(name) != result.error and self.log:
            what = "gave up on" if result.timed_out else "cannot identify"
            self.log.warning(f"{what} {node}: {result.error}; it is left unknown and the boot goes on")
        self.unknown[name] = result.error
        return result

    def _probe(self, node: str, sysdir: str, devtype: str, parent: str | None, partn: int | None) -> dict[str, str]:
        name = os.path.basename(node)
        if _int(read_text(f"{sysdir}/size"), 1) == 0:
            self.empty.add(name)
            return {}  # an empty device: a CD drive with no medium, a loop with no file
        self.empty.discard(name)
        info: dict[str, str] = {}
        if devtype == "partition" and parent:
            table = self._table(parent)
            entry = table.entry(partn) if table is not None and partn else None
            if entry is not None:
                info.update(entry.info())
            if parent in self.unknown:
                return info  # a disk that did not answer: its partitions will not either
        result = self._read(name, node, devtype, sysdir)
        if devtype == "disk":
            self.tables[name] = result.table
        info.update(result.info)
        return info

    def _table(self, disk: str) -> Table | None:
        if disk not in self.tables:
            if disk in self.unknown:
                return None
            sysdir = f"{self.sys_root}/class/block/{disk}"
            result = self._read(disk, f"{self.dev_root}/{disk}", "disk", sysdir)
            if result.error is not None:
                return None
            self.tables[disk] = result.table
        return self.tables[disk]

    @staticmethod
    def _sector_size(sysdir: str) -> int:
        n = _int(read_text(f"{sysdir}/queue/logical_block_size"), 512)
        return n if n in (512, 1024, 2048, 4096) else 512

    # -- queries
    def scan(self) -> list[BlockDevice]:
        """Every block device known now (polling /sys when there is no uevent socket)."""
        if self.listener is None:
            self.rescan()
        return [self.blocks[n] for n in sorted(self.blocks)]

    def listing(self) -> list[str]:
        """One line per block device known now, for a person (the rescue, a diagnosis)."""
        try:
            found = self.scan()
        except Exception as e:  # a diagnosis must not fail for want of a listing
            return [f"(cannot list block devices: {e})"]
        return [d.describe() for d in found] or ["(no block devices at all)"]

    def of_type(self, fstype: str) -> list[BlockDevice]:
        """The devices probed as TYPE=fstype. Reads no device."""
        return [dev for dev in self.scan() if dev.info.get("TYPE") == fstype]

    def unheld_of_type(self, fstype: str) -> list[BlockDevice]:
        """The devices probed as TYPE=fstype (crypto_LUKS, LVM2_member, linux_raid_member)
        that nothing holds yet (no dm or md device on them). Reads no device."""
        out = []
        for dev in self.of_type(fstype):
            try:
                if dev.sysdir and os.listdir(os.path.join(dev.sysdir, "holders")):
                    continue
            except OSError:
                pass  # no holders folder: nothing holds it
            out.append(dev)
        return out

    def find(self, spec: RootSpec) -> BlockDevice | None:
        for dev in self.scan():
            if matches(spec, dev):
                if spec.partnroff:
                    return self._partition_offset(dev, spec.partnroff)
                return dev
        return None

    def _partition_offset(self, dev: BlockDevice, offset: int) -> BlockDevice | None:
        if dev.partn is None:
            return None
        want = dev.partn + offset
        for other in self.blocks.values():
            if other.parent == dev.parent and other.partn == want:
                return other
        return None

    def wait_for(self, spec: RootSpec, timeout: float | None, *, announce_after: float = 1.0,
                 rescan_every: float = 3.0, on_poll: Callable[[], None] | None = None, poll_every: float = 0.25,
                 find: Callable[[], BlockDevice | None] | None = None) -> BlockDevice | None:
        """Handle events until the device is there; None at the timeout (None: forever).
        `on_poll()` runs between two looks, at most every `poll_every` seconds apart (the
        initqueue's settled hooks: mdadm, lvm, cryptsetup make the root appear). `find()`
        replaces the look for `spec` (gpt-auto's rules, pyinit/gptauto.py)."""
        self._wait_until = None if timeout is None else time.monotonic() + timeout
        try:
            return self._wait_for(spec, timeout, announce_after, rescan_every, on_poll, poll_every, find)
        finally:
            self._wait_until = None

    def _wait_for(self, spec: RootSpec, timeout: float | None, announce_after: float, rescan_every: float,
                  on_poll: Callable[[], None] | None, poll_every: float,
                  find: Callable[[], BlockDevice | None] | None) -> BlockDevice | None:
        start = time.monotonic()
        announced = False
        while True:
            dev = find() if find is not None else self.find(spec)
            if dev is not None:
                return dev
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                return None
            if not announced and waited >= announce_after and self.log:
                self.log.info(f"waiting for root device {spec.text}"
                              + (f" (up to {timeout:g} s)" if timeout is not None else " (rootwait: no time limit)"))
                announced = True
            if on_poll is not None:
                on_poll()
            limit = poll_every if on_poll is not None else 0.5
            step = limit if timeout is None else max(0.01, min(limit, timeout - waited))
            self.pump(step)
            if self.listener is not None and time.monotonic() - self._last_rescan >= rescan_every:
                self.rescan()  # a safety net: events lost before the socket existed or dropped

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.prober.close()


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def matches(spec: RootSpec, dev: BlockDevice) -> bool:
    """Whether `dev` is the device `spec` asks for (a path is compared by device number)."""
    if spec.kind == "devnum":
        return dev.devnum == spec.value
    if spec.kind in NAME_DIRS:
        return f"{spec.kind}/{spec.value}" in dev.names
    if spec.kind == "path" and isinstance(spec.value, str):
        try:
            st = os.stat(spec.value)
        except OSError:
            return False
        return (os.major(st.st_rdev), os.minor(st.st_rdev)) == dev.devnum
    value = dev.info.get(spec.kind)
    if value is None:
        return False
    if spec.kind in ("UUID", "PARTUUID"):
        return value.lower() == spec.value
    return value == spec.value
