"""Logging for PID 1: /dev/kmsg with syslog priorities, echoed to the console when needed.

Every line is `pyinit: <message>`. It always goes to /dev/kmsg (so `dmesg` and the journal
of the real system see it, whatever the console). It is also written to our stdout, the
console, but only when the kernel would not print it there itself: when its priority is
numerically at or above the console log level (/proc/sys/kernel/printk) and `quiet` is not
set. That way a line is never shown twice, and `console=null` or a missing console never
stops the boot: console write errors are swallowed.
"""
import os
import sys
import time

EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)

_state = {
    "kmsg": None,  # fd of /dev/kmsg, or None
    "console_level": 7,  # the kernel's default console_loglevel
    "quiet": False,
    "debug": False,
    "stderr_fallback": True,
}


def open_kmsg(path: str = "/dev/kmsg") -> bool:
    if _state["kmsg"] is not None:
        return True
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


def configure(*, quiet: bool | None = None, debug: bool | None = None,
              printk_path: str = "/proc/sys/kernel/printk") -> None:
    if quiet is not None:
        _state["quiet"] = quiet
    if debug is not None:
        _state["debug"] = debug
    try:
        with open(printk_path) as f:
            _state["console_level"] = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass


def unthrottle_kmsg(path: str = "/proc/sys/kernel/printk_devkmsg") -> None:
    """Writes to /dev/kmsg are rate limited (10 lines per 5 s) by default: turn that off,
    as systemd does. Fails harmlessly when printk.devkmsg= on the command line locked it."""
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
        if echo_to_console(priority) or not wrote_kmsg:
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


def flush() -> None:
    try:
        sys.stdout.flush()
    except Exception:
        pass
