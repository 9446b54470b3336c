"""Print, as JSON, what the interpreter running this file is: the fields of
mkinitramfs.pyinterp.Interpreter before the builder checks them.

Run as `python -I describe.py`: isolated, but with site, so that a venv's site-packages are
on the sys.path it reports. Standard library only (see pytarget/__init__.py).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig


def frozen_modules() -> list[str]:
    """The modules frozen into the binary: loaded from there whatever the file system holds."""
    try:
        import _imp
    except ImportError:
        return []
    names = getattr(_imp, "_frozen_module_names", None)  # CPython 3.11+, private
    return sorted(names()) if names is not None else []


def dynload_dir() -> str | None:
    """The lib-dynload directory on sys.path, else where the build installed extension modules."""
    found = next((p for p in sys.path if os.path.basename(p.rstrip("/")) == "lib-dynload"), None)
    return found or sysconfig.get_config_var("DESTSHARED")


def main() -> None:
    print(json.dumps({
        "executable": sys.executable,
        "base_executable": getattr(sys, "_base_executable", None) or sys.executable,
        "version": list(sys.version_info[:3]),
        "version_string": sys.version.split()[0],
        "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "platlibdir": getattr(sys, "platlibdir", "lib"),
        "stdlib_dir": getattr(sys, "_stdlib_dir", None) or sysconfig.get_path("stdlib"),
        "dynload_dir": dynload_dir(),
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "extension_suffixes": list(importlib.machinery.EXTENSION_SUFFIXES),
        "path": [p for p in sys.path if p],
        "purelib": sysconfig.get_path("purelib"),
        "platlib": sysconfig.get_path("platlib"),
        "builtin_modules": sorted(sys.builtin_module_names),
        "frozen_modules": frozen_modules(),
        "magic": importlib.util.MAGIC_NUMBER.hex(),
        "cache_tag": sys.implementation.cache_tag,
    }))


if __name__ == "__main__":
    main()
