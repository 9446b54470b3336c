"""Logging for PID 1: /dev/kmsg with syslog priorities, echoed to the console when needed.

Every line is `pyinit: <message>`. It always goes to /dev/kmsg (so `dmesg` and the journal
of the real system see it, whatever the console). It is also written to our stdout, the
console, but only when the kernel would not print it there itself: when its priority is
numerically at or above the console log level (/proc/sys/kernel/printk, which `loglevel=`
and `quiet` set) and `quiet` is not set. That way a line is never shown twice, and
`console=null` or a missing console never stops the boot: console write errors are
swallowed. A line /dev/kmsg refused is always echoed, whatever the level.

In container mode (pyinit is not PID 1 of a machine) /dev/kmsg is the host's kernel log:
it is never opened and never unthrottled; every line goes to stdout with a `<N>` level
prefix instead (`configure(kmsg=False)`).

Warnings and errors are also kept (the last 100) for the boot report.
"""
from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from typing import Protocol, TypedDict

    class Logger(Protocol):
        """What code that is handed a logger calls: this module is one (so is a test's)."""

        def debug(self, msg: str) -> None: ...

        def info(self, msg: str) -> None: ...

        def notice(self, msg: str) -> None: ...

        def warning(self, msg: str) -> None: ...

        def error(self, msg: str) -> None: ...

    class _State(TypedDict):
        kmsg: int | None  # fd of /dev/kmsg, or None
        kmsg_enabled: bool  # False in container mode: the host's log is not ours
        console_level: int  # the kernel's console_loglevel
        quiet: bool
        debug: bool
        stderr_fallback: bool

EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)
NOTABLE_KEEP = 100

_state: _State = {
    "kmsg": None,  # fd of /dev/kmsg, or None
    "kmsg_enabled": True,  # False in container mode: the host's log is not ours
    "console_level": 7,  # the kernel's default console_loglevel
    "quiet": False,
    "debug": False,
    "stderr_fallback": True,
}
# (priority, uptime, text) of warnings and worse, for /run/pyinit/boot.json
notable: list[tuple[int, float, str]] = []


def open_kmsg(path: str = "/dev/kmsg") -> bool:
    if _state["kmsg"] is not None:
        return True
    if not _state["kmsg_enabled"]:
        return False
    try:
        _state["kmsg"] = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return False
    return True


def close_kmsg() -> None:
    fd = _state["kmsg"]
    _state["kmsg"] = None
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def configure(*, quiet: bool | None = None, debug: bool | None = None, kmsg: bool | None = None,
              printk_path: str = "/proc/sys/kernel/printk") -> None:
    if quiet is not None:
        _state["quiet"] = quiet
    if debug is not None:
        _state["debug"] = debug
    if kmsg is not None:
        _state["kmsg_enabled"] = kmsg
        if not kmsg:
            close_kmsg()
    try:
        with open(printk_path) as f:
            _state["console_level"] = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass


def unthrottle_kmsg(path: str = "/proc/sys/kernel/printk_devkmsg") -> None:
    """Writes to /dev/kmsg are rate limited (10 lines per 5 s) by default: turn that off,
    as systemd does. Fails harmlessly when printk.devkmsg= on the command line locked it.
    Never in container mode: that file is the host's setting."""
    if not _state["kmsg_enabled"]:
        return
    try:
        with open(path, "w") as f:
            f.write("on\n")
    except OSError:
        pass


def echo_to_console(priority: int) -> bool:
    if _state["quiet"] and priority > WARNING:
        return False
    return priority >= _state["console_level"]


def log(priority: int, message: str) -> None:
    if priority == DEBUG and not _state["debug"]:
        return
    lines = str(message).splitlines() or [""]
    fd = _state["kmsg"]
    if priority <= WARNING:
        del notable[:-NOTABLE_KEEP]
        notable.append((priority, round(uptime(), 3), str(message)))
    for line in lines:
        text = f"pyinit: {line}"
        wrote_kmsg = False
        if fd is not None:
            try:
                # One write() is one kmsg record; the <N> prefix sets its priority.
                os.write(fd, f"<{priority}>{text}\n".encode("utf-8", "replace"))
                wrote_kmsg = True
            except OSError:
                pass
        if not _state["kmsg_enabled"]:
            _console_write(f"<{priority}>{text}\n")
        elif echo_to_console(priority) or not wrote_kmsg:
            _console_write(text + "\n")


def _console_write(text: str) -> None:
    try:
        os.write(1, text.encode("utf-8", "replace"))
    except OSError:
        if _state["stderr_fallback"]:
            try:
                os.write(2, text.encode("utf-8", "replace"))
            except OSError:
                pass


def debug(msg: str) -> None:
    log(DEBUG, msg)


def info(msg: str) -> None:
    log(INFO, msg)


def notice(msg: str) -> None:
    log(NOTICE, msg)


def warning(msg: str) -> None:
    log(WARNING, msg)


def error(msg: str) -> None:
    log(ERR, msg)


def uptime() -> float:
    """Seconds since boot, on the clock the kernel's log timestamps use (near enough)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def is_debug() -> bool:
    return _state["debug"]


def set_debug(on: bool) -> None:
    _state["debug"] = on


def flush() -> None:
    try:
        sys.stdout.flush()
    except Exception:
        pass
