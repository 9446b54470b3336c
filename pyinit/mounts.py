"""Mount options ("ro,noatime,data=ordered" -> flags, data) and the early API mounts."""
from __future__ import annotations

import os

from pyinit import syscalls as sc

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from pyinit.log import Logger

# Words mount(8) turns into flags: word -> (flags to set, flags to clear).
_FLAG_WORDS = {
    "ro": (sc.MS_RDONLY, 0),
    "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0),
    "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0),
    "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0),
    "exec": (0, sc.MS_NOEXEC),
    "sync": (sc.MS_SYNCHRONOUS, 0),
    "async": (0, sc.MS_SYNCHRONOUS),
    "dirsync": (sc.MS_DIRSYNC, 0),
    "noatime": (sc.MS_NOATIME, 0),
    "atime": (0, sc.MS_NOATIME),
    "nodiratime": (sc.MS_NODIRATIME, 0),
    "diratime": (0, sc.MS_NODIRATIME),
    "relatime": (sc.MS_RELATIME, 0),
    "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0),
    "nostrictatime": (0, sc.MS_STRICTATIME),
    "lazytime": (sc.MS_LAZYTIME, 0),
    "nolazytime": (0, sc.MS_LAZYTIME),
    "iversion": (sc.MS_I_VERSION, 0),
    "noiversion": (0, sc.MS_I_VERSION),
    "mand": (sc.MS_MANDLOCK, 0),
    "nomand": (0, sc.MS_MANDLOCK),
    "silent": (sc.MS_SILENT, 0),
    "loud": (0, sc.MS_SILENT),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, 0),
}
# Words that only mean something to mount(8) or fstab, never to the kernel.
_USERSPACE_WORDS = {"defaults", "auto", "noauto", "nofail", "user", "nouser", "users", "owner",
                    "group", "_netdev", "x-initrd.mount"}


def parse_options(options: str, flags: int = 0) -> tuple[int, str]:
    """Split a mount option string into (MS_* flags, data string for the filesystem).

    Later words win over earlier ones, as with mount(8). Unknown words go to the data string
    unchanged, in order, for the filesystem to judge.
    """
    data = []
    for raw in options.split(","):
        word = raw.strip()
        if not word or word in _USERSPACE_WORDS or word.startswith("x-"):
            continue
        if word in _FLAG_WORDS:
            set_bits, clear_bits = _FLAG_WORDS[word]
            flags = (flags | set_bits) & ~clear_bits
        else:
            data.append(word)
    return flags, ",".join(data)


# What the initramfs mounts first; the same four are moved under the new root at the switch.
API_MOUNTS = (
    # target, fstype, source, flags, data
    ("/proc", "proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None),
    ("/sys", "sysfs", "sysfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None),
    ("/dev", "devtmpfs", "devtmpfs", sc.MS_NOSUID, "mode=0755"),
    ("/run", "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755"),
)


def is_mountpoint(path: str) -> bool:
    """True when `path` is the root of a mount (differs in device from its parent, or is /)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        parent = os.stat(os.path.join(path, ".."), follow_symlinks=False)
    except OSError:
        return False
    return st.st_dev != parent.st_dev or st.st_ino == parent.st_ino


def unescape(field: str) -> str:
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_api_filesystems(log: Logger) -> None:
    """Mount /proc, /sys, /dev, /run unless something is already mounted there."""
    for target, fstype, source, flags, data in API_MOUNTS:
        try:
            os.makedirs(target, mode=0o755, exist_ok=True)
        except OSError:
            pass
        if is_mountpoint(target):
            log.debug(f"{target} already mounted")
            continue
        sc.mount(source, target, fstype, flags, data)
    for d, mode in (("/dev/pts", 0o755), ("/dev/shm", 0o1777)):
        try:
            os.makedirs(d, mode=mode, exist_ok=True)
        except OSError:
            pass
    # The image may carry no /dev/console etc.; devtmpfs provides them now.
