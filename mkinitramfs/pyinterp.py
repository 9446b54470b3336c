"""The target interpreter: running it, and what it says about itself.

The interpreter packed into an image may differ from the one running the builder (another
CPython version, a venv, a pyenv build): everything about it is learned by running it, in
subprocesses, on the programs of mkinitramfs/pytarget/ (standard library only). Nothing is
imported from the target into the builder.

    interp = describe_interpreter("/path/to/python")
    interp.version, interp.image_stdlib, interp.frozen_modules, interp.startup_modules ...
    run_helper(interp.python, ["-S", "-s"], "find_modules", request, "finding the import closure")
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mkinitramfs import elf
from mkinitramfs.errors import MkinitramfsError

HELPERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytarget")


class PythonError(MkinitramfsError):
    """The target interpreter or a requested module cannot be used; the message says which."""


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


def run_helper(python: str, flags: Sequence[str], helper: str, request: object | None = None,
               what: str = "", as_command: bool = False) -> Any:
    """Run pytarget/`helper`.py with `python FLAGS`, `request` as JSON on its stdin; the JSON
    of its last line of output. A failure is a PythonError with the tail of its stderr.
    as_command: run the file's text as `python FLAGS -c TEXT` rather than the file."""
    path = os.path.join(HELPERS_DIR, helper + ".py")
    if as_command:
        with open(path) as f:
            cmd = [python, *flags, "-c", f.read()]
    else:
        cmd = [python, *flags, path]
    try:
        # check=False: the exit status is read below, to name the helper and show its stderr.
        proc = subprocess.run(cmd, input=json.dumps(request) if request is not None else "", check=False,
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
    startup_modules: tuple[str, ...]  # non-builtin modules loaded by `-I -S -c` before its command
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
    info = run_helper(python, ["-I"], "describe", what="describing itself")
    real = os.path.realpath(info["base_executable"] or info["executable"])
    try:
        # Py_ENABLE_SHARED says a libpython was built, not that the binary uses it (Debian
        # builds one but links the interpreter statically): ask the ELF file.
        needed = elf.read_elf(real).needed
    except elf.ElfError as e:
        raise PythonError(f"{python}: its base executable {real} is not an ELF program ({e})") from None
    stdlib, dynload = info["stdlib_dir"], info["dynload_dir"]
    _check_dirs(python, stdlib, dynload)
    stdlib_entries = {os.path.normpath(stdlib), os.path.normpath(dynload)}
    builtin = frozenset(info["builtin_modules"])
    # -c loads the most at start-up (3.13 adds linecache, a script does not): a superset of
    # what /init needs, and what a `python3 -c` in the image needs.
    startup = run_helper(python, ["-I", "-S"], "startup", what="listing its start-up modules", as_command=True)
    v = info["version"]
    return Interpreter(
        python=python,
        executable=real,
        version=(v[0], v[1], v[2]),
        abi_thread="t" if info["gil_disabled"] else "",
        prefix=info["prefix"],
        base_prefix=info["base_prefix"],
        platlibdir=info["platlibdir"],
        stdlib_dir=stdlib,
        dynload_dir=dynload,
        ext_suffix=info["ext_suffix"],
        extension_suffixes=tuple(info["extension_suffixes"]),
        search_path=tuple(info["path"]),
        site_dirs=tuple(p for p in info["path"] if os.path.normpath(p) not in stdlib_entries
                        and not p.endswith(".zip")),
        builtin_modules=builtin,
        frozen_modules=frozenset(info["frozen_modules"]),
        startup_modules=tuple(m for m in startup if m not in builtin and m != "__main__"
                              and not m.startswith("_frozen_importlib")),
        magic=info["magic"],
        cache_tag=info["cache_tag"],
        shared_libpython=any(n.startswith("libpython") for n in needed),
    )


def _check_dirs(python: str, stdlib: str | None, dynload: str | None) -> None:
    """The standard library (with its os module) and lib-dynload must be found."""
    if not stdlib or not any(os.path.isfile(os.path.join(stdlib, n)) for n in ("os.py", "os.pyc")):
        raise PythonError(f"{python}: cannot find its standard library (got {stdlib!r})")
    if not dynload:
        raise PythonError(f"{python}: cannot find its lib-dynload directory")
