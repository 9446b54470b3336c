"""The built-in rescue console, for images without /bin/sh. Imported only when a boot fails
or a breakpoint is reached: never on the plain boot path.

A line-oriented prompt on the console (`pyinit rescue> `) with the commands of HELP.
Every command catches its own errors: a typo never ends the console, let alone PID 1.
"""
from __future__ import annotations

import os

from pyinit import console, log, process
from pyinit.errors import SwitchRootError
from pyinit.names import MODULES_LOAD, MODULES_ROOT, STAGES

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.context import Context

PROMPT = "pyinit rescue> "
# A constant, not the docstring: the image's bytecode is compiled without docstrings.
HELP = """\
help                          this list
ls [-l] [PATH...]             list directories
cat PATH...                   print files
dmesg [N|all]                 the kernel log (the last N records, default 60)
blkid                         block devices with TYPE, UUID, LABEL
lsmod                         loaded kernel modules
modprobe NAME [PARAMS]        load a module of the image (no dependency resolution)
mount                         list mounts
mount [-t TYPE] [-o OPTS] SOURCE TARGET    SOURCE may be UUID=... or LABEL=...
umount [-l] TARGET
switch-root [INIT]            use what is mounted on /sysroot and go on to the switch
continue | exit | Ctrl-D      leave the console and resume the boot
reboot | poweroff | halt
"""
DMESG_DEFAULT = 60


class Leave(Exception):
    def __init__(self, result: str):
        super().__init__(result)
        self.result = result


class Console:
    def __init__(self, ctx: Context, fd_in: int, fd_out: int):
        self.ctx, self.fd_in, self.fd_out = ctx, fd_in, fd_out
        self._buf = b""

    # -- i/o
    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        while data:
            try:
                n = os.write(self.fd_out, data)
            except InterruptedError:
                continue
            except OSError:
                return
            data = data[n:]

    def say(self, text: str = "") -> None:
        self.write(text + "\n")

    def readline(self) -> str | None:
        """A line without its newline; None at end of input."""
        while b"\n" not in self._buf:
            try:
                chunk = os.read(self.fd_in, 4096)
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                if self._buf:
                    line, self._buf = self._buf, b""
                    return line.decode("utf-8", "replace")
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace").rstrip("\r")

    # -- the loop
    def run(self, why: str) -> str:
        self.say(f"\npyinit: {why}")
        self.say("pyinit: rescue console (no /bin/sh in this image). 'help' lists the commands; "
                 "'continue' resumes the boot.")
        while True:
            self.write(PROMPT)
            line = self.readline()
            if line is None:
                self.say("")
                # Ctrl-D on a terminal means "go on"; end of a pipe means nobody is there.
                return "continue" if _isatty(self.fd_in) else "eof"
            try:
                self.execute(line)
            except Leave as e:
                return e.result
            except Exception as e:  # never let a command end the console
                self.say(f"error: {type(e).__name__}: {e}")

    def execute(self, line: str) -> None:
        words = split(line)
        if not words:
            return
        name, args = words[0], words[1:]
        fn = COMMANDS.get(name)
        if fn is None:
            self.say(f"{name}: unknown command; 'help' lists them")
            return
        fn(self, args)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def split(line: str) -> list[str]:
    """Words of a command line; quotes group words (shlex rules)."""
    line = line.strip()
    if not line or line.startswith("#"):
        return []
    if '"' not in line and "'" not in line and "\\" not in line:
        return line.split()
    import shlex
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


# ---------------------------------------------------------------------------- commands

def cmd_help(con: Console, args: list[str]) -> None:
    con.write(HELP)


def cmd_ls(con: Console, args: list[str]) -> None:
    long = "-l" in args
    paths = [a for a in args if a != "-l"] or ["."]
    import stat
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError as e:
            con.say(f"ls: {path}: {e.strerror}")
            continue
        if not stat.S_ISDIR(st.st_mode):
            con.say(_ls_line(path, path, long))
            continue
        if len(paths) > 1:
            con.say(f"{path}:")
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            con.say(f"ls: {path}: {e.strerror}")
            continue
        for name in names:
            con.say(_ls_line(os.path.join(path, name), name, long))


def _ls_line(path: str, name: str, long: bool) -> str:
    import stat
    try:
        st = os.lstat(path)
    except OSError:
        return name
    suffix = ""
    if stat.S_ISLNK(st.st_mode):
        try:
            suffix = " -> " + os.readlink(path)
        except OSError:
            pass
    elif stat.S_ISDIR(st.st_mode):
        name += "/"
    if not long:
        return name + suffix
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        size = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
    else:
        size = str(st.st_size)
    return f"{stat.filemode(st.st_mode)} {st.st_uid:>4} {st.st_gid:>4} {size:>10} {name}{suffix}"


def cmd_cat(con: Console, args: list[str]) -> None:
    if not args:
        con.say("usage: cat PATH...")
    for path in args:
        try:
            with open(path, "rb") as f:
                data = f.read(1 << 20)
        except OSError as e:
            con.say(f"cat: {path}: {e.strerror}")
            continue
        text = data.decode("utf-8", "replace")
        con.write(text if text.endswith("\n") or not text else text + "\n")


def parse_kmsg_record(raw: bytes) -> tuple[int, float, str] | None:
    """A /dev/kmsg record "prio,seq,usec,flags;text\\n..." -> (level, seconds, text)."""
    head, sep, body = raw.partition(b";")
    if not sep:
        return None
    fields = head.split(b",")
    try:
        level = int(fields[0]) & 7
        usec = int(fields[2])
    except (IndexError, ValueError):
        return None
    text = body.split(b"\n", 1)[0].decode("utf-8", "replace")
    return level, usec / 1e6, text


def read_kmsg(path: str = "/dev/kmsg") -> list[tuple[int, float, str]]:
    out: list[tuple[int, float, str]] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return out
    try:
        while True:
            try:
                raw = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # EPIPE: records were overwritten; go on with the next
                continue
            except OSError:
                break
            if not raw:
                break
            rec = parse_kmsg_record(raw)
            if rec is not None:
                out.append(rec)
    finally:
        os.close(fd)
    return out


def cmd_dmesg(con: Console, args: list[str]) -> None:
    records = read_kmsg()
    if not records:
        con.say("dmesg: cannot read /dev/kmsg")
        return
    n = DMESG_DEFAULT
    if args:
        n = len(records) if args[0] == "all" else int(args[0])
    for level, secs, text in records[-n:]:
        con.say(f"[{secs:12.6f}] <{level}> {text}")


def cmd_blkid(con: Console, args: list[str]) -> None:
    for line in con.ctx.devices.listing():
        con.say(line)


def cmd_lsmod(con: Console, args: list[str]) -> None:
    try:
        with open("/proc/modules") as f:
            lines = f.read().splitlines()
    except OSError as e:
        con.say(f"lsmod: /proc/modules: {e.strerror}")
        return
    con.say(f"{'Module':<24} {'Size':>8}  Used by")
    for line in lines:
        fields = line.split()
        if len(fields) >= 4:
            users = fields[3].rstrip(",") if fields[3] != "-" else ""
            con.say(f"{fields[0]:<24} {fields[1]:>8}  {fields[2]} {users}".rstrip())


def find_module_file(name: str, modules_load: str, moddir: str) -> str | None:
    """The image's file for module `name`: from modules.load, else a search of moddir."""
    want = name.replace("-", "_")
    try:
        with open(modules_load) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0].replace("-", "_") == want:
                    return fields[1]
    except OSError:
        pass
    for dirpath, _, files in os.walk(moddir):
        for fname in files:
            stem = fname.split(".ko", 1)[0]
            if ".ko" in fname and stem.replace("-", "_") == want:
                return os.path.join(dirpath, fname)
    return None


def cmd_modprobe(con: Console, args: list[str]) -> None:
    if not args:
        con.say("usage: modprobe NAME [PARAM=VALUE...]")
        return
    from pyinit import kmod
    name, params = args[0], " ".join(args[1:])
    moddir = f"{MODULES_ROOT}/{os.uname().release}"
    path = find_module_file(name, MODULES_LOAD, moddir)
    if path is None:
        con.say(f"modprobe: {name}: not in this image (looked in {MODULES_LOAD} and {moddir})")
        return
    try:
        loaded = kmod.load_module(path, params)
    except OSError as e:
        con.say(f"modprobe: {name} ({path}): {os.strerror(e.errno) if e.errno else e} "
                "(its dependencies must be loaded first)")
        return
    con.say(f"modprobe: {name}: {'loaded' if loaded else 'already loaded'}")


def cmd_mount(con: Console, args: list[str]) -> None:
    if not args:
        from pyinit.mounts import unescape
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                a, b = left.split(), right.split()
                if len(a) > 5 and len(b) > 1:
                    con.say(f"{unescape(b[1])} on {unescape(a[4])} type {b[0]} ({a[5]})")
        return
    fstype, opts, rest = None, "", []
    i = 0
    while i < len(args):
        if args[i] == "-t" and i + 1 < len(args):
            fstype, i = args[i + 1], i + 2
        elif args[i] == "-o" and i + 1 < len(args):
            opts, i = args[i + 1], i + 2
        else:
            rest.append(args[i])
            i += 1
    if len(rest) != 2:
        con.say("usage: mount [-t TYPE] [-o OPTIONS] SOURCE TARGET")
        return
    resolved, target = _resolve_source(con, rest[0]), rest[1]
    if resolved is None:
        return
    source = resolved
    from pyinit import mounts
    from pyinit import syscalls as sc
    flags, data = mounts.parse_options(opts)
    if fstype is None:
        from pyinit import blkid
        info = blkid.probe_path(source) or {}
        fstype = info.get("TYPE")
        if fstype is None and not flags & sc.MS_BIND:
            con.say(f"mount: {source}: no filesystem recognised; give -t TYPE")
            return
    os.makedirs(target, exist_ok=True)
    try:
        sc.mount(source, target, fstype, flags, data or None)
    except OSError as e:
        con.say(f"mount: {source} on {target} ({fstype}): {os.strerror(e.errno) if e.errno else e} (errno {e.errno})")
        return
    con.say(f"mounted {source} on {target}" + (f" ({fstype})" if fstype else ""))


def _resolve_source(con: Console, source: str) -> str | None:
    if "=" not in source or source.startswith("/"):
        return source
    from pyinit import rootspec
    try:
        spec = rootspec.parse_root(source)
    except ValueError as e:
        con.say(f"mount: {e}")
        return None
    dev = con.ctx.devices.find(spec)
    if dev is None:
        con.say(f"mount: no block device with {source} (see blkid)")
        return None
    return dev.node


def cmd_umount(con: Console, args: list[str]) -> None:
    lazy = "-l" in args
    targets = [a for a in args if a != "-l"]
    if not targets:
        con.say("usage: umount [-l] TARGET")
    from pyinit import syscalls as sc
    for target in targets:
        try:
            sc.umount2(target, sc.MNT_DETACH if lazy else 0)
        except OSError as e:
            con.say(f"umount: {target}: {os.strerror(e.errno) if e.errno else e}")
            continue
        con.say(f"unmounted {target}")


BEFORE_SWITCH = STAGES[:-1]  # every stage but the switch itself


def cmd_switch_root(con: Console, args: list[str]) -> None:
    from pyinit import mounts, switchroot
    ctx = con.ctx
    newroot = ctx.newroot
    if not mounts.is_mountpoint(newroot):
        con.say(f"switch-root: nothing is mounted on {newroot}; mount the root there first")
        return
    if args:
        why = switchroot.check_init(newroot, args[0])
        if why is not None:
            con.say(f"switch-root: {why}")
            return
        init = args[0]
    else:
        try:
            init = switchroot.choose_init(newroot, ctx.any_cmdline().init, log)
        except SwitchRootError as e:
            con.say(f"switch-root: {e}")
            return
    if ctx.cmdline is None:
        ctx.cmdline = ctx.any_cmdline()
    ctx.init_path = init
    for name in BEFORE_SWITCH:
        if name not in ctx.completed:
            ctx.completed.append(name)
    con.say(f"switch-root: switching to {newroot}, then exec {init}")
    raise Leave("continue")


def cmd_continue(con: Console, args: list[str]) -> None:
    raise Leave("continue")


def cmd_power(action: str) -> Callable[[Console, list[str]], None]:
    def run(con: Console, args: list[str]) -> None:
        con.say(f"{action}...")
        process.shutdown(action, "asked at the rescue console")
    return run


COMMANDS = {
    "help": cmd_help, "?": cmd_help,
    "ls": cmd_ls, "cat": cmd_cat, "dmesg": cmd_dmesg, "blkid": cmd_blkid, "lsmod": cmd_lsmod,
    "modprobe": cmd_modprobe, "mount": cmd_mount, "umount": cmd_umount,
    "switch-root": cmd_switch_root, "switch_root": cmd_switch_root,
    "continue": cmd_continue, "exit": cmd_continue,
    "reboot": cmd_power("reboot"), "poweroff": cmd_power("poweroff"), "halt": cmd_power("halt"),
}


def run(ctx: Context, why: str) -> str:
    dev = console.device(ctx)
    if dev is None:
        return Console(ctx, 0, 1).run(why)
    fd = os.open(dev, os.O_RDWR | os.O_NOCTTY)
    try:
        return Console(ctx, fd, fd).run(why)
    finally:
        os.close(fd)
