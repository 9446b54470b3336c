"""Hooks: programs and Python modules the image carries, run at dracut's named stages.

Layout in the image (written by pyinit-mkinitramfs --hook / --include):

    /usr/lib/pyinit/hooks/<stage>/<NN-name>        an executable (any language: #! or ELF)
    /usr/lib/pyinit/hooks/<stage>/<NN-name>.py     a Python module with run(context)
    /etc/pyinit/hooks.conf                         per-hook settings (optional, timeout, name)

<stage> is one of names.HOOK_STAGES: cmdline, pre-udev, pre-trigger, initqueue, initqueue/settled,
initqueue/timeout, initqueue/finished, pre-mount, mount, pre-pivot, cleanup. Hooks of a stage
run in the order of their file names (`10-foo` before `20-bar`), before the stage's own work,
except cmdline hooks, which run once the command line has been read (they may claim root=,
see HookContext.claim_root). The initqueue is a loop, as in dracut:

    initqueue/           each hook once, when the stage starts
    initqueue/settled/   every hook, again and again, while pyinit waits for the root device
                         (they look for new work each time: a LUKS header, an array member)
    initqueue/timeout/   each hook once, when the wait has lasted rd.retry= seconds (default:
                         two thirds of the root timeout): start degraded arrays and the like
    initqueue/finished/  conditions: the wait ends when the root device is there *and* every
                         finished hook says yes (exit 0, or run() returns a true value)

The contract (also in hooks/README.md):
- environment of an executable: the kernel's environment plus NEWROOT (/sysroot),
  PYINIT_STAGE, PYINIT_HOOK (its name), root and PYINIT_ROOT (the root= value),
  PYINIT_ROOT_DEVICE (the root device node, once found), PYINIT_CMDLINE (the raw command
  line), PYINIT_CMDLINE_PARAMS (a file with the parsed command line, one `name` or
  `name=value` per line, split by the kernel's rules), PATH=/usr/sbin:/usr/bin:/sbin:/bin.
  stdin, stdout and stderr are the console. cwd is /.
- exit status 0 is success; anything else (or death by a signal) is a failure. For a
  finished hook, non-zero only means "not yet".
- a Python hook's run(context) gets a HookContext; it fails by raising, and a finished hook
  answers with its return value.
- a timeout (default 120 s, 30 s for finished hooks; 0 means none): an executable gets
  SIGTERM, then SIGKILL 2 s later, with its whole process group; a Python hook gets a
  HookTimeout exception raised inside it (SIGALRM).
- a failing hook stops the boot: rescue, with the hook's name, stage and reason in the
  message, unless it is declared optional (then a warning, and the boot goes on). Calling
  the boot again after rescue re-runs the hooks that have not succeeded yet.
"""
import os
import time

from pyinit import log
from pyinit.errors import BootError, HookFailed, HookTimeout
from pyinit.names import CMDLINE_PARAMS, CONSOLE, HOOK_STAGES, HOOKS_DIR, HOOKS_MANIFEST, PATH

DEFAULT_TIMEOUT = 120.0
FINISHED_TIMEOUT = 30.0
SETTLED_INTERVAL = 0.25  # seconds between two runs of the settled hooks


class Hook:
    """One hook file. `stage` is its folder (e.g. "initqueue/settled")."""

    __slots__ = ("stage", "file", "path", "name", "optional", "timeout", "python")

    def __init__(self, stage, file, path, name=None, optional=False, timeout=None):
        self.stage, self.file, self.path = stage, file, path
        self.python = file.endswith(".py")
        self.name = name or hook_name(file)
        self.optional = optional
        if timeout is None:
            timeout = FINISHED_TIMEOUT if stage == "initqueue/finished" else DEFAULT_TIMEOUT
        self.timeout = timeout

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.file}"

    def __repr__(self):
        return f"Hook({self.key}, name={self.name}, optional={self.optional}, timeout={self.timeout})"


def hook_name(file: str) -> str:
    """"30-luks.py" -> "luks"; "luks" -> "luks": the name messages use."""
    base = file[:-3] if file.endswith(".py") else file
    head, sep, rest = base.partition("-")
    return rest if sep and head.isdigit() and rest else base


def parse_manifest(text: str) -> dict:
    """hooks.conf -> {"<stage>/<file>": {"name":..., "optional": bool, "timeout": float}}.

    One line per hook: `<stage>/<file> [name=N] [optional=0|1] [timeout=SECONDS]`; `#`
    starts a comment. Raises ValueError naming the line for anything else.
    """
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, *fields = line.split()
        stage = key.rpartition("/")[0]
        if stage not in HOOK_STAGES:
            raise ValueError(f"{HOOKS_MANIFEST} line {n}: {key!r} is not in a hook stage folder "
                             f"({', '.join(HOOK_STAGES)})")
        entry = {}
        for f in fields:
            name, sep, value = f.partition("=")
            if not sep:
                raise ValueError(f"{HOOKS_MANIFEST} line {n}: expected name=value, got {f!r}")
            if name == "name":
                entry["name"] = value
            elif name == "optional":
                if value not in ("0", "1"):
                    raise ValueError(f"{HOOKS_MANIFEST} line {n}: optional= takes 0 or 1, not {value!r}")
                entry["optional"] = value == "1"
            elif name == "timeout":
                try:
                    entry["timeout"] = float(value)
                except ValueError:
                    raise ValueError(f"{HOOKS_MANIFEST} line {n}: timeout={value!r} is not a number") from None
                if entry["timeout"] < 0:
                    raise ValueError(f"{HOOKS_MANIFEST} line {n}: timeout must not be negative")
            else:
                raise ValueError(f"{HOOKS_MANIFEST} line {n}: unknown setting {name!r}")
        out[key] = entry
    return out


def format_manifest(hooks) -> str:
    """The inverse of parse_manifest, for the builder: hooks is [(key, name, optional, timeout)]."""
    lines = ["# pyinit hooks: <stage>/<file> name= optional= timeout= (written by pyinit-mkinitramfs)"]
    for key, name, optional, timeout in sorted(hooks):
        line = f"{key} name={name} optional={1 if optional else 0}"
        if timeout is not None:
            line += f" timeout={timeout:g}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def list_hooks(stage: str, root: str = HOOKS_DIR, manifest: dict | None = None) -> list:
    """The hooks of one stage folder, ordered by file name. Sub-folders are skipped (the
    initqueue's own sub-stages live there), and so are files that are neither .py nor
    executable (a README)."""
    folder = os.path.join(root, stage)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for file in names:
        path = os.path.join(folder, file)
        if not os.path.isfile(path):
            continue
        if not file.endswith(".py") and not os.access(path, os.X_OK):
            log.warning(f"hook {stage}/{file} is neither a .py module nor executable: skipped")
            continue
        settings = (manifest or {}).get(f"{stage}/{file}", {})
        out.append(Hook(stage, file, path, **settings))
    return out


def format_params(params) -> str:
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
    log           pyinit.log (info, warning, error, debug)
    boot          the boot's Context, for what the above does not cover
    """

    def __init__(self, runner, hook):
        ctx = runner.ctx
        self.boot = ctx
        self.runner = runner
        self.hook = hook
        self.stage = hook.stage
        self.name = hook.name
        self.cmdline = ctx.cmdline
        self.newroot = ctx.newroot
        self.root = ctx.cmdline.root if ctx.cmdline is not None else None
        self.root_device = ctx.root_device.node if ctx.root_device is not None else None
        self.devices = ctx.devices
        self.log = log
        self.env = runner.environment(hook)

    def claim_root(self, kind: str) -> None:
        """Say that this hook (e.g. nfs) handles root=: pyinit will not look for a block
        device; the initqueue waits for the finished hooks and a mount hook mounts NEWROOT."""
        self.boot.root_claimed = kind

    def run(self, argv, *, input=None, timeout=None, check=True, capture=True):
        """Run a program; (returncode, output text). check=True raises HookFailed with the
        program's output on a non-zero exit."""
        import subprocess
        try:
            proc = subprocess.run(argv, input=input, timeout=timeout, text=True, env=self.env,
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
        return read_secret(prompt, console)


def read_secret(prompt: str, console: str = CONSOLE) -> str | None:
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


class Runner:
    """Runs the image's hooks for the boot `ctx`; remembers which ones succeeded."""

    def __init__(self, ctx, root: str = HOOKS_DIR, manifest_path: str = HOOKS_MANIFEST):
        self.ctx = ctx
        self.root = root
        self.manifest_path = manifest_path
        self._manifest = None
        self.done: set[str] = set()
        self.results: list[tuple[str, str, float]] = []  # (key, outcome, seconds)

    def manifest(self) -> dict:
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

    def hooks(self, stage: str) -> list:
        return list_hooks(stage, self.root, self.manifest())

    # -- stage entry points ------------------------------------------------------------

    def before_stage(self, stage: str, ctx) -> None:
        """ctx.before_stage callable. cmdline hooks run from on_cmdline instead (they need the
        command line); the initqueue's sub-stages from the InitQueue."""
        if stage == "cmdline":
            return
        if stage == "initqueue":
            ctx.initqueue = InitQueue(self, ctx)
        self.run_stage(stage, boot_stage=stage)

    def on_cmdline(self, ctx) -> None:
        self.write_params()
        self.run_stage("cmdline", boot_stage="cmdline")

    def run_stage(self, stage: str, *, boot_stage: str, once: bool = True) -> None:
        for hook in self.hooks(stage):
            if once and hook.key in self.done:
                continue
            self.run_checked(hook, boot_stage)
            if once:
                self.done.add(hook.key)

    def run_checked(self, hook, boot_stage: str) -> bool:
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

    def run(self, hook) -> tuple[bool, str]:
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

    def environment(self, hook) -> dict:
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
        try:
            os.makedirs(os.path.dirname(CMDLINE_PARAMS), exist_ok=True)
            with open(CMDLINE_PARAMS, "w") as f:
                f.write(format_params(c.params))
        except OSError as e:
            log.warning(f"cannot write {CMDLINE_PARAMS}: {e}")

    # -- running -----------------------------------------------------------------------

    def _run_python(self, hook) -> tuple[bool, str]:
        import importlib.util
        import signal

        def on_alarm(signum, frame):
            raise HookTimeout()

        previous = None
        if hook.timeout:
            previous = signal.signal(signal.SIGALRM, on_alarm)
            # Again every second until the hook has left: one swallowed alarm is not enough.
            signal.setitimer(signal.ITIMER_REAL, hook.timeout, 1.0)
        try:
            name = "pyinit_hook_" + "".join(ch if ch.isalnum() else "_" for ch in hook.key)
            spec = importlib.util.spec_from_file_location(name, hook.path)
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

    def _run_executable(self, hook) -> tuple[bool, str]:
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


def _exec_child(path: str, env: dict) -> None:
    import signal
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
    import signal
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


class InitQueue:
    """dracut's main loop, around pyinit's wait for the root device (see the module doc)."""

    def __init__(self, runner: Runner, ctx, retry: float | None = None):
        self.runner, self.ctx = runner, ctx
        self.start = time.monotonic()
        self.retry = retry if retry is not None else initqueue_retry(ctx)
        self.timeout_ran = False
        self.last_settled = None

    def poll(self) -> None:
        """Called between two looks for the root device."""
        # uevents keep flowing while hooks wait (wait_finished): a NIC's driver for an nfs
        # root, the md/dm devices the settled hooks make.
        self.ctx.devices.pump(0)
        now = time.monotonic()
        if self.last_settled is None or now - self.last_settled >= SETTLED_INTERVAL:
            self.runner.run_stage("initqueue/settled", boot_stage="initqueue", once=False)
            self.last_settled = time.monotonic()
        if not self.timeout_ran and now - self.start >= self.retry:
            self.timeout_ran = True
            hooks = self.runner.hooks("initqueue/timeout")
            if hooks:
                log.info(f"initqueue: waited {now - self.start:.1f} s (rd.retry={self.retry:g}): "
                         f"running the timeout hooks ({', '.join(h.name for h in hooks)})")
            self.runner.run_stage("initqueue/timeout", boot_stage="initqueue")

    def unfinished(self) -> list:
        return [h for h in self.runner.hooks("initqueue/finished")
                if not self.runner.run_checked(h, "initqueue")]

    def wait_finished(self, timeout: float | None, what: str = "") -> None:
        """Poll until every finished hook says yes; BootError naming them at the timeout."""
        start = time.monotonic()
        while True:
            left = self.unfinished()
            if not left:
                return
            if timeout is not None and time.monotonic() - start >= timeout:
                names = ", ".join(f"{h.name} ({h.key})" for h in left)
                raise BootError("initqueue", f"the initqueue did not finish within {timeout:g} s"
                                + (f" ({what})" if what else "") + f": still waiting for {names}",
                                "see the hooks' messages above; rd.timeout= and rd.retry= set the waits")
            self.poll()
            time.sleep(0.1)


def initqueue_retry(ctx) -> float:
    from pyinit.cmdline import parse_seconds
    c = ctx.cmdline
    retry = parse_seconds(c.get("rd.retry")) if c is not None else None
    if retry is not None:
        return retry
    from pyinit import boot
    timeout = boot._root_timeout(c) if c is not None else None
    return 20.0 if timeout is None else timeout * 2 / 3


def image_has_hooks(root: str = HOOKS_DIR) -> bool:
    return os.path.isdir(root)


def install(ctx, root: str = HOOKS_DIR) -> Runner:
    """Plug a Runner into the boot: before each stage, and after the command line is read."""
    runner = Runner(ctx, root)
    ctx.before_stage.append(runner.before_stage)
    ctx.on_cmdline.append(runner.on_cmdline)
    return runner
