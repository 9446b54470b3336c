"""fsck of the root before it is mounted, when the image carries the filesystem's checker.

The command line has systemd-fsck's meaning:

    fsck.mode=auto (default) | force | skip    (also the old words fastboot, forcefsck)
    fsck.repair=preen (default) | yes | no     (also the old word fsckfix = yes)

The checker is `fsck.<type>` from the image (/usr/sbin, /usr/bin, /sbin, /bin), run as
systemd runs it through fsck(8): `-a` (preen), `-y` or `-n`, plus `-f` when forced. Its exit
status decides (fsck(8) bits):

    0   clean                       go on
    1   errors corrected            go on, and say so
    2   corrected, reboot needed    reboot (the next boot finds it clean; a checker that keeps
                                    asking would loop, as it would under systemd)
    4+  errors left, or fsck failed rescue

Never run on a filesystem that is mounted read-write anywhere (a hook may have mounted it).
"""
from __future__ import annotations

import os

from pyinit.names import PATH

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Iterable

    from pyinit.cmdline import Cmdline

CHECKER_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Filesystems that are read-only by design: nothing to check, even if a checker exists.
READ_ONLY_TYPES = ("squashfs", "squashfs3", "erofs", "iso9660")

FSCK_OK = 0
FSCK_CORRECTED = 1
FSCK_REBOOT = 2


class Settings:
    __slots__ = ("mode", "problems", "repair")

    def __init__(self, mode: str = "auto", repair: str = "preen", problems: Iterable[str] = ()) -> None:
        self.mode, self.repair, self.problems = mode, repair, list(problems)


def parse_settings(cmdline: Cmdline) -> Settings:
    """fsck.mode= / fsck.repair= (and the old words) from a Cmdline; unknown values are
    reported in `problems` and the default kept, as systemd-fsck does."""
    s = Settings()
    if cmdline.has("fastboot"):
        s.mode = "skip"
    if cmdline.has("forcefsck"):
        s.mode = "force"
    if cmdline.has("fsckfix"):
        s.repair = "yes"
    mode = cmdline.get("fsck.mode")
    if mode is not None:
        if mode in ("auto", "force", "skip"):
            s.mode = mode
        else:
            s.problems.append(f"fsck.mode={mode} is not auto, force or skip; using {s.mode}")
    repair = cmdline.get("fsck.repair")
    if repair is not None:
        if repair in ("preen", "yes", "no"):
            s.repair = repair
        else:
            s.problems.append(f"fsck.repair={repair} is not preen, yes or no; using {s.repair}")
    return s


def argv(checker: str, device: str, settings: Settings) -> list[str]:
    flag = {"preen": "-a", "yes": "-y", "no": "-n"}[settings.repair]
    out = [checker, flag]
    if settings.mode == "force":
        out.append("-f")
    out.append(device)
    return out


def find_checker(fstype: str, dirs: Iterable[str] = CHECKER_DIRS) -> str | None:
    for d in dirs:
        path = f"{d}/fsck.{fstype}"
        if os.access(path, os.X_OK):
            return path
    return None


def mounted_read_write(devnum: tuple[int, int], mountinfo: str) -> str | None:
    """The mount point where the device is mounted read-write, from /proc/self/mountinfo."""
    want = f"{devnum[0]}:{devnum[1]}"
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 5 and fields[2] == want and "rw" in fields[5].split(","):
            return fields[4]
    return None


def decide(status: int) -> str:
    """fsck(8) exit status -> "ok", "corrected", "reboot" or "failed"."""
    if status == FSCK_OK:
        return "ok"
    if status == FSCK_CORRECTED:
        return "corrected"
    if status & ~(FSCK_CORRECTED | FSCK_REBOOT) == 0:
        return "reboot"  # 2 or 3
    return "failed"


def run(checker_argv: list[str]) -> int:
    """Run the checker on the console (our fds 1 and 2), stdin from /dev/null; its status."""
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(checker_argv[0], checker_argv, {"PATH": PATH},
                             file_actions=[(os.POSIX_SPAWN_DUP2, null, 0)])
    finally:
        os.close(null)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
