"""Where things are in an image: the paths the builder writes and pyinit reads at boot
(pyinit knows them under the same names), and the few only the builder and `verify` use."""
from __future__ import annotations

INIT = "/init"  # what the kernel runs
CONSOLE = "/dev/console"  # opened by the kernel for /init's stdio, before anything is mounted
NEWROOT = "/sysroot"  # where pyinit mounts the real root before the switch

HOOKS_DIR = "/usr/lib/pyinit/hooks"  # <stage>/<NN>-<hook>[.py]
HOOKS_MANIFEST = "/etc/pyinit/hooks.conf"  # one line of settings per hook script
MODULES_LOAD = "/etc/pyinit/modules.load"  # the modules loaded at every boot, in load order
KERNEL_VERSION = "/etc/pyinit/kernel-version"  # the kernel the image was built for
RESCUE_POLICY = "/etc/pyinit/rescue"  # open | password | off
RESCUE_SHADOW = "/etc/pyinit/rescue.shadow"  # root's hash, for --rescue password
# The modprobe the kernel runs for its own requests while pyinit is in charge (pyinit points
# /proc/sys/kernel/modprobe at it). Not /sbin/modprobe, the kernel's default: the kernel asks
# for crypto modules while it boots, and each request would start an interpreter for nothing.
MODPROBE = "/usr/lib/pyinit/modprobe"
CRYPTTAB = "/etc/crypttab"  # read by the luks hook

# Only the builder's: the libraries the hooks' programs dlopen(), which `verify` checks.
DLOPEN_LIST = "/etc/pyinit/dlopen"
