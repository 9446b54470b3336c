"""Kernel uevents: the pure message parser, the netlink listener, and the coldplug trigger.

A kernel uevent on NETLINK_KOBJECT_UEVENT (multicast group 1) is one datagram:

    add@/devices/pci0000:00/0000:00:04.0/virtio1/block/vda\\0ACTION=add\\0DEVPATH=...\\0
    SUBSYSTEM=block\\0MAJOR=254\\0MINOR=0\\0DEVNAME=vda\\0DEVTYPE=disk\\0SEQNUM=1234\\0

udevd re-broadcasts processed events on group 2 with a "libudev\\0" binary header; we only
join group 1, and `parse` rejects anything that is not the kernel's text form.

Coldplug: devices that existed before the listener (everything the kernel found before
/init ran) are replayed by writing "add" to their `uevent` file, as `udevadm trigger
--action=add` does. We trigger every device on a bus (/sys/bus/*/devices/*: that is where
every MODALIAS lives) and every block device; class devices such as ttys carry neither a
MODALIAS nor anything to probe, so replaying them would only cost time.

Uses `_socket` directly: the `socket` module imports enum and selectors, which PID 1's
start-up does not need.
"""
from __future__ import annotations

import _socket
import errno
import os

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Iterable

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; root may exceed rmem_max
RCVBUF = 8 * 1024 * 1024  # a coldplug burst must not overflow (ENOBUFS) before we read it


class Uevent:
    __slots__ = ("action", "devpath", "env")

    def __init__(self, action: str, devpath: str, env: dict[str, str]) -> None:
        self.action, self.devpath, self.env = action, devpath, env

    @property
    def subsystem(self) -> str:
        return self.env.get("SUBSYSTEM", "")

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.env.get(key, default)

    def __repr__(self) -> str:
        return f"Uevent({self.action}@{self.devpath}, {self.subsystem})"


def parse(msg: bytes) -> Uevent | None:
    """A kernel uevent datagram -> Uevent; None for anything else (libudev's binary
    re-broadcasts, truncated or malformed messages)."""
    if not msg or msg.startswith(b"libudev\0"):
        return None
    parts = msg.split(b"\0")
    head = parts[0].decode("utf-8", "replace")
    action, at, devpath = head.partition("@")
    if not at or not action or not devpath.startswith("/"):
        return None
    env: dict[str, str] = {}
    for p in parts[1:]:
        if not p:
            continue
        key, eq, value = p.decode("utf-8", "replace").partition("=")
        if eq:
            env[key] = value
    # The header and ACTION/DEVPATH must agree; when they are missing the header says it.
    env.setdefault("ACTION", action)
    env.setdefault("DEVPATH", devpath)
    if env["ACTION"] != action or env["DEVPATH"] != devpath:
        return None
    return Uevent(action, devpath, env)


def parse_uevent_file(text: str) -> dict[str, str]:
    """The KEY=value lines of a /sys/.../uevent file (what an event for it would carry)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            out[key] = value
    return out


class Listener:
    """The kernel's uevent multicast group, read without blocking longer than asked."""

    def __init__(self) -> None:
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC,
                                   NETLINK_KOBJECT_UEVENT)
        try:
            self.sock.setsockopt(_socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, RCVBUF)
        self.sock.bind((0, KERNEL_GROUP))
        self.overflowed = False  # events were lost: the caller must rescan /sys

    def receive(self, timeout: float | None) -> list[Uevent]:
        """Wait up to `timeout` seconds for the first event, then take whatever else is queued."""
        out: list[Uevent] = []
        self.sock.settimeout(timeout)
        while True:
            try:
                msg = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overflowed = True
                    continue
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    break
                raise
            ev = parse(msg)
            if ev is not None:
                out.append(ev)
            self.sock.settimeout(0)
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def coldplug_paths(sys_root: str = "/sys") -> list[str]:
    """The uevent files `trigger` writes to: bus devices first (drivers get loaded while
    the block devices are replayed), then block devices."""
    out: list[str] = []
    bus = f"{sys_root}/bus"
    try:
        buses = sorted(os.listdir(bus))
    except OSError:
        buses = []
    for b in buses:
        d = f"{bus}/{b}/devices"
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        out.extend(f"{d}/{n}/uevent" for n in names)
    block = f"{sys_root}/class/block"
    try:
        out.extend(f"{block}/{n}/uevent" for n in sorted(os.listdir(block)))
    except OSError:
        pass
    return out


def trigger(paths: Iterable[str], action: str = "add") -> int:
    """Write `action` to each uevent file; returns how many accepted it."""
    data = action.encode()
    n = 0
    for p in paths:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.write(fd, data)
            n += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return n
