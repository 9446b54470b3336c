"""ELF files packed without symbol tables and debug sections, as dracut does by default.

The rule, in one place:

- What is stripped: every ELF file the builder resolved itself and added with
  `elf.add_elf_file`, which marks the entry `strippable`: the interpreter, libpython, the
  loader and every shared library of every closure, extension modules, fsck checkers, hook
  binaries, busybox.
- What never is: kernel modules (refused here even if marked, see `_never_strip`), firmware
  (some files are ELF images for other processors), files from --include and a hook's data
  files (the user's bytes, as given). None of them is ever marked.
- How: binutils' `strip --strip-unneeded -o OUT FILE`. It removes .symtab/.strtab and every
  debugging section and keeps the dynamic symbol table (.dynsym) other objects link against
  (extension modules find libpython's symbols there) and everything the loader reads.
- Only a file with something to remove (a .symtab, .debug_* or .zdebug_* section, read with
  pyelftools) costs a subprocess. Debian's files are stripped already (they keep only
  .gnu_debuglink), so a build from Debian's interpreter runs no strip at all; a pyenv or
  self-compiled CPython (libpython with DWARF, 22 MiB) is what this is for.
- When strip is missing, fails, or gives something that is not a smaller ELF file, the
  original is packed and the build output carries a warning naming it; the build goes on.
- Reproducible: strip's output depends only on its input (ELF holds no time stamps).

    report = strip_image(image)      # after everything is added
    report.removed  -> {"interpreter": 17_000_000, "stdlib": 1_900_000, ...}  bytes removed by part
    report.stripped -> in-image paths of the files replaced by their stripped copy

Why binutils and not a rewriter of our own: dropping sections from a linked file means
rewriting the section header table, the offsets and alignment of what follows, .shstrtab and
the links between sections, on every architecture and for every ELF corner (section groups,
compressed sections, notes); binutils' strip is the tool Debian's dh_strip, rpm and dracut use.
"""
from __future__ import annotations

import functools
import io
import os
import shutil
import struct
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .image import Entry, Image

__all__ = ["StripReport", "find_strip", "has_symbols_or_debug", "strip_bytes", "strip_image"]

STRIP_ARGS = ("--strip-unneeded",)
_TIMEOUT = 300  # seconds for one file; strip takes well under a second for a 22 MiB libpython
_WORKERS = 2  # a build machine's cores are shared (and a strip is mostly I/O)


@dataclass
class StripReport:
    removed: dict[str, int] = field(default_factory=dict)  # part -> bytes strip removed
    stripped: list[str] = field(default_factory=list)  # in-image paths now holding a stripped copy
    checked: int = 0  # strippable files looked at
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def _strippable_section(name: str) -> bool:
    return name == ".symtab" or name.startswith((".debug", ".zdebug"))


def has_symbols_or_debug(f: BinaryIO) -> bool:
    """Whether the ELF file object `f` has a symbol table or debug sections (what strip
    removes). Not an ELF file, or unreadable headers: False (nothing for strip to do)."""
    try:
        if f.read(4) != b"\x7fELF":
            return False
        f.seek(0)
        return any(_strippable_section(s.name) for s in ELFFile(f).iter_sections())
    except (ELFError, ValueError, KeyError, OSError, EOFError, IndexError, TypeError, AssertionError,
            UnicodeDecodeError, struct.error):  # what pyelftools raises on damaged headers
        return False


@functools.lru_cache(maxsize=4096)
def _file_needs_strip(path: str, mtime_ns: int, size: int) -> bool:
    try:
        with open(path, "rb") as f:
            return has_symbols_or_debug(f)
    except OSError:
        return False


def _needs_strip(e: Entry) -> bool:
    if e.data is not None:
        return has_symbols_or_debug(io.BytesIO(e.data))
    if e.source is None:
        return False  # no content at all
    try:
        st = os.stat(e.source)
    except OSError:
        return False
    return _file_needs_strip(e.source, st.st_mtime_ns, st.st_size)


def _never_strip(path: str) -> bool:
    # Kernel modules are never stripped, whoever marked them: the module signature is
    # appended to the file and checked over its exact bytes, and the symbol versions
    # (__versions), .modinfo and the symbol table the kernel's module loader links against
    # live in sections strip would rewrite or drop.
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".ko") or ".ko." in name or "/lib/modules/" in path


def find_strip() -> str | None:
    """binutils' strip from PATH (kernel hooks may run with a short PATH: /usr/bin too)."""
    return shutil.which("strip") or shutil.which("strip", path="/usr/bin:/bin")


def strip_bytes(exe: str, source: str, tmpdir: str) -> tuple[bytes | None, str]:
    """Run `strip --strip-unneeded` on a copy of `source` into `tmpdir`; (bytes, "") or
    (None, why). The host file is never modified."""
    fd, out = tempfile.mkstemp(dir=tmpdir, prefix="stripped-")
    os.close(fd)
    try:
        proc = subprocess.run([exe, *STRIP_ARGS, "-o", out, source], check=False, capture_output=True, text=True,
                              errors="replace", timeout=_TIMEOUT)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            return None, f"exit {proc.returncode}" + (f": {lines[0]}" if lines else "")
        with open(out, "rb") as f:
            data = f.read()
    except subprocess.TimeoutExpired:
        return None, f"no result within {_TIMEOUT} s"
    except OSError as e:
        return None, e.strerror or str(e)
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass
    return data, ""


def _check_output(data: bytes, original_size: int) -> str:
    if not data.startswith(b"\x7fELF"):
        return "its output is not an ELF file"
    if len(data) >= original_size:
        return "its output is not smaller"
    return ""


def strip_image(image: Image, *, exe: str | None = None, workers: int = _WORKERS) -> StripReport:
    """Replace every strippable entry of `image` that has something to strip by its stripped
    copy (kept in memory); warnings go to the report and to `image.warnings`."""
    report = StripReport()
    todo: list[Entry] = []
    for e in image.sorted_entries():
        if e.kind != "file" or not e.strippable or e.link_to is not None or _never_strip(e.path):
            continue
        report.checked += 1
        if _needs_strip(e):
            todo.append(e)
    if not todo:
        return report
    exe = exe or find_strip()
    if exe is None or not os.access(exe, os.X_OK):
        names = ", ".join(e.path for e in todo)
        report.warnings.append(f"binutils' strip not found: {len(todo)} ELF files packed with their symbol "
                               f"tables and debug sections ({names}); install binutils, or pass --no-strip")
        for w in report.warnings:
            image.warn(w)
        return report

    with tempfile.TemporaryDirectory(prefix="pyinit-strip-") as tmp:
        inputs: dict[str, str] = {}  # one strip per host file, even when packed twice
        for n, e in enumerate(todo):
            if e.data is None and e.source is not None:
                inputs[e.path] = e.source
            else:
                path = os.path.join(tmp, f"input-{n}")
                with open(path, "wb") as f:
                    f.write(e.content())
                inputs[e.path] = path
        unique = sorted(set(inputs.values()))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = dict(zip(unique, pool.map(lambda src: strip_bytes(exe, src, tmp), unique), strict=True))
        for e in todo:
            src = inputs[e.path]
            data, why = results[src]
            before = e.size()
            if data is not None:
                why = _check_output(data, before)
            if data is None or why:
                report.warnings.append(f"strip could not shrink {e.path} ({e.source or 'in-memory data'}): "
                                       f"{why or 'no output'}; packed as is")
                continue
            e.data, e.source = data, None
            report.removed[e.part] = report.removed.get(e.part, 0) + before - len(data)
            report.stripped.append(e.path)
    for w in report.warnings:
        image.warn(w)
    return report
