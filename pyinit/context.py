"""The boot's shared state, `Context`: what the stages, the hooks, the rescue and the boot
report read and write. One object per boot, made by __main__ before the first stage.

A plain class with typed attributes rather than a @dataclass: `dataclasses` imports inspect,
ast, dis, tokenize, enum and re (13 ms on a fast machine with `python -X importtime`, many
times that under TCG) for PID 1 to fill in one object. `typing` (enum, re) is not imported
at run time either: the types below exist for the type checker only.
"""
from __future__ import annotations

from pyinit import cmdline, log
from pyinit.devices import Devices
from pyinit.names import CONSOLE, NEWROOT

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see the module doc
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol, TypedDict

    from pyinit.devices import BlockDevice
    from pyinit.gptauto import Finder
    from pyinit.kmod import ModuleDB
    from pyinit.rootspec import RootSpec

    class Failure(TypedDict):
        """A failed stage attempt, for the boot report."""
        stage: str
        message: str
        at: float  # seconds since boot

    class RescueRecord(TypedDict):
        """A rescue session, for the boot report."""
        why: str
        kind: str  # "shell" or "console"
        start: float
        end: float

    class InitQueue(Protocol):
        """The hooks' initqueue (pyinit/initqueue.py), as the initqueue stage drives it."""

        def poll(self) -> None: ...

        def wait_finished(self, timeout: float | None, what: str = "") -> None: ...

    BeforeStage = Callable[[str, "Context"], None]
    OnContext = Callable[["Context"], None]  # on_cmdline, before_switch
    BeforeEmergency = Callable[["Context", BaseException], None]


class Context:
    """What the stages share.

    From the kernel, passed on unchanged to the real init:
      init_args, kernel_env   init's arguments and environment
    The command line:
      cmdline                 read by the cmdline stage (None before it)
      early_cmdline           read by __main__ before the first stage, for the rescue when the
                              cmdline stage itself fails
    PID 1 (pyinit/__main__.py, process.py, rescue.py):
      mode                    "machine", "container" or "child" (process.detect_mode)
      console                 the console device for rescue sessions; None: our own stdio
                              (container mode)
    The root:
      newroot                 where it is mounted: /sysroot
      root_spec               what root= asks for (None: claimed by a hook, or already mounted)
      root_device             the block device found, root_fstype what it was mounted as
      root_claimed            the hook that handles root= itself ("nfs"), else None
      gpt_auto                the Discoverable Partitions finder, when there is no root=
      devices                 the boot's block devices (a small udev, pyinit/devices.py)
      modules                 the image's kernel modules (kmod.ModuleDB), from pre-udev on in
                              machine mode
      saved_modprobe          /proc/sys/kernel/modprobe before pyinit pointed it at its own
    The stages (boot.run_stages):
      start                   when pyinit started (seconds since boot)
      completed               stage names, in order: a completed stage never runs again
      timings                 (stage, start, end) of every attempt
      switch_path, init_path  how the root was switched, the init exec'd
    Where others plug in (the seams), each a list of callables run in order:
      before_stage            (stage name, ctx) before each stage's body: hooks, rd.break,
                              the reaper's stage boundary
      on_cmdline              (ctx) once the command line is read: the cmdline hooks
      before_switch           (ctx) just before the switch, after the cleanup hooks: the bare
                              rd.break
      before_emergency        (ctx, error) first thing in rescue.emergency(), for the test
                              harness's injected faults (an exception here is a failure of the
                              emergency handler itself)
      initqueue               the hooks' initqueue, set when its stage starts
    For the boot report:
      failures, rescues       each failed stage attempt and rescue session

    Hooks see it as `context.boot` (pyinit/hooks.py); they may keep their own state in it
    (an attribute of their own name).
    """

    def __init__(self, init_args: list[str], kernel_env: dict[str, str]) -> None:
        self.init_args = init_args
        self.kernel_env = kernel_env
        self.cmdline: cmdline.Cmdline | None = None
        self.early_cmdline: cmdline.Cmdline | None = None
        self.mode = "machine"
        self.console: str | None = CONSOLE
        self.newroot = NEWROOT
        self.root_spec: RootSpec | None = None
        self.root_device: BlockDevice | None = None
        self.root_fstype: str | None = None
        self.root_claimed: str | None = None
        self.gpt_auto: Finder | None = None
        self.devices = Devices(log=log)
        self.modules: ModuleDB | None = None
        self.saved_modprobe: str | None = None
        self.start = log.uptime()
        self.completed: list[str] = []
        self.timings: list[tuple[str, float, float]] = []
        self.switch_path: str | None = None
        self.init_path: str | None = None
        self.before_stage: list[BeforeStage] = []
        self.on_cmdline: list[OnContext] = []
        self.before_switch: list[OnContext] = []
        self.before_emergency: list[BeforeEmergency] = []
        self.initqueue: InitQueue | None = None
        self.failures: list[Failure] = []
        self.rescues: list[RescueRecord] = []

    def any_cmdline(self) -> cmdline.Cmdline:
        """The parsed command line, even when the cmdline stage itself failed: the stage's,
        else the one read before the first stage, else /proc/cmdline now (an empty one when
        even that cannot be read)."""
        return self.cmdline or self.early_cmdline or cmdline.read_or_empty()
