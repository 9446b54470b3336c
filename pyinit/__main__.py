"""PID-1 entry: run the boot; any exception goes to rescue; never return, never exit.

A PID 1 that exits panics the kernel ("Attempted to kill init"), so main() has no normal
return. Three layers, each catching BaseException (SystemExit and KeyboardInterrupt too):

  1. the boot loop: run the stages, hand over to the real init (exec); any exception ->
     rescue.emergency(), which returns when the user left the rescue session, and the
     loop resumes the boot at the stage that failed (completed stages never run again);
  2. if the emergency handler itself fails: the emergency action (rd.emergency=, panic=)
     with as little code as possible;
  3. if even that fails, or pyinit cannot import itself: the last words on whatever fd
     works, then sleep forever.

Before the first stage, `_early()` makes fds 0-2 safe, mounts the API filesystems, finds
the mode (machine, container, child), reads the command line and installs the signal
handlers, breakpoints and (test images only) injected faults. Each step is best effort:
the cmdline stage repeats what matters and fails with a diagnosis if it must.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from pyinit.context import Context

MAX_INTERNAL_ERRORS = 3


def main() -> None:
    # Captured before anything else: the real init gets the kernel's environment unchanged.
    environ = dict(os.environ)
    try:
        from pyinit import console
        console.ensure_stdio()  # before any open(): see pyinit/console.py
    except BaseException as e:
        _last_words(f"pyinit: cannot check fds 0-2: {e!r}")
    holder: list[Context] = []  # the boot, once made: it survives an internal error
    for attempt in range(1, MAX_INTERNAL_ERRORS + 1):
        try:
            _boot(environ, holder)
        except BaseException as e:
            _last_words(f"pyinit: internal error {attempt} of {MAX_INTERNAL_ERRORS}: {e!r}")
    _last_resort(holder)


def _boot(environ: dict[str, str], holder: list[Context]) -> None:
    """Runs until the real init is exec'd or the machine stops; raises only when even the
    emergency handling failed."""
    # Everything the hand-over needs is imported now: after the switch the initramfs (and
    # its .pyc files) is gone.
    from pyinit import boot, process, report, rescue  # noqa: F401 (report: see _hand_over)
    from pyinit.context import Context
    from pyinit.names import HOOKS_DIR
    from pyinit.reaper import REAPER
    if not holder:
        ctx = Context(sys.argv[1:], environ)
        if os.path.isdir(HOOKS_DIR):  # only when the image carries hooks
            from pyinit import hooks
            hooks.install(ctx)
        holder.append(ctx)  # made whole: a later internal error keeps this boot
        _early(ctx)
    ctx = holder[0]
    while True:
        try:
            with REAPER.holding():  # see reaper.py: stage code waits for its own children
                boot.run_stages(ctx)
            _hand_over(ctx)
        except BaseException as e:
            try:
                rescue.emergency(ctx, e)
            except BaseException as e2:
                _emergency_failed(ctx, e, e2)


def _early(ctx: Context) -> None:
    from pyinit import cmdline, console, log, mounts, process, rescue
    from pyinit.names import TEST_ACTIONS
    problems = []
    try:
        mounts.mount_api_filesystems(log)
    except BaseException as e:
        problems.append(f"mounting /proc, /sys, /dev, /run: {e}")
    ctx.mode = process.detect_mode()
    if ctx.mode != "machine":
        # The host's /dev/kmsg and /dev/console are not ours: log to stdout, rescue on it.
        log.configure(kmsg=False)
        ctx.console = None
    log.open_kmsg()
    missing = console.missing_at_start()
    if missing:
        if console.reattach():
            log.notice(f"fds {missing} were not open when pyinit started (no /dev/console in the image?); "
                       "they are on /dev/console now")
        else:
            log.warning(f"no console: fds {missing} were not open at start and /dev/console cannot be "
                        "opened (console=null, or a console that does not exist): messages go to "
                        "/dev/kmsg only")
    try:
        c = ctx.early_cmdline = cmdline.read()
        log.configure(quiet=c.quiet, debug=c.flag("rd.debug"))
    except BaseException as e:
        c = None
        problems.append(f"reading /proc/cmdline: {e}")
    if ctx.mode == "child":
        problem = process.become_subreaper()
        if problem:
            problems.append(problem)
    process.install(ctx, ctx.mode)
    if ctx.mode != "machine":
        log.notice(f"{ctx.mode} mode: pyinit is pid {os.getpid()}" +
                   (", a child subreaper" if ctx.mode == "child" else " of a pid namespace"))
    if os.path.exists(TEST_ACTIONS):
        # TEST-ONLY: the test harness (devtools/testimage.py) appends this file and the module
        # that reads it, pyinit/testing.py (devtools/testactions.py); no real image has either.
        # It plugs in through the Context's seams (before_stage, before_switch, before_emergency).
        try:
            from pyinit import testing  # type: ignore[attr-defined]  # only in test images
            testing.install(ctx, TEST_ACTIONS)
        except BaseException as e:
            problems.append(f"test actions: {e}")
    ctx.before_stage[:0] = [process.stage_started] + (rescue.install_breakpoints(ctx, c) if c else [])
    for p in problems:
        log.warning(f"early set-up: {p}")


def _hand_over(ctx: Context) -> None:
    """No orphan, a report, the kernel's own Ctrl-Alt-Del, a clean process: exec."""
    from pyinit import boot, log, process, report
    from pyinit.errors import BootError
    from pyinit.names import BOOT_REPORT
    from pyinit.reaper import REAPER
    try:
        REAPER.stop_leftovers()
        try:
            report.write(ctx, "ok")
        except OSError as e:
            log.warning(f"cannot write {BOOT_REPORT}: {e}")
        process.before_exec()
        boot.exec_init(ctx)
    except OSError as e:
        raise BootError("exec", f"cannot execute {ctx.init_path}: {e.strerror or e}",
                             "check the init program on the root filesystem (init=)") from e
    except Exception as e:
        raise BootError("exec", f"{type(e).__name__}: {e}") from e
    raise BootError("exec", f"execve {ctx.init_path} returned")


def _emergency_failed(ctx: Context, err: BaseException, err2: BaseException) -> None:
    """The emergency handler itself raised: do the emergency action with minimal code."""
    from pyinit import log, process, rescue
    log.error(f"the emergency handler itself failed ({type(err2).__name__}: {err2}) while handling "
              f"{type(err).__name__}: {err}")
    action, _, why = rescue.decide_action(ctx.any_cmdline(), process.mode())
    process.shutdown(action, f"emergency handler failed; emergency action from {why}")


def _last_resort(holder: list[Context]) -> None:
    try:
        from pyinit import cmdline, process, rescue
        c = holder[0].any_cmdline() if holder else cmdline.read_or_empty()
        action, _, why = rescue.decide_action(c, process.mode())
        process.shutdown(action, f"pyinit failed {MAX_INTERNAL_ERRORS} times; {why}")
    except BaseException as e:
        _last_words(f"pyinit: last resort failed: {e!r}; halting")
    _halt_forever()


def _last_words(text: str) -> None:
    for path in ("/dev/kmsg", None):
        try:
            if path is None:
                os.write(2, (text + "\n").encode())
            else:
                fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
                try:
                    os.write(fd, ("<2>" + text + "\n").encode())
                finally:
                    os.close(fd)
        except BaseException:
            continue


def _halt_forever() -> None:
    import time
    while True:
        try:
            time.sleep(3600)
        except BaseException:
            pass


if __name__ == "__main__":
    main()
