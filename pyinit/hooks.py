"""Hooks: programs and Python modules the image carries, run at dracut's named stages.

Which hooks there are and their settings: pyinit/hookmanifest.py. The initqueue's loop
around the wait for the root device: pyinit/initqueue.py. This module runs them: hooks of a
stage run in the order of their file names, before the stage's own work, except cmdline
hooks, which run once the command line has been read (they may claim root=, see
HookContext.claim_root).

The contract (also in hooks/README.md):
- environment of an executable: the kernel's environment plus NEWROOT (/sysroot),
  PYINIT_STAGE, PYINIT_HOOK (its name), root and PYINIT_ROOT (the root= value),
  PYINIT_ROOT_DEVICE (the root device node, once found), PYINIT_CMDLINE (the raw command
  line), PYINIT_CMDLINE_PARAMS (a file with the parsed command line, one `name` or
  `name=value` per line, split by the kernel's rules), PATH=/usr/sbin:/usr/bin:/sbin:/bin.
  stdin, stdout and stderr are the console. cwd is /.
- exit status 0 is success; anything else (or death by a signal) is a failure. For a
  finished hook, non-zero only means "not yet".
- a Python hook's run(context) gets a HookContext; it fails by raising (HookFailed says
  why), and a finished hook answers with its return value.
- a timeout (default 120 s, 30 s for finished hooks; 0 means none): an executable gets
  SIGTERM, then SIGKILL 2 s later, with its whole process group; a Python hook gets a
  HookTimeout exception raised inside it (SIGALRM).
- a failing hook stops the boot: rescue, with the hook's name, stage and reason in the
  message, unless it is declared optional (then a warning, and the boot goes on). Calling
  the boot again after rescue re-runs the hooks that have not succeeded yet.
"""
from __future__ import annotations

import os
import time

from pyinit import log
from pyinit.errors import BootError, HookFailed, HookTimeout
from pyinit.hookmanifest import Hook, list_hooks, parse_manifest
from pyinit.names import CMDLINE_PARAMS, CONSOLE, HOOKS_DIR, HOOKS_MANIFEST, PATH

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import FrameType

    from pyinit.cmdline import Cmdline
    from pyinit.context import Context
    from pyinit.devices import Devices
    from pyinit.hookmanifest import Settings

# Hooks written against the old home of the exception keep working: `from pyinit.hooks
# import HookFailed` (its home is pyinit.errors).
__all__ = ["HookContext", "HookFailed", "HookTimeout", "Runner", "format_params", "install"]


def format_params(params: Iterable[tuple[str, str | None]]) -> str:
    """The parsed command line as PYINIT_CMDLINE_PARAMS holds it: one word per line."""
    return "".join((p if v is None else f"{p}={v}") + "\n" for p, v in params)


class HookContext:
    """What a Python hook's run(context) gets.

    cmdline       the parsed command line (pyinit.cmdline.Cmdline: .get, .get_all, .flag, .rd_list)
    newroot       where the root is (to be) mounted: /sysroot
    root          the root= text; root_device: the device node once found, else None
    stage, name   where and who this hook is
    env           the environment an executable hook would get
    devices       the boot's block devices (pyinit.devices.Devices), each probed once per
                  uevent: find(spec), unheld_of_type("crypto_LUKS"), of_type(...). Hooks
                  look devices up here and never read the disks themselves
    log           pyinit.log (info, notice, warning, error, debug)
    boot          the boot's Context (pyinit/context.py), for what the above does not cover
    """

    def __init__(self, runner: Runner, hook: Hook) -> None:
        ctx = runner.ctx
        if ctx.cmdline is None:  # hooks run once the command line is read
            raise BootError("cmdline", f"hook {hook.name} ran before the command line was read")
        self.boot = ctx
        self.runner = runner
        self.hook = hook
        self.stage = hook.stage
        self.name = hook.name
        self.cmdline: Cmdline = ctx.cmdline
        self.newroot = ctx.newroot
        self.root = ctx.cmdline.root
        self.root_device = ctx.root_device.node if ctx.root_device is not None else None
        self.devices: Devices = ctx.devices
        self.log = log
        self.env = runner.environment(hook)

    def claim_root(self, kind: str) -> None:
        """Say that this hook (e.g. nfs) handles root=: pyinit will not look for a block
        device; the initqueue waits for the finished hooks and a mount hook mounts NEWROOT."""
        self.boot.root_claimed = kind

    def run(self, argv: list[str], *, input: str | None = None, timeout: float | None = None,
            check: bool = True, capture: bool = True) -> tuple[int, str]:
        """Run a program; (returncode, output text). check=True raises HookFailed with the
        program's output on a non-zero exit."""
        import subprocess
        try:
            proc = subprocess.run(argv, input=input, timeout=timeout, text=True, env=self.env, check=False,
                                  stdout=subprocess.PIPE if capture else None,
                                  stderr=subprocess.STDOUT if capture else None)
        except FileNotFoundError:
            raise HookFailed(f"{argv[0]} is not in the image (declare it in the hook's binaries)") from None
        except subprocess.TimeoutExpired:
            raise HookFailed(f"{' '.join(argv)} did not finish within {timeout:g} s") from None
        out = proc.stdout or ""
        if check and proc.returncode != 0:
            raise HookFailed(f"{' '.join(argv)} exited with {proc.returncode}: {out.strip()}")
        return proc.returncode, out

    def prompt_secret(self, prompt: str, console: str = CONSOLE) -> str | None:
        """Ask on the console with echo off; the line typed, without its newline (None at
        end of input)."""
        from pyinit import askpass
        return askpass.read_line(prompt, console)


class Runner:
    """Runs the image's hooks for the boot `ctx`; remembers which ones succeeded."""

    def __init__(self, ctx: Context, root: str = HOOKS_DIR, manifest_path: str = HOOKS_MANIFEST) -> None:
        self.ctx = ctx
        self.root = root
        self.manifest_path = manifest_path
        self._manifest: dict[str, Settings] | None = None
        self.done: set[str] = set()
        self.results: list[tuple[str, str, float]] = []  # (key, outcome, seconds)

    def manifest(self) -> dict[str, Settings]:
        if self._manifest is None:
            try:
                with open(self.manifest_path) as f:
                    text = f.read()
            except OSError:
                text = ""
            try:
                self._manifest = parse_manifest(text)
            except ValueError as e:
                raise BootError("cmdline", str(e), "rebuild the image with pyinit-mkinitramfs") from None
        return self._manifest

    def hooks(self, stage: str) -> list[Hook]:
        return list_hooks(stage, self.root, self.manifest())

    # -- stage entry points ------------------------------------------------------------

    def before_stage(self, stage: str, ctx: Context) -> None:
        """ctx.before_stage callable. cmdline hooks run from on_cmdline instead (they need the
        command line); the initqueue's sub-stages from the InitQueue."""
        if stage == "cmdline":
            return
        if stage == "initqueue":
            from pyinit.initqueue import InitQueue
            ctx.initqueue = InitQueue(self, ctx)
        self.run_stage(stage, boot_stage=stage)

    def on_cmdline(self, ctx: Context) -> None:
        self.write_params()
        self.run_stage("cmdline", boot_stage="cmdline")

    def run_stage(self, stage: str, *, boot_stage: str, once: bool = True) -> None:
        for hook in self.hooks(stage):
            if once and hook.key in self.done:
                continue
            self.run_checked(hook, boot_stage)
            if once:
                self.done.add(hook.key)

    def run_checked(self, hook: Hook, boot_stage: str) -> bool:
        """Run one hook; a failure raises BootError unless the hook is optional."""
        ok, reason = self.run(hook)
        if ok or hook.stage == "initqueue/finished":
            return ok
        message = f"hook {hook.name} ({hook.key}) failed at stage {hook.stage}: {reason}"
        if hook.optional:
            log.warning(message + " (optional: the boot goes on)")
            return False
        raise BootError(boot_stage, message,
                        f"fix or remove the hook {hook.name} (pyinit-mkinitramfs --hook), "
                        "or declare it optional")

    def run(self, hook: Hook) -> tuple[bool, str]:
        t0 = time.monotonic()
        log.debug(f"running hook {hook.key}")
        try:
            if hook.python:
                ok, reason = self._run_python(hook)
            else:
                ok, reason = self._run_executable(hook)
        except HookTimeout:
            ok, reason = False, f"timed out after {hook.timeout:g} s"
        seconds = time.monotonic() - t0
        self.results.append((hook.key, "ok" if ok else reason, seconds))
        if hook.stage != "initqueue/settled" or not ok or seconds > 1.0:
            log.debug(f"hook {hook.key}: {'ok' if ok else reason} ({seconds:.3f} s)")
        return ok, reason

    # -- environment -------------------------------------------------------------------

    def environment(self, hook: Hook) -> dict[str, str]:
        ctx = self.ctx
        env = dict(ctx.kernel_env)
        env["PATH"] = PATH
        env["NEWROOT"] = ctx.newroot
        env["PYINIT_STAGE"] = hook.stage
        env["PYINIT_HOOK"] = hook.name
        c = ctx.cmdline
        if c is not None:
            env["PYINIT_CMDLINE"] = c.raw.strip()
            env["PYINIT_CMDLINE_PARAMS"] = CMDLINE_PARAMS
            if c.root:
                env["root"] = env["PYINIT_ROOT"] = c.root
        if ctx.root_device is not None:
            env["PYINIT_ROOT_DEVICE"] = ctx.root_device.node
        return env

    def write_params(self) -> None:
        c = self.ctx.cmdline
        if c is None:
            return
        try:
            os.makedirs(os.path.dirname(CMDLINE_PARAMS), exist_ok=True)
            with open(CMDLINE_PARAMS, "w") as f:
                f.write(format_params(c.params))
        except OSError as e:
            log.warning(f"cannot write {CMDLINE_PARAMS}: {e}")

    # -- running -----------------------------------------------------------------------

    def _run_python(self, hook: Hook) -> tuple[bool, str]:
        import _signal as signal  # not `signal`: its enum import costs PID 1 (pyinit/process.py)
        import importlib.util

        def on_alarm(signum: int, frame: FrameType | None) -> None:
            raise HookTimeout()

        previous = None
        if hook.timeout:
            previous = signal.signal(signal.SIGALRM, on_alarm)
            # Again every second until the hook has left: one swallowed alarm is not enough.
            signal.setitimer(signal.ITIMER_REAL, hook.timeout, 1.0)
        try:
            name = "pyinit_hook_" + "".join(ch if ch.isalnum() else "_" for ch in hook.key)
            spec = importlib.util.spec_from_file_location(name, hook.path)
            if spec is None or spec.loader is None:
                return False, f"{hook.path} cannot be loaded as a Python module"
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            run = getattr(module, "run", None)
            if run is None:
                return False, f"{hook.path} has no run(context) function"
            answer = run(HookContext(self, hook))
        except HookTimeout:
            raise
        except HookFailed as e:
            return False, str(e)
        except Exception as e:
            return False, f"{type(e).__name__}: {e}"
        finally:
            if hook.timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if hook.stage == "initqueue/finished":
            return bool(answer), "not finished"
        if answer is False:
            return False, "run() returned False"
        return True, ""

    def _run_executable(self, hook: Hook) -> tuple[bool, str]:
        env = self.environment(hook)
        pid = os.fork()
        if pid == 0:  # the child: never return into PID 1's code
            try:
                _exec_child(hook.path, env)
            finally:
                os._exit(127)
        status = _wait(pid, hook.timeout)
        if status is None:
            return False, f"timed out after {hook.timeout:g} s (killed)"
        _reap_orphans()
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            if code == 0:
                return True, ""
            if code == 127:
                return False, "exit status 127 (could not be executed: a missing interpreter?)"
            return False, f"exit status {code}"
        if os.WIFSIGNALED(status):
            return False, f"killed by signal {os.WTERMSIG(status)}"
        return False, f"wait status {status}"


def _exec_child(path: str, env: dict[str, str]) -> None:
    import _signal as signal
    try:
        os.setpgid(0, 0)  # its own process group: a timeout kills what it started too
        # CPython ignores SIGPIPE and SIGXFSZ; a hook gets the defaults, as from a shell.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.chdir("/")
        os.execve(path, [path], env)
    except OSError as e:
        try:
            os.write(2, f"pyinit: cannot execute hook {path}: {e}\n".encode())
        except OSError:
            pass


def _wait(pid: int, timeout: float) -> int | None:
    """waitpid with a timeout; on timeout SIGTERM, then SIGKILL, the hook's process group."""
    import _signal as signal
    deadline = time.monotonic() + timeout if timeout else None
    delay = 0.005
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if got == pid:
            return status
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except OSError:
            pass
        end = time.monotonic() + grace
        while time.monotonic() < end:
            try:
                got, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if got == pid:
                return None
            time.sleep(0.05)
    return None


def _reap_orphans() -> None:
    """As PID 1, double-forked leftovers of a hook become our children: reap the dead ones."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def install(ctx: Context, root: str = HOOKS_DIR) -> Runner:
    """Plug a Runner into the boot: before each stage, and after the command line is read."""
    runner = Runner(ctx, root)
    ctx.before_stage.append(runner.before_stage)
    ctx.on_cmdline.append(runner.on_cmdline)
    return runner
