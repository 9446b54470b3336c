"""Processes and signals of PID 1 while in the initramfs: modes, reaping, signal actions,
stopping leftovers before the real init, and the power actions.

Modes (`detect_mode`):
  machine    PID 1 of the initial pid namespace: the kernel started us.
  container  PID 1 of another pid namespace: reboot(2) there only ends the namespace.
  child      not PID 1 at all: pyinit makes itself a child subreaper (python-prctl), so the
             orphans of what it starts come back to it, and never calls reboot(2).

Reaping. Orphans are re-parented to PID 1 (or to us as a subreaper) and must be reaped or
they stay zombies. SIGCHLD reaps them at once, except while reaping is *held*: __main__
holds it while the stages run, so that a hook runner or fsck waiting for its own child
never finds it reaped by us (Python's subprocess would then report exit status 0). While
held, SIGCHLD only notes that something died, and the zombies are reaped at the next stage
boundary (`reap_pending`). The contract for code that runs in a stage: wait for the
children you start before your stage ends, or `protect(pid)` them.

Before the real init runs, `stop_leftovers()` sends SIGTERM (then SIGKILL after a grace
period) to every descendant still alive and reaps them all, so the real init inherits no
orphan and no zombie. A process whose argv[0] starts with '@' is spared (systemd's
convention for storage daemons that must outlive the initramfs).

Signals before the switch (documented in README.md):
  SIGCHLD   reap (see above)
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
"""
import _signal  # not `signal`: its enum import costs ~0.1 s at boot under TCG
import os
import time

from pyinit import log
from pyinit.errors import Deadline
from pyinit.names import NEWROOT

PID_NS_INIT_INO = 0xEFFFFFFC  # the kernel's PROC_PID_INIT_INO: inode of the initial pid ns

ACTIONS = {
    "machine": {"SIGINT": "reboot", "SIGPWR": "poweroff", "SIGTERM": "ignore", "SIGHUP": "ignore",
                "SIGUSR1": "status", "SIGUSR2": "debug"},
    "container": {"SIGINT": "reboot", "SIGPWR": "poweroff", "SIGTERM": "poweroff", "SIGHUP": "ignore",
                  "SIGUSR1": "status", "SIGUSR2": "debug"},
    "child": {"SIGINT": "exit", "SIGPWR": "exit", "SIGTERM": "exit", "SIGHUP": "exit",
              "SIGUSR1": "status", "SIGUSR2": "debug"},
}

_state = {
    "mode": "machine",
    "ctx": None,
    "hold": 0,
    "pending": False,
    "shutting_down": False,
    "cad_disabled": False,
    "stage": None,  # (name, uptime at start) of the stage running now
}
protected: set[int] = set()
abandoned: dict[int, str] = {}  # pid -> why: SIGKILLed already, asleep in the kernel for good
stats = {"reaped": 0, "stopped": []}


# ---------------------------------------------------------------------------- modes

def mode_for(pid: int, pidns_inode: int | None) -> str:
    if pid != 1:
        return "child"
    if pidns_inode is None or pidns_inode == PID_NS_INIT_INO:
        return "machine"
    return "container"


def detect_mode() -> str:
    try:
        ino = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ino = None
    return mode_for(os.getpid(), ino)


def mode() -> str:
    return _state["mode"]


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


# ---------------------------------------------------------------------------- /proc

def parse_stat(text: str) -> tuple[int, str, str, int]:
    """A /proc/<pid>/stat line -> (pid, comm, state, ppid). comm may hold spaces and ')'."""
    left, _, right = text.rpartition(")")
    pid_s, _, comm = left.partition(" (")
    fields = right.split()
    return int(pid_s), comm, fields[0], int(fields[1])


def processes(proc: str = "/proc") -> dict[int, tuple[str, str, int]]:
    """pid -> (comm, state, ppid) for every process visible in /proc."""
    out = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat") as f:
                pid, comm, state, ppid = parse_stat(f.read())
        except (OSError, ValueError, IndexError):
            continue
        out[pid] = (comm, state, ppid)
    return out


def descendants_of(root: int, table: dict[int, tuple[str, str, int]]) -> list[int]:
    """Every pid below `root` in the parent tree of `table`, parents before children."""
    kids: dict[int, list[int]] = {}
    for pid, (_, _, ppid) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], sorted(kids.get(root, []))
    while todo:
        pid = todo.pop(0)
        if pid == root or pid in out:
            continue
        out.append(pid)
        todo.extend(sorted(kids.get(pid, [])))
    return out


def children() -> list[int]:
    """Our direct children (/proc/self/task/*/children, else a scan of /proc)."""
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
        for tid in tasks:
            with open(f"/proc/self/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        return out
    except (OSError, ValueError):
        me = os.getpid()
        return [pid for pid, (_, _, ppid) in processes().items() if ppid == me]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _argv0(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0]
    except OSError:
        return b""


def describe_status(status: int) -> str:
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"wait status {status}"


# ---------------------------------------------------------------------------- reaping

class _Holding:
    def __enter__(self):
        _state["hold"] += 1
        return self

    def __exit__(self, *exc):
        _state["hold"] -= 1
        if _state["hold"] <= 0:
            _state["hold"] = 0
            reap_pending()
        return False


def holding() -> _Holding:
    """`with process.holding():` no reaping from SIGCHLD inside (see the module doc)."""
    return _Holding()


def protect(pid: int) -> None:
    protected.add(pid)


def abandon(pid: int, why: str) -> None:
    """A child that was SIGKILLed and may never die (asleep in a read of a dead disk):
    reaped if it ever dies, but stop_leftovers does not wait for it."""
    protected.discard(pid)
    abandoned[pid] = why


def unprotect(pid: int) -> None:
    protected.discard(pid)


def reap() -> list[tuple[int, str, int]]:
    """Reap every dead child that nobody protects; (pid, comm, status) of each."""
    _state["pending"] = False
    out = []
    while True:
        try:
            if protected:
                candidates = [p for p in children() if p not in protected]
            else:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                candidates = [info.si_pid] if info is not None else []
        except ChildProcessError:
            break
        except OSError:
            break
        got_one = False
        for pid in candidates:
            comm = _comm(pid)
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
        stats["reaped"] += 1
        log.debug(f"reaped pid {pid} ({comm}): {describe_status(status)}")
    return out


def reap_pending() -> None:
    """At a safe point (a stage boundary): reap what SIGCHLD announced while held."""
    if _state["pending"]:
        reap()


def wait_child(pid: int) -> int:
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
        unprotect(pid)


def call_with_deadline(fn, timeout: float):
    """fn() in a forked child, for a call that may block in the kernel for good (a mount(2)
    of an NFS server that never answers: the signal that would end a hook's time cannot
    interrupt it, and PID 1 would sleep in it forever). Returns what fn returned (marshal-
    able values); re-raises an OSError it raised; raises Deadline after `timeout` seconds,
    having SIGKILLed the child (its wait is killable; the reaper collects it). The child
    shares PID 1's mounts: what it mounts is mounted for PID 1."""
    import marshal
    import select
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: never return into PID 1's code
        try:
            os.close(r)
            for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGPWR", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGALRM"):
                _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
            try:
                answer = ("ok", fn())
            except OSError as e:
                answer = ("oserror", (e.errno or 0, str(e)))
            except BaseException as e:
                answer = ("error", f"{type(e).__name__}: {e}")
            os.write(w, marshal.dumps(answer))
        finally:
            os._exit(0)
    protect(pid)
    os.close(w)
    data = b""
    end = time.monotonic() + timeout
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, _signal.SIGKILL)
                abandon(pid, f"SIGKILLed after {timeout:g} s in a call that did not return")
                raise Deadline(f"no answer within {timeout:g} s")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    wait_child(pid)
    try:
        kind, value = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        raise OSError(0, "the child died without an answer") from None
    if kind == "oserror":
        raise OSError(value[0], value[1])
    if kind == "error":
        raise RuntimeError(value)
    return value


def stop_leftovers(grace: float = 2.0) -> list[tuple[int, str]]:
    """SIGTERM, then SIGKILL, every descendant (but '@' ones), and reap them all."""
    try:
        if not children():  # the plain boot: nothing was ever left behind, skip the /proc scan
            return []
    except OSError:
        pass
    me = os.getpid()
    table = processes()
    targets = []
    for pid in descendants_of(me, table):
        comm, state, _ = table[pid]
        if state == "Z":
            continue
        if _argv0(pid).startswith(b"@"):
            log.info(f"leaving pid {pid} ({comm}) running: its argv[0] starts with '@'")
            continue
        if pid in abandoned:
            log.notice(f"leaving pid {pid} ({comm}, state {state}) to the real init: {abandoned[pid]}")
            continue
        targets.append((pid, comm))
    stopped = []
    if targets:
        log.notice("stopping processes left by the initramfs before the real init runs: "
                   + ", ".join(f"{pid} ({comm})" for pid, comm in targets))
    for sig, wait in ((_signal.SIGTERM, grace), (_signal.SIGKILL, 2.0)):
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
            reap()
            table = processes()
            alive = [(p, c) for p, c in alive if p in table and table[p][1] != "Z"]
            if alive:
                time.sleep(0.02)
        stopped.extend(t for t in targets if t not in alive)
        if sig == _signal.SIGKILL and alive:
            log.warning("still alive after SIGKILL: " + ", ".join(f"{p} ({c})" for p, c in alive))
        targets = alive
        if not targets:
            break
    # Whatever died meanwhile, our direct children or not, is reaped now.
    reap()
    stats["stopped"].extend(stopped)
    return stopped


# ---------------------------------------------------------------------------- signals

_HANDLED = ("SIGINT", "SIGPWR", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
SIGNAL_NAMES = {getattr(_signal, n): n for n in _HANDLED + ("SIGCHLD", "SIGKILL")}


def _signame(signum: int) -> str:
    return SIGNAL_NAMES.get(signum, str(signum))


def install(ctx, mode_name: str | None = None) -> None:
    """Install the handlers (again after a failed exec reset them). Idempotent."""
    if mode_name is not None:
        _state["mode"] = mode_name
    _state["ctx"] = ctx
    _signal.signal(_signal.SIGCHLD, _on_sigchld)
    for name in ACTIONS[_state["mode"]]:
        _signal.signal(getattr(_signal, name), _on_signal)
    if _state["mode"] == "machine" and not _state["cad_disabled"]:
        # Ctrl-Alt-Del: without this the kernel reboots at once, without a sync.
        _set_cad(False)


def _set_cad(enabled: bool) -> None:
    from pyinit import syscalls as sc
    try:
        sc.reboot(sc.RB_ENABLE_CAD if enabled else sc.RB_DISABLE_CAD)
        _state["cad_disabled"] = not enabled
    except OSError as e:
        log.debug(f"reboot(CAD {'on' if enabled else 'off'}) failed: {e}")


def before_exec() -> None:
    """Give the kernel back its default Ctrl-Alt-Del handling for the real init (the
    signal dispositions themselves are reset by switchroot.reset_process_state)."""
    if _state["mode"] == "machine":
        _set_cad(True)


def _on_sigchld(signum, frame) -> None:
    if _state["hold"] > 0:
        _state["pending"] = True
        return
    try:
        reap()
    except Exception:
        pass


def _on_signal(signum, frame) -> None:
    name = _signame(signum)
    action = ACTIONS[_state["mode"]].get(name, "ignore")
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


def stage_started(name: str, ctx=None) -> None:
    """A before_stage callable: note the stage (for SIGUSR1) and reap at the boundary."""
    _state["stage"] = (name, log.uptime())
    reap_pending()


def log_status(why: str = "status") -> None:
    ctx = _state["ctx"]
    now = log.uptime()
    stage = _state["stage"]
    done = ", ".join(ctx.completed if ctx is not None else []) or "none"
    where = f"stage {stage[0]} for {now - stage[1]:.1f} s" if stage else "before the first stage"
    log.notice(f"status ({why}): {_state['mode']} mode, uptime {now:.1f} s, {where}; "
               f"stages done: {done}")
    c = ctx.cmdline if ctx is not None else None
    if ctx is not None and c is not None and c.root and ctx.root_device is None:
        log.notice(f"status: waiting for root={c.root}")
    table = processes()
    mine = descendants_of(os.getpid(), table)
    if mine:
        log.notice("status: processes: " + ", ".join(
            f"{p} {table[p][0]} ({table[p][1]}, parent {table[p][2]})" for p in mine))
    else:
        log.notice("status: no other processes")
    log.notice(f"status: reaped so far: {stats['reaped']}")


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
    if _state["shutting_down"]:
        return
    _state["shutting_down"] = True
    try:
        plan = plan_shutdown(action, _state["mode"])
        log.notice(f"{why}: {action}" + ("" if plan.startswith("reboot") else f" ({plan})"))
        try:
            stop_leftovers(grace=1.0)
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
                if _state["mode"] == "container":
                    os._exit(code)
    finally:
        _state["shutting_down"] = False
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
