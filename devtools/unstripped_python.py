"""An unstripped CPython built from what devtools/setup.sh installs, for the strip tests.

Debian ships its interpreter stripped, and its DWARF lives in the debug archive, which a CI
machine does not reach. A self-compiled CPython (pyenv's, say) is a small bin/python3.X with
RUNPATH $ORIGIN/../lib and a lib/libpython3.X.so.1.0 with its symbol table and DWARF: 22 MiB,
of which strip removes 16. This makes the same from Debian's own objects (python3-dev):

    DEST/bin/python3.X            gcc -g from config-3.X-<triplet>/python.o, RUNPATH $ORIGIN/../lib
    DEST/lib/libpython3.X.so.1.0  every object of libpython3.X-pic.a, with its full .symtab, plus
                                  a .debug_* section of DEBUG_BYTES incompressible bytes standing
                                  in for DWARF (pyenv's 16 MiB of DWARF are about 5 MiB zstd'ed)
    DEST/lib/python3.X           -> the system interpreter's stdlib (os.py, lib-dynload)
    DEST/lib/python3/dist-packages -> `site_packages` (Debian's site.py adds it for prefix DEST)

CPython finds its prefix DEST from bin/ (the lib/python3.X/os.py landmark), so it runs like
the system's interpreter, from a shared libpython that only strip can bring down to size.

    python -m devtools.unstripped_python DEST [SITE_PACKAGES]
"""
from __future__ import annotations

import os
import random
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
DEBUG_BYTES = 6 << 20
DEBUG_SECTION = ".debug_stand_in"  # strip removes every .debug* section, whatever its name


def _config(python: str) -> dict:
    code = ("import json, sysconfig; print(json.dumps({k: sysconfig.get_config_var(k) for k in "
            "('LIBPL', 'LDVERSION', 'VERSION', 'LIBS', 'SYSLIBS', 'MODLIBS', 'INSTSONAME')} | "
            "{'stdlib': sysconfig.get_path('stdlib')}))")
    import json
    return json.loads(subprocess.run([python, "-I", "-c", code], capture_output=True, text=True,
                                     check=True).stdout)


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def make(dest: Path, site_packages: str | None = None, python: str = SYSTEM_PYTHON) -> Path:
    """Build the tree in `dest` (created); returns DEST/bin/python3.X."""
    cfg = _config(python)
    libpl = Path(cfg["LIBPL"])
    ver = cfg["VERSION"]
    pic = libpl / f"libpython{cfg['LDVERSION']}-pic.a"
    main_o = libpl / "python.o"
    for need in (pic, main_o):
        if not need.is_file():
            raise FileNotFoundError(f"{need} is missing: install python3-dev (devtools/setup.sh does)")
    soname = cfg["INSTSONAME"] or f"libpython{cfg['LDVERSION']}.so.1.0"
    dest = Path(dest)
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    (dest / "lib" / "python3").mkdir(parents=True, exist_ok=True)
    libs = shlex.split(" ".join(cfg[k] or "" for k in ("MODLIBS", "LIBS", "SYSLIBS")))
    lib = dest / "lib" / soname
    _run(["gcc", "-g", "-shared", "-o", str(lib), f"-Wl,-soname,{soname}",
          "-Wl,--whole-archive", str(pic), "-Wl,--no-whole-archive", *libs], dest)
    # DWARF stand-in: seeded, so every build of this tree is the same bytes
    blob = dest / "debug.bin"
    blob.write_bytes(random.Random(0x5eed).randbytes(DEBUG_BYTES))
    _run(["objcopy", "--add-section", f"{DEBUG_SECTION}={blob}",
          "--set-section-flags", f"{DEBUG_SECTION}=readonly,debug", str(lib)], dest)
    blob.unlink()
    exe = dest / "bin" / f"python{ver}"
    _run(["gcc", "-g", "-o", str(exe), str(main_o), str(lib), "-Wl,-rpath,$ORIGIN/../lib"], dest)
    stdlib_link = dest / "lib" / f"python{ver}"
    if not stdlib_link.is_symlink():
        stdlib_link.symlink_to(cfg["stdlib"])
    if site_packages:
        dist = dest / "lib" / "python3" / "dist-packages"
        if not dist.is_symlink():
            dist.symlink_to(os.path.abspath(site_packages))
    check = subprocess.run([str(exe), "-I", "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                           check=False)
    if check.returncode != 0 or check.stdout.strip() != str(dest):
        raise RuntimeError(f"{exe} does not run from {dest}: {check.stdout}{check.stderr}")
    return exe


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.rsplit("\n\n", 1)[-1])
    print(make(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else sysconfig.get_path("purelib")))
