"""Print, as JSON, the import closure of the image's entry points as this interpreter sees
it: modulefinder running inside the target, with the target's own standard library, builtin
modules and extension suffixes.

Run as `python -S -s find_modules.py` (no site: the search path comes in the request).
Standard library only (see pytarget/__init__.py).

Request (JSON on stdin), written by mkinitramfs.pyimports.find_modules:
    path                     the search path (a folder of symlinks to development trees first)
    entries                  modules to import
    packages                 packages imported with every submodule in their folder
    excludes                 names never followed (with their submodules) unless requested
    requested                names asked for: packages and entries_extra
    test_components          a dotted name with one of these components is excluded too
    hidden                   module -> modules its C code imports while it initialises
    follow_function_imports  False: imports inside functions only count in packages and
                             entries_extra
    entries_extra            the extra modules the caller named
Answer: {"modules": [{name, kind, file, package}], "errors": [[name, why, message]],
         "missing": {name: [importers]}}; kind is source, compiled, extension, builtin or other.
"""
from __future__ import annotations

import ast
import importlib.machinery
import json
import modulefinder
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import CodeType
from typing import IO, Any, Protocol, cast

SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)
CO_NEWLOCALS = 0x2  # set on a function's code object; a class body's and a module's lack it


class _Found(Protocol):
    """The attributes modulefinder sets on its Module objects (the stub does not list them)."""

    __name__: str
    __file__: str | None
    __path__: list[str] | None
    __code__: CodeType | None


def found(m: modulefinder.Module) -> _Found:
    return cast(_Found, m)


def _depth(name: str, prefixes: Iterable[str]) -> int:
    """How specific the most specific prefix of `name` in `prefixes` is (0: none)."""
    return max((len(p.split(".")) for p in prefixes if name == p or name.startswith(p + ".")), default=0)


@dataclass(frozen=True)
class Rules:
    excludes: tuple[str, ...]
    requested: tuple[str, ...]
    test_components: frozenset[str]

    def excluded(self, name: str) -> bool:
        """The most specific rule wins: excluding "pyinit._libc_build" beats packing "pyinit",
        asking for "test.support" beats excluding test suites. Parents of what was asked for
        are always allowed."""
        if any(r.startswith(name + ".") for r in self.requested):
            return False
        exc = _depth(name, self.excludes)
        for i, part in enumerate(name.split(".")):
            if part in self.test_components:
                exc = max(exc, i + 1)
                break
        return exc > _depth(name, self.requested)


class Finder(modulefinder.ModuleFinder):
    """modulefinder that skips excluded names, can ignore imports inside functions outside
    the eager packages and modules, and records what could not be imported."""

    def __init__(self, path: list[str], rules: Rules, follow_all: bool,
                 eager_packages: Iterable[str], eager_modules: Iterable[str]) -> None:
        super().__init__(path=path)
        self.rules = rules
        self.follow_all = follow_all
        self.eager_packages = frozenset(eager_packages)
        self.eager_modules = frozenset(eager_modules)
        self.errors: list[list[str]] = []

    def find_module(self, name: str, path: str | None, parent: modulefinder.Module | None = None
                    ) -> tuple[IO[Any] | None, str | None, tuple[str, str, int]]:
        full = found(parent).__name__ + "." + name if parent is not None else name
        if self.rules.excluded(full):
            raise ImportError(name)
        return super().find_module(name, path, parent)

    def load_module(self, fqname: str, fp: IO[str], pathname: str,
                    file_info: tuple[str, str, str]) -> modulefinder.Module:
        # A source file is scanned without its `if TYPE_CHECKING:` blocks: their imports
        # (typing, annotations' classes) never run, and modulefinder would pack them.
        # (file_info's third item is an int at run time, whatever the stub says.)
        if file_info[2] != modulefinder._PY_SOURCE or fp is None:  # type: ignore[attr-defined]
            return super().load_module(fqname, fp, pathname, file_info)
        tree = without_type_checking(ast.parse(fp.read(), pathname))
        m = self.add_module(fqname)
        found(m).__file__ = pathname
        co = compile(tree, pathname, "exec")
        found(m).__code__ = co
        self.scan_code(co, m)
        return m

    def scan_code(self, co: CodeType, m: modulefinder.Module) -> None:
        # Imports inside functions run only when the function is called: optionally ignored,
        # except in the eager packages and modules. Class bodies run at import time and are
        # still scanned. Function code objects are replaced by None rather than removed, so
        # the constant indices the opcode scanner reads stay valid.
        name = found(m).__name__
        if not self.follow_all and name not in self.eager_modules and name.split(".")[0] not in self.eager_packages:
            consts = tuple(None if isinstance(c, CodeType) and c.co_flags & CO_NEWLOCALS else c
                           for c in co.co_consts)
            co = co.replace(co_consts=consts)
        super().scan_code(co, m)

    def hook(self, name: str, why: str) -> bool:
        """Import `name` and what it imports; a failure is recorded as (name, why, message)."""
        try:
            self.import_hook(name)
        except ImportError as e:
            self.errors.append([name, why, str(e)])
            return False
        except Exception as e:  # syntax errors, namespace packages...
            self.errors.append([name, why, f"{type(e).__name__}: {e}"])
            return False
        return True


class _DropTypeChecking(ast.NodeTransformer):
    def visit_If(self, node: ast.If) -> ast.AST:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            node.body = [ast.Pass()]
        self.generic_visit(node)
        return node


def without_type_checking(tree: ast.Module) -> ast.Module:
    """`tree` with the body of every `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`) replaced
    by `pass`: false at run time, whether typing's constant or a module's own `= False`."""
    return cast(ast.Module, ast.fix_missing_locations(_DropTypeChecking().visit(tree)))


def submodules(pkg: str, directory: str) -> list[str]:
    """Every module and subpackage in package `pkg`'s folder, recursively, in name order."""
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
            stem = next((entry[: -len(s)] for s in SUFFIXES if entry.endswith(s)), None)
        if stem and stem.isidentifier():
            out.append(pkg + "." + stem)
    return out


def walk_packages(finder: Finder, packages: Iterable[str]) -> None:
    """Import each package, then every submodule in its folder that is not excluded."""
    for pkg in packages:
        if not finder.hook(pkg, "package"):
            continue
        m = finder.modules.get(pkg)
        path = found(m).__path__ if m is not None else None
        if not path:
            continue  # a plain module: nothing more to walk
        for sub in submodules(pkg, path[0]):
            if not finder.rules.excluded(sub):
                finder.hook(sub, "package")


def add_hidden(finder: Finder, hidden: dict[str, list[str]]) -> None:
    """The imports C extension modules make while they initialise, until nothing new comes."""
    done: set[str] = set()
    while True:
        todo = [n for n in sorted(finder.modules) if n in hidden and n not in done]
        if not todo:
            break
        for n in todo:
            done.add(n)
            for h in hidden[n]:
                finder.hook(h, "hidden")


def kind_of(m: _Found) -> str:
    f = m.__file__
    if f is None:
        return "builtin"
    if m.__code__ is not None:
        return "source" if f.endswith(".py") else "compiled"
    return "extension" if any(f.endswith(s) for s in SUFFIXES) else "other"


def answer(finder: Finder) -> dict[str, Any]:
    modules = [{"name": name, "kind": kind_of(found(m)), "file": found(m).__file__,
                "package": found(m).__path__ is not None}
               for name, m in sorted(finder.modules.items())]
    # any_missing_maybe() leaves out "from pkg import name" where name may be an attribute.
    definitely, _maybe = finder.any_missing_maybe()
    missing = {n: sorted(k for k in finder.badmodules.get(n, {}) if k != "-")
               for n in definitely if not finder.rules.excluded(n)}
    return {"modules": modules, "errors": finder.errors, "missing": missing}


def main() -> None:
    req = json.load(sys.stdin)
    rules = Rules(tuple(req["excludes"]), tuple(req["requested"]), frozenset(req["test_components"]))
    finder = Finder(req["path"], rules, req["follow_function_imports"],
                    eager_packages=req["packages"], eager_modules=req["entries_extra"])
    for name in req["entries"]:
        finder.hook(name, "entry")
    walk_packages(finder, req["packages"])
    add_hidden(finder, req["hidden"])
    print(json.dumps(answer(finder)))


if __name__ == "__main__":
    main()
