"""Generates pyinit/_libc.py, the out-of-line ABI-mode cffi module pyinit uses for syscalls.

Run at package build time (setup.py's cffi_modules), by the image builder when the module is
missing, or by hand: `python pyinit/_libc_build.py`. Only libc functions go here; each
wrapper lives in pyinit/syscalls.py.
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


if __name__ == "__main__":
    print(generate())
