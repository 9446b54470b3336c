"""dracut's initqueue: the hook stages that run around pyinit's wait for the root device.

    initqueue/           each hook once, when the stage starts (pyinit/hooks.py)
    initqueue/settled/   every hook, again and again, while pyinit waits for the root device
                         (they look for new work each time: a LUKS header, an array member)
    initqueue/timeout/   each hook once, when the wait has lasted rd.retry= seconds (default:
                         two thirds of the root timeout): start degraded arrays and the like
    initqueue/finished/  conditions: the wait ends when the root device is there *and* every
                         finished hook says yes (exit 0, or run() returns a true value)

The boot's initqueue stage calls `poll()` between two looks for the root device, and
`wait_finished()` once it is there (or when a hook claimed root=).
"""
from __future__ import annotations

import time

from pyinit import log
from pyinit.cmdline import parse_seconds, root_timeout
from pyinit.errors import BootError

SETTLED_INTERVAL = 0.25  # seconds between two runs of the settled hooks
DEFAULT_RETRY = 20.0  # rd.retry= when the root wait has no time limit (rootwait)

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from typing import Protocol

    from pyinit.context import Context
    from pyinit.hookmanifest import Hook

    class Runs(Protocol):
        """What the initqueue needs of the hook runner (pyinit/hooks.Runner)."""

        def hooks(self, stage: str) -> list[Hook]: ...

        def run_stage(self, stage: str, *, boot_stage: str, once: bool = True) -> None: ...

        def run_checked(self, hook: Hook, boot_stage: str) -> bool: ...


class InitQueue:
    """dracut's main loop, around pyinit's wait for the root device (see the module doc)."""

    def __init__(self, runner: Runs, ctx: Context, retry: float | None = None) -> None:
        self.runner, self.ctx = runner, ctx
        self.start = time.monotonic()
        self.retry = retry if retry is not None else initqueue_retry(ctx)
        self.timeout_ran = False
        self.last_settled: float | None = None

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

    def unfinished(self) -> list[Hook]:
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


def initqueue_retry(ctx: Context) -> float:
    """rd.retry=, else two thirds of the root timeout."""
    c = ctx.cmdline
    retry = parse_seconds(c.get("rd.retry")) if c is not None else None
    if retry is not None:
        return retry
    timeout = root_timeout(c) if c is not None else None
    return DEFAULT_RETRY if timeout is None else timeout * 2 / 3
