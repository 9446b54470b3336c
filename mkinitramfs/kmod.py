"""Kernel module selection at build time: modules.dep, modules.softdep, modules.alias and
modules.builtin, read for the target kernel (not the host's), closed over dependencies and
put in load order. The init only obeys the order written into the image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mkinitramfs.errors import MkinitramfsError

# kmod's index files and naming rules are pyinit's too: one definition for the builder and
# the init (pyinit/kmodindex.py, pure).
from pyinit import kmodindex, read_text
from pyinit.kmodindex import normalize as normalize  # hostonly.py imports it from here
from pyinit.modalias import AliasIndex

if TYPE_CHECKING:
    from mkinitramfs.image import Image


class KmodError(MkinitramfsError):
    """A module, its dependency or the kernel's index files cannot be found or read; the
    message names the module and the file."""


@dataclass
class ModuleIndex:
    kver: str
    root: str  # <moddir>/<kver>
    paths: dict[str, str] = field(default_factory=dict)  # name -> path relative to root
    deps: dict[str, list[str]] = field(default_factory=dict)  # name -> names, as in modules.dep
    builtin: set[str] = field(default_factory=set)
    softdeps: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # name -> (pre, post)
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (pattern, module name)
    _alias_index: AliasIndex | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, moddir: str, kver: str) -> ModuleIndex:
        root = os.path.join(moddir, kver)
        dep_path = os.path.join(root, "modules.dep")
        if not os.path.isfile(dep_path):
            raise KmodError(f"{dep_path} not found: is --moddir right, and has depmod run for {kver}? "
                            f"(try: depmod -b <dir> {kver})")
        with open(dep_path) as f:
            paths, deps = kmodindex.parse_modules_dep(f.read())
        return cls(kver=kver, root=root, paths=paths, deps=deps,
                   builtin=kmodindex.parse_builtin(read_text(os.path.join(root, "modules.builtin"))),
                   softdeps=kmodindex.parse_softdeps(read_text(os.path.join(root, "modules.softdep"))),
                   aliases=kmodindex.parse_aliases(read_text(os.path.join(root, "modules.alias"))))

    def resolve(self, name: str) -> list[str]:
        """A module or alias name -> module names (built-in ones included). [] if unknown."""
        n = normalize(name)
        if n in self.paths or n in self.builtin:
            return [n]
        # Indexed by each pattern's literal prefix, as at boot: compiling ~25,000 alias
        # patterns into regular expressions (fnmatch) took over a second of every build.
        if self._alias_index is None:
            self._alias_index = AliasIndex(self.aliases)
        return self._alias_index.lookup(name)


@dataclass
class Selected:
    name: str
    path: str  # relative to the index root, as in modules.dep (maybe compressed)
    required: bool


@dataclass
class Selection:
    modules: list[Selected]  # load order
    builtin: list[str]  # asked for, but built into the kernel


def select(idx: ModuleIndex, names: list[str]) -> Selection:
    """Close `names` over hard dependencies (required) and soft dependencies (optional),
    and order them so that every module comes after what it needs."""
    order: list[Selected] = []
    placed: dict[str, Selected] = {}
    builtin: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, required: bool, chain: tuple[str, ...]) -> None:
        if name in idx.builtin and name not in idx.paths:
            if name not in builtin:
                builtin.append(name)
            return
        if name in placed:
            if required and not placed[name].required:
                placed[name].required = True
            return
        if name in visiting:
            return  # modules.dep has no cycles; a softdep loop must not recurse forever
        if name not in idx.paths:
            raise KmodError(f"module {name} (needed by {' -> '.join(chain)}) is not in {idx.root}/modules.dep")
        visiting.add(name)
        pre, post = idx.softdeps.get(name, ([], []))
        for soft in pre:
            for target in idx.resolve(soft) or []:
                visit(target, False, (*chain, soft))
        for dep in idx.deps.get(name, []):
            visit(dep, required, (*chain, dep))
        visiting.discard(name)
        sel = Selected(name, idx.paths[name], required)
        placed[name] = sel
        order.append(sel)
        for soft in post:
            for target in idx.resolve(soft) or []:
                visit(target, False, (*chain, soft))

    for asked in names:
        targets = idx.resolve(asked)
        if not targets:
            raise KmodError(f"module {asked} not found for kernel {idx.kver}: not in {idx.root}/modules.dep, "
                            "modules.builtin or modules.alias")
        for t in targets:
            visit(t, True, (asked,))
    return Selection(order, builtin)


def read_module(path: str) -> bytes:
    """A module's (or a firmware file's) bytes, decompressed: the image's own compression
    then covers every file at once, which packs better and unpacks faster than per-file xz."""
    with open(path, "rb") as f:
        return decompress_module(f.read(), path)


def decompress_module(raw: bytes, path: str) -> bytes:
    """A module's or firmware file's bytes, decompressed by its name with pyinit.kmodindex's
    rules; .zst with python-zstandard, which the builder has and PID 1 does not."""
    return kmodindex.decompress(raw, path, zstd=_unzstd)


def _unzstd(raw: bytes) -> bytes:
    import zstandard
    # decompressobj: frames written without their content size (the kernel's) decompress too
    data: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return data


def image_path(kver: str, relpath: str) -> str:
    """Where a module goes in the image: decompressed, under /usr/lib/modules/<kver>/."""
    return f"/usr/lib/modules/{kver}/{kmodindex.strip_compression(relpath)}"


def add_modules(image: Image, idx: ModuleIndex, selection: Selection, part: str = "modules") -> str:
    """The foundation's interface: the modules (all loaded at boot) and the index files;
    returns the text of /etc/pyinit/modules.load."""
    return pack_modules(image, idx, selection, part).modules_load


def pack_modules(image: Image, idx: ModuleIndex, selection: Selection, part: str = "modules", *,
                 eager: set[str] | None = None, keep_compressed: bool = False,
                 firmware_dirs: list[str] | None = None) -> Packed:
    """Put the selected modules, their index files and the firmware they name in the image.

    `eager`: the names to load at boot in any case (the rest loads on demand: by MODALIAS,
    by the kernel's requests, by filesystem type); None means all of them. Returns what
    was packed, with the text of /etc/pyinit/modules.load."""
    lines = [f"# kernel {idx.kver}: load order computed by pyinit-mkinitramfs"]
    firmware: dict[str, str] = {}  # name -> the module that asked for it
    for m in selection.modules:
        src = os.path.join(idx.root, m.path)
        try:
            data = read_module(src)
        except OSError as e:
            raise KmodError(f"module {m.name}: cannot read {src}: {e.strerror}") from None
        if keep_compressed:
            dest = f"/usr/lib/modules/{idx.kver}/{m.path}"
            image.add_file(dest, source=src, mode=0o644, part=part)
        else:
            dest = image_path(idx.kver, m.path)
            image.add_file(dest, data=data, mode=0o644, part=part)
        if firmware_dirs is not None:
            for fw in modinfo(data).get("firmware", []):
                firmware.setdefault(fw, m.name)
        if eager is None or m.name in eager:
            lines.append(f"{m.name} {dest} {'required' if m.required else 'optional'}")
    for name, text in index_files(idx, selection, keep_compressed).items():
        image.add_file(f"/usr/lib/modules/{idx.kver}/{name}", data=text.encode(), mode=0o644, part=part)
    packed = Packed("\n".join(lines) + "\n")
    for fw, module in sorted(firmware.items()):
        path = find_firmware(fw, firmware_dirs or [], idx.kver)
        if path is None:
            packed.missing_firmware.append((fw, module))
            continue
        image.add_file(f"/usr/lib/firmware/{fw}", data=read_module(path), mode=0o644, part="firmware")
        packed.firmware.append(fw)
    return packed


@dataclass
class Packed:
    modules_load: str
    firmware: list[str] = field(default_factory=list)
    missing_firmware: list[tuple[str, str]] = field(default_factory=list)  # (file, module)


# --------------------------------------------------------------------------- --generic

# Folders (under the kernel tree) whose every module is a storage or bus driver a machine may
# need to reach its root; plus single modules by name. Dependencies come with the closure.
GENERIC_DIRS = (
    "kernel/drivers/block/", "kernel/drivers/ata/", "kernel/drivers/scsi/", "kernel/drivers/nvme/",
    "kernel/drivers/mmc/", "kernel/drivers/ufs/", "kernel/drivers/usb/storage/", "kernel/drivers/usb/host/",
    "kernel/drivers/usb/core/", "kernel/drivers/usb/common/", "kernel/drivers/virtio/", "kernel/drivers/md/",
    "kernel/drivers/message/fusion/", "kernel/drivers/hv/", "kernel/drivers/pci/controller/",
    "kernel/drivers/nvdimm/", "kernel/drivers/cdrom/", "kernel/fs/nls/",
)
GENERIC_MODULES = (
    # the common filesystems, by the kernel's own fs-<type> aliases
    "fs-ext4", "fs-xfs", "fs-btrfs", "fs-vfat", "fs-msdos", "fs-f2fs", "fs-squashfs", "fs-erofs", "fs-isofs",
    "fs-udf", "fs-overlay",
    # a keyboard on a USB or PS/2 port, for the rescue shell
    "hid_generic", "usbhid", "atkbd",
)
# Test and debugging drivers that only make fake disks.
GENERIC_EXCLUDE = {"scsi_debug", "null_blk"}


def generic_modules(idx: ModuleIndex) -> list[str]:
    """Every storage, bus and filesystem module of the target kernel, by the rules above."""
    names = []
    for name, path in sorted(idx.paths.items(), key=lambda kv: kv[1]):
        if path.startswith(GENERIC_DIRS) and name not in GENERIC_EXCLUDE:
            names.append(name)
    for name in GENERIC_MODULES:
        for m in idx.resolve(name):
            if m not in names:
                names.append(m)
    return names


# --------------------------------------------------------------------------- the image's index

def index_files(idx: ModuleIndex, selection: Selection, keep_compressed: bool = False) -> dict[str, str]:
    """kmod's text index files for the modules packed (what pyinit.kmod reads at boot):
    modules.dep with in-image paths, the aliases and softdeps of those modules, and the
    kernel's whole modules.builtin (a built-in module counts as loaded)."""
    packed = {m.name: m.path if keep_compressed else kmodindex.strip_compression(m.path) for m in selection.modules}
    dep_lines = [kmodindex.format_dep(packed[name], (packed[d] for d in idx.deps.get(name, []) if d in packed))
                 for name in sorted(packed, key=lambda n: packed[n])]
    alias_lines = [kmodindex.format_alias(pattern, mod) for pattern, mod in idx.aliases if mod in packed]
    soft_lines = [kmodindex.format_softdep(name, *idx.softdeps[name]) for name in sorted(idx.softdeps)
                  if name in packed]
    builtin = read_text(os.path.join(idx.root, "modules.builtin"))
    return {
        "modules.dep": "\n".join(dep_lines) + "\n",
        "modules.alias": "# aliases of the modules in this image\n" + "\n".join(alias_lines) + "\n",
        "modules.softdep": "\n".join(soft_lines) + "\n",
        "modules.builtin": builtin,
    }


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The .modinfo section of a (decompressed) module: key -> values, in order. Read with
    struct from the section headers: a generic image reads hundreds of modules."""
    import struct
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise KmodError("not an ELF module")
    end = "<" if data[5] == 1 else ">"
    try:
        if data[4] == 2:  # ELF64
            shoff, = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
            fmt, off_at = end + "IIQQQQ", 4
        else:
            shoff, = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
            fmt, off_at = end + "IIIIII", 4
        headers = [struct.unpack_from(fmt, data, shoff + i * shentsize) for i in range(shnum)]
        strtab = headers[shstrndx]
        names = data[strtab[off_at]:strtab[off_at] + strtab[off_at + 1]]
    except (struct.error, IndexError):
        raise KmodError("truncated ELF module") from None
    out: dict[str, list[str]] = {}
    for h in headers:
        name = names[h[0]:names.index(b"\0", h[0])]
        if name == b".modinfo":
            for item in data[h[off_at]:h[off_at] + h[off_at + 1]].split(b"\0"):
                key, eq, value = item.decode("utf-8", "replace").partition("=")
                if eq:
                    out.setdefault(key, []).append(value)
            break
    return out


FIRMWARE_SUFFIXES = ("", ".zst", ".xz")


def find_firmware(name: str, dirs: list[str], kver: str) -> str | None:
    """Where the kernel's firmware loader would find `name` (updates/ and versioned folders
    first), possibly compressed."""
    for d in dirs:
        for sub in (f"updates/{kver}", "updates", kver, ""):
            base = os.path.join(d, sub, name) if sub else os.path.join(d, name)
            for suffix in FIRMWARE_SUFFIXES:
                if os.path.isfile(base + suffix):
                    return base + suffix
    return None


