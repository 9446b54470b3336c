"""ELF programs and the shared libraries they need: their headers read with pyelftools, the
closure resolved as the dynamic loader would, and both placed into an image.

This does what glibc's ld.so does when it starts a program, without running anything:

    closure = resolve(["/usr/bin/python3.11", ".../_cffi_backend.cpython-311-x86_64-linux-gnu.so"])
    closure.interpreter   -> "/lib64/ld-linux-x86-64.so.2"          (PT_INTERP, as written)
    closure.libraries     -> {"libc.so.6": "/usr/lib/x86_64-linux-gnu/libc.so.6", ...}
    closure.needed_by     -> {"libc.so.6": "/usr/bin/python3.11", ...}
    add_closure(image, [...], part=parts.LIBRARIES)   puts them into an `Image`

Search order for a DT_NEEDED name, as in glibc's `_dl_map_object` (elf/dl-load.c):

1. A name containing '/' is a path (after $ORIGIN/$LIB/$PLATFORM expansion); no search.
2. A name already loaded is not searched again: ld.so matches a NEEDED name against the
   names and DT_SONAMEs of the objects loaded so far, the dynamic loader included (so a
   NEEDED `ld-linux-x86-64.so.2`, which cffi's wheel has, is the interpreter itself).
   Objects are loaded breadth first, so when two objects would find the same name in
   different places, the first one in breadth-first order wins, as in ld.so.
3. Unless the object that needs the name has DT_RUNPATH: the DT_RPATH of that object, then
   of the object that loaded it, and so on up to the root, then the main program's DT_RPATH.
   (`main=` names the program whose DT_RPATH also applies to roots that it would dlopen,
   e.g. the Python interpreter for extension modules.)
4. DT_RUNPATH of the object itself (only its own, never inherited).
5. The directories of /etc/ld.so.conf (with `include` globs), which is what ld.so.cache holds,
   unless the object has DF_1_NODEFLIB.
6. The system directories compiled into the loader (unless DF_1_NODEFLIB), as the loader
   itself says them (ldso.py).

A candidate is accepted only if it is an ELF file of the loader's class, byte order and
e_machine, as ld.so skips a wrong-class libfoo.so.1 and keeps searching.

Dynamic string tokens: $ORIGIN / ${ORIGIN} is the directory of the object carrying the path.
Like ld.so (checked with LD_DEBUG=libs), that is the directory of the *path the object was
found at* (symbolic links in it not resolved) for libraries and dlopen'ed roots, and the
directory of the realpath for a main program (ld.so takes it from /proc/self/exe, which the
kernel resolves).

$LIB and $PLATFORM are what the target's loader substitutes, and $PLATFORM takes every value
it can on the CPUs the image may boot on, baseline first (ldso.py says how both are found).

Not modelled, on purpose: LD_LIBRARY_PATH and LD_PRELOAD (the builder must not depend on the
caller's environment), glibc-hwcaps/ and the legacy hwcap subdirectories glibc < 2.37 still
searches (haswell/, avx512_1/, x86_64/, tls/ below each directory): like the $PLATFORM rule,
the baseline library comes from the plain directory; secure-mode (setuid) restrictions,
DT_AUDIT/DT_DEPAUDIT, and dlopen() calls made at run time (a library a program dlopen()s by
name must be passed in explicitly).

Image layout (`add_closure`): the loader goes at its PT_INTERP path, because the kernel opens
exactly that path; every library goes flat into one directory, by default /usr/lib, named by
the NEEDED name that asked for it. The image has no /etc/ld.so.cache, so ld.so falls back to
its system directories, and /usr/lib is one of them on glibc (Debian: /lib/<multiarch>,
/usr/lib/<multiarch>, /lib, /usr/lib). A flat /usr/lib also catches RUNPATH $ORIGIN/../lib of
programs placed in /usr/bin (pyenv-like builds), and a host RUNPATH such as
/root/.pyenv/versions/3.12.1/lib simply does not exist in the image, so the search goes on to
/usr/lib. On a loader whose system directories do not include /usr/lib (Fedora's x86_64
ld.so searches /lib64:/usr/lib64 only), `default_libdir` picks the first /usr/... system dir.

Every ELF file added here is marked `strippable`; mkinitramfs.strip decides what strip removes,
once, after the whole image is assembled.
"""
from __future__ import annotations

import functools
import os
import posixpath
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from elftools.common.exceptions import ELFError as _PyElfError
from elftools.elf.dynamic import DynamicSegment, DynamicTag
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from mkinitramfs import ldso, parts
from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.image import Image, ImageError
from mkinitramfs.ldso import Abi, Tokens

__all__ = [
    "ElfClosure",
    "ElfError",
    "ElfObject",
    "add_closure",
    "add_elf_file",
    "default_libdir",
    "is_elf_file",
    "loader_facts",
    "parse_elf",
    "read_elf",
    "resolve",
    "system_search_path",
]

DF_1_NODEFLIB = 0x800


class ElfError(MkinitramfsError):
    """A program or library cannot be read or resolved; the message names the objects."""


@dataclass(frozen=True)
class ElfObject:
    """The parts of an ELF file's headers that the dynamic loader looks at."""

    path: str
    elfclass: int  # 32 or 64
    little_endian: bool
    machine: str  # e_machine as pyelftools names it, e.g. "EM_X86_64"
    etype: str  # e_type, e.g. "ET_DYN"
    interp: str | None  # PT_INTERP
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    soname: str | None
    nodeflib: bool

    def abi(self) -> Abi:
        return (self.elfclass, self.little_endian, self.machine)


def _split_path_list(value: str) -> tuple[str, ...]:
    # ld.so splits DT_RPATH/DT_RUNPATH on ':'; empty elements mean the current directory,
    # which is never what an image wants, so they are dropped.
    return tuple(p for p in value.split(":") if p)


@functools.lru_cache(maxsize=4096)
def _read_elf_cached(path: str, mtime_ns: int, size: int) -> ElfObject:
    try:
        with open(path, "rb") as f:
            return parse_elf(f, path)
    except OSError as e:
        raise ElfError(f"{path}: cannot read: {e.strerror}") from None


def parse_elf(f: BinaryIO, path: str) -> ElfObject:
    """Parse the loader-relevant headers from a binary file object (a host file, or the
    bytes of a file inside an image for `verify`); `path` names it in errors."""
    try:
        if f.read(4) != b"\x7fELF":
            raise ElfError(f"{path}: not an ELF file")
        f.seek(0)
        elf = ELFFile(f)
        interp = None
        dynamic = _Dynamic()
        for seg in elf.iter_segments():
            if isinstance(seg, InterpSegment):
                interp = seg.get_interp_name()
            elif isinstance(seg, DynamicSegment):
                # The segment, not the .dynamic section: stripped files may have no
                # section headers, and ld.so only reads program headers anyway.
                dynamic.read(seg)
        return ElfObject(path=path, elfclass=elf.elfclass, little_endian=elf.little_endian,
                         machine=elf["e_machine"], etype=elf["e_type"], interp=interp,
                         needed=tuple(dynamic.needed), rpath=tuple(dynamic.rpath), runpath=tuple(dynamic.runpath),
                         soname=dynamic.soname, nodeflib=bool(dynamic.flags_1 & DF_1_NODEFLIB))
    except ElfError:
        raise
    except (_PyElfError, ValueError, KeyError, UnicodeDecodeError, struct.error, EOFError, OverflowError,
            IndexError, TypeError, AttributeError, AssertionError, MemoryError) as e:
        # pyelftools raises all of these on damaged headers (found by fuzzing `verify`)
        raise ElfError(f"{path}: bad ELF file: {type(e).__name__}: {e}") from None


@dataclass
class _Dynamic:
    """The PT_DYNAMIC tags the loader reads."""

    needed: list[str] = field(default_factory=list)
    rpath: list[str] = field(default_factory=list)
    runpath: list[str] = field(default_factory=list)
    soname: str | None = None
    flags_1: int = 0

    def read(self, seg: DynamicSegment) -> None:
        for tag in seg.iter_tags():
            t = tag.entry.d_tag
            if t == "DT_NEEDED":
                self.needed.append(_tag_string(tag))
            elif t == "DT_RPATH":
                self.rpath.extend(_split_path_list(_tag_string(tag)))
            elif t == "DT_RUNPATH":
                self.runpath.extend(_split_path_list(_tag_string(tag)))
            elif t == "DT_SONAME":
                self.soname = _tag_string(tag)
            elif t == "DT_FLAGS_1":
                self.flags_1 = tag.entry.d_val


def _tag_string(tag: DynamicTag) -> str:
    # pyelftools resolves the string of DT_NEEDED, DT_RPATH, DT_RUNPATH and DT_SONAME into
    # an attribute named after the tag ("needed", "rpath"...), set with setattr, which its
    # type information cannot declare.
    value: str = getattr(tag, tag.entry.d_tag[3:].lower())
    return value


def read_elf(path: str) -> ElfObject:
    """Parse the loader-relevant headers of `path` (cached per file identity)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ElfError(f"{path}: cannot read: {e.strerror}") from None
    return _read_elf_cached(path, st.st_mtime_ns, st.st_size)


def is_elf_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# The target's loader (ldso.py), asked only when its ABI is the objects'


def loader_facts(interp: str | None, obj_abi: Abi) -> ldso.LoaderFacts:
    """Ask the loader `interp` (a host file) about itself when it is of `obj_abi` and runs
    here; else read it as a file; else derive from the ELF machine (ldso.py)."""
    if not interp:
        return ldso.facts("", obj_abi, False)
    try:
        runnable = read_elf(interp).abi() == obj_abi
    except ElfError:
        runnable = False
    return ldso.facts(interp, obj_abi, runnable)


def system_search_path(interp: str | None, obj_abi: Abi) -> list[str]:
    """The loader's built-in directories (see `loader_facts`)."""
    return list(loader_facts(interp, obj_abi).system_dirs)


def tokens_for(interp: str | None, abi: Abi) -> Tokens:
    return Tokens(loader_facts(interp, abi).dst_lib, ldso.platform_candidates(abi))


# ---------------------------------------------------------------------------------------
# Resolution


@dataclass
class ElfClosure:
    """What a set of programs needs from the dynamic loader.

    `libraries` maps each NEEDED name (normally a soname; a name with '/' is a path) to the
    host file to copy (realpath), in breadth-first load order; `needed_by` names the first
    object that asked for it (for messages). `interpreter` is PT_INTERP as written in the
    programs, `interpreter_source` the host file behind it.
    """

    interpreter: str | None = None
    interpreter_source: str | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    needed_by: dict[str, str] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    # Libraries found only in a directory for some CPUs ($PLATFORM haswell, xeon_phi...):
    # one message each, for the build output.
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Node:
    """A loaded object, as ld.so keeps it for the search of its NEEDED names."""

    obj: ElfObject
    origin: str  # $ORIGIN for paths carried by this object
    loader: _Node | None  # the object that loaded it (its DT_RPATH applies too)


def resolve(binaries: Iterable[str], *, main: str | None = None,
            ld_so_conf: str | None = "/etc/ld.so.conf",
            system_dirs: Sequence[str] | None = None) -> ElfClosure:
    """Compute the shared-library closure of `binaries` (programs and/or shared objects).

    main: a program whose DT_RPATH also applies to the other roots, as for objects it
          dlopen()s (e.g. the Python interpreter for extension modules). Defaults to the
          first root with PT_INTERP.
    ld_so_conf: the ld.so.conf to read (None: none, as in a bare chroot).
    system_dirs: override the loader's built-in directories (tests, cross builds).

    Raises ElfError naming the library and the object that needs it when a library is
    missing, and when roots disagree about their loader or architecture.
    """
    roots = [os.path.abspath(b) for b in binaries]
    closure = ElfClosure(roots=list(roots))
    if not roots:
        return closure
    root_objs = [read_elf(r) for r in roots]
    abi = root_objs[0].abi()
    for o in root_objs[1:]:
        if o.abi() != abi:
            raise ElfError(f"{o.path}: ELF class/machine {o.abi()} differs from "
                           f"{root_objs[0].path} {abi}; one closure holds one architecture")
    loaded = _load_interpreter(closure, root_objs)  # name or soname -> host path
    main_obj = next((o for o in root_objs if o.interp), None) if main is None else read_elf(os.path.abspath(main))
    main_node = None
    if main_obj is not None:
        main_node = _Node(main_obj, os.path.dirname(os.path.realpath(main_obj.path)), None)
    search = _Search(abi, tokens_for(closure.interpreter_source, abi),
                     ldso.ld_so_conf_dirs(ld_so_conf) if ld_so_conf else [],
                     list(system_dirs) if system_dirs is not None else
                     system_search_path(closure.interpreter_source, abi), main_node)
    queue = deque(_load_roots(root_objs, main_node, loaded))
    loaded_files = set(loaded.values())
    while queue:  # breadth first, as ld.so loads
        node = queue.popleft()
        for name in node.obj.needed:
            if name in loaded:
                continue
            path, cobj, plat = search.find(name, node)
            if plat is not None:
                closure.warnings.append(_platform_warning(name, node, path, plat, search.tokens.platforms[0]))
            real = os.path.realpath(path)
            closure.libraries[name] = real
            closure.needed_by[name] = node.obj.path
            loaded[name] = real
            if cobj.soname:
                loaded.setdefault(cobj.soname, real)
            # ld.so compares the file identity too (_dl_file_id_match_p): the same file
            # reached under another name is the object already loaded, not a new one.
            if real in loaded_files:
                continue
            loaded_files.add(real)
            queue.append(_Node(cobj, os.path.dirname(path), node))
    return closure


def _load_roots(root_objs: list[ElfObject], main_node: _Node | None, loaded: dict[str, str]) -> list[_Node]:
    """The roots as ld.so starts from them (the main program's is `main_node`), each one
    recorded in `loaded` under its path and soname."""
    nodes = []
    for o in root_objs:
        # A program's $ORIGIN comes from /proc/self/exe (resolved); a dlopen()ed object's
        # from the path it was opened by.
        origin = os.path.dirname(os.path.realpath(o.path)) if o.interp else os.path.dirname(o.path)
        nodes.append(main_node if (main_node is not None and main_node.obj.path == o.path) else _Node(o, origin, None))
        real = os.path.realpath(o.path)
        loaded.setdefault(o.path, real)
        if o.soname:
            loaded.setdefault(o.soname, real)
    return nodes


def _platform_warning(name: str, node: _Node, path: str, plat: str, baseline: str) -> str:
    return (f"{name} (needed by {node.obj.path}) was found only in {posixpath.dirname(path)}, "
            f"a directory for CPUs whose loader expands $PLATFORM to {plat!r}; it is packed, "
            f"but the image may not run on other CPUs (none of the directories a "
            f"{baseline} CPU's loader searches has it)")


def _load_interpreter(closure: ElfClosure, root_objs: list[ElfObject]) -> dict[str, str]:
    """Set the closure's loader, the one PT_INTERP of the roots; returns the names a NEEDED
    entry matches it by (its path, file name and soname) -> its host file."""
    interps = sorted({o.interp for o in root_objs if o.interp})
    if len(interps) > 1:
        raise ElfError(f"programs use different dynamic loaders: {', '.join(interps)}")
    if not interps:
        return {}
    interp = closure.interpreter = interps[0]
    if not os.path.exists(interp):
        who = next(o.path for o in root_objs if o.interp == interp)
        raise ElfError(f"dynamic loader {interp} (needed by {who}) does not exist on this host")
    source = closure.interpreter_source = os.path.realpath(interp)
    loaded = {interp: source, posixpath.basename(interp): source}
    soname = read_elf(source).soname
    if soname:
        loaded[soname] = source
    return loaded


@dataclass
class _Search:
    """Where ld.so looks for a NEEDED name, for one closure."""

    abi: Abi
    tokens: Tokens
    conf_dirs: list[str]  # /etc/ld.so.conf's
    sys_dirs: list[str]  # the loader's own
    main_node: _Node | None

    def find(self, name: str, node: _Node) -> tuple[str, ElfObject, str | None]:
        """(path, its headers, the $PLATFORM name only it was found with, else None) of the
        first candidate for `name` that is an ELF object of the closure's ABI."""
        if "/" in name:
            candidates = ldso.expand(name, node.origin, self.tokens)
            if not candidates or not all(p.startswith("/") for p, _ in candidates):
                raise ElfError(f"{name} (needed by {node.obj.path}) is a relative or "
                               f"unexpandable path; ld.so would depend on the working directory")
        else:
            candidates = [(d.rstrip("/") + "/" + name, plat) for d, plat in self.dirs(node)]
        tried: list[str] = []
        for cand, plat in candidates:
            tried.append(cand if "/" in name else posixpath.dirname(cand))
            cobj = self._accept(cand)
            if cobj is not None:
                return cand, cobj, plat
        raise ElfError(f"{name} (needed by {node.obj.path}) not found in: "
                       f"{', '.join(tried) or '(no directories)'}")

    def _accept(self, candidate: str) -> ElfObject | None:
        # ld.so skips a file of another class or machine and keeps searching
        if not os.path.isfile(candidate) or not is_elf_file(candidate):
            return None
        try:
            cobj = read_elf(candidate)
        except ElfError:
            return None
        return cobj if cobj.abi() == self.abi else None

    def dirs(self, node: _Node) -> list[tuple[str, str | None]]:
        """The directories ld.so searches for a NEEDED name of `node`, as (dir, platform):
        those of a baseline CPU's loader first, in ld.so's order (platform None), then those
        only a CPU-specific $PLATFORM reaches (ldso.py)."""
        dirs: list[tuple[str, str | None]] = []

        def add(paths: tuple[str, ...], n: _Node) -> None:
            for p in paths:
                dirs.extend(ldso.expand(p, n.origin, self.tokens))

        obj = node.obj
        if not obj.runpath:
            did_main = False
            n: _Node | None = node
            while n is not None:
                add(n.obj.rpath, n)
                did_main |= self.main_node is not None and n.obj.path == self.main_node.obj.path
                n = n.loader
            if self.main_node is not None and not did_main:
                add(self.main_node.obj.rpath, self.main_node)
        add(obj.runpath, node)
        if not obj.nodeflib:
            dirs += [(d, None) for d in self.conf_dirs]
            dirs += [(d, None) for d in self.sys_dirs]
        # Relative entries would depend on the working directory of the running program.
        baseline: list[str] = []
        specific: list[tuple[str, str]] = []
        for d, plat in dirs:
            if not d.startswith("/"):
                continue
            if plat is None:
                if d not in baseline:
                    baseline.append(d)
            elif all(d != s for s, _ in specific):
                specific.append((d, plat))
        return [(d, None) for d in baseline] + [(d, p) for d, p in specific if d not in baseline]


# ---------------------------------------------------------------------------------------
# Placement in an image


def default_libdir(interp: str | None, obj_abi: Abi | None = None) -> str:
    """The flat in-image library directory: /usr/lib when the loader searches it by itself,
    else the first /usr/... system directory of that loader."""
    if obj_abi is None:
        obj_abi = read_elf(interp).abi() if interp else (64, True, "EM_X86_64")
    dirs = system_search_path(interp, obj_abi)
    if "/usr/lib" in dirs or not dirs:
        return "/usr/lib"
    for d in dirs:
        if d.startswith("/usr/"):
            return d
    return dirs[0]


def _resolve_in_image(image: Image, path: str) -> str:
    """Follow symlinked parent directories inside the image (e.g. /lib64 -> usr/lib64)."""
    names = [p for p in path.split("/") if p]
    cur = "/"
    for i, name in enumerate(names):
        nxt = posixpath.join(cur, name)
        e = image.get(nxt)
        hops = 0
        while e is not None and e.kind == "symlink" and i < len(names) - 1:
            hops += 1
            if hops > 40:
                raise ImageError(f"{path}: too many symlink levels in the image")
            target = e.target
            nxt = posixpath.normpath(target if target.startswith("/") else posixpath.join(cur, target))
            e = image.get(nxt)
        cur = nxt
    return cur


def add_elf_file(image: Image, path: str, source: str, *, part: str, mode: int | None = None) -> None:
    """Add one ELF program or shared library, marked `strippable` (mkinitramfs.strip),
    refusing silent replacement of a different file at the same path."""
    path = _resolve_in_image(image, path)
    old = image.get(path)
    if old is not None and old.kind == "file":
        if old.source == source and old.data is None:
            return
        raise ElfError(f"{path}: the image already holds a different file "
                       f"({old.source or 'in-memory data'}), not adding {source}")
    if mode is None:
        mode = os.stat(source).st_mode & 0o7777
    image.add_file(path, source=source, mode=mode, part=part).strippable = True


def add_closure(image: Image, binaries: Iterable[str], part: str = parts.LIBRARIES, *,
                main: str | None = None) -> ElfClosure:
    """Resolve `binaries` (`main`: see resolve) and add their loader and libraries, not the
    binaries themselves.

    The loader goes at its PT_INTERP path, each library at `<default_libdir()>/<NEEDED
    name>` (/usr/lib on Debian; a NEEDED path containing '/' at that path). When one host
    file is needed under two names, the second is a symlink to the first. The closure's
    warnings (a library only for some CPUs) go to `image.warnings` too.
    """
    closure = resolve(binaries, main=main)
    for w in closure.warnings:
        image.warn(w)
    abi = read_elf(closure.roots[0]).abi() if closure.roots else None
    libdir = default_libdir(closure.interpreter_source, abi)
    if closure.interpreter and closure.interpreter_source:
        add_elf_file(image, closure.interpreter, closure.interpreter_source, part=part, mode=0o755)
    placed: dict[str, str] = {}  # host file -> in-image path
    for name in sorted(closure.libraries):
        src = closure.libraries[name]
        dest = name if "/" in name else posixpath.join(libdir, name)
        if src in placed and placed[src] != dest:
            if image.get(dest) is None:
                rel = posixpath.relpath(placed[src], posixpath.dirname(dest))
                image.add_symlink(dest, rel, part=part)
            continue
        add_elf_file(image, dest, src, part=part)
        placed[src] = dest
    return closure
