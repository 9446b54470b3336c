"""Kernel module selection at build time: modules.dep, modules.softdep, modules.alias and
modules.builtin, read for the target kernel (not the host's), closed over dependencies and
put in load order. The init only obeys the order written into the image.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

COMPRESSED_SUFFIXES = (".xz", ".zst", ".gz")


class KmodError(Exception):
    pass


def module_name(path: str) -> str:
    """kernel/fs/ext4/ext4.ko.xz -> ext4; crc32c-intel.ko -> crc32c_intel (kmod's rule)."""
    base = os.path.basename(path)
    for suffix in COMPRESSED_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if base.endswith(".ko"):
        base = base[:-3]
    return base.replace("-", "_")


def normalize(name: str) -> str:
    return name.replace("-", "_")


@dataclass
class ModuleIndex:
    kver: str
    root: str  # <moddir>/<kver>
    paths: dict[str, str] = field(default_factory=dict)  # name -> path relative to root
    deps: dict[str, list[str]] = field(default_factory=dict)  # name -> names, as in modules.dep
    builtin: set[str] = field(default_factory=set)
    softdeps: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # name -> (pre, post)
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (pattern, module name)

    @classmethod
    def load(cls, moddir: str, kver: str) -> "ModuleIndex":
        root = os.path.join(moddir, kver)
        dep_path = os.path.join(root, "modules.dep")
        if not os.path.isfile(dep_path):
            raise KmodError(f"{dep_path} not found: is --moddir right, and has depmod run for {kver}? "
                            f"(try: depmod -b <dir> {kver})")
        idx = cls(kver=kver, root=root)
        with open(dep_path) as f:
            for line in f:
                if ":" not in line:
                    continue
                path, _, rest = line.partition(":")
                name = module_name(path)
                idx.paths[name] = path.strip()
                idx.deps[name] = [module_name(p) for p in rest.split()]
        for line in _lines(os.path.join(root, "modules.builtin")):
            idx.builtin.add(module_name(line))
        for line in _lines(os.path.join(root, "modules.softdep")):
            words = line.split()
            if len(words) < 3 or words[0] != "softdep":
                continue
            pre, post, bucket = [], [], None
            for w in words[2:]:
                if w == "pre:":
                    bucket = pre
                elif w == "post:":
                    bucket = post
                elif bucket is not None:
                    bucket.append(w)
            old_pre, old_post = idx.softdeps.get(normalize(words[1]), ([], []))
            idx.softdeps[normalize(words[1])] = (old_pre + pre, old_post + post)
        for line in _lines(os.path.join(root, "modules.alias")):
            words = line.split()
            if len(words) == 3 and words[0] == "alias":
                idx.aliases.append((words[1], normalize(words[2])))
        return idx

    def resolve(self, name: str) -> list[str]:
        """A module or alias name -> module names (built-in ones included). [] if unknown."""
        n = normalize(name)
        if n in self.paths or n in self.builtin:
            return [n]
        out = []
        for pattern, mod in self.aliases:
            if fnmatch.fnmatchcase(name, pattern) and mod not in out:
                out.append(mod)
        return out


@dataclass
class Selected:
    name: str
    path: str  # relative to the index root, as in modules.dep (maybe compressed)
    required: bool


@dataclass
class Selection:
    modules: list[Selected]  # load order
    builtin: list[str]  # asked for, but built into the kernel


def _lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


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
                visit(target, False, chain + (soft,))
        for dep in idx.deps.get(name, []):
            visit(dep, required, chain + (dep,))
        visiting.discard(name)
        sel = Selected(name, idx.paths[name], required)
        placed[name] = sel
        order.append(sel)
        for soft in post:
            for target in idx.resolve(soft) or []:
                visit(target, False, chain + (soft,))

    for asked in names:
        targets = idx.resolve(asked)
        if not targets:
            raise KmodError(f"module {asked} not found for kernel {idx.kver}: not in {idx.root}/modules.dep, "
                            "modules.builtin or modules.alias")
        for t in targets:
            visit(t, True, (asked,))
    return Selection(order, builtin)


def read_module(path: str) -> bytes:
    """The module's bytes, decompressed: the image's own compression then covers every
    module at once, which packs better and unpacks faster than per-file xz."""
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".xz"):
        import lzma
        return lzma.decompress(raw)
    if path.endswith(".zst"):
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    if path.endswith(".gz"):
        import gzip
        return gzip.decompress(raw)
    return raw


def image_path(kver: str, relpath: str) -> str:
    """Where a module goes in the image: decompressed, under /usr/lib/modules/<kver>/."""
    for suffix in COMPRESSED_SUFFIXES:
        if relpath.endswith(suffix):
            relpath = relpath[: -len(suffix)]
    return f"/usr/lib/modules/{kver}/{relpath}"


def add_modules(image, idx: ModuleIndex, selection: Selection, part: str = "modules") -> str:
    """Put the selected modules in the image; return the text of /etc/pyinit/modules.load."""
    lines = [f"# kernel {idx.kver}: load order computed by pyinit-mkinitramfs"]
    for m in selection.modules:
        dest = image_path(idx.kver, m.path)
        src = os.path.join(idx.root, m.path)
        try:
            data = read_module(src)
        except OSError as e:
            raise KmodError(f"module {m.name}: cannot read {src}: {e.strerror}") from None
        image.add_file(dest, data=data, mode=0o644, part=part)
        lines.append(f"{m.name} {dest} {'required' if m.required else 'optional'}")
    return "\n".join(lines) + "\n"
