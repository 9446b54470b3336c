"""pyinit's exceptions, in one place, under one base class.

Every error pyinit raises on purpose is a `PyinitError` (an Exception): the boot's stage
runner turns whatever a stage raises into a `BootError` carrying the stage and a diagnosis,
and __main__ hands a BootError to the rescue. Errors that other code already catches as
ValueError (a bad crypttab line, a bad LUKS2 header) are ValueErrors too.

One exception is deliberately outside the base: `HookTimeout` derives from BaseException
only, like KeyboardInterrupt, because it is raised *inside* a Python hook when its time is
up, and a hook's own `except Exception` must not swallow the deadline.
"""


class PyinitError(Exception):
    """The base of pyinit's errors."""


class BootError(PyinitError):
    """The boot cannot go on at `stage`: `message` says what failed, `hint` what to try."""

    def __init__(self, stage: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.stage, self.message, self.hint = stage, message, hint


class HookFailed(PyinitError):
    """A hook failed; its message goes into the BootError that names the hook."""


class HookTimeout(BaseException):
    """A Python hook's time is up: raised inside the hook by SIGALRM. A BaseException on
    purpose (see the module doc)."""


class ModuleError(PyinitError):
    """A kernel module (or what a name or alias resolves to) could not be loaded."""


class SwitchRootError(PyinitError):
    """The switch to the real root cannot be made (no init, no mount point)."""


class Deadline(PyinitError):
    """reaper.call_with_deadline: the call did not end in time (its child was killed)."""


class ProbeLimit(PyinitError):
    """A probe asked for more than a probe may read (pyinit/blkid.py)."""


class CrypttabError(PyinitError, ValueError):
    """A malformed crypttab line or unlock option; the message names it."""


class Luks2Error(PyinitError, ValueError):
    """A LUKS2 header whose metadata cannot be believed."""

