"""TEST-ONLY fault injection, inside the guest: `pyinit.testing` of a test image.

No real image has this module or /etc/pyinit/test-actions: devtools/testimage.py appends
both to a built image (a small uncompressed cpio concatenated to it), this file as
pyinit/testing.py beside the image's own pyinit package. pyinit/__main__.py imports it
only when /etc/pyinit/test-actions exists, and it plugs in through the Context's documented
seams (before_stage, before_switch, before_emergency: pyinit/context.py), never by
replacing pyinit's own functions. It makes a stage fail, or starts processes that
misbehave, without waiting for the hook runner. One action per line:

    STAGE fail [once]       raise an exception before STAGE's body (once: only the first time)
    STAGE run ARGV...       run a command before STAGE and wait for it (like a hook)
    STAGE spawn ARGV...     start a command before STAGE and do not wait for it

STAGE is one of the eight stage names, or `switch` (just before the switch, after the
cleanup hooks) or `rescue` (the emergency handler itself fails as it starts: the guard in
__main__ must survive that too). ARGV is split with shell quoting rules.
"""
from __future__ import annotations

import os

from pyinit import log, proctable
from pyinit.errors import PyinitError
from pyinit.names import PATH, STAGES, TEST_ACTIONS
from pyinit.reaper import REAPER

TYPE_CHECKING = False  # as pyinit's own modules: the guest's PID 1 does not import typing
if TYPE_CHECKING:
    from pyinit.context import Context

SPECIAL = ("switch", "rescue")


class InjectedFault(PyinitError, RuntimeError):
    """The fault a test asked for."""


def parse(text: str) -> list[tuple[str, str, list[str]]]:
    """Lines -> [(stage, action, args)]. Raises ValueError naming the line."""
    import shlex
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if len(words) < 2 or words[1] not in ("fail", "run", "spawn"):
            raise ValueError(f"{TEST_ACTIONS} line {n}: expected 'STAGE fail|run|spawn ...', got {line!r}")
        stage, action, args = words[0], words[1], words[2:]
        if stage not in STAGES and stage not in SPECIAL:
            raise ValueError(f"{TEST_ACTIONS} line {n}: unknown stage {stage!r}")
        if action in ("run", "spawn") and not args:
            raise ValueError(f"{TEST_ACTIONS} line {n}: {action} needs a command")
        out.append((stage, action, args))
    return out


def install(ctx: Context, path: str = TEST_ACTIONS) -> None:
    with open(path) as f:
        actions = parse(f.read())
    log.warning(f"TEST-ONLY: {path} is present: {len(actions)} injected action(s)")
    fired: set[int] = set()

    def perform(where: str, ctx_: Context) -> None:
        for i, (stage, action, args) in enumerate(actions):
            if stage != where:
                continue
            if action == "fail":
                if "once" in args and i in fired:
                    continue
                fired.add(i)
                raise InjectedFault(f"TEST-ONLY fault injected at stage {where} ({path})")
            if action == "run":
                log.notice(f"TEST-ONLY: running {' '.join(args)} before {where}")
                status = run(args, wait=True)
                log.notice(f"TEST-ONLY: {args[0]} ended: {proctable.describe_status(status)}")
            elif action == "spawn":
                pid = run(args, wait=False)
                log.notice(f"TEST-ONLY: started pid {pid}: {' '.join(args)} before {where}")

    ctx.before_stage.insert(0, perform)
    ctx.before_switch.append(lambda ctx_: perform("switch", ctx_))
    ctx.before_emergency.append(lambda ctx_, err: perform("rescue", ctx_))


def run(argv: list[str], wait: bool) -> int:
    import _signal as signal
    env = {"PATH": PATH}
    with REAPER.holding():
        pid = os.posix_spawn(argv[0], argv, env, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ), setsigmask=())
        if wait:
            REAPER.protect(pid)
    if not wait:
        return pid
    return REAPER.wait_child(pid)
