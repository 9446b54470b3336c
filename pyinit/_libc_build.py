"""Generates pyinit/_libc.py, the out-of-line ABI-mode cffi module pyinit uses for syscalls.

Run at package build time (setup.py's cffi_modules), by the image builder when the module is
missing or older than CDEF (`missing_names`), or by hand: `python pyinit/_libc_build.py`.
Only libc functions go here (and libxcrypt's crypt_rn, from libcrypt.so.1: the rescue
password, see syscalls.crypt); each wrapper lives in pyinit/syscalls.py.
"""
import os

import cffi

CDEF = """
int mount(const char *source, const char *target, const char *filesystemtype,
          unsigned long mountflags, const void *data);
int umount2(const char *target, int flags);
int pivot_root(const char *new_root, const char *put_old);
int chroot(const char *path);
long syscall(long number, ...);
int reboot(int cmd);
char *crypt_rn(const char *phrase, const char *setting, void *data, int size);
"""

ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
# None as the source: ABI mode, no C compiler involved.
ffibuilder.set_source("pyinit._libc", None)


def generate(target_dir: str | None = None) -> str:
    """Write _libc.py into target_dir (default: next to this file); return its path."""
    here = target_dir or os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "_libc.py")
    ffibuilder.emit_python_code(path)
    return path


def names() -> list[str]:
    """The functions CDEF declares."""
    import re
    return re.findall(r"(\w+)\(", CDEF.replace("(*", "("))


def missing_names(path: str) -> list[str]:
    """Functions of CDEF that a generated _libc.py at `path` lacks (it predates them)."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return names()
    return [n for n in names() if n.encode() not in text]


if __name__ == "__main__":
    print(generate())
