"""A smaller CPython for `pyinit-mkinitramfs build --python`, to measure what the interpreter
costs in an image (`make bench` has a row for it).

Debian's /usr/bin/python3.11 is 6.8 MB: built with LTO and PGO, with 61 modules built into
the binary (unicodedata's tables, the hash functions, pyexpat and zlib, which bring libexpat
and libz along...). This recipe builds the same CPython release from Debian's own source
package (`apt-get source`, through a private apt configuration) the way upstream's default
is: a static libpython, only the core modules built in, every other extension module a
shared library in lib-dynload (the image packs those pyinit imports), and

    CFLAGS=-Os             smaller code (also less code for QEMU/TCG to translate)
    --without-doc-strings  no docstrings in the C types
    no zlib                (binascii's own crc32; no libz in the image)
    no LTO, no PGO         (both make the binary larger and are for speed on real CPUs)

The result is installed under <cache>/bench-smallpython/<key>/usr and runs from there (CPython
finds its prefix by the landmarks next to the executable), so the builder can describe it
and compile for it like any other interpreter. Made once, file-locked; a build takes some
minutes of two cores. Needs gcc, make, and the headers of what the modules pyinit uses need
(none beyond libc: _socket, _struct, binascii, select, fcntl, termios are libc-only).

    python -m devtools.smallpython          -> prints the interpreter's path
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from devtools.kernels import KEYRING, MIRROR, default_cache

SOURCE_PACKAGE = "python3.11"
SUITE = "bookworm"
CONFIGURE = ("--prefix=/usr", "--disable-shared", "--without-ensurepip", "--without-doc-strings",
             "--disable-test-modules")
CFLAGS = "-Os"
# No zlib: binascii then uses its own crc32, and neither it nor a zlib module brings libz
# into the image (pyinit needs zlib only for .ko.gz modules, which the builder decompresses).
# Configure asks pkg-config first (kept away from every .pc file here), then the header.
CACHE_VARS = ("ac_cv_header_zlib_h=no",)
CONFIGURE_ENV = {"PKG_CONFIG_LIBDIR": "/nonexistent"}
RECIPE = 3
DONE = ".pyinit-python-complete"


class SmallPythonError(RuntimeError):
    pass


def _key() -> str:
    text = f"{RECIPE} {SOURCE_PACKAGE} {SUITE} {' '.join(CONFIGURE)} {CFLAGS} {' '.join(CACHE_VARS)} {CONFIGURE_ENV}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def root(cache: Path | None = None) -> Path:
    return (cache or default_cache()) / "bench-smallpython" / _key()


def interpreter(cache: Path | None = None) -> Path:
    return root(cache) / "usr" / "bin" / "python3.11"


def _run(argv, **kw) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if r.returncode != 0:
        raise SmallPythonError(f"{' '.join(map(str, argv))} failed:\n{(r.stderr or r.stdout)[-2000:]}")
    return r.stdout


def _fetch_source(work: Path) -> Path:
    """apt-get source --download-only, through an apt configuration of our own; returns the
    upstream tarball."""
    apt = work / "apt"
    for d in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(f"deb-src [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    import pwd
    conf = apt / "apt.conf"
    conf.write_text(f'Dir::Etc::SourceList "{apt}/sources.list";\nDir::Etc::SourceParts "{apt}/sources.list.d";\n'
                    f'Dir::Etc::PreferencesParts "{apt}/preferences.d";\nDir::State::Lists "{apt}/lists";\n'
                    f'Dir::State::status "/dev/null";\nDir::Cache "{apt}";\nAcquire::Languages "none";\n'
                    f'APT::Sandbox::User "{pwd.getpwuid(os.getuid()).pw_name}";\n')
    env = {**os.environ, "APT_CONFIG": str(conf), "LC_ALL": "C.UTF-8"}
    _run(["apt-get", "-q", "update"], env=env)
    src = work / "src"
    src.mkdir(exist_ok=True)
    _run(["apt-get", "-q", "source", "--download-only", SOURCE_PACKAGE], env=env, cwd=src)
    tarballs = sorted(src.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
    if not tarballs:
        raise SmallPythonError(f"apt-get source left no upstream tarball in {src}")
    return tarballs[-1]


def ensure(cache: Path | None = None, log=print, jobs: int = 2) -> Path:
    """Build and install the interpreter once; return its path."""
    dest = root(cache)
    exe = interpreter(cache)
    if (dest / DONE).exists():
        return exe
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / DONE).exists():
            return exe
        work = dest.parent / f"work-{_key()}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        work.mkdir(parents=True)
        log(f"smallpython: fetching the {SOURCE_PACKAGE} source package from {SUITE}")
        tarball = _fetch_source(work)
        (work / "build").mkdir()
        _run(["tar", "-xf", str(tarball), "-C", str(work / "build")])
        srcdir = next(p for p in (work / "build").iterdir() if (p / "configure").exists())
        env = {**os.environ, "CFLAGS": CFLAGS, "LC_ALL": "C", **CONFIGURE_ENV}
        log(f"smallpython: configure {' '.join(CONFIGURE)} CFLAGS={CFLAGS}")
        _run(["./configure", *CONFIGURE, *CACHE_VARS], cwd=srcdir, env=env)
        log(f"smallpython: make -j{jobs} (some minutes)")
        _run(["nice", "-n", "10", "make", f"-j{jobs}"], cwd=srcdir, env=env)
        _run(["make", "install", f"DESTDIR={dest}"], cwd=srcdir, env=env)
        shutil.rmtree(work, ignore_errors=True)
        if not exe.exists():
            raise SmallPythonError(f"make install left no {exe}")
        _add_cffi_backend(exe)
        (dest / DONE).write_text("")
    return exe


def _add_cffi_backend(exe: Path) -> None:
    """pyinit's syscalls need cffi's _cffi_backend for this interpreter: the cp311 wheel of
    the cffi release the project's venv has, from PyPI through pip (no ensurepip here, and
    the ABI is the same 3.11 one), into the interpreter's site-packages."""
    from importlib.metadata import version
    site = exe.parent.parent / "lib" / "python3.11" / "site-packages"
    _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(site), "--no-deps",
          "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
          "--platform", "manylinux2014_x86_64", f"cffi=={version('cffi')}"])


if __name__ == "__main__":
    print(ensure(log=lambda m: print(m, file=sys.stderr)))
