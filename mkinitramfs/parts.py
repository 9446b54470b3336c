"""The parts of an image. Every entry belongs to one (image.Entry.part), and a build prints
its size table by part (sizes.py), in the order of ORDER; a part not in ORDER comes after,
by name. python.py also names a part after each package it packs whole ("pyinit", a hook's
"pyroute2")."""
from __future__ import annotations

BASE = "base"  # the layout: folders, device nodes, usr-merge links
INTERPRETER = "interpreter"  # the Python binary and libpython
LIBRARIES = "libraries"  # the loader and the shared libraries of every closure
STDLIB = "stdlib"
SITE_PACKAGES = "site-packages"
PYINIT = "pyinit"  # the package, /init, and the files that tell pyinit about its image
MODULES = "modules"  # kernel modules and their index files
FIRMWARE = "firmware"
FSCK = "fsck"  # fsck.TYPE and its libraries
CONFIG = "config"  # this machine's modprobe.d, the rescue lock
HOOKS = "hooks"
INCLUDE = "include"  # --include, and the key files of a host-only crypttab
BUSYBOX = "busybox"
MICROCODE = "microcode"  # the early cpio's blobs
OTHER = "other"  # an entry added without a part

ORDER = (BASE, INTERPRETER, LIBRARIES, STDLIB, SITE_PACKAGES, PYINIT, MODULES, FIRMWARE, FSCK, CONFIG, HOOKS)
