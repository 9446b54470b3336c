"""Put a CPython interpreter, the part of its standard library a program needs, site packages
and pyinit itself into an `Image`.

API:

    interp = describe_interpreter("/path/to/python")        # run it, ask it about itself
    layout = add_python(image, "/path/to/python",
                        packages=["pyinit"],                 # whole packages to pack
                        package_dirs={"pyinit": "/work/main/pyinit"},   # or from its sys.path
                        extra_modules=["encodings.idna"],    # dynamic imports modulefinder misses
                        allow_missing=["pyroute2"],          # optional imports of the packages
                        follow_function_imports=True,        # False: much smaller, see add_python
                        optimize=2, strip=False)
    layout.executable        -> "/usr/bin/python3.11"       (plus symlink /usr/bin/python3)
    layout.stdlib_modules    -> sorted names of the standard-library modules packed
    layout.modules           -> name -> PackedModule(kind, source, path, part)

The target interpreter may differ from the one running the builder: everything about it is
learned by running it (`describe_interpreter`), the import closure is computed by
`modulefinder` running *inside* it (its own stdlib, its own builtin modules), and modules are
compiled by it (so the bytecode magic number matches), in subprocesses. Nothing is imported
from the target into the builder. A requested package that is neither in `package_dirs` nor
on the target's sys.path is taken from the builder's own import path (a source checkout).
An import inside a packed package that the target cannot satisfy is a build error unless
listed in `allow_missing`; the stdlib's imports of other platforms' modules are not.

Image layout, chosen so that CPython finds everything by its own start-up search, with no
environment variable and no site processing (pyinit runs as `python3.X -IS`):

    /usr/bin/python3.X                   the real ELF interpreter (a venv's base interpreter)
    /usr/bin/python3 -> python3.X
    /usr/lib/python3.X/os.pyc            pure modules, sourceless .pyc at their module paths
    /usr/lib/python3.X/encodings/__init__.pyc   (packages: <pkg>/__init__.pyc; no __pycache__)
    /usr/lib/python3.X/prctl.pyc         pure site packages and pyinit go next to the stdlib
    /usr/lib/python3.X/lib-dynload/      top-level extension modules, stdlib and site ones
    /usr/lib/python3.X/<pkg>/x*.so       extension modules that are submodules of a package
    /lib64/ld-linux-x86-64.so.2, /usr/lib/lib*.so*   the ELF closure (see mkinitramfs.elf)

Why this is found (checked against the getpath code of CPython 3.11, which is frozen into the
interpreter: Modules/getpath.py, disassembled from Debian's /usr/bin/python3.11):
executable_dir is the directory of realpath(argv[0]) = /usr/bin. There is no pyvenv.cfg,
no ._pth file, no pybuilddir.txt, so prefix is found by search_up(/usr/bin, ...) for the
file landmark `lib/python311.zip` first, then `lib/python3.11/os.py` or `lib/python3.11/os.pyc`
(isfile; STDLIB_LANDMARKS); exec_prefix by search_up for the *directory*
`lib/python3.11/lib-dynload` (isdir; PLATSTDLIB_LANDMARK). Both stop at /usr. So the image
always gets os.pyc and the lib-dynload directory, even when no extension module is packed
(Debian builds most of them into the binary). "lib" is sys.platlibdir, and 3.13+ appends
"t" to the directory for free-threaded builds; both are taken from the target. sys.path
inside the image is then ['/usr/lib/python311.zip', '/usr/lib/python3.11',
'/usr/lib/python3.11/lib-dynload'] (the zip need not exist).

Start-up modules: with -IS, CPython 3.11-3.13 import `encodings`, `encodings.aliases` and
the codec of the file-system/stdio encoding from the file system; abc, codecs, io, os, stat,
posixpath, runpy, importlib.util/machinery... are frozen into the binary
(`_imp._frozen_module_names()`), and many more are builtin on Debian
(`sys.builtin_module_names`: _signal, _socket, zlib, pyexpat, ...; pyenv builds keep those in
lib-dynload). In an initramfs there is no locale, so CPython runs in UTF-8 mode; we still
pack the ascii and latin-1 codecs (a few KB) and whatever `python -IS -c pass` imports on the
build host (3.13 adds linecache for -c). `python -m pkg` needs more: runpy is frozen but
imports the `importlib` package, which is not. Frozen modules are not packed (the interpreter
never reads their files; only `-X frozen_modules=off` would): 300 KB of .pyc for 3.11, about
110 KB of a zstd image. os.pyc is, being the prefix landmark.

Bytecode: compiled by the target with py_compile, invalidation mode UNCHECKED_HASH (no mtime
in the header, the source is never consulted), PYTHONHASHSEED=0 (set and frozenset constants
are marshalled in hash order), and co_filename set to the in-image .py path, so the output is
byte-for-byte reproducible and no host path leaks into tracebacks. `optimize` is the
py_compile level: 2 (default) drops asserts and docstrings. A sourceless .pyc found at the
module path is loaded by SourcelessFileLoader whatever the interpreter's -O level; only the
__pycache__ file *names* depend on -O (checked by a test: a module compiled with optimize=2
has no docstring under plain `python -IS`). Code that reads docstrings at run time (e.g.
ply grammars) needs optimize=0.

Not done here: data files inside packages (only .py and extension modules are packed),
namespace packages, `.pth` processing (there is no site), and imports hidden in C code other
than the few listed in HIDDEN_IMPORTS; name them in `extra_modules`.
"""
from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from . import elf
from .image import Image

__all__ = [
    "PythonError",
    "Interpreter",
    "PackedModule",
    "PythonLayout",
    "describe_interpreter",
    "find_modules",
    "compile_modules",
    "add_python",
    "STARTUP_MODULES",
    "DEFAULT_EXCLUDES",
]


class PythonError(Exception):
    """The target interpreter or a requested module cannot be used; the message says which."""


PythonPackError = PythonError  # the name mkinitramfs/__main__.py looks for


# Imported by CPython itself at start-up with -IS (not frozen, not builtin), plus the
# getpath landmark `os` and what `-m` needs. Completed at build time by what
# `python -IS -c pass` imports on the build host.
STARTUP_MODULES = (
    "encodings",
    "encodings.aliases",
    "encodings.utf_8",
    "encodings.ascii",
    "encodings.latin_1",
    "codecs",
    "io",
    "abc",
    "os",
    # `python -m pkg` runs runpy; runpy, importlib.util and importlib.machinery are frozen,
    # but the `importlib` package they import is not ("Could not import runpy module").
    "runpy",
)

# Never packed unless named explicitly (in packages or extra_modules): test suites, GUIs,
# installers, 2to3, pydoc's data. Names match a module and its submodules. Any module whose
# dotted name has a component in TEST_COMPONENTS is excluded too (ctypes.test, *.tests ...).
DEFAULT_EXCLUDES = (
    "test",
    "idlelib",
    "tkinter",
    "_tkinter",
    "turtle",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "pydoc",
    "venv",
    "__phello__",
    "__hello__",
    # cffi's build script for pyinit/_libc.py: build time only (it imports cffi, pycparser).
    "pyinit._libc_build",
    # pyinit-analyze runs on the full system, never in the initramfs (argparse, json, xml).
    "pyinit.analyze",
)
TEST_COMPONENTS = ("test", "tests", "idle_test")

# Modules that C extension modules import while they initialise (modulefinder cannot see
# into C). Only those that fail at import time are listed.
HIDDEN_IMPORTS = {
    "_pickle": ["copyreg", "_compat_pickle"],
    "_decimal": ["collections", "numbers", "contextvars"],
    "_elementtree": ["copy", "xml.etree.ElementPath"],
    "_datetime": ["time"],
}


# ---------------------------------------------------------------------------------------
# Running the target interpreter


def _clean_env() -> dict[str, str]:
    # A fixed environment: nothing from the caller's PYTHON* variables, a fixed hash seed
    # (marshal writes set/frozenset constants in iteration order), C.UTF-8 text.
    return {
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUTF8": "1",
    }


def _run(python: str, args: Sequence[str], script: str, payload: object | None = None,
         what: str = "") -> object:
    cmd = [python, *args, "-c", script]
    try:
        proc = subprocess.run(cmd, input=json.dumps(payload) if payload is not None else "",
                              capture_output=True, text=True, env=_clean_env(), timeout=600)
    except OSError as e:
        raise PythonError(f"cannot run {python}: {e.strerror}") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise PythonError(f"{python} failed while {what or 'running a helper'} "
                          f"(exit {proc.returncode}):\n{tail}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise PythonError(f"{python}: unexpected output while {what}: {proc.stdout[-500:]!r}") from None


_DESCRIBE = r"""
import sys, os, json, sysconfig, importlib.machinery, importlib.util
try:
    import _imp
    frozen = sorted(_imp._frozen_module_names())
except (ImportError, AttributeError):
    frozen = []
stdlib = getattr(sys, "_stdlib_dir", None) or sysconfig.get_path("stdlib")
dynload = next((p for p in sys.path if os.path.basename(p.rstrip("/")) == "lib-dynload"), None) \
    or sysconfig.get_config_var("DESTSHARED")
print(json.dumps({
    "executable": sys.executable,
    "base_executable": getattr(sys, "_base_executable", None) or sys.executable,
    "version": list(sys.version_info[:3]),
    "version_string": sys.version.split()[0],
    "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "platlibdir": getattr(sys, "platlibdir", "lib"),
    "stdlib_dir": stdlib,
    "dynload_dir": dynload,
    "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
    "extension_suffixes": list(importlib.machinery.EXTENSION_SUFFIXES),
    "path": [p for p in sys.path if p],
    "purelib": sysconfig.get_path("purelib"),
    "platlib": sysconfig.get_path("platlib"),
    "builtin_modules": sorted(sys.builtin_module_names),
    "frozen_modules": frozen,
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "cache_tag": sys.implementation.cache_tag,
}))
"""

_STARTUP = r"""
import sys
started = sorted(sys.modules)  # before json, which is only here to print the list
import json
print(json.dumps(started))
"""


@dataclass(frozen=True)
class Interpreter:
    """What a target interpreter told about itself, and where it goes in the image."""

    python: str  # as given (may be a venv's bin/python)
    executable: str  # host path of the real ELF interpreter (realpath of the base executable)
    version: tuple[int, int, int]
    abi_thread: str  # "t" for free-threaded builds, else ""
    prefix: str
    base_prefix: str
    platlibdir: str
    stdlib_dir: str
    dynload_dir: str
    ext_suffix: str
    extension_suffixes: tuple[str, ...]
    search_path: tuple[str, ...]  # sys.path with site (a venv's site-packages included)
    site_dirs: tuple[str, ...]  # search_path minus the stdlib, lib-dynload and zip entries
    builtin_modules: frozenset[str]
    frozen_modules: frozenset[str]
    startup_modules: tuple[str, ...]  # non-builtin modules loaded by `-IS -c pass`
    magic: str
    cache_tag: str
    shared_libpython: bool

    @property
    def xy(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def image_executable(self) -> str:
        return f"/usr/bin/python{self.xy}{self.abi_thread}"

    @property
    def image_stdlib(self) -> str:
        return f"/usr/{self.platlibdir}/python{self.xy}{self.abi_thread}"

    @property
    def image_dynload(self) -> str:
        return f"{self.image_stdlib}/lib-dynload"

    @property
    def image_search_path(self) -> tuple[str, ...]:
        """sys.path the interpreter computes inside the image (the zip need not exist)."""
        zipname = f"python{self.version[0]}{self.version[1]}{self.abi_thread}.zip"
        return (f"/usr/{self.platlibdir}/{zipname}", self.image_stdlib, self.image_dynload)


def describe_interpreter(python: str) -> Interpreter:
    """Run `python` and ask it about itself (see `Interpreter`)."""
    if not os.path.exists(python):
        raise PythonError(f"python interpreter {python} does not exist")
    info = _run(python, ["-I"], _DESCRIBE, what="describing itself")
    base = info["base_executable"] or info["executable"]
    real = os.path.realpath(base)
    try:
        elf.read_elf(real)
    except elf.ElfError as e:
        raise PythonError(f"{python}: its base executable {real} is not an ELF program ({e})") from None
    stdlib = info["stdlib_dir"]
    dynload = info["dynload_dir"]
    if not stdlib or not os.path.isfile(os.path.join(stdlib, "os.py")) and \
            not os.path.isfile(os.path.join(stdlib, "os.pyc")):
        raise PythonError(f"{python}: cannot find its standard library (got {stdlib!r})")
    if not dynload:
        raise PythonError(f"{python}: cannot find its lib-dynload directory")
    stdlib_entries = {os.path.normpath(stdlib), os.path.normpath(dynload)}
    site_dirs = tuple(p for p in info["path"]
                      if os.path.normpath(p) not in stdlib_entries and not p.endswith(".zip"))
    startup = _run(python, ["-I", "-S"], _STARTUP, what="listing its start-up modules")
    # Py_ENABLE_SHARED says a libpython was built, not that the binary uses it (Debian
    # builds one but links the interpreter statically): ask the ELF file.
    shared = any(n.startswith("libpython") for n in elf.read_elf(real).needed)
    builtin = frozenset(info["builtin_modules"])
    startup_modules = tuple(m for m in startup if m not in builtin and m != "__main__"
                            and not m.startswith("_frozen_importlib"))
    return Interpreter(
        python=python,
        executable=real,
        version=tuple(info["version"]),
        abi_thread="t" if info["gil_disabled"] else "",
        prefix=info["prefix"],
        base_prefix=info["base_prefix"],
        platlibdir=info["platlibdir"],
        stdlib_dir=stdlib,
        dynload_dir=dynload,
        ext_suffix=info["ext_suffix"],
        extension_suffixes=tuple(info["extension_suffixes"]),
        search_path=tuple(info["path"]),
        site_dirs=site_dirs,
        builtin_modules=builtin,
        frozen_modules=frozenset(info["frozen_modules"]),
        startup_modules=startup_modules,
        magic=info["magic"],
        cache_tag=info["cache_tag"],
        shared_libpython=shared,
    )


# ---------------------------------------------------------------------------------------
# Import closure (modulefinder inside the target)

_FIND = r"""
import sys, os, json, importlib.machinery, modulefinder

req = json.load(sys.stdin)
excludes = req["excludes"]
requested = req["requested"]
test_components = set(req["test_components"])
suffixes = importlib.machinery.EXTENSION_SUFFIXES


def _depth(name, prefixes):
    # How specific the most specific prefix of `name` in `prefixes` is (0: none).
    return max((len(p.split(".")) for p in prefixes if name == p or name.startswith(p + ".")),
               default=0)


def excluded(name):
    # The most specific rule wins: excluding "pyinit._libc_build" beats packing "pyinit",
    # asking for "test.support" beats excluding test suites. Parents of what was asked
    # for are always allowed.
    if any(r.startswith(name + ".") for r in requested):
        return False
    parts = name.split(".")
    exc = _depth(name, excludes)
    for i, part in enumerate(parts):
        if part in test_components:
            exc = max(exc, i + 1)
            break
    return exc > _depth(name, requested)


CO_NEWLOCALS = 0x2
follow_all = req["follow_function_imports"]
eager_packages = set(req["packages"])
eager_modules = set(req["entries_extra"])


class Finder(modulefinder.ModuleFinder):
    def find_module(self, name, path, parent=None):
        full = parent.__name__ + "." + name if parent is not None else name
        if excluded(full):
            raise ImportError(name)
        return super().find_module(name, path, parent)

    def scan_code(self, co, m):
        # Optionally ignore imports inside functions (they run only when the function is
        # called) except in the requested packages and modules. Class bodies run at import
        # time and are still scanned. Function code objects are replaced by None rather
        # than removed, so the constant indices the opcode scanner reads stay valid.
        top = m.__name__.split(".")[0]
        if not follow_all and m.__name__ not in eager_modules and top not in eager_packages:
            consts = tuple(None if isinstance(c, type(co)) and c.co_flags & CO_NEWLOCALS else c
                           for c in co.co_consts)
            co = co.replace(co_consts=consts)
        return super().scan_code(co, m)


mf = Finder(path=req["path"])
errors = []


def hook(name, why):
    try:
        mf.import_hook(name)
    except ImportError as e:
        errors.append([name, why, str(e)])
        return False
    except Exception as e:  # syntax errors, namespace packages...
        errors.append([name, why, f"{type(e).__name__}: {e}"])
        return False
    return True


def submodules(pkg, directory):
    out = []
    for entry in sorted(os.listdir(directory)):
        full = os.path.join(directory, entry)
        if entry.startswith(".") or entry == "__pycache__":
            continue
        if os.path.isdir(full):
            if entry.isidentifier() and os.path.isfile(os.path.join(full, "__init__.py")):
                out.append(pkg + "." + entry)
                out.extend(submodules(pkg + "." + entry, full))
            continue
        stem = None
        if entry.endswith(".py") and entry != "__init__.py":
            stem = entry[:-3]
        else:
            for s in suffixes:
                if entry.endswith(s):
                    stem = entry[: -len(s)]
                    break
        if stem and stem.isidentifier():
            out.append(pkg + "." + stem)
    return out


for name in req["entries"]:
    hook(name, "entry")
for pkg in req["packages"]:
    if not hook(pkg, "package"):
        continue
    m = mf.modules.get(pkg)
    if m is None or not m.__path__:
        continue  # a plain module: nothing more to walk
    for sub in submodules(pkg, m.__path__[0]):
        if not excluded(sub):
            hook(sub, "package")

# Imports done by C extension modules while they initialise.
hidden = req["hidden"]
done = set()
while True:
    todo = [n for n in sorted(mf.modules) if n in hidden and n not in done]
    if not todo:
        break
    for n in todo:
        done.add(n)
        for h in hidden[n]:
            hook(h, "hidden")

modules = []
for name in sorted(mf.modules):
    m = mf.modules[name]
    f = m.__file__
    if f is None:
        kind = "builtin"
    elif m.__code__ is not None and f.endswith(".py"):
        kind = "source"
    elif m.__code__ is not None:
        kind = "compiled"
    elif any(f.endswith(s) for s in suffixes):
        kind = "extension"
    else:
        kind = "other"
    modules.append({"name": name, "kind": kind, "file": f, "package": m.__path__ is not None})

# any_missing_maybe() leaves out "from pkg import name" where name may be an attribute.
definitely, _maybe = mf.any_missing_maybe()
missing = {n: sorted(k for k in mf.badmodules.get(n, {}) if k != "-")
           for n in definitely if not excluded(n)}
print(json.dumps({"modules": modules, "errors": errors, "missing": missing}))
"""

_COMPILE = r"""
import sys, json, py_compile, os
req = json.load(sys.stdin)
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
for item in req["items"]:
    os.makedirs(os.path.dirname(item["cfile"]), exist_ok=True)
    py_compile.compile(item["source"], cfile=item["cfile"], dfile=item["dfile"], doraise=True,
                       optimize=req["optimize"], invalidation_mode=mode)
print(json.dumps({"compiled": len(req["items"])}))
"""


@dataclass
class FoundModule:
    name: str
    kind: str  # "source", "compiled" (sourceless .pyc), "extension", "builtin", "other"
    file: str | None
    package: bool


@dataclass
class PackedModule:
    name: str
    kind: str  # "source" (compiled to .pyc), "compiled" (copied .pyc), "extension"
    source: str  # host file
    path: str  # in-image path
    part: str


def find_modules(interp: Interpreter, entries: Iterable[str], *, packages: Iterable[str] = (),
                 search_path: Sequence[str] | None = None, excludes: Iterable[str] = DEFAULT_EXCLUDES,
                 requested: Iterable[str] = (), follow_function_imports: bool = True,
                 ) -> tuple[list[FoundModule], dict[str, list[str]], list[tuple[str, str, str]]]:
    """Run modulefinder inside the target: (modules, missing, errors).

    missing maps each module that some packed module imports but that does not exist for
    this interpreter (nt, winreg, ... in the stdlib) to the modules importing it.

    `entries` are modules to import; `packages` are imported with every submodule found in
    their directory. errors are (name, why, message) for entries/packages that failed.
    follow_function_imports=False ignores imports inside functions of modules other than
    `packages` and `requested` (see add_python).
    """
    requested = list(requested)
    entries = list(entries)
    packages = list(packages)
    payload = {
        "path": list(search_path if search_path is not None else interp.search_path),
        "entries": entries,
        "packages": packages,
        "excludes": list(excludes),
        "requested": sorted(set(requested) | set(packages)),
        "test_components": list(TEST_COMPONENTS),
        "hidden": HIDDEN_IMPORTS,
        "follow_function_imports": follow_function_imports,
        "entries_extra": sorted(set(requested)),
    }
    out = _run(interp.python, ["-S", "-s"], _FIND, payload, what="finding the import closure")
    mods = [FoundModule(**m) for m in out["modules"]]
    return mods, out["missing"], [tuple(e) for e in out["errors"]]


def compile_modules(interp: Interpreter, items: Sequence[tuple[str, str, str]], optimize: int) -> None:
    """Compile (source, cfile, dfile) triples with the target interpreter, reproducibly."""
    if not items:
        return
    payload = {"items": [{"source": s, "cfile": c, "dfile": d} for s, c, d in items],
               "optimize": optimize}
    _run(interp.python, ["-S", "-s"], _COMPILE, payload, what="compiling modules")


# ---------------------------------------------------------------------------------------
# The image


@dataclass
class PythonLayout:
    interpreter: Interpreter
    executable: str  # in-image path, e.g. /usr/bin/python3.11
    stdlib_dir: str  # in-image
    dynload_dir: str  # in-image
    modules: dict[str, PackedModule] = field(default_factory=dict)
    builtin: list[str] = field(default_factory=list)  # needed modules that are builtin/frozen
    # imported somewhere but absent for this interpreter -> importers (nt, winreg, _winapi...)
    missing: dict[str, list[str]] = field(default_factory=dict)
    closure: elf.ElfClosure | None = None

    @property
    def stdlib_modules(self) -> list[str]:
        return sorted(n for n, m in self.modules.items() if m.part == "stdlib")

    def modules_in(self, part: str) -> list[str]:
        return sorted(n for n, m in self.modules.items() if m.part == part)


# The landmark CPython's prefix search looks for (see the module docstring): packed even
# though the interpreter has the module frozen.
LANDMARK_MODULES = ("os",)
# importlib/__init__.py puts the frozen _frozen_importlib(_external) into sys.modules under
# these names; their files are never read.
FROZEN_ALIASES = {"importlib._bootstrap": "_frozen_importlib",
                  "importlib._bootstrap_external": "_frozen_importlib_external"}


def _frozen_in(interp: "Interpreter", name: str) -> bool:
    """Whether the target always loads module `name` from its frozen copy, so that its .pyc
    would never be read (nor anything else but -X frozen_modules=off, which an initramfs does
    not use)."""
    if name in LANDMARK_MODULES:
        return False
    return name in interp.frozen_modules or FROZEN_ALIASES.get(name) in interp.frozen_modules


def _on_path(name: str, path: Iterable[str]) -> bool:
    """Whether top-level module or package `name` is in one of the directories `path`."""
    for d in path:
        if os.path.isfile(os.path.join(d, name, "__init__.py")) or \
                os.path.isfile(os.path.join(d, name + ".py")):
            return True
    return False


def _builder_package_dir(name: str) -> str | None:
    """The directory of package `name` as the builder itself would import it, if any."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        if os.path.isfile(os.path.join(d, "__init__.py")):
            return d
    return None


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _under(path: str, directory: str) -> bool:
    path = os.path.normpath(path)
    directory = os.path.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def add_python(image: Image, python: str = sys.executable, *, packages: Sequence[str] = ("pyinit",),
               package_dirs: Mapping[str, str] | None = None, extra_modules: Iterable[str] = (),
               excludes: Iterable[str] = DEFAULT_EXCLUDES, optimize: int = 2, strip: bool = False,
               follow_function_imports: bool = True, allow_missing: Iterable[str] = (),
               interp: Interpreter | None = None) -> PythonLayout:
    """Add the interpreter `python`, its ELF closure, the import closure of `packages` (and
    of CPython's own start-up), and those packages, to `image`.

    packages: package (or module) names packed whole, looked up on the target's sys.path
              unless `package_dirs` maps the name to a host directory (development trees).
              A package that is on neither is taken from the builder's own import path
              (a source checkout: pyinit/ next to mkinitramfs/), whatever the target.
    extra_modules: more entry points (dynamic imports modulefinder cannot see).
    excludes: module names (with their submodules) never packed unless requested.
    optimize: py_compile optimization level (0, 1, 2). strip: strip the ELF files now
              (mkinitramfs.strip); the builder leaves it False and strips once at the end.
    follow_function_imports: True (default) packs what modulefinder finds, which includes
              imports inside every function of every module reached (os.popen imports
              subprocess, inspect imports dis...), a safe superset. False follows imports
              inside functions only in `packages` and `extra_modules`, and module-level
              (and class-body) imports elsewhere: much smaller, but a stdlib function that
              imports lazily fails at run time unless its module is in extra_modules.

    allow_missing: modules the packed packages import that may be absent (optional
              imports inside try/except ImportError); any other absent one is an error.

    Parts: "interpreter" (the binary, its symlink, libpython), "libraries" (loader and
    shared libraries), "stdlib", "site-packages", and one part per requested package
    ("pyinit"). Raises PythonError for a requested module or package that cannot be found,
    elf.ElfError for a missing shared library (naming it and who needs it).
    """
    if optimize not in (0, 1, 2):
        raise PythonError(f"optimize must be 0, 1 or 2, not {optimize!r}")
    interp = interp or describe_interpreter(python)
    package_dirs = dict(package_dirs or {})
    for name in packages:
        if name not in package_dirs and not _on_path(name, interp.search_path):
            here = _builder_package_dir(name)
            if here is not None:
                package_dirs[name] = here
    packages = list(dict.fromkeys(list(packages) + list(package_dirs)))
    extra_modules = list(extra_modules)
    for name in package_dirs:
        if "." in name:
            raise PythonError(f"package_dirs: {name!r} must be a top-level package name")
        d = package_dirs[name]
        if not os.path.isfile(os.path.join(d, "__init__.py")):
            raise PythonError(f"package_dirs: {d} is not a package directory (no __init__.py)")

    layout = PythonLayout(interp, interp.image_executable, interp.image_stdlib, interp.image_dynload)
    # Directories first, so that implied parents are not counted in whichever part happens
    # to add the first file below them. lib-dynload is the exec_prefix landmark: a directory
    # that must exist even when no extension module is packed.
    for d in ("/usr/bin", posixpath.dirname(interp.image_stdlib)):
        image.add_dir(d, part="base")
    image.add_dir(interp.image_stdlib, part="stdlib")
    image.add_dir(interp.image_dynload, part="stdlib")

    with tempfile.TemporaryDirectory(prefix="pyinit-python-") as tmp:
        # Development trees are reached through a directory of symlinks named after the
        # packages, put first on the search path, so modulefinder sees them under their names.
        farm = os.path.join(tmp, "packages")
        os.makedirs(farm)
        for name, d in sorted(package_dirs.items()):
            os.symlink(os.path.abspath(d), os.path.join(farm, name))
        search_path = [farm] + list(interp.search_path)

        entries = list(dict.fromkeys(list(STARTUP_MODULES) + list(interp.startup_modules)
                                     + extra_modules))
        found, missing, errors = find_modules(interp, entries, packages=packages,
                                              search_path=search_path, excludes=excludes,
                                              requested=extra_modules,
                                              follow_function_imports=follow_function_imports)
        for name, why, msg in errors:
            if why == "hidden":
                continue  # a C module's optional companion that this build lacks
            how = "package" if why == "package" else "module"
            hint = (f"; pass package_dirs={{{name!r}: '/path/to/{name}'}}"
                    if why == "package" and name not in package_dirs else "")
            raise PythonError(f"{how} {name!r} not found by {interp.python} "
                              f"(search path: {', '.join(interp.search_path)}): {msg}{hint}")
        layout.missing = missing
        # The stdlib is full of imports of other platforms' modules; the packed packages
        # are not: an import there that cannot be satisfied would fail at boot.
        allowed = set(allow_missing)
        for name, importers in sorted(missing.items()):
            ours = [i for i in importers if _top(i) in packages]
            if ours and name not in allowed and _top(name) not in allowed:
                raise PythonError(f"module {name!r} (imported by {', '.join(ours)}) not found by "
                                  f"{interp.python} (search path: {', '.join(interp.search_path)}); "
                                  f"install it for that interpreter, or pass allow_missing=[{name!r}] "
                                  f"if the import is optional")

        # Which search-path entry each top-level module came from decides its part.
        roots: dict[str, str] = {}
        for m in found:
            if "." in m.name or m.file is None:
                continue
            roots[m.name] = os.path.dirname(os.path.dirname(m.file)) if m.package \
                else os.path.dirname(m.file)

        def part_of(name: str) -> str:
            top = _top(name)
            if top in packages:
                return top
            root = roots.get(top)
            if root is not None and os.path.normpath(root) in (
                    os.path.normpath(interp.stdlib_dir), os.path.normpath(interp.dynload_dir)):
                return "stdlib"
            return "site-packages"

        to_compile: list[tuple[str, str, str]] = []
        pyc_tmp = os.path.join(tmp, "pyc")
        for m in found:
            if m.kind == "builtin" or _frozen_in(interp, m.name):
                layout.builtin.append(m.name)
                continue
            if m.kind == "other":
                raise PythonError(f"module {m.name}: do not know how to pack {m.file}")
            rel = m.name.replace(".", "/")
            if m.kind == "extension":
                base = os.path.basename(m.file)
                if "." in m.name:
                    dest = posixpath.join(interp.image_stdlib, posixpath.dirname(rel), base)
                else:
                    dest = posixpath.join(interp.image_dynload, base)
            else:
                rel_pyc = rel + ("/__init__.pyc" if m.package else ".pyc")
                dest = posixpath.join(interp.image_stdlib, rel_pyc)
                if m.kind == "source":
                    to_compile.append((m.file, os.path.join(pyc_tmp, rel_pyc), dest[:-1]))
            # realpath: files of development trees are seen through the temporary symlinks.
            layout.modules[m.name] = PackedModule(m.name, m.kind, os.path.realpath(m.file), dest,
                                                  part_of(m.name))

        compile_modules(interp, to_compile, optimize)

        for name in sorted(layout.modules):
            pm = layout.modules[name]
            if pm.kind == "source":
                with open(os.path.join(pyc_tmp, pm.path[len(interp.image_stdlib) + 1:]), "rb") as f:
                    image.add_file(pm.path, data=f.read(), mode=0o644, part=pm.part)
            elif pm.kind == "compiled":
                image.add_file(pm.path, source=pm.source, mode=0o644, part=pm.part)
            else:
                elf.add_elf_file(image, pm.path, pm.source, part=pm.part, mode=0o755)

    # The interpreter and its symlink; then the ELF closure of it and of every extension.
    elf.add_elf_file(image, interp.image_executable, interp.executable, part="interpreter",
                     mode=0o755)
    link = f"/usr/bin/python{interp.version[0]}"
    if image.get(link) is None:
        image.add_symlink(link, posixpath.basename(interp.image_executable), part="interpreter")
    extensions = [layout.modules[n].source for n in sorted(layout.modules)
                  if layout.modules[n].kind == "extension"]
    layout.closure = elf.add_closure(image, [interp.executable] + extensions, part="libraries",
                                     main=interp.executable)
    # libpython is the interpreter, whatever file it lives in: count it there.
    libdir = elf.default_libdir(layout.closure.interpreter_source)
    for name in layout.closure.libraries:
        if name.startswith("libpython"):
            e = image.get(name if "/" in name else posixpath.join(libdir, name))
            if e is not None:
                e.part = "interpreter"

    if strip:
        from . import strip as _strip
        _strip.strip_image(image)
    check_landmarks(image, interp)
    return layout


def check_landmarks(image: Image, interp: Interpreter) -> None:
    """Raise PythonError unless the image satisfies CPython's getpath prefix search from
    /usr/bin (STDLIB_LANDMARKS: lib/python3.X/os.py or os.pyc, a file; PLATSTDLIB_LANDMARK:
    lib/python3.X/lib-dynload, a directory)."""
    problems = []
    exe = image.get(interp.image_executable)
    if exe is None or exe.kind != "file":
        problems.append(f"{interp.image_executable} is not a file")
    os_files = [image.get(posixpath.join(interp.image_stdlib, n)) for n in ("os.py", "os.pyc")]
    if not any(e is not None and e.kind == "file" for e in os_files):
        problems.append(f"no {interp.image_stdlib}/os.py or os.pyc (prefix landmark)")
    dyn = image.get(interp.image_dynload)
    if dyn is None or dyn.kind != "dir":
        problems.append(f"no directory {interp.image_dynload} (exec_prefix landmark)")
    if problems:
        raise PythonError("the image would not let CPython find its prefix: " + "; ".join(problems))


def format_sizes(image: Image, parts: Iterable[str] | None = None) -> str:
    """A small table of entries and bytes by part, for logs and reports."""
    sizes = image.size_by_part()
    names = list(parts) if parts is not None else sorted(sizes)
    lines = [f"{'part':<16} {'entries':>8} {'bytes':>12}"]
    total_n = total_b = 0
    for p in names:
        n, b = sizes.get(p, (0, 0))
        total_n += n
        total_b += b
        lines.append(f"{p:<16} {n:>8} {b:>12,}")
    lines.append(f"{'total':<16} {total_n:>8} {total_b:>12,}")
    return "\n".join(lines)
