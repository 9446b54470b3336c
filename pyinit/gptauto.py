"""No root= (or root=gpt-auto): the root partition by the Discoverable Partitions
Specification (UAPI.2), as systemd's initrd and booster find it.

The rules (`choose`, pure):
  1. The disk. The boot loader (systemd-boot, or systemd-stub in a UKI) leaves the PARTUUID
     of the EFI System Partition it was loaded from in the EFI variable
     LoaderDevicePartUUID: the root is looked for on the disk holding that partition only.
     Without the variable (no UEFI, another loader): the only disk whose GPT holds a root
     partition of this architecture; two or more such disks: no guess, the boot stops and
     says so.
  2. The partition. On that disk, a partition whose type GUID is this architecture's root
     type (x86-64: 4f68bce3-e8cd-4db1-96e7-fbcaf984b709). Skipped: attribute bit 63
     (no-auto), and the label "_empty" (systemd-sysupdate's unused slot). Several left:
     the highest version in the partition label wins (systemd's rule for A/B updates:
     "root-2.1" over "root-2.0"), the first one on the disk on ties.
  3. Its attributes. Bit 60 (read-only): mounted read-only, even with rw on the command
     line. Bit 59 (grow-fs): nothing is done here; the real system is told (see
     `gpt_auto_root_file`), as systemd passes x-systemd.growfs to its root mount.
  4. A LUKS header inside: the luks hook unlocks it (every LUKS device it finds, unless
     rd.luks.uuid= names others only), and the mapped device is mounted.

When nothing is found, `explain` names every disk and partition seen, with the spec's name
for each known type, and why each root partition was not taken.

The side effects are at the bottom: reading LoaderDevicePartUUID from efivarfs (mounted for
the read and unmounted again, its module loaded when it is one), and `Finder`, which
applies the rules to the disks pyinit's small udev (pyinit/devices.py) has seen.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pyinit.devices import BlockDevice, Devices
    from pyinit.kmod import ModuleDB
    from pyinit.log import Logger

    # Reads LoaderDevicePartUUID: (modules to load efivarfs with, log) -> the PARTUUID or None
    ReadLoader = Callable[[ModuleDB | None, Logger], str | None]

NO_AUTO = 1 << 63
READ_ONLY = 1 << 60
GROW_FS = 1 << 59
EMPTY_LABEL = "_empty"

# (the spec's architecture name, `uname -m` values, root type, /usr type)
ARCHES = (
    ("x86-64", ("x86_64",), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "8484680c-9521-48c6-9c11-b0720656f69e"),
    ("x86", ("i386", "i486", "i586", "i686"), "44479540-f297-41b2-9af7-d131d5f0458a",
     "75250d76-8cc6-458e-bd66-bd47cc81a812"),
    ("64-bit ARM/AArch64", ("aarch64",), "b921b045-1df0-41c3-af44-4c6f280d3fae",
     "b0e01050-ee5f-4390-949a-9101b17104e9"),
    ("32-bit ARM", ("arm",), "69dad710-2ce4-4e3c-b16c-21a1d49abed3", "7d0359a3-02b3-4f0a-865c-654403e70625"),
    ("RISC-V 64-bit", ("riscv64",), "72ec70a6-cf74-40e6-bd49-4bda08e8f224", "beaec34b-8442-439b-a40b-984381ed097d"),
    ("RISC-V 32-bit", ("riscv32",), "60d5a7fe-8e7d-435c-b714-3dd8162144e1", "b933fb22-5c3f-4f91-af90-e2bb0fa50702"),
    ("64-bit PowerPC LittleEndian", ("ppc64le",), "c31c45e6-3f39-412e-80fb-4809c4980599",
     "15bb03af-77e7-4d4a-b12b-c0d084f7491c"),
    ("64-bit PowerPC BigEndian", ("ppc64",), "912ade1d-a839-4913-8964-a10eee08fbd2",
     "2c9739e2-f068-46b3-9fd0-01c5a9afbcca"),
    ("32-bit PowerPC", ("ppc",), "1de3f1ef-fa98-47b5-8dcd-4a860a654d78", "7d14fec5-cc71-415d-9d6c-06bf0b3c3eaf"),
    ("s390x", ("s390x",), "5eead9a9-fe09-4a1e-a1d7-520d00531306", "8a4f5770-50aa-4ed3-874a-99b710db6fea"),
    ("s390", ("s390",), "08a7acea-624c-4a20-91e8-6e0fa67d23f9", "cd0f869b-d0fb-4ca0-b141-9ea87cc78d66"),
    ("LoongArch 64-bit", ("loongarch64",), "77055800-792c-4f94-b39a-98c91b762bb6",
     "e611c702-575c-4cbe-9a46-434fa0bf7e3f"),
    ("Itanium/IA-64", ("ia64",), "993d8d3d-f80e-4225-855a-9daf8ed7ea97", "4301d2a6-4e3b-4b2a-bb94-9e0b2c4225ea"),
    ("32-bit MIPS LittleEndian (mipsel)", ("mips",), "37c58c8a-d913-4156-a25f-48b1b64e07f0",
     "0f4868e9-9952-4706-979f-3ed3a473e947"),
    ("64-bit MIPS LittleEndian (mips64el)", ("mips64",), "700bda43-7a34-4507-b179-eeb93d7a7ca3",
     "c97c1f32-ba06-40b4-9f22-236061b08aa8"),
    ("HPPA/PARISC", ("parisc", "parisc64"), "1aacdb3b-5444-4138-bd9e-e5c2239b2346",
     "dc4a4480-6917-4262-a4ec-db9384949f25"),
    ("Alpha", ("alpha",), "6523f8ae-3eb1-4e2a-a05a-18b695ae656f", "e18cf08c-33ec-4c0d-8246-c6c6fb3da024"),
    ("ARC", ("arc",), "d27f46ed-2919-4cb8-bd25-9531f3c16534", "7978a683-6316-4922-bbee-38bff5a2fecc"),
    ("TILE-Gx", ("tilegx",), "c50cdd70-3862-4cc3-90e1-809a8c93ee2c", "55497029-c7c1-44cc-aa39-815ed1558630"),
)
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
GENERIC_LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
_OTHER_TYPES = {
    ESP: "EFI System Partition",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Extended Boot Loader Partition",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Swap",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Home Partition",
    "3b8f8425-20e0-4f3b-907f-1a25a76f98e8": "Server Data Partition",
    "4d21b016-b534-45c2-a9fb-5c16e091fd2d": "Variable Data Partition",
    "7ec6f557-3bc5-4aca-b293-16ef5df639d1": "Temporary Data Partition",
    "773f91ef-66d4-49b5-bd83-d683bf40ad16": "Per-user Home Partition",
    GENERIC_LINUX: "Generic Linux Data Partition",
    "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5": "Root Verity Partition (x86-64)",
    "77ff5f63-e7b6-4633-acf4-1565b864c0e6": "/usr Verity Partition (x86-64)",
    "df3300ce-d69f-4c92-978c-9bfb0f38d820": "Root Verity Partition (64-bit ARM/AArch64)",
    "6e11a4e7-fbca-4ded-b9e9-e1a512bb664e": "/usr Verity Partition (64-bit ARM/AArch64)",
}
ROOT_TYPES = {root: arch for arch, _, root, _ in ARCHES}
TYPE_NAMES = {**{root: f"Root Partition ({arch})" for arch, _, root, _ in ARCHES},
              **{usr: f"/usr Partition ({arch})" for arch, _, _, usr in ARCHES}, **_OTHER_TYPES}


def root_type(machine: str) -> tuple[str, str] | None:
    """`uname -m` -> (the spec's architecture name, its root partition type); None when the
    spec defines no root type for it. 32-bit ARM reports armv7l, armv6l...: "arm*"."""
    for arch, machines, root, _ in ARCHES:
        if machine in machines or ("arm" in machines and machine.startswith("arm")):
            return arch, root
    return None


def type_name(guid: str) -> str:
    """The spec's name for a partition type, else the GUID itself."""
    name = TYPE_NAMES.get(guid.lower())
    return f"{name} ({guid.lower()})" if name else f"type {guid.lower()}"


def flag_names(attrs: int) -> list[str]:
    return [name for bit, name in ((NO_AUTO, "no-auto"), (READ_ONLY, "read-only"), (GROW_FS, "grow-fs"))
            if attrs & bit]


def parse_loader_variable(raw: bytes) -> str | None:
    """The content of an efivarfs file holding a string variable set by systemd-boot: 4
    bytes of attributes, then UTF-16LE, NUL-terminated -> the text lower-cased (a GUID
    is written upper-case), or None when it is not one."""
    from pyinit.blkid import utf16le
    if len(raw) < 6:
        return None
    text = utf16le(raw[4:]).strip().lower()
    parts = text.split("-")
    if [len(p) for p in parts] != [8, 4, 4, 4, 12] or any(c not in "0123456789abcdef" for c in "".join(parts)):
        return None
    return text


# --------------------------------------------------------------------------- the choice

class Part:
    """A GPT entry as the rules see it. `node` is its /dev name, `fstype` the probed TYPE
    (crypto_LUKS for an encrypted root), "" while the partition's device is not known yet."""

    __slots__ = ("attrs", "fstype", "label", "node", "number", "type", "uuid")

    def __init__(self, node: str, number: int, ptype: str, uuid: str, label: str = "", attrs: int = 0,
                 fstype: str = "") -> None:
        self.node, self.number, self.type, self.uuid = node, number, ptype.lower(), uuid.lower()
        self.label, self.attrs, self.fstype = label, attrs, fstype

    def __repr__(self) -> str:
        return f"Part({self.node}, {self.type}, flags={flag_names(self.attrs)})"


class Disk:
    """A whole disk: its node, "gpt"/"dos"/None (no table) and its partitions."""

    __slots__ = ("node", "parts", "pttype")

    def __init__(self, node: str, pttype: str | None, parts: Iterable[Part] = ()) -> None:
        self.node, self.pttype, self.parts = node, pttype, list(parts)

    def __repr__(self) -> str:
        return f"Disk({self.node}, {self.pttype}, {self.parts})"


class Decision:
    """What `choose` found: `part` on `disk` (None: nothing), why every other root partition
    was passed over (`skipped`: (Part, kind, reason); kind is one of "other-arch", "wrong-disk",
    "no-auto", "empty", "ambiguous", "not-preferred"), and
    `problem` when nothing was taken."""

    __slots__ = ("disk", "esp", "part", "problem", "skipped")

    def __init__(self, disk: Disk | None = None, part: Part | None = None,
                 skipped: Iterable[tuple[Part, str, str]] = (), problem: str = "", esp: Disk | None = None) -> None:
        self.disk, self.part, self.skipped, self.problem, self.esp = disk, part, list(skipped), problem, esp

    @property
    def readonly(self) -> bool:
        return bool(self.part is not None and self.part.attrs & READ_ONLY)

    @property
    def growfs(self) -> bool:
        return bool(self.part is not None and self.part.attrs & GROW_FS)


def version_key(label: str) -> tuple[tuple[int, int, str], ...]:
    """A label as a version to compare: runs of digits by value, the rest as text
    ("root-10" > "root-9"), as systemd compares the labels of A/B root partitions."""
    key, run = [], ""
    for ch in label:
        if run and ch.isdigit() != run[-1].isdigit():
            key.append(_piece(run))
            run = ""
        run += ch
    if run:
        key.append(_piece(run))
    return tuple(key)


def _piece(run: str) -> tuple[int, int, str]:
    return (1, int(run), "") if run[-1].isdigit() else (0, 0, run)


def choose(disks: list[Disk], loader_partuuid: str | None, rtype: str) -> Decision:
    """The root partition by the rules in the module docstring. Pure."""
    esp_disk = None
    if loader_partuuid:
        for d in disks:
            for p in d.parts:
                if p.uuid == loader_partuuid:
                    esp_disk = d
        if esp_disk is None:
            return Decision(problem=f"the boot loader's LoaderDevicePartUUID {loader_partuuid} is not a "
                                    "partition of any disk seen")
    skipped = []
    eligible: dict[str, list[Part]] = {}
    for d in disks:
        if d.pttype != "gpt":
            continue
        for p in d.parts:
            if p.type != rtype:
                if p.type in ROOT_TYPES:
                    why = f"a root partition of another architecture ({ROOT_TYPES[p.type]})"
                    skipped.append((p, "other-arch", why))
                continue
            if esp_disk is not None and d is not esp_disk:
                skipped.append((p, "wrong-disk", f"not on the disk the boot loader came from ({esp_disk.node})"))
            elif p.attrs & NO_AUTO:
                skipped.append((p, "no-auto", "flagged no-auto (GPT attribute 63)"))
            elif p.label == EMPTY_LABEL:
                skipped.append((p, "empty", f'labelled "{EMPTY_LABEL}" (an unused update slot)'))
            else:
                eligible.setdefault(d.node, []).append(p)
    if esp_disk is None and len(eligible) > 1:
        return Decision(skipped=skipped + [(p, "ambiguous", "another disk holds a root partition too")
                                           for ps in eligible.values() for p in ps],
                        problem=f"root partitions on {len(eligible)} disks ({', '.join(eligible)}) and no "
                                "LoaderDevicePartUUID to say which disk the machine booted from: not guessing")
    if not eligible:
        where = f"on {esp_disk.node}, the disk the boot loader came from" if esp_disk is not None else "on any disk"
        return Decision(skipped=skipped, esp=esp_disk,
                        problem=f"no usable root partition (type {rtype}) {where}")
    node, parts = next(iter(eligible.items()))
    best = parts[0]
    for p in parts[1:]:
        if version_key(p.label) > version_key(best.label):
            best = p
    for p in parts:
        if p is not best:
            why = f"{best.node} is preferred (the highest version label, else the first)"
            skipped.append((p, "not-preferred", why))
    disk = next(d for d in disks if d.node == node)
    return Decision(disk=disk, part=best, skipped=skipped, esp=esp_disk)


def explain(disks: list[Disk], loader_partuuid: str | None, arch: str, rtype: str, decision: Decision) -> list[str]:
    """Lines for a person: the rule applied, every disk and partition seen, and why each
    root partition was not taken. Pure."""
    lines = [f"looking for the Discoverable Partitions root of this machine: Root Partition ({arch}), "
             f"type {rtype}"]
    if loader_partuuid:
        lines.append(f"the boot loader's LoaderDevicePartUUID is {loader_partuuid}: only its disk counts")
    else:
        lines.append("no LoaderDevicePartUUID (not booted through systemd-boot or a UKI): "
                     "the only disk with a root partition counts")
    reasons = {id(p): why for p, _, why in decision.skipped}
    for d in disks:
        if d.pttype is None:
            lines.append(f"  {d.node}: no partition table")
            continue
        lines.append(f"  {d.node}: {d.pttype.upper() if d.pttype == 'gpt' else d.pttype} partition table, "
                     f"{len(d.parts)} partition(s)")
        for p in d.parts:
            label = f' "{printable(p.label)}"' if p.label else ""
            flags = flag_names(p.attrs)
            text = f"    {p.node}{label}: {type_name(p.type)}"
            if flags:
                text += f", flags {' '.join(flags)}"
            if p.fstype:
                text += f", {p.fstype}"
            if p.uuid == loader_partuuid:
                text += " (the boot loader's ESP)"
            if id(p) in reasons:
                text += f": skipped, {reasons[id(p)]}"
            lines.append(text)
    if not disks:
        lines.append("  (no disks at all)")
    return lines


def printable(text: str) -> str:
    """A partition label as the console may show it: it comes from the disk, and a newline
    or an escape sequence in it must not forge or garble log lines."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def hint(decision: Decision, disks: list[Disk], rtype: str) -> str:
    """The next step for a person when nothing was found. Pure."""
    by_kind: dict[str, list[Part]] = {}
    for p, kind, _ in decision.skipped:
        by_kind.setdefault(kind, []).append(p)
    if "no-auto" in by_kind:
        p = by_kind["no-auto"][0]
        return (f"{p.node} is flagged no-auto: clear the flag if it is the root (sgdisk -A {p.number}:clear:63 "
                f"<disk>), or boot with root=PARTUUID={p.uuid}")
    if "ambiguous" in by_kind:
        return ("say which root partition: boot with root=PARTUUID=<uuid> (" +
                ", ".join(f"{p.node}: {p.uuid}" for p in by_kind["ambiguous"]) + ")")
    if "wrong-disk" in by_kind:
        p = by_kind["wrong-disk"][0]
        return (f"the root partitions are on other disks than the one the boot loader came from: boot with "
                f"root=PARTUUID={p.uuid} ({p.node}), or boot from that disk's ESP")
    if any(p.type == GENERIC_LINUX for d in disks for p in d.parts):
        return (f"a Generic Linux Data Partition is never taken as the root: give the root partition the type "
                f"{rtype} (sgdisk -t N:{rtype}), or boot with root=")
    return f"give the root partition the type {rtype} (sgdisk -t N:{rtype}), or boot with root="


def gpt_auto_root_file(decision: Decision) -> str:
    """/run/pyinit/gpt-auto-root: what the real system needs to know about a root found
    without root= (shell-sourceable: systemd's growfs or a distribution's script reads
    GROWFS=1 and grows / once it runs from it)."""
    p = decision.part
    if p is None:
        raise ValueError("no root partition was chosen")
    return (f"ROOT_PARTITION={p.node}\nROOT_PARTUUID={p.uuid}\nROOT_FLAGS=\"{' '.join(flag_names(p.attrs))}\"\n"
            f"READ_ONLY={int(decision.readonly)}\nGROWFS={int(decision.growfs)}\n")


# --------------------------------------------------------------------------- side effects

EFI_DIR = "/sys/firmware/efi"
EFIVARS = EFI_DIR + "/efivars"
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"  # systemd-boot's vendor GUID
LOADER_DEVICE_PARTUUID = f"LoaderDevicePartUUID-{LOADER_GUID}"


def read_loader_partuuid(modules: ModuleDB | None, log: Logger) -> str | None:
    """LoaderDevicePartUUID from efivarfs, or None (no UEFI, no variable, no efivarfs).
    efivarfs is mounted for the read and unmounted again when it was not mounted before:
    the real system mounts it as it wants (systemd read-write, others not at all)."""
    if not os.path.isdir(EFI_DIR):
        log.info("gpt-auto: not booted through UEFI (no /sys/firmware/efi): no LoaderDevicePartUUID")
        return None
    from pyinit import mounts
    from pyinit import syscalls as sc
    mounted_here = False
    if not mounts.is_mountpoint(EFIVARS):
        if modules is not None and "efivarfs" not in _filesystems():
            loaded = modules.load_quietly("fs-efivarfs", "reading LoaderDevicePartUUID")
            if loaded:
                log.info(f"gpt-auto: loaded {', '.join(loaded)} to read the boot loader's EFI variables")
        try:
            # read-only, nosuid, nodev, noexec: pyinit only reads one variable
            sc.mount("efivarfs", EFIVARS, "efivarfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
            mounted_here = True
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else e
            log.warning(f"gpt-auto: cannot mount efivarfs on {EFIVARS} ({why}; is its module in the image?): "
                        "LoaderDevicePartUUID is not known")
            return None
    try:
        with open(f"{EFIVARS}/{LOADER_DEVICE_PARTUUID}", "rb") as f:
            raw = f.read(512)  # 4 bytes of attributes + 37 UTF-16 units; anything longer is not a GUID
    except OSError as e:
        raw = None
        log.info(f"gpt-auto: no LoaderDevicePartUUID EFI variable ({e.strerror}): the boot loader "
                 "did not say which disk it came from")
    finally:
        if mounted_here:
            try:
                sc.umount2(EFIVARS, sc.MNT_DETACH)
            except OSError as e:
                log.warning(f"gpt-auto: cannot unmount {EFIVARS}: {e}")
    if raw is None:
        return None
    value = parse_loader_variable(raw)
    if value is None:
        log.warning(f"gpt-auto: LoaderDevicePartUUID holds no GUID ({raw[:80]!r}): ignored")
    return value


def _filesystems() -> str:
    from pyinit import read_text
    return read_text("/proc/filesystems")


class Finder:
    """Applies `choose` to what pyinit's Devices has seen, once per look of the wait loop
    (Devices.wait_for(find=...)): returns the block device to mount, or None for now."""

    def __init__(self, devices: Devices, log: Logger, modules: ModuleDB | None = None, machine: str | None = None,
                 read_loader: ReadLoader | None = None) -> None:
        self.devices, self.log, self.modules = devices, log, modules
        self.read_loader = read_loader or read_loader_partuuid
        found = root_type(machine or os.uname().machine)
        self.arch, self.rtype = found if found else (machine or os.uname().machine, "")
        self.loader: str | None = None
        self.started = False
        self.decision = Decision()
        self.disks: list[Disk] = []
        self.announced: str | None = None
        self.luks_partition: BlockDevice | None = None
        self.rescanned = False

    def start(self) -> None:
        self.started = True
        if not self.rtype:
            self.log.warning(f"gpt-auto: the Discoverable Partitions Specification has no root type for {self.arch}")
            return
        self.loader = self.read_loader(self.modules, self.log)
        if self.loader:
            self.log.info(f"gpt-auto: LoaderDevicePartUUID={self.loader}: the root is looked for on that disk")

    def snapshot(self) -> list[Disk]:
        """The disks and partitions known now, as the rules see them."""
        devs = self.devices
        by_slot = {(b.parent, b.partn): b for b in devs.blocks.values() if b.devtype == "partition"}
        disks = []
        for name in sorted(devs.tables):
            dev = devs.blocks.get(name)
            if dev is None:
                continue
            table = devs.tables[name]
            parts = []
            if table is not None:
                for e in table.entries:
                    block = by_slot.get((name, e.number))
                    sep = "p" if name[-1:].isdigit() else ""  # nvme0n1p2, vda2
                    node = block.node if block is not None else f"{dev.node}{sep}{e.number}"
                    fstype = (block.info or {}).get("TYPE", "") if block is not None else ""
                    parts.append(Part(node, e.number, e.type, e.uuid, e.name, e.attrs, fstype))
            disks.append(Disk(dev.node, table.pttype if table is not None else None, parts))
        return disks

    def find(self) -> BlockDevice | None:
        if not self.started:
            self.start()
        if not self.rtype:
            return None
        if self.loader is None and not self.rescanned:
            # Without the loader's word, "the only disk" must be judged on every disk there
            # is: read /sys once for devices whose coldplug events are still queued. A disk
            # whose driver shows it later than the first root partition cannot be waited for.
            self.rescanned = True
            self.devices.rescan()
        self.disks = self.snapshot()
        self.decision = d = choose(self.disks, self.loader, self.rtype)
        if d.part is None:
            return None
        devs = self.devices
        part = next((b for b in devs.blocks.values() if b.node == d.part.node), None)
        if part is None or not part.info:
            return None  # the partition's own device is not there (or not probed) yet
        if self.announced != d.part.node:
            self.announced = d.part.node
            flags = flag_names(d.part.attrs)
            self.log.info(f"gpt-auto: root partition {d.part.node} ({type_name(d.part.type)}, PARTUUID "
                          f"{d.part.uuid}" + (f", flags {' '.join(flags)}" if flags else "") + ")")
            for p, _, why in d.skipped:
                self.log.info(f"gpt-auto: skipped {p.node}: {why}")
        if part.info.get("TYPE") != "crypto_LUKS":
            return part
        # An encrypted root: the luks hook opens it; the mapped device holding it is the root.
        self.luks_partition = part
        for holder in _listdir(f"{part.sysdir}/holders"):
            mapped = devs.blocks.get(holder)
            if mapped is not None and mapped.info:
                return mapped
        return None

    def failure(self) -> tuple[str, str]:
        """(message, hint) when the wait ended without a root."""
        d = self.decision
        if not self.rtype:
            return (f"no root= and the Discoverable Partitions Specification defines no root partition type for "
                    f"{self.arch}", "boot with root=")
        lines = explain(self.disks, self.loader, self.arch, self.rtype, d)
        if d.part is not None and self.luks_partition is not None:
            problem = (f"the root partition {d.part.node} is LUKS-encrypted and was not unlocked")
            next_step = ("is the luks hook in the image (pyinit-mkinitramfs --hook luks)? With rd.luks.uuid=, "
                         f"list the root's LUKS UUID {self.luks_partition.info.get('UUID', '')} too")
        elif d.part is not None:
            problem = f"the root partition {d.part.node} was chosen but its device did not appear"
            next_step = "check the kernel messages above about that disk"
        else:
            problem = d.problem or "no root partition found"
            next_step = hint(d, self.disks, self.rtype)
        return f"gpt-auto: {problem}.\n" + "\n".join(lines), next_step


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
