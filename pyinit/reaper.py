"""PID 1's children: reaping them, and stopping what is left before the real init runs.

Orphans are re-parented to PID 1 (or to pyinit as a child subreaper) and must be reaped or
they stay zombies. SIGCHLD reaps them at once, except while reaping is *held*: __main__
holds it while the stages run, so that a hook runner or fsck waiting for its own child
never finds it reaped by us (Python's subprocess would then report exit status 0). While
held, SIGCHLD only notes that something died, and the zombies are reaped at the next stage
boundary (`reap_pending`). The contract for code that runs in a stage: wait for the
children you start before your stage ends, or `protect(pid)` them.

Before the real init runs, `stop_leftovers()` sends SIGTERM (then SIGKILL after a grace
period) to every descendant still alive and reaps them all, so the real init inherits no
orphan and no zombie. A process whose argv[0] starts with '@' is spared (systemd's
convention for storage daemons that must outlive the initramfs), and so is one abandoned
asleep in the kernel (`abandon`).

The state is a `Reaper`; the process has one, `REAPER`, because the kernel's children and
SIGCHLD are per process (tests make their own).
"""
from __future__ import annotations

import _signal  # not `signal`: its enum import costs ~0.1 s at boot under TCG
import os
import time

from pyinit import log, proctable
from pyinit.errors import Deadline

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType, TracebackType

    # What a call_with_deadline function may return: what marshal carries back, checked.
    Plain = None | bool | int | float | str | bytes

# The signals PID 1 handles, back to their defaults in a child that must not act as PID 1.
PID1_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGPWR", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGALRM")


class _Holding:
    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper

    def __enter__(self) -> _Holding:
        self.reaper.held += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.reaper.held -= 1
        if self.reaper.held <= 0:
            self.reaper.held = 0
            self.reaper.reap_pending()


class Reaper:
    """Who may be reaped when, and who was (see the module doc)."""

    def __init__(self) -> None:
        self.held = 0  # `with holding()` depth: SIGCHLD only notes while > 0
        self.pending = False  # SIGCHLD came while held
        self.protected: set[int] = set()  # children someone waits for: never reaped here
        self.abandoned: dict[int, str] = {}  # pid -> why: SIGKILLed, maybe asleep in the kernel for good
        self.reaped = 0  # how many (for the boot report)
        self.stopped: list[tuple[int, str]] = []  # (pid, comm) stopped before the switch

    def holding(self) -> _Holding:
        """`with REAPER.holding():` no reaping from SIGCHLD inside (see the module doc)."""
        return _Holding(self)

    def protect(self, pid: int) -> None:
        self.protected.add(pid)

    def unprotect(self, pid: int) -> None:
        self.protected.discard(pid)

    def abandon(self, pid: int, why: str) -> None:
        """A child that was SIGKILLed and may never die (asleep in a read of a dead disk):
        reaped if it ever dies, but stop_leftovers does not wait for it."""
        self.protected.discard(pid)
        self.abandoned[pid] = why

    def on_sigchld(self, signum: int, frame: FrameType | None) -> None:
        if self.held > 0:
            self.pending = True
            return
        try:
            self.reap()
        except Exception:  # a handler must never take PID 1 down
            pass

    def reap(self) -> list[tuple[int, str, int]]:
        """Reap every dead child that nobody protects; (pid, comm, status) of each."""
        self.pending = False
        out = []
        while True:
            try:
                if self.protected:
                    candidates = [p for p in proctable.children() if p not in self.protected]
                else:
                    info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    candidates = [info.si_pid] if info is not None else []
            except OSError:  # ChildProcessError: no children at all
                break
            got_one = False
            for pid in candidates:
                comm = proctable.comm(pid)
                try:
                    got, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    continue
                if got == pid:
                    got_one = True
                    out.append((pid, comm, status))
            if not got_one:
                break
        for pid, comm, status in out:
            self.reaped += 1
            log.debug(f"reaped pid {pid} ({comm}): {proctable.describe_status(status)}")
        return out

    def reap_pending(self) -> None:
        """At a safe point (a stage boundary): reap what SIGCHLD announced while held."""
        if self.pending:
            self.reap()

    def wait_child(self, pid: int) -> int:
        """Wait for a child we started and protect()ed; reaps nothing else. Returns its status."""
        try:
            while True:
                try:
                    got, status = os.waitpid(pid, 0)
                except InterruptedError:
                    continue
                if got == pid:
                    return status
        finally:
            self.unprotect(pid)

    def stop_leftovers(self, grace: float = 2.0) -> list[tuple[int, str]]:
        """SIGTERM, then SIGKILL, every descendant (but '@' ones and abandoned ones), and
        reap them all."""
        try:
            if not proctable.children():  # the plain boot: nothing was ever left behind, skip the /proc scan
                return []
        except OSError:
            pass
        targets = self._leftovers()
        stopped: list[tuple[int, str]] = []
        if targets:
            log.notice("stopping processes left by the initramfs before the real init runs: "
                       + ", ".join(f"{pid} ({comm})" for pid, comm in targets))
        for sig, wait in ((_signal.SIGTERM, grace), (_signal.SIGKILL, 2.0)):
            alive = self._signal_and_wait(targets, sig, wait)
            stopped.extend(t for t in targets if t not in alive)
            if sig == _signal.SIGKILL and alive:
                log.warning("still alive after SIGKILL: " + ", ".join(f"{p} ({c})" for p, c in alive))
            targets = alive
            if not targets:
                break
        # Whatever died meanwhile, our direct children or not, is reaped now.
        self.reap()
        self.stopped.extend(stopped)
        return stopped

    def _leftovers(self) -> list[tuple[int, str]]:
        table = proctable.processes()
        targets = []
        for pid in proctable.descendants_of(os.getpid(), table):
            comm, state, _ = table[pid]
            if state == "Z":
                continue
            if proctable.argv0(pid).startswith(b"@"):
                log.info(f"leaving pid {pid} ({comm}) running: its argv[0] starts with '@'")
                continue
            if pid in self.abandoned:
                log.notice(f"leaving pid {pid} ({comm}, state {state}) to the real init: {self.abandoned[pid]}")
                continue
            targets.append((pid, comm))
        return targets

    def _signal_and_wait(self, targets: list[tuple[int, str]], sig: int, wait: float) -> list[tuple[int, str]]:
        """Send `sig` to each target; the ones still alive after `wait` seconds."""
        alive = []
        for pid, comm in targets:
            try:
                os.kill(pid, sig)
                if sig == _signal.SIGTERM:
                    os.kill(pid, _signal.SIGCONT)
                alive.append((pid, comm))
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            self.reap()
            table = proctable.processes()
            alive = [(p, c) for p, c in alive if p in table and table[p][1] != "Z"]
            if alive:
                time.sleep(0.02)
        return alive


REAPER = Reaper()


def call_with_deadline(fn: Callable[[], Plain], timeout: float, reaper: Reaper = REAPER) -> Plain:
    """fn() in a forked child, for a call that may block in the kernel for good (a mount(2)
    of an NFS server that never answers: the signal that would end a hook's time cannot
    interrupt it, and PID 1 would sleep in it forever). Returns what fn returned (None, a
    number, a string or bytes); re-raises an OSError it raised; raises Deadline after `timeout` seconds,
    having SIGKILLed the child (its wait is killable; the reaper collects it). The child
    shares PID 1's mounts: what it mounts is mounted for PID 1."""
    import marshal
    import select
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: never return into PID 1's code
        try:
            os.close(r)
            for name in PID1_SIGNALS:
                _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
            answer: tuple[str, Plain | tuple[int, str]]
            try:
                answer = ("ok", fn())
            except OSError as e:
                answer = ("oserror", (e.errno or 0, str(e)))
            except BaseException as e:
                answer = ("error", f"{type(e).__name__}: {e}")
            os.write(w, marshal.dumps(answer))
        finally:
            os._exit(0)
    reaper.protect(pid)
    os.close(w)
    data = b""
    end = time.monotonic() + timeout
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, _signal.SIGKILL)
                reaper.abandon(pid, f"SIGKILLed after {timeout:g} s in a call that did not return")
                raise Deadline(f"no answer within {timeout:g} s")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    reaper.wait_child(pid)
    return _answer(data)


def _answer(data: bytes) -> Plain:
    import marshal
    try:
        kind, value = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        raise OSError(0, "the child died without an answer") from None
    if kind == "oserror":
        raise OSError(value[0], value[1])
    if kind == "error":
        raise RuntimeError(value)
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    raise RuntimeError(f"the child answered with a {type(value).__name__}")
