"""The import closure: which modules an image needs, found by modulefinder running *inside*
the target interpreter (pytarget/find_modules.py), with its own standard library, builtin
modules and extension suffixes, and the rules for what is never followed.

    found, missing, errors = find_modules(interp, ["encodings", ...], packages=["pyinit"])

Not seen: data files inside packages, namespace packages, `.pth` processing (an image has no
site), and imports done in C code other than the few listed in HIDDEN_IMPORTS; a caller names
those in its entries.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mkinitramfs.pyinterp import Interpreter, run_helper

# Imported by CPython itself at start-up with -IS (not frozen, not builtin), plus the
# getpath landmark `os` and what `-m` needs. Completed at build time by what the target
# has loaded when `-I -S -c` starts (Interpreter.startup_modules).
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


@dataclass
class FoundModule:
    name: str
    kind: str  # "source", "compiled" (sourceless .pyc), "extension", "builtin", "other"
    file: str | None  # None for a builtin module
    package: bool


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
    `packages` and `requested` (see python.add_python).
    """
    requested = list(requested)
    packages = list(packages)
    request = {
        "path": list(search_path if search_path is not None else interp.search_path),
        "entries": list(entries),
        "packages": packages,
        "excludes": list(excludes),
        "requested": sorted(set(requested) | set(packages)),
        "test_components": list(TEST_COMPONENTS),
        "hidden": HIDDEN_IMPORTS,
        "follow_function_imports": follow_function_imports,
        "entries_extra": sorted(set(requested)),
    }
    out = run_helper(interp.python, ["-S", "-s"], "find_modules", request, what="finding the import closure")
    mods = [FoundModule(**m) for m in out["modules"]]
    return mods, out["missing"], [(name, why, message) for name, why, message in out["errors"]]
