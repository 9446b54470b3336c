"""`verify FILE`: would this image boot pyinit? Checked from the image's own bytes only.

- /init is there, a regular executable file; its #! interpreter (or /init itself when it is
  an ELF program) is there;
- every ELF program and library in the image finds its program interpreter and every
  DT_NEEDED library inside the image (RPATH/RUNPATH with $ORIGIN, then the loader's
  default directories), symlinks followed inside the image;
- every library the hooks' programs load with dlopen() (/etc/pyinit/dlopen, written from the
  hooks' `dlopen` lists) is an ELF file where the loader looks for it (a soname: the
  loader's default directories; a path: that path); its own DT_NEEDED are checked above;
- a Python /init finds its standard library (encodings) and the pyinit package;
- every module in /etc/pyinit/modules.load is there, its .modinfo `depends=` modules are
  listed before it, and its vermagic names the kernel in /etc/pyinit/kernel-version;
- /dev/console is there (the kernel opens it for init's stdio before running /init).
"""
from __future__ import annotations

import io
import posixpath
import re
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile

from mkinitramfs import archive, paths
from mkinitramfs.archive import Node, Tree
from mkinitramfs.elf import ElfError, parse_elf
from mkinitramfs.kmod import decompress_module
from mkinitramfs.ldso import Abi, derived_system_dirs


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _file(tree: Tree, path: str) -> tuple[str | None, Node | None]:
    """`path` with symlinks followed inside the image, and its node; (None, None) when absent."""
    real = archive.resolve(tree, path)
    node = tree.get(real) if real else None
    return real, node


def verify(buf: bytes, max_size: int | None = archive.DEFAULT_MAX_SIZE) -> Report:
    tree = archive.unpack_model(buf, max_size)
    rep = Report()
    _check_init(tree, rep)
    _check_elves(tree, rep)
    _check_modules(tree, rep)
    _check_dlopen(tree, rep)
    if paths.CONSOLE not in tree or tree[paths.CONSOLE].kind != "chardev":
        rep.problems.append(f"{paths.CONSOLE}: missing (the kernel opens it for /init's stdin/stdout/stderr)")
    return rep


def _check_init(tree: Tree, rep: Report) -> None:
    _, node = _file(tree, paths.INIT)
    if node is None:
        rep.problems.append("/init: missing: the kernel has nothing to run")
        return
    if node.kind != "file":
        rep.problems.append(f"/init: a {node.kind}, not a regular file")
        return
    if not node.mode & 0o111:
        rep.problems.append(f"/init: not executable (mode {node.mode & 0o7777:04o})")
    if node.data.startswith(b"#!"):
        line = node.data[2:].split(b"\n", 1)[0].strip()
        interp = line.split(None, 1)[0].decode("utf-8", "surrogateescape") if line else ""
        ireal, inode = _file(tree, interp) if interp else (None, None)
        if ireal is None or inode is None or inode.kind != "file":
            rep.problems.append(f"/init: its interpreter {interp or '(none)'} is not in the image")
            return
        if not inode.mode & 0o111:
            rep.problems.append(f"{interp}: /init's interpreter is not executable")
        if not inode.data.startswith(b"\x7fELF"):
            rep.problems.append(f"{interp}: /init's interpreter is not an ELF program "
                                "(the kernel does not chain #! interpreters past a few levels)")
        rep.notes.append(f"/init: script for {interp}" + (f" ({ireal})" if ireal != interp else ""))
        if posixpath.basename(ireal).startswith("python"):
            _check_python(tree, ireal, rep)
    elif node.data.startswith(b"\x7fELF"):
        rep.notes.append("/init: ELF program")
    else:
        rep.problems.append("/init: neither a #! script nor an ELF program")


def _check_python(tree: Tree, exe: str, rep: Report) -> None:
    m = re.match(r"python(\d+)\.(\d+)", posixpath.basename(exe))
    prefix = posixpath.dirname(posixpath.dirname(exe))
    candidates = []
    if m:
        xy = f"{m.group(1)}.{m.group(2)}"
        candidates = [f"{prefix}/lib/python{xy}", f"{prefix}/lib/python{m.group(1)}{m.group(2)}.zip"]
    stdlib = next((c for c in candidates if c in tree), None)
    if stdlib is None:
        rep.problems.append(f"{exe}: no standard library at {' or '.join(candidates) or prefix + '/lib/python*'}")
        return
    if stdlib.endswith(".zip"):
        rep.notes.append(f"python: standard library {stdlib}")
        return

    def module(name: str) -> bool:
        base = f"{stdlib}/{name}"
        return any(p in tree for p in (base + ".pyc", base + ".py", base + "/__init__.pyc", base + "/__init__.py"))

    for name in ("encodings", "pyinit", "pyinit/__main__"):
        if not module(name) and not module(f"site-packages/{name}"):
            rep.problems.append(f"{exe}: cannot import {name.replace('/', '.')}: nothing at {stdlib}/{name}[.pyc|.py]")
    rep.notes.append(f"python: standard library {stdlib}, pyinit importable")


def _check_elves(tree: Tree, rep: Report) -> None:
    count = 0
    for path in sorted(tree):
        node = tree[path]
        if node.kind != "file" or not node.data.startswith(b"\x7fELF"):
            continue
        try:
            obj = parse_elf(io.BytesIO(node.data), path)
        except ElfError as e:
            rep.problems.append(str(e))
            continue
        if obj.etype == "ET_REL":
            continue  # kernel modules, object files: the loader never sees them
        count += 1
        if obj.interp:
            _, inode = _file(tree, obj.interp)
            if inode is None or inode.kind != "file":
                rep.problems.append(f"{path}: program interpreter {obj.interp} is not in the image")
        origin = posixpath.dirname(path)
        search = []
        if not obj.runpath:
            search += [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in obj.rpath]
        search += [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in obj.runpath]
        if not obj.nodeflib:
            search += derived_system_dirs(obj.abi())
        for lib in obj.needed:
            if "/" in lib:
                found = _file(tree, lib)[1] is not None
            else:
                found = any(_file(tree, posixpath.join(d, lib))[1] is not None for d in search)
            if not found:
                rep.problems.append(f"{path}: needs {lib}, which is in none of {', '.join(dict.fromkeys(search))}")
    rep.notes.append(f"ELF: {count} programs and libraries, every DT_NEEDED found in the image")


def _image_abi(tree: Tree) -> Abi | None:
    """The ELF class/machine of the image's programs (those with a loader)."""
    for path in sorted(tree):
        node = tree[path]
        if node.kind == "file" and node.data.startswith(b"\x7fELF"):
            try:
                obj = parse_elf(io.BytesIO(node.data), path)
            except ElfError:
                continue
            if obj.interp:
                return obj.abi()
    return None


def _check_dlopen(tree: Tree, rep: Report) -> None:
    node = tree.get(paths.DLOPEN_LIST)
    if node is None or node.kind != "file":
        return
    abi = _image_abi(tree)
    dirs = derived_system_dirs(abi) if abi else ["/lib", "/usr/lib"]
    count = 0
    for raw in node.data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, hook = line.partition(" ")
        hook = hook.strip() or "?"
        count += 1
        where = [name] if name.startswith("/") else [posixpath.join(d, name) for d in dirs]
        hit = None
        for cand in where:
            _, lib = _file(tree, cand)
            if lib is not None and lib.kind == "file":
                hit = lib
                break
        if hit is None:
            rep.problems.append(f"{name}: hook {hook} loads it with dlopen(), and it is in none of "
                                f"{', '.join(dict.fromkeys(where))}")
        elif not hit.data.startswith(b"\x7fELF"):
            rep.problems.append(f"{name}: hook {hook} loads it with dlopen(), and it is not an ELF file")
    rep.notes.append(f"dlopen: {count} libraries of the hooks found in the image")


def modinfo(data: bytes, path: str) -> dict[str, list[str]]:
    """The key=value strings of a module's .modinfo section (a .ko.xz/.gz/.zst kept
    compressed by --keep-module-compression is decompressed first)."""
    try:
        if path.endswith((".xz", ".gz", ".zst")):
            data = decompress_module(data, path)
        elf = ELFFile(io.BytesIO(data))
        sec = elf.get_section_by_name(".modinfo")
        raw = sec.data() if sec is not None else b""
    except Exception as e:  # pyelftools raises several types on a damaged file
        raise ElfError(f"{path}: bad kernel module: {e}") from None
    out: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            out.setdefault(k.decode(errors="replace"), []).append(v.decode(errors="replace"))
    return out


def _check_modules(tree: Tree, rep: Report) -> None:
    node = tree.get(paths.MODULES_LOAD)
    if node is None:
        rep.notes.append(f"modules: no {paths.MODULES_LOAD}")
        return
    kver_node = tree.get(paths.KERNEL_VERSION)
    kver = kver_node.data.decode(errors="replace").strip() if kver_node else None
    loaded: set[str] = set()
    count = 0
    for n, raw in enumerate(node.data.decode("utf-8", "replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            rep.problems.append(f"{paths.MODULES_LOAD}:{n}: expected 'NAME PATH [required|optional]': {line!r}")
            continue
        name, path = fields[0], fields[1]
        count += 1
        _, mod = _file(tree, path)
        if mod is None or mod.kind != "file":
            rep.problems.append(f"module {name}: {path} is not in the image")
            loaded.add(name)
            continue
        try:
            info = modinfo(mod.data, path)
        except ElfError as e:
            rep.problems.append(str(e))
            continue
        deps = [d for v in info.get("depends", []) for d in v.split(",") if d]
        for dep in deps:
            if dep.replace("-", "_") not in loaded:
                rep.problems.append(f"module {name}: depends on {dep}, which modules.load does not list before it")
        vermagic = (info.get("vermagic") or [""])[0]
        if kver and vermagic and vermagic.split()[0] != kver:
            rep.problems.append(f"module {name}: built for {vermagic.split()[0]}, the image is for {kver}")
        loaded.add(name.replace("-", "_"))
    rep.notes.append(f"modules: {count} in /etc/pyinit/modules.load, each after its dependencies"
                     + (f", for {kver}" if kver else ""))
