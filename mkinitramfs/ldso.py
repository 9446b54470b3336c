"""What a glibc dynamic loader substitutes and searches by itself, for the resolution in
elf.py: its system directories, /etc/ld.so.conf, $LIB, and every value $PLATFORM can take.

System directories: those compiled into the loader, read from `<PT_INTERP> --help` (glibc >=
2.33 prints them) when that loader runs on this host; else derived from the ELF machine:
/lib/<multiarch>, /usr/lib/<multiarch>, /lib64, /usr/lib64 (64-bit only), /lib, /usr/lib.
/etc/ld.so.conf's directories (with `include` globs) are what ld.so.cache holds.

$LIB is what the target's loader substitutes (its DL_DST_LIB, fixed when glibc was built), never
a guess from the build host's directories. `facts` asks the loader itself:
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
"""
from __future__ import annotations

import functools
import glob
import os
import posixpath
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

# An ELF object's ABI as the loader checks it: (ELF class 32 or 64, little endian, e_machine
# as pyelftools names it, e.g. "EM_X86_64").
Abi = tuple[int, bool, str]

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
        for raw in lines:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            if words[0] == "include":
                for pattern in words[1:]:
                    where = pattern if pattern.startswith("/") else os.path.join(os.path.dirname(path), pattern)
                    for inc in sorted(glob.glob(where)):
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

def _multiarch(obj_abi: Abi) -> str | None:
    elfclass, _le, machine = obj_abi
    entry = _MACHINES.get(machine)
    if entry is None:
        return None
    return entry[0].get(elfclass)


def platform_candidates(obj_abi: Abi) -> tuple[str, ...]:
    """Every name the machine's loader can substitute for $PLATFORM, whatever the CPU, the
    baseline (the name of a CPU with no extension glibc looks for) first. Empty for a machine
    this table does not know: ld.so drops a path element whose token has no value."""
    entry = _MACHINES.get(obj_abi[2])
    return entry[1] if entry is not None else ()


def derived_system_dirs(obj_abi: Abi) -> list[str]:
    dirs = []
    triplet = _multiarch(obj_abi)
    if triplet:
        dirs += [f"/lib/{triplet}", f"/usr/lib/{triplet}"]
    if obj_abi[0] == 64:
        dirs += ["/lib64", "/usr/lib64"]
    dirs += ["/lib", "/usr/lib"]
    return dirs


def dst_lib_from_dirs(dirs: Sequence[str], obj_abi: Abi) -> str:
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


def run_loader(interp: str, option: str) -> str | None:
    """The loader's output for `--help` or `--list-diagnostics`, or None when it fails."""
    try:
        proc = subprocess.run([interp, option], check=False, capture_output=True, text=True, timeout=_LOADER_TIMEOUT,
                              env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


_DIAG_LINE = re.compile(r'^(dl_dst_lib|dl_platform|path\.system_dirs\[0x[0-9a-f]+\])="(.*)"$')


def parse_diagnostics(text: str) -> tuple[list[str], str | None, str | None]:
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


def parse_help_dirs(text: str) -> list[str]:
    """System directories from `ld.so --help` (glibc >= 2.33)."""
    dirs = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith("(system search path)"):
            dirs.append(line.rsplit(" (", 1)[0].strip())
    return dirs


def loader_file_dirs(interp: str, obj_abi: Abi) -> list[str] | None:
    """The derived directories whose "DIR/\\0" string the loader file holds (glibc keeps its
    SYSTEM_DIRS as such strings), for a loader that cannot run here; None when unreadable."""
    try:
        with open(interp, "rb") as f:
            data = f.read(_LOADER_MAX_BYTES)
    except OSError:
        return None
    derived = derived_system_dirs(obj_abi)
    found = [d for d in derived if (d + "/\0").encode() in data]
    return found or derived


@functools.lru_cache(maxsize=16)
def facts(interp: str, obj_abi: Abi, runnable: bool) -> LoaderFacts:
    """What the loader `interp` (a host file, "" for none) substitutes and searches: asked of
    the loader itself when it is `runnable` (of the objects' ABI, and it runs here), else
    read from the file, else derived from the ELF machine. Cached: a build asks once."""
    if runnable and os.access(interp, os.X_OK):
        text = run_loader(interp, "--list-diagnostics")
        if text:
            dirs, dst_lib, plat = parse_diagnostics(text)
            if dirs and dst_lib:
                return LoaderFacts(tuple(dirs), dst_lib, plat, "list-diagnostics")
        text = run_loader(interp, "--help")
        dirs = parse_help_dirs(text) if text else []
        if dirs:
            return LoaderFacts(tuple(dirs), dst_lib_from_dirs(dirs, obj_abi), None, "help")
    in_file = loader_file_dirs(interp, obj_abi) if interp else None
    if in_file:
        return LoaderFacts(tuple(in_file), dst_lib_from_dirs(in_file, obj_abi), None, "loader file")
    derived = derived_system_dirs(obj_abi)
    return LoaderFacts(tuple(derived), dst_lib_from_dirs(derived, obj_abi), None, "ELF machine")


@dataclass(frozen=True)
class Tokens:
    """What the target's loader substitutes: $LIB, and every $PLATFORM name (baseline first)."""

    lib: str
    platforms: tuple[str, ...]

_TOKEN_NAMES = ("ORIGIN", "LIB", "PLATFORM")


def expand(path: str, origin: str, tokens: Tokens) -> list[tuple[str, str | None]]:
    """Every expansion of $ORIGIN/$LIB/$PLATFORM (both spellings) in `path`, as
    (path, platform): platform is None for the baseline expansion (or when there is no
    $PLATFORM), else the CPU-specific name used. The baseline comes first. Empty when an
    unknown token remains or $PLATFORM has no value: ld.so drops such a path element."""
    if "$" not in path:
        return [(path, None)]
    parts: list[str | None] = []  # literal text, or None where $PLATFORM goes
    i = 0
    literal: list[str] = []
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
        return [("".join(p or "" for p in parts), None)]
    if not tokens.platforms:
        return []
    return [("".join(plat if p is None else p for p in parts), None if n == 0 else plat)
            for n, plat in enumerate(tokens.platforms)]
