"""Put a CPython interpreter, the part of its standard library a program needs, site packages
and pyinit itself into an `Image`. The public entry of the three python modules:

    pyinterp.py   the target interpreter: running it, what it says about itself
    pyimports.py  the import closure, found by modulefinder inside the target
    python.py     packing: where each file goes in the image, compiled by the target

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

A requested package that is neither in `package_dirs` nor on the target's sys.path is taken
from the builder's own import path (a source checkout). An import inside a packed package
that the target cannot satisfy is a build error unless listed in `allow_missing`; the
stdlib's imports of other platforms' modules are not.

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
pack the ascii and latin-1 codecs (a few KB) and whatever the target has loaded when a
`-I -S -c` command starts (pyinterp.Interpreter.startup_modules; 3.13 adds linecache for
-c). `python -m pkg` needs more: runpy is frozen but imports the `importlib` package, which
is not. Frozen modules are not packed (the interpreter never reads their files; only
`-X frozen_modules=off` would): 300 KB of .pyc for 3.11, about 110 KB of a zstd image.
os.pyc is, being the prefix landmark.

Bytecode: compiled by the target with py_compile, invalidation mode UNCHECKED_HASH (no mtime
in the header, the source is never consulted), PYTHONHASHSEED=0 (set and frozenset constants
are marshalled in hash order), and co_filename set to the in-image .py path, so the output is
byte-for-byte reproducible and no host path leaks into tracebacks. `optimize` is the
py_compile level: 2 (default) drops asserts and docstrings. A sourceless .pyc found at the
module path is loaded by SourcelessFileLoader whatever the interpreter's -O level; only the
__pycache__ file *names* depend on -O (checked by a test: a module compiled with optimize=2
has no docstring under plain `python -IS`). Code that reads docstrings at run time (e.g.
ply grammars) needs optimize=0.

Not done here: data files inside packages (only .py and extension modules are packed); see
pyimports.py for what the import closure cannot see.
"""
from __future__ import annotations

import importlib.util
import os
import posixpath
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mkinitramfs import elf, parts
from mkinitramfs import strip as elfstrip
from mkinitramfs.image import Image
from mkinitramfs.pyimports import DEFAULT_EXCLUDES as DEFAULT_EXCLUDES
from mkinitramfs.pyimports import STARTUP_MODULES as STARTUP_MODULES
from mkinitramfs.pyimports import FoundModule, find_modules
from mkinitramfs.pyinterp import Interpreter as Interpreter
from mkinitramfs.pyinterp import PythonError as PythonError
from mkinitramfs.pyinterp import describe_interpreter as describe_interpreter
from mkinitramfs.pyinterp import run_helper

__all__ = [
    "DEFAULT_EXCLUDES",
    "STARTUP_MODULES",
    "Interpreter",
    "PackedModule",
    "PythonError",
    "PythonLayout",
    "add_python",
    "check_landmarks",
    "compile_modules",
    "describe_interpreter",
]

# The landmark CPython's prefix search looks for (see the module docstring): packed even
# though the interpreter has the module frozen.
LANDMARK_MODULES = ("os",)
# importlib/__init__.py puts the frozen _frozen_importlib(_external) into sys.modules under
# these names; their files are never read.
FROZEN_ALIASES = {"importlib._bootstrap": "_frozen_importlib",
                  "importlib._bootstrap_external": "_frozen_importlib_external"}


@dataclass
class PackedModule:
    name: str
    kind: str  # "source" (compiled to .pyc), "compiled" (copied .pyc), "extension"
    source: str  # host file
    path: str  # in-image path
    part: str


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
        return sorted(n for n, m in self.modules.items() if m.part == parts.STDLIB)

    def modules_in(self, part: str) -> list[str]:
        return sorted(n for n, m in self.modules.items() if m.part == part)


def compile_modules(interp: Interpreter, items: Sequence[tuple[str, str, str]], optimize: int) -> None:
    """Compile (source, cfile, dfile) triples with the target interpreter, reproducibly."""
    if not items:
        return
    request = {"items": [{"source": s, "cfile": c, "dfile": d} for s, c, d in items], "optimize": optimize}
    run_helper(interp.python, ["-S", "-s"], "compile_modules", request, what="compiling modules")


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
    dirs = _package_dirs(interp, packages, package_dirs or {})
    packages = list(dict.fromkeys([*packages, *dirs]))
    extra_modules = list(extra_modules)
    layout = PythonLayout(interp, interp.image_executable, interp.image_stdlib, interp.image_dynload)
    _add_directories(image, interp)
    with tempfile.TemporaryDirectory(prefix="pyinit-python-") as tmp:
        entries = list(dict.fromkeys([*STARTUP_MODULES, *interp.startup_modules, *extra_modules]))
        found, missing, errors = find_modules(interp, entries, packages=packages,
                                              search_path=[_package_farm(tmp, dirs), *interp.search_path],
                                              excludes=excludes, requested=extra_modules,
                                              follow_function_imports=follow_function_imports)
        _check_errors(interp, errors, dirs)
        _check_missing(interp, missing, packages, allow_missing)
        layout.missing = missing
        pyc_tmp = os.path.join(tmp, "pyc")
        to_compile = _plan(layout, found, packages, pyc_tmp)
        compile_modules(interp, to_compile, optimize)
        _add_modules(image, layout, pyc_tmp)
    _add_interpreter(image, layout)
    if strip:
        elfstrip.strip_image(image)
    check_landmarks(image, interp)
    return layout


def _package_dirs(interp: Interpreter, packages: Sequence[str], given: Mapping[str, str]) -> dict[str, str]:
    """Host directories of the packages packed from a development tree: those given, and the
    builder's own copy of a package the target's sys.path lacks."""
    dirs = dict(given)
    for name in packages:
        if name not in dirs and not _on_path(name, interp.search_path):
            here = _builder_package_dir(name)
            if here is not None:
                dirs[name] = here
    for name, d in dirs.items():
        if "." in name:
            raise PythonError(f"package_dirs: {name!r} must be a top-level package name")
        if not os.path.isfile(os.path.join(d, "__init__.py")):
            raise PythonError(f"package_dirs: {d} is not a package directory (no __init__.py)")
    return dirs


def _on_path(name: str, path: Iterable[str]) -> bool:
    """Whether top-level module or package `name` is in one of the directories `path`."""
    for d in path:
        if os.path.isfile(os.path.join(d, name, "__init__.py")) or \
                os.path.isfile(os.path.join(d, name + ".py")):
            return True
    return False


def _builder_package_dir(name: str) -> str | None:
    """The directory of package `name` as the builder itself would import it, if any."""
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


def _add_directories(image: Image, interp: Interpreter) -> None:
    # Directories first, so that implied parents are not counted in whichever part happens
    # to add the first file below them. lib-dynload is the exec_prefix landmark: a directory
    # that must exist even when no extension module is packed.
    for d in ("/usr/bin", posixpath.dirname(interp.image_stdlib)):
        image.add_dir(d, part=parts.BASE)
    image.add_dir(interp.image_stdlib, part=parts.STDLIB)
    image.add_dir(interp.image_dynload, part=parts.STDLIB)


def _package_farm(tmp: str, dirs: Mapping[str, str]) -> str:
    """Development trees are reached through a directory of symlinks named after the
    packages, put first on the search path, so modulefinder sees them under their names."""
    farm = os.path.join(tmp, "packages")
    os.makedirs(farm)
    for name, d in sorted(dirs.items()):
        os.symlink(os.path.abspath(d), os.path.join(farm, name))
    return farm


def _check_errors(interp: Interpreter, errors: Iterable[tuple[str, str, str]], dirs: Mapping[str, str]) -> None:
    """An entry or package that could not be imported stops the build."""
    for name, why, msg in errors:
        if why == "hidden":
            continue  # a C module's optional companion that this build lacks
        how = "package" if why == "package" else "module"
        hint = (f"; pass package_dirs={{{name!r}: '/path/to/{name}'}}"
                if why == "package" and name not in dirs else "")
        raise PythonError(f"{how} {name!r} not found by {interp.python} "
                          f"(search path: {', '.join(interp.search_path)}): {msg}{hint}")


def _check_missing(interp: Interpreter, missing: Mapping[str, list[str]], packages: Sequence[str],
                   allow_missing: Iterable[str]) -> None:
    """The stdlib is full of imports of other platforms' modules; the packed packages are not:
    an import there that cannot be satisfied would fail at boot, unless it is allowed."""
    allowed = set(allow_missing)
    for name, importers in sorted(missing.items()):
        ours = [i for i in importers if _top(i) in packages]
        if ours and name not in allowed and _top(name) not in allowed:
            raise PythonError(f"module {name!r} (imported by {', '.join(ours)}) not found by "
                              f"{interp.python} (search path: {', '.join(interp.search_path)}); "
                              f"install it for that interpreter, or pass allow_missing=[{name!r}] "
                              f"if the import is optional")


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _frozen_in(interp: Interpreter, name: str) -> bool:
    """Whether the target always loads module `name` from its frozen copy, so that its .pyc
    would never be read (nor anything else but -X frozen_modules=off, which an initramfs does
    not use)."""
    if name in LANDMARK_MODULES:
        return False
    return name in interp.frozen_modules or FROZEN_ALIASES.get(name) in interp.frozen_modules


def _part_namer(interp: Interpreter, found: Iterable[FoundModule], packages: Sequence[str]) -> dict[str, str]:
    """The part of each top-level module found: its own for a requested package, "stdlib"
    for one from the stdlib or lib-dynload directory, else "site-packages"."""
    stdlib_dirs = (os.path.normpath(interp.stdlib_dir), os.path.normpath(interp.dynload_dir))
    out: dict[str, str] = {}
    for m in found:
        if "." in m.name or m.file is None:
            continue
        root = os.path.dirname(os.path.dirname(m.file)) if m.package else os.path.dirname(m.file)
        out[m.name] = parts.STDLIB if os.path.normpath(root) in stdlib_dirs else parts.SITE_PACKAGES
    for name in packages:
        out[name] = name
    return out


def _plan(layout: PythonLayout, found: Iterable[FoundModule], packages: Sequence[str],
          pyc_tmp: str) -> list[tuple[str, str, str]]:
    """Where each module found goes (layout.modules, layout.builtin); the (source, cfile,
    dfile) triples to compile into `pyc_tmp`."""
    interp = layout.interpreter
    found = list(found)
    part_of = _part_namer(interp, found, packages)
    to_compile: list[tuple[str, str, str]] = []
    for m in found:
        if m.file is None or _frozen_in(interp, m.name):  # builtin (no file) or frozen
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
                                              part_of.get(_top(m.name), parts.SITE_PACKAGES))
    return to_compile


def _add_modules(image: Image, layout: PythonLayout, pyc_tmp: str) -> None:
    """The planned modules into the image: compiled .pyc from `pyc_tmp`, the rest as found."""
    stdlib = layout.interpreter.image_stdlib
    for name in sorted(layout.modules):
        pm = layout.modules[name]
        if pm.kind == "source":
            with open(os.path.join(pyc_tmp, pm.path[len(stdlib) + 1:]), "rb") as f:
                image.add_file(pm.path, data=f.read(), mode=0o644, part=pm.part)
        elif pm.kind == "compiled":
            image.add_file(pm.path, source=pm.source, mode=0o644, part=pm.part)
        else:
            elf.add_elf_file(image, pm.path, pm.source, part=pm.part, mode=0o755)


def _add_interpreter(image: Image, layout: PythonLayout) -> None:
    """The interpreter and its symlink; then the ELF closure of it and of every extension."""
    interp = layout.interpreter
    elf.add_elf_file(image, interp.image_executable, interp.executable, part=parts.INTERPRETER, mode=0o755)
    link = f"/usr/bin/python{interp.version[0]}"
    if image.get(link) is None:
        image.add_symlink(link, posixpath.basename(interp.image_executable), part=parts.INTERPRETER)
    extensions = [layout.modules[n].source for n in sorted(layout.modules)
                  if layout.modules[n].kind == "extension"]
    layout.closure = elf.add_closure(image, [interp.executable, *extensions], part=parts.LIBRARIES,
                                     main=interp.executable)
    # libpython is the interpreter, whatever file it lives in: count it there.
    libdir = elf.default_libdir(layout.closure.interpreter_source)
    for name in layout.closure.libraries:
        if name.startswith("libpython"):
            e = image.get(name if "/" in name else posixpath.join(libdir, name))
            if e is not None:
                e.part = parts.INTERPRETER


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
