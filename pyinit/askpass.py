"""Asking for a secret on every console at once, and keeping it only as long as it is used.

`ask(prompt, paths)` writes the prompt on each console named by console= (serial and tty
together: a laptop's screen and a server's serial line), with echo off, and returns the first
line typed on any of them as a bytearray. The other consoles get a newline and their pending
input is discarded. Secrets are bytearrays so that `wipe()` can overwrite them in place once
cryptsetup has them: a str or bytes copy could not be erased and would stay in PID 1's heap.
"""
from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Iterable

    from pyinit.log import Logger

MAX_LINE = 4096  # the kernel's canonical-mode line limit; longer input is cut there


def wipe(secret: bytearray | None) -> None:
    """Overwrite a bytearray in place, then empty it."""
    if secret is None:
        return
    n = len(secret)
    secret[:n] = bytes(n)
    try:
        del secret[:]
    except BufferError:  # a memoryview still holds it: the zeros stay
        pass


def console_paths(consoles: Iterable[str | None] | None, dev: str = "/dev",
                  fallback: str = "/dev/console") -> list[str]:
    """console= values (["tty0", "ttyS0,115200n8"]) -> the device nodes to prompt on, in
    order, once each; `fallback` when none is named or none exists. Pure apart from the
    existence checks."""
    out = []
    for value in consoles or ():
        name = (value or "").split(",", 1)[0].strip()
        if not name or name == "null" or "/" in name:
            continue
        path = os.path.join(dev, name)
        if path not in out and os.path.exists(path):
            out.append(path)
    return out or [fallback]


def read_line(prompt: str, console: str) -> str | None:
    """One line typed on `console` with echo off, without its newline (None at end of input
    with nothing typed). For what is not a secret to keep: the rescue's password prompt
    wipes its own copy; hooks get it through HookContext.prompt_secret."""
    import termios
    fd = os.open(console, os.O_RDWR | os.O_NOCTTY)
    try:
        old = None
        try:
            old = termios.tcgetattr(fd)
            new = list(old)
            new[3] &= ~(termios.ECHO | termios.ECHONL)
            new[3] |= termios.ICANON
            termios.tcsetattr(fd, termios.TCSAFLUSH, new)
        except termios.error:
            old = None  # not a terminal: read the line as it comes
        try:
            os.write(fd, prompt.encode())
            line = b""
            while not line.endswith(b"\n"):
                chunk = os.read(fd, 1024)
                if not chunk:
                    return None if not line else line.decode(errors="replace")
                line += chunk
        finally:
            if old is not None:
                termios.tcsetattr(fd, termios.TCSAFLUSH, old)
            os.write(fd, b"\n")
        return line.rstrip(b"\r\n").decode(errors="replace")
    finally:
        os.close(fd)


class _Tty:
    def __init__(self, path: str) -> None:
        import termios
        self.path = path
        import stat
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        self.writable = True
        if stat.S_ISFIFO(os.fstat(self.fd).st_mode):  # a pipe (container stdin, tests): read it only,
            os.close(self.fd)                           # or holding its write end would hide the end
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self.writable = False
        self.saved = None
        self.buf = bytearray(MAX_LINE)  # fixed size: growing it would leave copies behind
        self.used = 0
        try:
            self.saved = termios.tcgetattr(self.fd)
            new = list(self.saved)
            new[3] &= ~(termios.ECHO | termios.ECHONL)
            new[3] |= termios.ICANON
            # TCSAFLUSH: type-ahead from before the prompt is not taken as the answer
            termios.tcsetattr(self.fd, termios.TCSAFLUSH, new)
        except termios.error:
            self.saved = None  # not a terminal (a pipe in tests): read lines as they come

    def write(self, data: bytes) -> None:
        if not self.writable:
            return
        try:
            os.write(self.fd, data)
        except OSError:
            pass

    def close(self, flush: bool) -> None:
        import termios
        if self.saved is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSAFLUSH if flush else termios.TCSANOW, self.saved)
            except termios.error:
                pass
        wipe(self.buf)
        os.close(self.fd)


def ask(prompt: str, paths: Iterable[str], timeout: float | None = None,
        log: Logger | None = None) -> bytearray | None:
    """The first line typed on any of `paths` (without its newline), or None at end of input
    on all of them or after `timeout` seconds (None or 0: wait forever)."""
    import select
    ttys = []
    for path in dict.fromkeys(paths):
        try:
            ttys.append(_Tty(path))
        except OSError as e:
            if log is not None:
                log.debug(f"askpass: cannot open {path}: {e.strerror}")
    if not ttys:
        return None
    deadline = time.monotonic() + timeout if timeout else None
    answer = None
    try:
        for t in ttys:
            t.write(prompt.encode())
        live = list(ttys)
        while live and answer is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            ready, _, _ = select.select([t.fd for t in live], [], [], left)
            for t in [t for t in live if t.fd in ready]:
                try:
                    # straight into the bytearray: no immutable copy of the secret
                    n = os.readv(t.fd, [memoryview(t.buf)[t.used:]])
                except OSError:
                    n = 0
                if n == 0:
                    live.remove(t)
                    if t.used:  # a last line without its newline (a pipe): take it
                        answer = t.buf[:t.used]
                        break
                    continue
                t.used += n
                filled = memoryview(t.buf)[:t.used]
                end = next((i for i, b in enumerate(filled) if b in (10, 13)), -1)
                filled.release()
                if end >= 0 or t.used >= MAX_LINE:
                    answer = t.buf[:end if end >= 0 else t.used]
                    break
    finally:
        for t in ttys:
            t.write(b"\n")
            t.close(flush=True)  # also wipes what it read
    return answer
