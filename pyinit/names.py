"""The names pyinit and its image share: stages, paths in the image, paths at boot.

One home for each: every module that uses one imports it from here (the builder too, for
the hook stage folders). Plain constants, nothing imported: PID 1 loads this for free.
"""

# The boot's stages, in order (dracut's names): boot.py runs them, rd.break= names them,
# hooks run at them.
STAGES = ("cmdline", "pre-udev", "pre-trigger", "initqueue", "pre-mount", "mount", "pre-pivot", "cleanup")
# The folders hooks live in: the stages, with the initqueue's own sub-stages after it.
HOOK_STAGES = ("cmdline", "pre-udev", "pre-trigger", "initqueue", "initqueue/settled", "initqueue/timeout",
               "initqueue/finished", "pre-mount", "mount", "pre-pivot", "cleanup")

NEWROOT = "/sysroot"  # where the real root is mounted before the switch
# PATH of every program pyinit starts (hooks, fsck, the rescue shell): the image's own.
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CONSOLE = "/dev/console"

# In the image, written by pyinit-mkinitramfs.
HOOKS_DIR = "/usr/lib/pyinit/hooks"
HOOKS_MANIFEST = "/etc/pyinit/hooks.conf"
MODULES_LOAD = "/etc/pyinit/modules.load"  # the eager module list, in load order
KERNEL_VERSION = "/etc/pyinit/kernel-version"  # the kernel the image was built for
MODULES_ROOT = "/usr/lib/modules"  # <kver>/modules.dep ... of the modules packed
RESCUE_POLICY = "/etc/pyinit/rescue"  # open | password | off
RESCUE_SHADOW = "/etc/pyinit/rescue.shadow"  # root's hash, for --rescue password
TEST_ACTIONS = "/etc/pyinit/test-actions"  # TEST-ONLY: present only in test images (pyinit/__main__.py)
# The image's modprobe for the kernel's own requests (pyinit/modprobe.py). Not at
# /sbin/modprobe, the kernel's default: the kernel asks for dozens of crypto modules while it
# boots, before /init, and each would start an interpreter for nothing. pyinit points the
# sysctl at it from pre-udev until the switch.
MODPROBE = "/usr/lib/pyinit/modprobe"
MODPROBE_SYSCTL = "/proc/sys/kernel/modprobe"

# At boot, under /run (moved into the real root at the switch: the real system finds them).
RUN_DIR = "/run/pyinit"
BOOT_REPORT = RUN_DIR + "/boot.json"
CMDLINE_PARAMS = RUN_DIR + "/cmdline.params"  # the parsed command line, for hooks
GPT_AUTO_ROOT = RUN_DIR + "/gpt-auto-root"  # what a root found without root= tells the real system
