"""When the boot fails, or a breakpoint is reached: a diagnosis, then a way in, then either
the boot resumes or the machine does what the command line asks.

    emergency(ctx, err)   log what failed, what was asked, what was found and the next step;
                          write /run/pyinit/boot.json; then a rescue session when rd.shell
                          allows one (default on; rd.shell=0 off) and someone could be at the
                          console; leaving the session returns, and __main__ resumes the boot
                          at the failed stage. Without a session: the emergency action.
    session(ctx, why)     /bin/sh when the image has one, else the built-in Python console
                          (pyinit/rescue_console.py, imported only here).

The emergency action, when there is no rescue (`decide_action`, pure):
    rd.emergency=reboot|poweroff|halt   that, at once;
    else panic=N (N > 0)                reboot after N seconds, as the kernel would after a
                                        panic; panic=N (N < 0) reboot at once;
    else                                halt: PID 1 sleeps forever, never exits.
In a container "reboot"/"poweroff" end the namespace; as a child, pyinit exits (status 1).

Breakpoints: rd.break=STAGE[,STAGE] opens a session before that stage (and before its
hooks: dracut's rd.break=pre-mount), rd.break alone just before the switch (after the
cleanup hooks). Leaving the session continues the boot.

The image decides who may open a session (`pyinit-mkinitramfs build --rescue`), in
/etc/pyinit/rescue; nothing on the command line (rd.shell, rd.break) overrides it:
    open        a session for whoever sits at the console (dracut's behaviour; also an
                image without the file);
    password    first the root password, checked with crypt(3) against the hash packed
                in /etc/pyinit/rescue.shadow (0600), PASSWORD_TRIES tries (sulogin's
                behaviour); Ctrl-D or the last wrong one: no session;
    off         never a session: the diagnosis, then the emergency action (halt waits
                for Ctrl-Alt-Del; panic=N reboots).
A file that says anything else, or a password policy without a usable hash, opens
nothing (fail closed).
"""
from __future__ import annotations

import os
import time

from pyinit import console, log, process, proctable
from pyinit.errors import BootError
from pyinit.names import NEWROOT, PATH, RESCUE_POLICY, RESCUE_SHADOW, STAGES
from pyinit.reaper import REAPER

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:

    from pyinit.cmdline import Cmdline
    from pyinit.context import BeforeStage, Context

PROMPT = "pyinit rescue> "
POLICIES = ("open", "password", "off")
PASSWORD_TRIES = 3
PASSWORD_PROMPT = "Give root password for maintenance\n(or press Control-D to go on without it): "
FAST_SESSION = 1.0  # a session shorter than this ended without anyone typing (EOF)
FAST_SESSIONS_MAX = 3


def describe(err: BaseException) -> tuple[str, str, str]:
    """(stage, message, hint) of what ended the boot: a BootError says them; anything else
    escaped the stage runner (an internal error) and is named by its type."""
    if isinstance(err, BootError):
        return err.stage or "unknown", err.message or f"{type(err).__name__}: {err}", err.hint
    return "unknown", f"{type(err).__name__}: {err}", ""


def decide_action(c: Cmdline, mode: str = "machine") -> tuple[str, float, str]:
    """(action, delay in seconds, why) for a failed boot with no rescue. Pure. Without
    rd.emergency= or panic=, a machine halts and a container (or child) powers off: a
    halted container helps nobody."""
    value = c.get("rd.emergency")
    if value in ("halt", "poweroff", "reboot"):
        return value, 0.0, f"rd.emergency={value}"
    why = f"rd.emergency={value} is not one of halt, poweroff, reboot; " if value is not None else ""
    panic = c.get("panic")
    if panic is not None:
        try:
            n = int(panic)
        except ValueError:
            n = 0
        if n > 0:
            return "reboot", float(n), why + f"panic={n}"
        if n < 0:
            return "reboot", 0.0, why + f"panic={n}"
    if mode != "machine":
        return "poweroff", 0.0, why + f"the default in {mode} mode"
    return "halt", 0.0, why + "the default"


def rescue_allowed(c: Cmdline) -> bool:
    return c.flag("rd.shell", default=True)


# ---------------------------------------------------------------------------- diagnosis

def diagnose(ctx: Context, stage: str, message: str) -> list[str]:
    """What was asked and what was found, as lines a user can act on."""
    lines = []
    c = ctx.any_cmdline()
    asked = [f"{k}={v}" for k, v in (("root", c.root), ("rootfstype", c.rootfstype),
                                      ("rootflags", c.rootflags or None), ("init", c.init)) if v]
    lines.append("asked for: " + (", ".join(asked) or "no root= at all"))
    if "Block devices seen" not in message and stage in ("initqueue", "pre-mount", "mount", "pre-pivot", "unknown"):
        lines.append("block devices seen:")
        lines.extend("  " + d for d in ctx.devices.listing())
    mods = loaded_modules()
    if mods is not None:
        shown = ", ".join(mods[:40]) + (f" and {len(mods) - 40} more" if len(mods) > 40 else "")
        lines.append(f"kernel modules loaded ({len(mods)}): {shown or 'none'}")
    if ctx.root_device is not None:
        lines.append(f"root device found: {ctx.root_device.describe()}")
    return lines


def loaded_modules(path: str = "/proc/modules") -> list[str] | None:
    try:
        with open(path) as f:
            return sorted(line.split(" ", 1)[0] for line in f if line.strip())
    except OSError:
        return None


def generic_hint(stage: str) -> str:
    return {
        "cmdline": "check the kernel command line (root=, init=, rd.*) in the boot loader",
        "pre-udev": "check that the image was built for this kernel (pyinit-mkinitramfs --kver)",
        "initqueue": "check root= against the devices above; is the disk driver in the image "
                     "(pyinit-mkinitramfs --modules)?",
        "mount": "check rootfstype= and rootflags=, and that the filesystem's module is in the image",
        "pre-pivot": "pass init=/path/to/init, or check the root filesystem",
        "cleanup": "check that the root filesystem has /dev, /proc, /sys and /run directories",
    }.get(stage, "read the messages above; rd.debug gives more")


# ---------------------------------------------------------------------------- emergency

def emergency(ctx: Context, err: BaseException) -> None:
    """Handle a failed boot. Returns when the boot should resume; otherwise never returns."""
    for before in ctx.before_emergency:  # the test harness's seam (pyinit/context.py)
        before(ctx, err)
    process.install(ctx)  # again: a failed exec has reset the handlers
    log.open_kmsg()
    stage, message, hint = describe(err)
    ctx.failures.append({"stage": stage, "message": message, "at": round(log.uptime(), 3)})
    log.error(f"boot failed at stage {stage}: {message}")
    if not isinstance(err, BootError):
        _log_traceback(err)
    elif err.__cause__ is not None and log.is_debug():
        _log_traceback(err.__cause__)
    try:
        for line in diagnose(ctx, stage, message):
            log.error(line)
    except Exception as e:
        log.error(f"(diagnosis failed: {type(e).__name__}: {e})")
    log.error(f"next step: {hint or generic_hint(stage)}")
    _write_report(ctx, f"failed at stage {stage}")
    c = ctx.any_cmdline()
    if not rescue_allowed(c):
        log.notice("rd.shell=0: no rescue shell")
    else:
        ok, why = console.interactive(ctx)
        if not ok:
            log.warning(f"no rescue shell: nobody can type on the console ({why})")
        elif _sessions_end_at_once(ctx):
            log.warning(f"the rescue session ended at once {FAST_SESSIONS_MAX} times in a row "
                        "(no input on the console?): giving up on rescue")
        else:
            result = session(ctx, f"boot failed at stage {stage}: {message}")
            if result == "continue":
                log.notice(f"leaving the rescue session: resuming the boot at stage {stage}")
                return
    action, delay, why = decide_action(c, process.mode())
    if delay:
        log.notice(f"{action} in {delay:g} s ({why})")
        _sleep(delay)
    process.shutdown(action, f"boot failed at stage {stage}; emergency action from {why}")


def _sleep(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(1.0, end - time.monotonic()))


def _sessions_end_at_once(ctx: Context) -> bool:
    recent = ctx.rescues[-FAST_SESSIONS_MAX:]
    return len(recent) == FAST_SESSIONS_MAX and all(r["end"] - r["start"] < FAST_SESSION for r in recent)


def _log_traceback(err: BaseException) -> None:
    try:
        import traceback
        for chunk in traceback.format_exception(type(err), err, err.__traceback__):
            for line in chunk.rstrip("\n").splitlines():
                log.error("  " + line)
    except Exception:
        pass


def _write_report(ctx: Context, result: str) -> None:
    try:
        from pyinit import report
        report.write(ctx, result)
    except Exception as e:
        log.debug(f"cannot write the boot report: {e}")


# ---------------------------------------------------------------------------- sessions

def policy(path: str | None = None) -> str:
    """The image's rescue policy (see the module doc): "open" without the file, "off" for a
    file that names no policy."""
    path = path or RESCUE_POLICY
    try:
        with open(path) as f:
            value = f.read().strip()
    except FileNotFoundError:
        return "open"
    except OSError as e:
        log.warning(f"cannot read {path} ({e.strerror}): no rescue session")
        return "off"
    if value not in POLICIES:
        log.warning(f"{path} says {value!r}, not one of {', '.join(POLICIES)}: no rescue session")
        return "off"
    return value


def check_password(typed: bytes | bytearray, stored: bytes) -> bool:
    """crypt(3) of what was typed with the stored hash as its setting, compared in constant
    time. False for a hash that is no hash ("!", "*", empty: a locked account)."""
    from _operator import _compare_digest

    from pyinit import syscalls as sc
    if not stored.startswith(b"$") and len(stored) != 13:
        return False
    try:
        got = sc.crypt(bytes(typed), stored)
    except (OSError, AttributeError) as e:
        log.error(f"cannot check the rescue password: {e}")
        return False
    return got is not None and _compare_digest(got, stored)


def authorize(ctx: Context, why: str) -> bool:
    """Whether a session may open now, by the image's policy (the module doc)."""
    rule = policy()
    if rule == "open":
        return True
    if rule == "off":
        log.notice("the rescue console is off in this image (pyinit-mkinitramfs --rescue off): "
                   "no shell, whatever the command line asks")
        return False
    try:
        with open(RESCUE_SHADOW, "rb") as f:
            stored = f.read().strip()
    except OSError as e:
        log.error(f"the rescue console needs the root password, and {RESCUE_SHADOW} cannot be read "
                  f"({e.strerror}): no shell")
        return False
    from pyinit import askpass
    dev = console.device(ctx) or "/proc/self/fd/0"
    _say(ctx, f"\npyinit: {why}\n")
    for attempt in range(1, PASSWORD_TRIES + 1):
        typed = askpass.read_line(PASSWORD_PROMPT, dev)
        if typed is None:
            log.notice("no password given (end of input): no rescue shell")
            return False
        secret = bytearray(typed.encode() if isinstance(typed, str) else typed)
        try:
            ok = check_password(secret, stored)
        finally:
            secret[:] = bytes(len(secret))
        if ok:
            log.notice("rescue: root password accepted")
            return True
        _say(ctx, "Login incorrect\n")
        log.warning(f"rescue: wrong root password (try {attempt} of {PASSWORD_TRIES})")
    log.warning(f"rescue: {PASSWORD_TRIES} wrong passwords: no rescue shell")
    return False


def session(ctx: Context, why: str) -> str:
    """A rescue session; "continue" when the user left it to go on, "eof" when the console
    closed, "refused" when the image's policy gave none. Power commands inside it never
    return."""
    if not authorize(ctx, why):
        return "refused"
    start = log.uptime()
    kind = "shell" if _has_shell() else "console"
    try:
        if kind == "shell":
            result = run_shell(ctx, why)
        else:
            try:
                from pyinit import rescue_console
            except ImportError as e:  # after the switch the initramfs's files are gone
                log.error(f"no rescue console: {e}")
                return "eof"
            result = rescue_console.run(ctx, why)
    finally:
        ctx.rescues.append({"why": why, "kind": kind, "start": round(start, 3), "end": round(log.uptime(), 3)})
    return result


SHELL = "/bin/sh"


def _has_shell() -> bool:
    return os.path.isfile(SHELL) and os.access(SHELL, os.X_OK)


def run_shell(ctx: Context, why: str) -> str:
    """/bin/sh in its own session on the real console tty (job control and Ctrl-C work)."""
    import _signal as signal
    tty = console.tty_for_shell(ctx)
    banner = (f"\npyinit: {why}\npyinit: rescue shell. Leave it (exit, Ctrl-D) to continue the boot; "
              f"'reboot -f' or 'poweroff -f' to stop. The new root is {NEWROOT}.\n")
    _say(ctx, banner)
    env = {"PATH": PATH, "HOME": "/", "PS1": PROMPT.replace(">", "#"),
           "TERM": ctx.kernel_env.get("TERM", "linux"), "NEWROOT": NEWROOT}
    actions = []
    if tty is not None:
        actions = [(os.POSIX_SPAWN_OPEN, 0, tty, os.O_RDWR, 0), (os.POSIX_SPAWN_DUP2, 0, 1),
                   (os.POSIX_SPAWN_DUP2, 0, 2)]
    with REAPER.holding():
        pid = os.posix_spawn(SHELL, [SHELL, "-i"], env, file_actions=actions, setsid=True,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                                        signal.SIGHUP, signal.SIGQUIT), setsigmask=())
        REAPER.protect(pid)
    status = REAPER.wait_child(pid)
    log.notice(f"rescue shell ended: {proctable.describe_status(status)}")
    return "continue"


def _say(ctx: Context, text: str) -> None:
    dev = console.device(ctx)
    try:
        if dev is None:
            os.write(1, text.encode())
            return
        fd = os.open(dev, os.O_WRONLY | os.O_NOCTTY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------------------- breakpoints

def parse_breaks(c: Cmdline) -> tuple[list[str], bool, list[str]]:
    """rd.break values -> (stages, bare rd.break given, unknown names). Pure."""
    stages, bare, unknown = [], False, []
    for value in c.get_all("rd.break"):
        if value is None or value == "":
            bare = True
            continue
        for raw in value.split(","):
            name = raw.strip()
            if not name:
                continue
            if name in STAGES:
                if name not in stages:
                    stages.append(name)
            else:
                unknown.append(name)
    return stages, bare, unknown


def install_breakpoints(ctx: Context, c: Cmdline) -> list[BeforeStage]:
    """Callables for ctx.before_stage (first) and ctx.before_switch, from rd.break."""
    stages, bare, unknown = parse_breaks(c)
    if unknown:
        log.warning(f"rd.break={','.join(unknown)}: no such stage; the stages are {', '.join(STAGES)}")
    fired: set[str] = set()
    callables: list[BeforeStage] = []
    if stages:
        def before_stage(name: str, ctx_: Context) -> None:
            if name in stages and name not in fired:
                fired.add(name)
                breakpoint_here(ctx_, f"rd.break={name}: stopped before stage {name}")
        callables.append(before_stage)
    if bare:
        def before_switch(ctx_: Context) -> None:
            if "switch" not in fired:
                fired.add("switch")
                breakpoint_here(ctx_, f"rd.break: stopped before switching root to {ctx_.newroot}")
        ctx.before_switch.append(before_switch)
    return callables


def breakpoint_here(ctx: Context, why: str) -> None:
    log.notice(why)
    ok, reason = console.interactive(ctx)
    if not ok:
        log.warning(f"breakpoint skipped: nobody can type on the console ({reason})")
        return
    result = session(ctx, why)
    log.notice(f"leaving the breakpoint ({result}): the boot continues")
