"""What modprobe.d and the kernel command line say about modules: options, blacklists,
aliases, soft dependencies. The parsers are pure; `read_config` reads the folders.

modprobe.d in the image (/etc/modprobe.d, /run/modprobe.d, /usr/local/lib/modprobe.d,
/usr/lib/modprobe.d: `options`, `blacklist`, `alias`, `softdep`; files sorted by name, the
first folder winning over the same name in a later one; lines continued with a trailing
backslash; `install`/`remove` commands are noted and never run) and the command line:

    <module>.<param>=value      options for a module loaded later (kmod's rule)
    modprobe.blacklist=a,b      like `blacklist a`: never loaded through an alias (a MODALIAS,
                                a kernel request such as fs-xfs); still loaded when named
    rd.driver.blacklist=a,b     never loaded by pyinit at all, not even by name or as a
    module_blacklist=a,b        dependency (the kernel itself refuses module_blacklist ones)
    rd.driver.pre=a,b           loaded first, before the image's own list
    modules-load=, rd.modules-load=   loaded with the image's own list (names or aliases)
    rd.driver.post=a,b          loaded after the first coldplug pass
"""
from __future__ import annotations

import os

from pyinit import read_text
from pyinit.kmodindex import normalize, parse_softdep

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Iterable

MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d")


class Config:
    """What modprobe.d and the command line say: options, blacklists, aliases, softdeps."""

    __slots__ = ("aliases", "blacklist", "ignored", "never", "options", "softdeps")

    def __init__(self) -> None:
        self.options: dict[str, list[str]] = {}
        self.blacklist: set[str] = set()  # not through aliases
        self.never: set[str] = set()  # not at all
        self.aliases: list[tuple[str, str]] = []
        self.softdeps: dict[str, tuple[list[str], list[str]]] = {}
        self.ignored: list[str] = []  # install/remove commands: we run no shell for them

    def add_options(self, name: str, text: str) -> None:
        if text:
            self.options.setdefault(normalize(name), []).append(text)

    def option_string(self, name: str) -> str:
        return " ".join(self.options.get(name, ()))


def _logical_lines(text: str) -> list[str]:
    """Lines with their trailing-backslash continuations joined."""
    logical, pending = [], ""
    for line in text.splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    return logical


def parse_modprobe_conf(text: str, conf: Config, source: str = "modprobe.d") -> None:
    """One modprobe.d file into `conf`."""
    for raw in _logical_lines(text):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        cmd = words[0]
        if cmd == "options" and len(words) >= 2:
            conf.add_options(words[1], " ".join(words[2:]))
        elif cmd == "blacklist" and len(words) == 2:
            conf.blacklist.add(normalize(words[1]))
        elif cmd == "alias" and len(words) == 3:
            conf.aliases.append((words[1], normalize(words[2])))
        elif cmd == "softdep":
            parsed = parse_softdep(words)
            if parsed:
                name, pre, post = parsed
                conf.softdeps[name] = (pre, post)  # modprobe.d replaces the module's own
        elif cmd in ("install", "remove"):
            conf.ignored.append(f"{source}: {line}")


def _names(value: str | None) -> list[str]:
    return [n for n in (value or "").split(",") if n]


def parse_cmdline_modules(params: Iterable[tuple[str, str | None]], conf: Config) -> dict[str, list[str]]:
    """Module settings from the kernel command line's (param, value) pairs into `conf`.
    Returns the lists of names to load: {"pre": [...], "load": [...], "post": [...]}."""
    wanted: dict[str, list[str]] = {"pre": [], "load": [], "post": []}
    for param, value in params:
        if param == "modprobe.blacklist":
            conf.blacklist.update(normalize(n) for n in _names(value))
        elif param in ("module_blacklist", "rd.driver.blacklist", "rdblacklist"):
            conf.never.update(normalize(n) for n in _names(value))
        elif param in ("rd.driver.pre", "rdloaddriver"):
            wanted["pre"] += _names(value)
        elif param in ("modules-load", "rd.modules-load", "modules_load", "rd.modules_load"):
            wanted["load"] += _names(value)
        elif param == "rd.driver.post":
            wanted["post"] += _names(value)
        elif value is not None and "." in param and not param.startswith(("rd.", "modprobe.")):
            module, _, option = param.partition(".")
            if module and option:
                # The kernel stripped the quotes; give them back to a value with spaces.
                conf.add_options(module, f'{option}="{value}"' if " " in value else f"{option}={value}")
    return wanted


def read_config(conf: Config, dirs: Iterable[str] = MODPROBE_DIRS) -> None:
    """The modprobe.d files of `dirs` into `conf`: by file name, the first folder winning."""
    files: dict[str, str] = {}
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            if n.endswith(".conf") and n not in files:
                files[n] = f"{d}/{n}"
    for n in sorted(files):
        text = read_text(files[n])
        if text:
            parse_modprobe_conf(text, conf, files[n])
