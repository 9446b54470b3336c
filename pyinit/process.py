"""PID 1's modes, signals and power actions while in the initramfs. Reaping and stopping
children: pyinit/reaper.py.

Modes (`detect_mode`):
  machine    PID 1 of the initial pid namespace: the kernel started us.
  container  PID 1 of another pid namespace: reboot(2) there only ends the namespace.
  child      not PID 1 at all: pyinit makes itself a child subreaper (python-prctl), so the
             orphans of what it starts come back to it, and never calls reboot(2).

Signals before the switch (documented in README.md):
  SIGCHLD   reap (pyinit/reaper.py)
  SIGINT    Ctrl-Alt-Del (pyinit turns the kernel's immediate reboot off with
            reboot(RB_DISABLE_CAD), so the kernel sends SIGINT instead): clean reboot
  SIGPWR    clean power-off (what LXC and UPS daemons send to ask init to shut down)
  SIGTERM   machine: logged and ignored (an initramfs does not stop on a stray signal);
            container: clean power-off, which ends the namespace (`docker stop`);
            child: exit
  SIGHUP    logged and ignored (a console hang-up must not stop the boot); child: exit
  SIGUSR1   log a status report: stage, time in it, processes
  SIGUSR2   toggle debug logging (rd.debug) on and off
A clean reboot/power-off: stop the leftovers, sync, remount /sysroot read-only, reboot(2).
In child mode "reboot" and "power-off" end pyinit with exit status 128 + signal instead.

What the handlers and the power actions share is `STATE`, one per process: signal
dispositions are.
"""
from __future__ import annotations

import _signal  # not `signal`: its enum import costs ~0.1 s at boot under TCG
import os
import time

from pyinit import log, proctable
from pyinit.names import NEWROOT
from pyinit.reaper import REAPER

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from types import FrameType

    from pyinit.context import Context

PID_NS_INIT_INO = 0xEFFFFFFC  # the kernel's PROC_PID_INIT_INO: inode of the initial pid ns

ACTIONS = {
    "machine": {"SIGINT": "reboot", "SIGPWR": "poweroff", "SIGTERM": "ignore", "SIGHUP": "ignore",
                "SIGUSR1": "status", "SIGUSR2": "debug"},
    "container": {"SIGINT": "reboot", "SIGPWR": "poweroff", "SIGTERM": "poweroff", "SIGHUP": "ignore",
                  "SIGUSR1": "status", "SIGUSR2": "debug"},
    "child": {"SIGINT": "exit", "SIGPWR": "exit", "SIGTERM": "exit", "SIGHUP": "exit",
              "SIGUSR1": "status", "SIGUSR2": "debug"},
}


class State:
    """What PID 1's signal handlers and power actions share."""

    def __init__(self) -> None:
        self.mode = "machine"  # see the module doc
        self.ctx: Context | None = None  # the boot, for the status report
        self.stage: tuple[str, float] | None = None  # (name, uptime at start) of the stage running now
        self.shutting_down = False  # a power action is under way: a second one waits for it
        self.cad_disabled = False  # reboot(RB_DISABLE_CAD) was done


STATE = State()


# ---------------------------------------------------------------------------- modes

def mode_for(pid: int, pidns_inode: int | None) -> str:
    if pid != 1:
        return "child"
    if pidns_inode is None or pidns_inode == PID_NS_INIT_INO:
        return "machine"
    return "container"


def detect_mode() -> str:
    try:
        ino: int | None = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ino = None
    return mode_for(os.getpid(), ino)


def mode() -> str:
    return STATE.mode


def become_subreaper(name: str = "pyinit") -> str | None:
    """Child mode: PR_SET_CHILD_SUBREAPER and a process name, with python-prctl (imported
    here only: PID 1 never needs it). Returns a problem to report, or None."""
    try:
        import prctl
    except ImportError as e:
        return f"python-prctl is not available ({e}): orphans of hooks will not come back to pyinit"
    try:
        prctl.set_child_subreaper(1)
        prctl.set_name(name)
    except (OSError, ValueError) as e:
        return f"prctl failed: {e}"
    return None


# ---------------------------------------------------------------------------- signals

_HANDLED = ("SIGINT", "SIGPWR", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
SIGNAL_NAMES = {getattr(_signal, n): n for n in (*_HANDLED, "SIGCHLD", "SIGKILL")}


def _signame(signum: int) -> str:
    return SIGNAL_NAMES.get(signum, str(signum))


def install(ctx: Context | None, mode_name: str | None = None) -> None:
    """Install the handlers (again after a failed exec reset them). Idempotent."""
    if mode_name is not None:
        STATE.mode = mode_name
    STATE.ctx = ctx
    _signal.signal(_signal.SIGCHLD, REAPER.on_sigchld)
    for name in ACTIONS[STATE.mode]:
        _signal.signal(getattr(_signal, name), _on_signal)
    if STATE.mode == "machine" and not STATE.cad_disabled:
        # Ctrl-Alt-Del: without this the kernel reboots at once, without a sync.
        _set_cad(False)


def _set_cad(enabled: bool) -> None:
    from pyinit import syscalls as sc
    try:
        sc.reboot(sc.RB_ENABLE_CAD if enabled else sc.RB_DISABLE_CAD)
        STATE.cad_disabled = not enabled
    except OSError as e:
        log.debug(f"reboot(CAD {'on' if enabled else 'off'}) failed: {e}")


def before_exec() -> None:
    """Give the kernel back its default Ctrl-Alt-Del handling for the real init (the
    signal dispositions themselves are reset by switchroot.reset_process_state)."""
    if STATE.mode == "machine":
        _set_cad(True)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = _signame(signum)
    action = ACTIONS[STATE.mode].get(name, "ignore")
    try:
        if action == "ignore":
            log.notice(f"{name} received: ignored in the initramfs (SIGINT reboots, SIGPWR powers off)")
        elif action == "status":
            log_status(name)
        elif action == "debug":
            log.set_debug(not log.is_debug())
            log.notice(f"{name} received: debug logging {'on' if log.is_debug() else 'off'}")
        elif action in ("reboot", "poweroff"):
            why = "Ctrl-Alt-Del or SIGINT" if name == "SIGINT" else name
            shutdown(action, f"{why} received")
        elif action == "exit":
            shutdown("exit", f"{name} received", code=128 + signum)
    except Exception as e:  # a handler must never take PID 1 down
        try:
            log.error(f"handling {name} failed: {type(e).__name__}: {e}")
        except Exception:
            pass


def stage_started(name: str, ctx: Context | None = None) -> None:
    """A before_stage callable: note the stage (for SIGUSR1) and reap at the boundary."""
    STATE.stage = (name, log.uptime())
    REAPER.reap_pending()


def log_status(why: str = "status") -> None:
    ctx = STATE.ctx
    now = log.uptime()
    stage = STATE.stage
    done = ", ".join(ctx.completed if ctx is not None else []) or "none"
    where = f"stage {stage[0]} for {now - stage[1]:.1f} s" if stage else "before the first stage"
    log.notice(f"status ({why}): {STATE.mode} mode, uptime {now:.1f} s, {where}; stages done: {done}")
    c = ctx.cmdline if ctx is not None else None
    if ctx is not None and c is not None and c.root and ctx.root_device is None:
        log.notice(f"status: waiting for root={c.root}")
    table = proctable.processes()
    mine = proctable.descendants_of(os.getpid(), table)
    if mine:
        log.notice("status: processes: " + ", ".join(
            f"{p} {table[p][0]} ({table[p][1]}, parent {table[p][2]})" for p in mine))
    else:
        log.notice("status: no other processes")
    log.notice(f"status: reaped so far: {REAPER.reaped}")


# ---------------------------------------------------------------------------- power

REBOOT_COMMANDS = {"reboot": "RB_AUTOBOOT", "poweroff": "RB_POWER_OFF", "halt": "RB_HALT_SYSTEM"}


def plan_shutdown(action: str, mode_name: str) -> str:
    """What `shutdown(action)` really does in a mode: "reboot(RB_...)", "sleep" or "exit".
    Pure; the rule that keeps the host safe: a child never calls reboot(2)."""
    if mode_name == "child":
        return "exit"
    if action == "halt":
        return "sleep"
    if action in REBOOT_COMMANDS:
        return f"reboot({REBOOT_COMMANDS[action]})"
    return "exit" if mode_name == "container" else "sleep"


def shutdown(action: str, why: str, code: int = 1) -> None:
    """reboot | poweroff | halt | exit, cleanly. Never returns (halt sleeps forever)."""
    if STATE.shutting_down:
        return
    STATE.shutting_down = True
    try:
        plan = plan_shutdown(action, STATE.mode)
        log.notice(f"{why}: {action}" + ("" if plan.startswith("reboot") else f" ({plan})"))
        try:
            REAPER.stop_leftovers(grace=1.0)
        except Exception as e:
            log.warning(f"stopping processes failed: {e}")
        _sync_and_remount()
        if plan == "exit":
            log.flush()
            os._exit(code)
        if plan.startswith("reboot"):
            from pyinit import syscalls as sc
            try:
                sc.reboot(getattr(sc, REBOOT_COMMANDS[action]))
            except OSError as e:
                log.error(f"{action} failed: {e}; halting instead")
                if STATE.mode == "container":
                    os._exit(code)
    finally:
        STATE.shutting_down = False
    halt_forever()


def _sync_and_remount() -> None:
    try:
        os.sync()
    except OSError:
        pass
    from pyinit import mounts
    if mounts.is_mountpoint(NEWROOT):
        from pyinit import syscalls as sc
        try:
            sc.mount(None, NEWROOT, None, sc.MS_REMOUNT | sc.MS_RDONLY)
        except OSError as e:
            log.debug(f"remounting {NEWROOT} read-only: {e}")


def halt_forever() -> None:
    """Sleep forever. Signals still work: SIGCHLD reaps, Ctrl-Alt-Del reboots."""
    log.notice("halted: pyinit keeps running and does nothing; Ctrl-Alt-Del reboots")
    while True:
        try:
            time.sleep(3600)
        except BaseException:
            pass
