"""PID-1 entry: run the boot; any exception goes to the emergency path; never return.

A PID 1 that exits panics the kernel ("Attempted to kill init"), so main() has no normal
return: it either execs the real init or stays in emergency() forever (or reboots/powers
off when the command line asks for that).
"""
import os
import sys


def main() -> None:
    # Captured before anything else: the real init gets the kernel's environment unchanged.
    environ = dict(os.environ)
    try:
        from pyinit import boot, rescue
    except BaseException as e:  # an image without our own modules: say so, then halt
        _last_words(f"pyinit: cannot import pyinit itself: {e!r}")
        _halt_forever()
    ctx = boot.Context(sys.argv, environ)
    while True:
        try:
            boot.run_stages(ctx)
            boot.exec_init(ctx)
            raise boot.BootError("exec", f"execve {ctx.init_path} returned")
        except BaseException as e:
            try:
                rescue.emergency(ctx, e)
            except BaseException as e2:
                _last_words(f"pyinit: emergency handling failed: {e2!r}")
                _halt_forever()


def _last_words(text: str) -> None:
    for fd in (2, 1):
        try:
            os.write(fd, (text + "\n").encode())
            return
        except OSError:
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
