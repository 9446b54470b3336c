"""The console: keep fds 0-2 safe, find the console again once /dev exists, tell whether a
person could be sitting at it.

The kernel opens /dev/console for init's fds 0, 1 and 2 before running /init. When that
fails (`console=null`, a console that does not exist such as `console=ttyS9`, an image
without /dev/console) init starts with *no* fds 0-2, and the first file PID 1 opens
becomes fd 0, the next fd 1: a log line written to "stdout" would then land in whatever
that file is (a block device being probed). `ensure_stdio()` runs first and fills each
missing one with /dev/console, else /dev/null, else a read-only descriptor of "/" (writes
to it fail harmlessly). `reattach()` tries /dev/console again once devtmpfs is mounted.

In container mode the console is the stdio pyinit was started with (the host's
/dev/console is not ours): `device(ctx)` is then None.
"""
from __future__ import annotations

import os

from pyinit.names import CONSOLE

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from pyinit.context import Context

ACTIVE = "/sys/class/tty/console/active"
# Console drivers nobody can type on.
_NOT_INTERACTIVE = ("ttynull", "netcon", "ttyprintk")

_missing: list[int] = []  # fds 0-2 that were not open when pyinit started


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _placeholder() -> int:
    for path, flags in ((CONSOLE, os.O_RDWR | os.O_NOCTTY), ("/dev/null", os.O_RDWR), ("/", os.O_RDONLY)):
        try:
            return os.open(path, flags)
        except OSError:
            continue
    raise OSError("no /dev/console, /dev/null or / to open")


def ensure_stdio() -> list[int]:
    """Make sure fds 0, 1, 2 are open (see the module doc). Returns the fds that were not."""
    missing = [fd for fd in (0, 1, 2) if not _is_open(fd)]
    for fd in missing:
        try:
            got = _placeholder()
        except OSError:
            break
        if got != fd:
            os.dup2(got, fd, inheritable=True)
            os.close(got)
    _missing[:] = missing
    return missing


def missing_at_start() -> list[int]:
    return list(_missing)


def reattach(path: str = CONSOLE) -> bool:
    """When fds 0-2 were missing at start, point them at the console now that devtmpfs may
    provide it. True when the console is now attached."""
    if not _missing:
        return False
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    for target in _missing:
        os.dup2(fd, target, inheritable=True)
    if fd not in (0, 1, 2):
        os.close(fd)
    _missing[:] = []
    return True


def active_consoles(path: str = ACTIVE) -> list[str]:
    """The kernel's consoles, e.g. ["tty0", "ttyS0"]; /dev/console is the last one."""
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


def device(ctx: Context) -> str | None:
    """The console device for rescue sessions: None means "our own stdio" (container mode)."""
    return ctx.console


def tty_for_shell(ctx: Context) -> str | None:
    """The real tty behind /dev/console (e.g. /dev/ttyS0): /dev/console itself can never be
    a controlling terminal, so a shell on it gets no job control and no Ctrl-C."""
    if device(ctx) is None:
        return None
    names = active_consoles()
    if names:
        path = "/dev/" + names[-1]
        if os.path.exists(path):
            return path
    return CONSOLE


def interactive(ctx: Context) -> tuple[bool, str]:
    """(True, "") when someone could answer a prompt on the console, else (False, why)."""
    dev = device(ctx)
    if dev is None:
        return (os.isatty(0), "" if os.isatty(0) else "stdin is not a terminal")
    names = active_consoles()
    if names and names[-1].rstrip("0123456789") in _NOT_INTERACTIVE:
        return False, f"the console is {names[-1]}"
    try:
        fd = os.open(dev, os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        return False, f"cannot open {dev}: {e.strerror}"
    try:
        if not os.isatty(fd):
            return False, f"{dev} is not a terminal"
    finally:
        os.close(fd)
    return True, ""
