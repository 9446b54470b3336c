"""The boot, as a sequence of named stages (dracut's names), and nothing else.

    cmdline -> pre-udev -> pre-trigger -> initqueue -> pre-mount -> mount -> pre-pivot -> cleanup

Each stage is a function of the `Context`. Before each stage body, every callable in
`ctx.before_stage` runs with (stage name, ctx): that is where hooks and breakpoints plug
in. Timings are recorded per stage; a failure raises `BootError` carrying the stage and a
diagnosis, which __main__ turns into rescue. A completed stage is never run twice, so
calling `run_stages` again resumes the boot at the stage that failed.
"""
from __future__ import annotations

import os
import time

from pyinit import cmdline as cmdline_mod
from pyinit import fsck as fsck_mod
from pyinit import kmod, kmodindex, log, mounts, read_text, rootspec, switchroot
from pyinit import syscalls as sc
from pyinit.context import Context
from pyinit.errors import BootError, ModuleError, SwitchRootError
from pyinit.names import GPT_AUTO_ROOT, KERNEL_VERSION, MODPROBE, MODPROBE_SYSCTL, MODULES_LOAD, STAGES

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from pyinit.cmdline import Cmdline
    from pyinit.devices import BlockDevice
    from pyinit.gptauto import Finder
    from pyinit.kmod import ModuleDB
    from pyinit.rootspec import RootSpec


def _cmdline(ctx: Context) -> Cmdline:
    """The command line, which every stage after the first has."""
    if ctx.cmdline is None:
        raise BootError("cmdline", "the command line was not read before this stage")
    return ctx.cmdline


def stage_cmdline(ctx: Context) -> None:
    mounts.mount_api_filesystems(log)
    log.open_kmsg()
    log.unthrottle_kmsg()
    ctx.cmdline = c = cmdline_mod.read()
    log.configure(quiet=c.quiet, debug=c.flag("rd.debug"))
    log.info(f"pyinit started at {ctx.start:.3f} s; command line: {c.raw.strip()}")
    for fn in ctx.on_cmdline:
        fn(ctx)
    if ctx.root_claimed:
        log.info(f"root={c.root} is handled by the {ctx.root_claimed} hook")
        return
    if not c.root and mounts.is_mountpoint(ctx.newroot):
        log.info(f"no root=, and {ctx.newroot} is already mounted: using it")
        return
    if not c.root:
        log.info("no root=: looking for the root partition by the Discoverable Partitions Specification "
                 "(as root=gpt-auto)")
    try:
        ctx.root_spec = rootspec.parse_root(c.root or "gpt-auto")
    except ValueError as e:
        raise BootError("cmdline", str(e), "see README.md for the accepted root= forms") from None


def stage_modules(ctx: Context) -> None:
    if ctx.mode != "machine":
        log.info(f"{ctx.mode} mode: not loading kernel modules (the kernel is the host's)")
        return
    want = read_text(KERNEL_VERSION).strip()
    have = os.uname().release
    if want and want != have:
        log.warning(f"this image was built for kernel {want} but the running kernel is {have}: "
                    "modules will not load")
    db = ctx.modules = kmod.ModuleDB(cmdline_params=_cmdline(ctx).params, log=log)
    for line in db.config.ignored:
        log.info(f"ignored (pyinit runs no install/remove commands): {line}")
    _point_modprobe_at_ours(ctx)
    for name in db.wanted["pre"]:
        _load_named(db, name, "rd.driver.pre")
    try:
        lines = kmod.parse_modules_load(read_text(MODULES_LOAD))
    except ValueError as e:
        raise BootError("pre-udev", str(e)) from None
    if not os.path.exists(MODULES_LOAD):
        # An image whose modules another tool collected (dracut --add pyinit): load them all.
        moddir = f"/lib/modules/{have}"
        lines = kmod.modules_from_dep(read_text(f"{moddir}/modules.dep"), moddir)
    failures = kmod.load_all(lines, log, db)
    db.eager = {kmodindex.normalize(m.name) for m in lines}
    loaded = len(lines) - len(failures)
    failed = f"; failed: {', '.join(m.name for m, _ in failures)}" if failures else ""
    log.info(f"loaded {loaded} of {len(lines)} modules{failed}")
    for name in db.wanted["load"]:
        _load_named(db, name, "modules-load")
    if db.decompression:
        how = "by the kernel" if db.decompression == "in-kernel" else "in Python"
        log.info(f"compressed modules decompressed {how}")
    ctx.devices.kmod = db
    ctx.devices.start()  # listen before anything is triggered


def _load_named(db: ModuleDB, name: str, why: str) -> None:
    try:
        loaded = db.load(name, why)
        log.info(f"{why}: {name}: " + (f"loaded {', '.join(loaded)}" if loaded else "already loaded"))
    except ModuleError as e:
        log.warning(f"{why}: {e}")


def _point_modprobe_at_ours(ctx: Context) -> None:
    """Machine mode only (pre-udev returns earlier otherwise): a container shares
    /proc/sys/kernel/modprobe with its host."""
    if not os.access(MODPROBE, os.X_OK):
        return
    old = read_text(MODPROBE_SYSCTL).strip()
    try:
        with open(MODPROBE_SYSCTL, "w") as f:
            f.write(MODPROBE)
        ctx.saved_modprobe = old
        log.debug(f"kernel module requests go to {MODPROBE} (was {old})")
    except OSError as e:
        log.warning(f"cannot set {MODPROBE_SYSCTL}: {e}")


def _restore_modprobe(ctx: Context) -> None:
    if ctx.saved_modprobe is None:
        return
    try:
        with open(MODPROBE_SYSCTL, "w") as f:
            f.write(ctx.saved_modprobe)
        ctx.saved_modprobe = None
    except OSError as e:
        log.warning(f"cannot restore {MODPROBE_SYSCTL}: {e}")


def stage_pre_trigger(ctx: Context) -> None:
    """Before devices are triggered: nothing of our own yet (hooks run here)."""


def stage_wait_root(ctx: Context) -> None:
    c = _cmdline(ctx)
    devs = ctx.devices
    t0 = log.uptime()
    db = ctx.modules
    # Only the machine's PID 1 replays every device's uevent, and only when a MODALIAS could
    # still load something: otherwise (a container, an image whose modules are all loaded
    # already) reading /sys/class/block finds the same block devices.
    trigger = ctx.mode == "machine" and db is not None and db.on_demand()
    replayed = devs.coldplug(trigger=trigger)
    log.info(f"coldplug: {replayed} devices {'replayed' if trigger else 'read from /sys'} in "
             f"{log.uptime() - t0:.3f} s; {len(devs.blocks)} block devices, "
             f"{db.count if db else 0} modules loaded so far")
    if db is not None:
        for name in db.wanted["post"]:
            _load_named(db, name, "rd.driver.post")
    timeout = cmdline_mod.root_timeout(c)
    queue = ctx.initqueue
    if ctx.root_claimed:
        if queue is not None:
            queue.wait_finished(timeout, f"root={c.root}, handled by the {ctx.root_claimed} hook")
        return
    if mounts.is_mountpoint(ctx.newroot):
        log.info(f"{ctx.newroot} is already mounted: not waiting for a root device")
        return
    spec = ctx.root_spec
    if spec is None:
        raise BootError("initqueue", "no root device to wait for: root= was not read")
    finder = None
    if spec.kind == "gpt-auto":
        from pyinit import gptauto
        finder = ctx.gpt_auto = gptauto.Finder(devs, log, ctx.modules)
    dev = devs.wait_for(spec, timeout, on_poll=queue.poll if queue is not None else None,
                        find=finder.find if finder is not None else None)
    if dev is None:
        _root_not_found(ctx, spec, finder, timeout)
    ctx.root_device = dev
    log.info(f"found root device {spec.text}: {dev.describe()}")
    if finder is not None:
        _pass_on_gpt_auto(finder)
    if queue is not None:
        queue.wait_finished(timeout)
    # The probe worker (pyinit/probe.py) is a fork of PID 1: while it lives, every page PID 1
    # writes is copied. Nothing needs it now; a later probe starts another.
    devs.prober.close()
    if c.rootdelay:
        log.info(f"rootdelay: sleeping {c.rootdelay:g} s")
        time.sleep(c.rootdelay)


def _root_not_found(ctx: Context, spec: RootSpec, finder: Finder | None, timeout: float | None) -> NoReturn:
    """The root wait ended without the root: what was looked for, and what was there."""
    if finder is not None:
        message, hint = finder.failure()
        raise BootError("initqueue", f"no root partition found within {timeout:g} s; {message}", hint)
    seen = ctx.devices.scan()
    # asked by a hardware name: show each device's, so the right one can be picked
    by_name = spec.kind in ("by-id", "by-path")
    listing = "\n".join("  " + d.describe(names=by_name) for d in seen) or "  (no block devices at all)"
    raise BootError("initqueue",
                    f"root device {spec.text} did not appear within {timeout:g} s (looked for "
                    f"{spec.describe()}). Block devices seen:\n{listing}",
                    "check root= against the list above; if the disk itself is missing, its driver is "
                    "probably not in the image (pyinit-mkinitramfs --generic, or --modules)")


def _pass_on_gpt_auto(finder: Finder) -> None:
    """What the real system must know about a root found without root= goes to /run (moved
    into the new root): grow-fs is for it to act on, once / is its own."""
    from pyinit import gptauto
    decision = finder.decision
    try:
        os.makedirs(os.path.dirname(GPT_AUTO_ROOT), mode=0o755, exist_ok=True)
        with open(GPT_AUTO_ROOT, "w") as f:
            f.write(gptauto.gpt_auto_root_file(decision))
    except OSError as e:
        log.warning(f"cannot write {GPT_AUTO_ROOT}: {e}")
    if decision.growfs and decision.part is not None:
        log.info(f"the root partition {decision.part.node} is flagged grow-fs (GPT attribute 59): left to the real "
                 f"system ({GPT_AUTO_ROOT} says GROWFS=1)")


def stage_pre_mount(ctx: Context) -> None:
    """The root device is known, not yet mounted: nothing of our own yet (hooks run here)."""


def stage_mount(ctx: Context) -> None:
    c = _cmdline(ctx)
    dev = ctx.root_device
    if mounts.is_mountpoint(ctx.newroot):
        log.info(f"{ctx.newroot} is already mounted (by a mount hook): nothing to mount")
        return
    if dev is None:
        raise BootError("mount", f"root={c.root} is handled by the {ctx.root_claimed} hook, "
                        f"but no mount hook mounted {ctx.newroot}",
                        "check the hook's messages above")
    flags, data = mounts.parse_options(c.rootflags)
    flags = (flags | sc.MS_RDONLY) if c.readonly else (flags & ~sc.MS_RDONLY)
    flagged_readonly = _flagged_readonly(ctx, flags)
    if flagged_readonly:
        flags |= sc.MS_RDONLY
    os.makedirs(ctx.newroot, exist_ok=True)
    fstypes = [c.rootfstype] if c.rootfstype else []
    if not fstypes and dev.info.get("TYPE"):
        fstypes = [dev.info["TYPE"]]
    for fstype in fstypes:
        _ensure_filesystem(ctx, fstype)
    if not fstypes:
        fstypes = _block_filesystems()
    elif flagged_readonly:
        log.info(f"not checking {dev.node}: its partition is flagged read-only, and fsck would write to it")
    else:
        _fsck(ctx, dev, fstypes[0])
    errors = []
    for fstype in fstypes:
        try:
            sc.mount(dev.node, ctx.newroot, fstype, flags, data or None)
        except OSError as e:
            errors.append(f"{fstype}: {os.strerror(e.errno) if e.errno else e} (errno {e.errno})")
            continue
        ctx.root_fstype = fstype
        mode = "read-only" if flags & sc.MS_RDONLY else "read-write"
        log.info(f"mounted {dev.node} on {ctx.newroot} as {fstype}, {mode}" + (f", options {data}" if data else ""))
        return
    asked = ctx.root_spec.text if ctx.root_spec is not None else c.root
    raise BootError("mount", f"cannot mount {dev.node} (root={asked}) on {ctx.newroot}: " + "; ".join(errors),
                    "check rootfstype= and rootflags=, and that the filesystem's module is in the image")


def _flagged_readonly(ctx: Context, flags: int) -> bool:
    """Whether the root found without root= is flagged read-only (GPT attribute 60), which
    wins over rw; says so when rw asked otherwise."""
    decision = ctx.gpt_auto.decision if ctx.gpt_auto is not None else None
    if decision is None or decision.part is None or not decision.readonly:
        return False
    if not flags & sc.MS_RDONLY:
        log.notice(f"the root partition {decision.part.node} is flagged read-only (GPT "
                   "attribute 60): mounting it read-only, whatever rw asks")
    return True


def _ensure_filesystem(ctx: Context, fstype: str) -> None:
    """Load the filesystem's module ourselves (the kernel's fs-<type> alias) rather than let
    mount() ask the kernel's modprobe helper: one process start less."""
    if fstype in _block_filesystems() or ctx.modules is None:
        return
    loaded = ctx.modules.load_quietly("fs-" + fstype, f"the root filesystem ({fstype})")
    if loaded:
        log.info(f"loaded {', '.join(loaded)} for the {fstype} root")


def _fsck(ctx: Context, dev: BlockDevice, fstype: str) -> None:
    settings = fsck_mod.parse_settings(_cmdline(ctx))
    for problem in settings.problems:
        log.warning(problem)
    if settings.mode == "skip" or fstype in fsck_mod.READ_ONLY_TYPES:
        return
    checker = fsck_mod.find_checker(fstype)
    if checker is None:
        log.debug(f"no fsck.{fstype} in the image: not checking {dev.node}")
        return
    where = fsck_mod.mounted_read_write(dev.devnum, read_text("/proc/self/mountinfo"))
    if where is not None:
        log.warning(f"not checking {dev.node}: it is mounted read-write on {where}")
        return
    argv = fsck_mod.argv(checker, dev.node, settings)
    log.info(f"checking {dev.node}: {' '.join(argv)}")
    status = fsck_mod.run(argv)
    outcome = fsck_mod.decide(status)
    if outcome == "ok":
        log.info(f"fsck of {dev.node}: clean")
    elif outcome == "corrected":
        log.notice(f"fsck of {dev.node} corrected errors (exit status 1); going on")
    elif outcome == "reboot":
        log.notice(f"fsck of {dev.node} corrected errors and asks for a reboot (exit status {status}); rebooting")
        os.sync()
        try:
            sc.reboot(sc.RB_AUTOBOOT)
        except OSError as e:
            raise BootError("mount", f"fsck asked for a reboot, and reboot failed: {e}") from None
    else:
        raise BootError("mount", f"fsck of {dev.node} ({fstype}) failed with exit status {status}: errors left "
                                 f"uncorrected or the check could not run",
                        f"repair it by hand ({checker} {dev.node}), or boot with fsck.repair=yes "
                        "(or fsck.mode=skip to mount it anyway)")


def _block_filesystems() -> list[str]:
    out = []
    for line in read_text("/proc/filesystems").splitlines():
        if line and not line.startswith("nodev"):
            out.append(line.strip())
    return out


def stage_choose_init(ctx: Context) -> None:
    try:
        ctx.init_path = switchroot.choose_init(ctx.newroot, _cmdline(ctx).init, log)
    except SwitchRootError as e:
        raise BootError("pre-pivot", str(e), "pass init=/path/to/init, or check the root filesystem") from None


def stage_switch(ctx: Context) -> None:
    for before in ctx.before_switch:
        before(ctx)
    root = _cmdline(ctx).root
    source = (ctx.root_device.node if ctx.root_device is not None
              else f"root={root}" if root else "mounted before the boot")
    log.info(f"switching root to {ctx.newroot} ({source}), then exec {ctx.init_path}")
    # The real system has its own modprobe and udev: give back the sysctl, stop listening.
    _restore_modprobe(ctx)
    ctx.devices.close()
    try:
        path = switchroot.switch_root(ctx.newroot, log)
    except (OSError, SwitchRootError) as e:
        raise BootError("cleanup", f"switching root failed: {e}") from None
    ctx.switch_path = path
    total = log.uptime() - ctx.start
    log.notice(f"switched root with {path}; exec {ctx.init_path} after {total:.3f} s in the initramfs "
               f"(uptime {log.uptime():.3f} s, peak memory {peak_memory_kb()} kB)")


def peak_memory_kb() -> str:
    """VmHWM of this process: the most resident memory pyinit ever used."""
    for line in read_text("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return line.split()[1]
    return "?"


# The body of each stage, in the order of names.STAGES.
BODIES = tuple(zip(STAGES, (stage_cmdline, stage_modules, stage_pre_trigger, stage_wait_root, stage_pre_mount,
                            stage_mount, stage_choose_init, stage_switch), strict=True))


def run_stages(ctx: Context, stages: tuple[tuple[str, Callable[[Context], None]], ...] = BODIES) -> None:
    for name, fn in stages:
        if name in ctx.completed:
            continue
        t0 = log.uptime()
        log.debug(f"stage {name} starts")
        try:
            for before in ctx.before_stage:
                before(name, ctx)
            fn(ctx)
        except BootError:
            ctx.timings.append((name, t0, log.uptime()))
            raise
        except Exception as e:
            ctx.timings.append((name, t0, log.uptime()))
            raise BootError(name, f"{type(e).__name__}: {e}") from e
        ctx.timings.append((name, t0, log.uptime()))
        ctx.completed.append(name)


def exec_init(ctx: Context) -> None:
    """Hand over: clean process state, then execve. Only returns by raising OSError."""
    init = ctx.init_path
    if init is None:
        raise BootError("exec", "no init was chosen (the pre-pivot stage did not run)")
    log.close_kmsg()
    switchroot.reset_process_state(ctx.console)
    os.execve(init, [init, *ctx.init_args], ctx.kernel_env)

