"""What happens when the boot fails: a diagnosis, then the action the command line asks for.

rd.emergency=halt (default) | poweroff | reboot. pyinit never exits: "halt" sleeps forever,
so the kernel never sees PID 1 die.
"""
import os
import time

from pyinit import log
from pyinit import syscalls as sc


def describe(err: BaseException) -> tuple[str, str, str]:
    stage = getattr(err, "stage", "unknown")
    message = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
    hint = getattr(err, "hint", "")
    return stage, message, hint


def emergency(ctx, err: BaseException) -> None:
    stage, message, hint = describe(err)
    log.error(f"boot failed at stage {stage}: {message}")
    if hint:
        log.error(f"next step: {hint}")
    c = getattr(ctx, "cmdline", None)
    action = (c.get("rd.emergency") if c is not None else None) or "halt"
    if action not in ("halt", "poweroff", "reboot"):
        log.warning(f"rd.emergency={action} is not one of halt, poweroff, reboot; halting")
        action = "halt"
    log.error(f"emergency action: {action}")
    if action in ("poweroff", "reboot"):
        os.sync()
        try:
            sc.reboot(sc.RB_POWER_OFF if action == "poweroff" else sc.RB_AUTOBOOT)
        except OSError as e:
            log.error(f"{action} failed: {e}; halting instead")
    while True:
        time.sleep(3600)
