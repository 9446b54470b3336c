"""Where things are in an image: the paths the builder writes and pyinit reads at boot come
from pyinit.names (one home for both sides); the few only the builder and `verify` use are
here."""
from __future__ import annotations

from pyinit.names import (
                          CONSOLE,
                          HOOKS_DIR,
                          HOOKS_MANIFEST,
                          KERNEL_VERSION,
                          MODPROBE,
                          MODULES_LOAD,
                          NEWROOT,
                          RESCUE_POLICY,
                          RESCUE_SHADOW,
)

__all__ = ["CONSOLE", "CRYPTTAB", "DLOPEN_LIST", "HOOKS_DIR", "HOOKS_MANIFEST", "INIT", "KERNEL_VERSION", "MODPROBE",
           "MODULES_LOAD", "NEWROOT", "RESCUE_POLICY", "RESCUE_SHADOW"]

INIT = "/init"  # what the kernel runs
CRYPTTAB = "/etc/crypttab"  # read by the luks hook
# Only the builder's: the libraries the hooks' programs dlopen(), which `verify` checks.
DLOPEN_LIST = "/etc/pyinit/dlopen"
