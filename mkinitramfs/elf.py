"""Shared-library closure of ELF programs, read from their headers with pyelftools.

This does what glibc's ld.so does when it starts a program, without running anything:

    closure = resolve(["/usr/bin/python3.11", ".../_cffi_backend.cpython-311-x86_64-linux-gnu.so"])
    closure.interpreter   -> "/lib64/ld-linux-x86-64.so.2"          (PT_INTERP, as written)
    closure.libraries     -> {"libc.so.6": "/usr/lib/x86_64-linux-gnu/libc.so.6", ...}
    closure.needed_by     -> {"libc.so.6": "/usr/bin/python3.11", ...}
    add_closure(image, [...], part="libraries")   puts them into an `Image`

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
6. The system directories compiled into the loader (unless DF_1_NODEFLIB). They are read from
   `<PT_INTERP> --help` (glibc >= 2.33 prints them) when that loader runs on this host; else
   derived from the ELF machine: /lib/<multiarch>, /usr/lib/<multiarch>, /lib64, /usr/lib64
   (64-bit only), /lib, /usr/lib.

A candidate is accepted only if it is an ELF file of the loader's class, byte order and
e_machine, as ld.so skips a wrong-class libfoo.so.1 and keeps searching.

Dynamic string tokens: $ORIGIN / ${ORIGIN} is the directory of the object carrying the path.
Like ld.so (checked with LD_DEBUG=libs), that is the directory of the *path the object was
found at* (symbolic links in it not resolved) for libraries and dlopen'ed roots, and the
directory of the realpath for a main program (ld.so takes it from /proc/self/exe, which the
kernel resolves).

$LIB is what the target's loader substitutes (its DL_DST_LIB, fixed when glibc was built), never
a guess from the build host's directories. `loader_facts` asks the loader itself:
`<PT_INTERP> --list-diagnostics` prints `dl_dst_lib` (glibc >= 2.33; "lib/x86_64-linux-gnu" on
Debian 12, "lib64" on Fedora); else its first system directory from `--help` gives it
(upstream glibc: the last component of slibdir, "lib64" or "lib"; Debian's multiarch:
"lib/<triplet>"). A loader that cannot run here (another architecture) is read as a file: the
system directories compiled into it are the derived ones whose "DIR/\0" string it contains.

$PLATFORM is AT_PLATFORM as the loader leaves it, which depends on the CPU the image boots on,
not on the build host. glibc's init_cpu_features (sysdeps/x86/cpu-features.c, the same rule
in its sources from 2021 to 2025; Debian 12's 2.36 ld.so holds both names and prints
dl_platform="haswell" with --list-diagnostics on an AVX-512 Xeon) replaces the kernel's
"x86_64" by "xeon_phi" on Intel CPUs with AVX512CD, AVX512ER and AVX512PF usable, else by
"haswell" on Intel CPUs with AVX2, FMA, BMI1, BMI2, LZCNT, MOVBE and POPCNT usable, and keeps
"x86_64" on every other CPU (AMD, Zhaoxin, older Intel); x32 runs the same code. On i386 it
sets "i686" (CMOV) or "i586" (CX8), else keeps the kernel's "i386"/"i486". Other machines keep
the kernel's name ("aarch64", ...).

An image is built for ANY CPU of its architecture, so the resolver considers every name
(`platform_candidates`), baseline first ("x86_64", "i386"): the library packed is the one a
loader on a baseline CPU would load, because a library built for the baseline runs on every
CPU. Directories that only a CPU-specific name reaches ("haswell", "xeon_phi", "i686") are
searched after every other directory; a library found only there is packed (flat, as every
library), and the closure carries a warning naming it: the image may not run on other CPUs.
(In the image every library lies in one flat directory, so the in-image loader finds the
packed one whatever CPU it runs on.)

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

Every ELF file added here is marked `strippable`; mkinitramfs.strip decides what strip removes
(`strip=True` strips right away). Files can also be rewritten by any
`transform(host_path) -> bytes`; content never depends on time or order.
"""
from __future__ import annotations

import functools
import glob
import os
import posixpath
import re
import struct
import subprocess
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from elftools.common.exceptions import ELFError as _PyElfError
from elftools.elf.elffile import ELFFile

from mkinitramfs import parts
from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.image import Image, ImageError

__all__ = [
    "ElfError",
    "ElfObject",
    "ElfClosure",
    "read_elf",
    "resolve",
    "add_closure",
    "strip_unneeded",
    "system_search_path",
    "default_libdir",
    "ld_so_conf_dirs",
    "platform_candidates",
    "LoaderFacts",
    "loader_facts",
]

DF_1_NODEFLIB = 0x800

# e_machine -> (Debian multiarch triplet for 64-bit/32-bit class, every name the loader can
# give $PLATFORM on a CPU of that machine, the baseline first; see the module docstring).
_MACHINES: dict[str, tuple[dict[int, str], tuple[str, ...]]] = {
    "EM_X86_64": ({64: "x86_64-linux-gnu", 32: "x86_64-linux-gnux32"}, ("x86_64", "haswell", "xeon_phi")),
    "EM_386": ({32: "i386-linux-gnu"}, ("i386", "i486", "i586", "i686")),
    "EM_AARCH64": ({64: "aarch64-linux-gnu"}, ("aarch64",)),
    "EM_ARM": ({32: "arm-linux-gnueabihf"}, ("v7l",)),
    "EM_RISCV": ({64: "riscv64-linux-gnu"}, ("riscv64",)),
    "EM_PPC64": ({64: "powerpc64le-linux-gnu"}, ("ppc64le",)),
    "EM_S390": ({64: "s390x-linux-gnu"}, ("s390x",)),
    "EM_LOONGARCH": ({64: "loongarch64-linux-gnu"}, ("loongarch64",)),
    "EM_MIPS": ({64: "mips64el-linux-gnuabi64", 32: "mipsel-linux-gnu"}, ("mips",)),
}


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
    dynamic: bool  # has PT_DYNAMIC

    def abi(self) -> tuple[int, bool, str]:
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


def parse_elf(f, path: str) -> ElfObject:
    """Parse the loader-relevant headers from a binary file object (a host file, or the
    bytes of a file inside an image for `verify`); `path` names it in errors."""
    try:
        if f.read(4) != b"\x7fELF":
            raise ElfError(f"{path}: not an ELF file")
        f.seek(0)
        elf = ELFFile(f)
        interp = None
        needed: list[str] = []
        rpath: list[str] = []
        runpath: list[str] = []
        soname = None
        flags_1 = 0
        dynamic = False
        for seg in elf.iter_segments():
            ptype = seg["p_type"]
            if ptype == "PT_INTERP":
                interp = seg.get_interp_name()
            elif ptype == "PT_DYNAMIC":
                dynamic = True
                # The segment, not the .dynamic section: stripped files may have no
                # section headers, and ld.so only reads program headers anyway.
                for tag in seg.iter_tags():
                    t = tag.entry.d_tag
                    if t == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif t == "DT_RPATH":
                        rpath.extend(_split_path_list(tag.rpath))
                    elif t == "DT_RUNPATH":
                        runpath.extend(_split_path_list(tag.runpath))
                    elif t == "DT_SONAME":
                        soname = tag.soname
                    elif t == "DT_FLAGS_1":
                        flags_1 = tag.entry.d_val
        return ElfObject(
            path=path,
            elfclass=elf.elfclass,
            little_endian=elf.little_endian,
            machine=elf["e_machine"],
            etype=elf["e_type"],
            interp=interp,
            needed=tuple(needed),
            rpath=tuple(rpath),
            runpath=tuple(runpath),
            soname=soname,
            nodeflib=bool(flags_1 & DF_1_NODEFLIB),
            dynamic=dynamic,
        )
    except ElfError:
        raise
    except (_PyElfError, ValueError, KeyError, UnicodeDecodeError, struct.error, EOFError, OverflowError,
            IndexError, TypeError, AttributeError, AssertionError, MemoryError) as e:
        # pyelftools raises all of these on damaged headers (found by fuzzing `verify`)
        raise ElfError(f"{path}: bad ELF file: {type(e).__name__}: {e}") from None


def read_elf(path: str) -> ElfObject:
    """Parse the loader-relevant headers of `path` (cached per file identity)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ElfError(f"{path}: cannot read: {e.strerror}") from None
    obj = _read_elf_cached(path, st.st_mtime_ns, st.st_size)
    return obj


def is_elf_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Search directories


def ld_so_conf_dirs(conf: str = "/etc/ld.so.conf") -> list[str]:
    """Directories listed in ld.so.conf, following `include` globs (sorted, as ldconfig does).

    Missing files give no directories. `hwcap` lines (old glibc) are ignored.
    """
    out: list[str] = []
    seen_files: set[str] = set()

    def parse(path: str) -> None:
        real = os.path.realpath(path)
        if real in seen_files:
            return
        seen_files.add(real)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            if words[0] == "include":
                for pattern in words[1:]:
                    if not pattern.startswith("/"):
                        pattern = os.path.join(os.path.dirname(path), pattern)
                    for inc in sorted(glob.glob(pattern)):
                        parse(inc)
                continue
            if words[0] == "hwcap":
                continue
            for item in line.replace(",", " ").replace(":", " ").split():
                # Old syntax "dir=TYPE" names a library type; the directory is before '='.
                d = item.split("=", 1)[0].rstrip("/") or "/"
                if d.startswith("/") and d not in out:
                    out.append(d)

    parse(conf)
    return out


def _multiarch(obj_abi: tuple[int, bool, str]) -> str | None:
    elfclass, _le, machine = obj_abi
    entry = _MACHINES.get(machine)
    if entry is None:
        return None
    return entry[0].get(elfclass)


def platform_candidates(obj_abi: tuple[int, bool, str]) -> tuple[str, ...]:
    """Every name the machine's loader can substitute for $PLATFORM, whatever the CPU, the
    baseline (the name of a CPU with no extension glibc looks for) first. Empty for a machine
    this table does not know: ld.so drops a path element whose token has no value."""
    entry = _MACHINES.get(obj_abi[2])
    return entry[1] if entry is not None else ()


def _derived_system_dirs(obj_abi: tuple[int, bool, str]) -> list[str]:
    dirs = []
    triplet = _multiarch(obj_abi)
    if triplet:
        dirs += [f"/lib/{triplet}", f"/usr/lib/{triplet}"]
    if obj_abi[0] == 64:
        dirs += ["/lib64", "/usr/lib64"]
    dirs += ["/lib", "/usr/lib"]
    return dirs


def _dst_lib_from_dirs(dirs: Sequence[str], obj_abi: tuple[int, bool, str]) -> str:
    """$LIB from a loader's system directories, the first of which is glibc's slibdir:
    upstream substitutes its last component ("lib64", "lib"), Debian's multiarch glibc
    "lib/<triplet>"."""
    if not dirs:
        return "lib64" if obj_abi[0] == 64 else "lib"
    first = dirs[0].rstrip("/")
    triplet = _multiarch(obj_abi)
    if triplet and first.endswith(f"/lib/{triplet}"):
        return f"lib/{triplet}"
    return posixpath.basename(first) or "lib"


@dataclass(frozen=True)
class LoaderFacts:
    """What a dynamic loader substitutes and searches by itself.

    system_dirs: its built-in directories, in order; dst_lib: its $LIB; platform: its
    $PLATFORM on THIS machine (None when it cannot run here): shown in messages and tests,
    never used to resolve, since an image boots on other CPUs; source: where this came from.
    """

    system_dirs: tuple[str, ...]
    dst_lib: str
    platform: str | None
    source: str


_LOADER_TIMEOUT = 20  # seconds; ld.so answers in milliseconds
_LOADER_MAX_BYTES = 64 << 20  # a loader is ~0.2 MiB; more is not a loader


def _run_loader(interp: str, option: str) -> str | None:
    try:
        proc = subprocess.run([interp, option], capture_output=True, text=True, timeout=_LOADER_TIMEOUT,
                              env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


_DIAG_LINE = re.compile(r'^(dl_dst_lib|dl_platform|path\.system_dirs\[0x[0-9a-f]+\])="(.*)"$')


def _parse_diagnostics(text: str) -> tuple[list[str], str | None, str | None]:
    """(system dirs, dl_dst_lib, dl_platform) from `ld.so --list-diagnostics`."""
    dirs: list[str] = []
    dst_lib = plat = None
    for line in text.splitlines():
        m = _DIAG_LINE.match(line.strip())
        if not m:
            continue
        key, value = m.groups()
        if key == "dl_dst_lib":
            dst_lib = value
        elif key == "dl_platform":
            plat = value
        else:
            dirs.append(value.rstrip("/") or "/")
    return dirs, dst_lib, plat


def _parse_help_dirs(text: str) -> list[str]:
    """System directories from `ld.so --help` (glibc >= 2.33)."""
    dirs = []
    for line in text.splitlines():
        line = line.strip()
        if line.endswith("(system search path)"):
            dirs.append(line.rsplit(" (", 1)[0].strip())
    return dirs


def _loader_file_dirs(interp: str, obj_abi: tuple[int, bool, str]) -> list[str] | None:
    """The derived directories whose "DIR/\\0" string the loader file holds (glibc keeps its
    SYSTEM_DIRS as such strings), for a loader that cannot run here; None when unreadable."""
    try:
        with open(interp, "rb") as f:
            data = f.read(_LOADER_MAX_BYTES)
    except OSError:
        return None
    derived = _derived_system_dirs(obj_abi)
    found = [d for d in derived if (d + "/\0").encode() in data]
    return found or derived


@functools.lru_cache(maxsize=16)
def _loader_facts_cached(interp: str, obj_abi: tuple[int, bool, str], runnable: bool) -> LoaderFacts:
    if runnable and os.access(interp, os.X_OK):
        text = _run_loader(interp, "--list-diagnostics")
        if text:
            dirs, dst_lib, plat = _parse_diagnostics(text)
            if dirs and dst_lib:
                return LoaderFacts(tuple(dirs), dst_lib, plat, "list-diagnostics")
        text = _run_loader(interp, "--help")
        dirs = _parse_help_dirs(text) if text else []
        if dirs:
            return LoaderFacts(tuple(dirs), _dst_lib_from_dirs(dirs, obj_abi), None, "help")
    dirs = _loader_file_dirs(interp, obj_abi) if interp else None
    if dirs:
        return LoaderFacts(tuple(dirs), _dst_lib_from_dirs(dirs, obj_abi), None, "loader file")
    dirs = _derived_system_dirs(obj_abi)
    return LoaderFacts(tuple(dirs), _dst_lib_from_dirs(dirs, obj_abi), None, "ELF machine")


def loader_facts(interp: str | None, obj_abi: tuple[int, bool, str]) -> LoaderFacts:
    """Ask the loader `interp` (a host file) about itself when it is of `obj_abi` and runs
    here; else read it as a file; else derive from the ELF machine (module docstring)."""
    if not interp:
        return _loader_facts_cached("", obj_abi, False)
    try:
        runnable = read_elf(interp).abi() == obj_abi
    except ElfError:
        runnable = False
    return _loader_facts_cached(interp, obj_abi, runnable)


def system_search_path(interp: str | None, obj_abi: tuple[int, bool, str]) -> list[str]:
    """The loader's built-in directories (see `loader_facts`)."""
    return list(loader_facts(interp, obj_abi).system_dirs)


def default_libdir(interp: str | None, obj_abi: tuple[int, bool, str] | None = None) -> str:
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

    def files(self) -> list[str]:
        """Every host file in the closure, interpreter first, without duplicates."""
        out = []
        if self.interpreter_source:
            out.append(self.interpreter_source)
        for p in self.libraries.values():
            if p not in out:
                out.append(p)
        return out


@dataclass
class _Node:
    obj: ElfObject
    loaded_as: str  # the path ld.so would record for it (not realpath'ed)
    origin: str  # $ORIGIN for paths carried by this object
    loader: "_Node | None"


@dataclass(frozen=True)
class Tokens:
    """What the target's loader substitutes: $LIB, and every $PLATFORM name (baseline first)."""

    lib: str
    platforms: tuple[str, ...]


def tokens_for(interp: str | None, abi: tuple[int, bool, str]) -> Tokens:
    return Tokens(loader_facts(interp, abi).dst_lib, platform_candidates(abi))


_TOKEN_NAMES = ("ORIGIN", "LIB", "PLATFORM")


def _expand(path: str, origin: str, tokens: Tokens) -> list[tuple[str, str | None]]:
    """Every expansion of $ORIGIN/$LIB/$PLATFORM (both spellings) in `path`, as
    (path, platform): platform is None for the baseline expansion (or when there is no
    $PLATFORM), else the CPU-specific name used. The baseline comes first. Empty when an
    unknown token remains or $PLATFORM has no value: ld.so drops such a path element."""
    if "$" not in path:
        return [(path, None)]
    parts: list[str | None] = []  # literal text, or None where $PLATFORM goes
    i = 0
    literal = []
    while i < len(path):
        c = path[i]
        if c != "$":
            literal.append(c)
            i += 1
            continue
        for name in _TOKEN_NAMES:
            if path.startswith("${" + name + "}", i):
                end = i + len(name) + 3
                break
            if path.startswith("$" + name, i):
                end = i + 1 + len(name)
                # "$ORIGINX" is not the token $ORIGIN followed by X: ld.so requires the
                # token to end at a non-identifier character.
                if end < len(path) and (path[end].isalnum() or path[end] == "_"):
                    continue
                break
        else:
            return []  # ld.so ignores a path element with an unknown token
        if name == "PLATFORM":
            parts.append("".join(literal))
            literal = []
            parts.append(None)
        else:
            literal.append(origin if name == "ORIGIN" else tokens.lib)
        i = end
    parts.append("".join(literal))
    if None not in parts:
        return [("".join(parts), None)]
    if not tokens.platforms:
        return []
    out = []
    for n, plat in enumerate(tokens.platforms):
        out.append(("".join(plat if p is None else p for p in parts), None if n == 0 else plat))
    return out


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

    interps = sorted({o.interp for o in root_objs if o.interp})
    if len(interps) > 1:
        raise ElfError(f"programs use different dynamic loaders: {', '.join(interps)}")
    loaded: dict[str, str] = {}  # name or soname -> host path, for "already loaded" matching
    if interps:
        closure.interpreter = interps[0]
        if not os.path.exists(interps[0]):
            who = next(o.path for o in root_objs if o.interp == interps[0])
            raise ElfError(f"dynamic loader {interps[0]} (needed by {who}) does not exist on this host")
        closure.interpreter_source = os.path.realpath(interps[0])
        iobj = read_elf(closure.interpreter_source)
        loaded[interps[0]] = closure.interpreter_source
        loaded[posixpath.basename(interps[0])] = closure.interpreter_source
        if iobj.soname:
            loaded[iobj.soname] = closure.interpreter_source

    if main is None:
        main_obj = next((o for o in root_objs if o.interp), None)
    else:
        main_obj = read_elf(os.path.abspath(main))
    main_node = None
    if main_obj is not None:
        main_node = _Node(main_obj, main_obj.path, os.path.dirname(os.path.realpath(main_obj.path)), None)

    conf_dirs = ld_so_conf_dirs(ld_so_conf) if ld_so_conf else []
    tokens = tokens_for(closure.interpreter_source, abi)
    sys_dirs = list(system_dirs) if system_dirs is not None else \
        system_search_path(closure.interpreter_source, abi)

    queue: deque[_Node] = deque()
    loaded_files: set[str] = set(loaded.values())
    for o in root_objs:
        # A program's $ORIGIN comes from /proc/self/exe (resolved); a dlopen()ed object's
        # from the path it was opened by.
        origin = os.path.dirname(os.path.realpath(o.path)) if o.interp else os.path.dirname(o.path)
        node = main_node if (main_node is not None and main_node.obj.path == o.path) else \
            _Node(o, o.path, origin, None)
        queue.append(node)
        loaded.setdefault(o.path, os.path.realpath(o.path))
        loaded_files.add(os.path.realpath(o.path))
        if o.soname:
            loaded.setdefault(o.soname, os.path.realpath(o.path))

    def accept(candidate: str) -> ElfObject | None:
        if not os.path.isfile(candidate) or not is_elf_file(candidate):
            return None
        try:
            cobj = read_elf(candidate)
        except ElfError:
            return None
        return cobj if cobj.abi() == abi else None

    while queue:
        node = queue.popleft()
        for name in node.obj.needed:
            if name in loaded:
                continue
            tried: list[str] = []
            found: tuple[str, ElfObject, str | None] | None = None
            if "/" in name:
                paths = _expand(name, node.origin, tokens)
                if not paths or not all(p.startswith("/") for p, _ in paths):
                    raise ElfError(f"{name} (needed by {node.obj.path}) is a relative or "
                                   f"unexpandable path; ld.so would depend on the working directory")
                candidates = paths
            else:
                candidates = [(d.rstrip("/") + "/" + name, plat)
                              for d, plat in _search_dirs(node, main_node, tokens, conf_dirs, sys_dirs)]
            for cand, plat in candidates:
                tried.append(cand if "/" in name else posixpath.dirname(cand))
                cobj = accept(cand)
                if cobj is not None:
                    found = (cand, cobj, plat)
                    break
            if found is None:
                raise ElfError(f"{name} (needed by {node.obj.path}) not found in: "
                               f"{', '.join(tried) or '(no directories)'}")
            path, cobj, plat = found
            if plat is not None:
                closure.warnings.append(
                    f"{name} (needed by {node.obj.path}) was found only in {posixpath.dirname(path)}, "
                    f"a directory for CPUs whose loader expands $PLATFORM to {plat!r}; it is packed, "
                    f"but the image may not run on other CPUs (none of the directories a "
                    f"{tokens.platforms[0]} CPU's loader searches has it)")
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
            queue.append(_Node(cobj, path, os.path.dirname(path), node))
    return closure


def _search_dirs(node: _Node, main_node: _Node | None, tokens: Tokens, conf_dirs,
                 sys_dirs) -> list[tuple[str, str | None]]:
    """The directories ld.so searches for a NEEDED name of `node`, as (dir, platform): those
    of a baseline CPU's loader first, in ld.so's order (platform None), then those only a
    CPU-specific $PLATFORM reaches (see the module docstring)."""
    dirs: list[tuple[str, str | None]] = []

    def add(paths: tuple[str, ...], n: _Node) -> None:
        for p in paths:
            dirs.extend(_expand(p, n.origin, tokens))

    obj = node.obj
    if not obj.runpath:
        did_main = False
        n: _Node | None = node
        while n is not None:
            add(n.obj.rpath, n)
            did_main |= main_node is not None and n.obj.path == main_node.obj.path
            n = n.loader
        if main_node is not None and not did_main:
            add(main_node.obj.rpath, main_node)
    add(obj.runpath, node)
    if not obj.nodeflib:
        dirs += [(d, None) for d in conf_dirs]
        dirs += [(d, None) for d in sys_dirs]
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
# Stripping and adding to an image


def strip_unneeded(path: str) -> bytes | None:
    """`strip --strip-unneeded` a copy of `path` (mkinitramfs.strip); the stripped bytes, or
    None when binutils' strip is not installed. The host file is never modified."""
    import tempfile

    from . import strip as _strip
    exe = _strip.find_strip()
    if exe is None:
        return None
    with tempfile.TemporaryDirectory(prefix="pyinit-strip-") as tmp:
        data, why = _strip.strip_bytes(exe, path, tmp)
    if data is None:
        raise ElfError(f"strip --strip-unneeded {path} failed: {why}")
    return data


def _resolve_in_image(image: Image, path: str) -> str:
    """Follow symlinked parent directories inside the image (e.g. /lib64 -> usr/lib64)."""
    parts = [p for p in path.split("/") if p]
    cur = "/"
    for i, part in enumerate(parts):
        nxt = posixpath.join(cur, part)
        e = image.get(nxt)
        hops = 0
        while e is not None and e.kind == "symlink" and i < len(parts) - 1:
            hops += 1
            if hops > 40:
                raise ImageError(f"{path}: too many symlink levels in the image")
            target = e.target
            nxt = posixpath.normpath(target if target.startswith("/") else posixpath.join(cur, target))
            e = image.get(nxt)
        cur = nxt
    return cur


def add_elf_file(image: Image, path: str, source: str, *, part: str, mode: int | None = None,
                 transform: Callable[[str], bytes | None] | None = None) -> None:
    """Add one ELF program or shared library, marked `strippable` (mkinitramfs.strip), optionally
    transformed, refusing silent replacement of a different file at the same path."""
    path = _resolve_in_image(image, path)
    data = transform(source) if transform is not None else None
    old = image.get(path)
    if old is not None and old.kind == "file":
        same = (old.source == source and old.data is None and data is None) or \
               (data is not None and old.data == data)
        if same:
            return
        raise ElfError(f"{path}: the image already holds a different file "
                       f"({old.source or 'in-memory data'}), not adding {source}")
    if mode is None:
        mode = os.stat(source).st_mode & 0o7777
    if data is not None:
        entry = image.add_file(path, data=data, mode=mode, part=part)
    else:
        entry = image.add_file(path, source=source, mode=mode, part=part)
    entry.strippable = True


def add_closure(image: Image, binaries: Iterable[str], part: str = parts.LIBRARIES, *,
                strip: bool = False, transform: Callable[[str], bytes | None] | None = None,
                libdir: str | None = None, main: str | None = None,
                ld_so_conf: str | None = "/etc/ld.so.conf") -> ElfClosure:
    """Resolve `binaries` and add their loader and libraries (not the binaries themselves).

    The loader goes at its PT_INTERP path, each library at `<libdir>/<NEEDED name>` (a
    NEEDED path containing '/' at that path). libdir defaults to `default_libdir()`, /usr/lib
    on Debian. When one host file is needed under two names, the second is a symlink to the
    first. strip=True strips what is strippable in the image now (mkinitramfs.strip; the
    builder strips once, after everything is added); `transform(host_path) -> bytes | None`
    is the general hook (None: copy as is). The closure's warnings (a library only for some
    CPUs) go to `image.warnings` too.
    """
    closure = resolve(binaries, main=main, ld_so_conf=ld_so_conf)
    for w in closure.warnings:
        image.warn(w)
    if libdir is None:
        abi = read_elf(closure.roots[0]).abi() if closure.roots else None
        libdir = default_libdir(closure.interpreter_source, abi)
    if closure.interpreter:
        add_elf_file(image, closure.interpreter, closure.interpreter_source, part=part,
                     mode=0o755, transform=transform)
    placed: dict[str, str] = {}  # host file -> in-image path
    for name in sorted(closure.libraries):
        src = closure.libraries[name]
        dest = name if "/" in name else posixpath.join(libdir, name)
        if src in placed and placed[src] != dest:
            if image.get(dest) is None:
                rel = posixpath.relpath(placed[src], posixpath.dirname(dest))
                image.add_symlink(dest, rel, part=part)
            continue
        add_elf_file(image, dest, src, part=part, transform=transform)
        placed[src] = dest
    if strip:
        from . import strip as _strip
        _strip.strip_image(image)
    return closure
