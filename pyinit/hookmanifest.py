"""Which hooks an image carries and their settings: the hook folders and hooks.conf.

Layout in the image (written by pyinit-mkinitramfs --hook / --include):

    /usr/lib/pyinit/hooks/<stage>/<NN-name>        an executable (any language: #! or ELF)
    /usr/lib/pyinit/hooks/<stage>/<NN-name>.py     a Python module with run(context)
    /etc/pyinit/hooks.conf                         per-hook settings (optional, timeout, name)

<stage> is one of names.HOOK_STAGES. Hooks of a stage run in the order of their file names
(`10-foo` before `20-bar`). hooks.conf has one line per hook:
`<stage>/<file> [name=N] [optional=0|1] [timeout=SECONDS]`, `#` starts a comment; the
builder writes it (`format_manifest`), PID 1 reads it (`parse_manifest`). Pure, but for
`list_hooks`, which lists a stage folder.
"""
from __future__ import annotations

import os

from pyinit import log
from pyinit.names import HOOK_STAGES, HOOKS_DIR, HOOKS_MANIFEST

DEFAULT_TIMEOUT = 120.0
FINISHED_TIMEOUT = 30.0

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import TypedDict

    class Settings(TypedDict, total=False):
        """One hooks.conf line's settings."""
        name: str
        optional: bool
        timeout: float


class Hook:
    """One hook file. `stage` is its folder (e.g. "initqueue/settled")."""

    __slots__ = ("file", "name", "optional", "path", "python", "stage", "timeout")

    def __init__(self, stage: str, file: str, path: str, name: str | None = None, optional: bool = False,
                 timeout: float | None = None) -> None:
        self.stage, self.file, self.path = stage, file, path
        self.python = file.endswith(".py")
        self.name = name or hook_name(file)
        self.optional = optional
        if timeout is None:
            timeout = FINISHED_TIMEOUT if stage == "initqueue/finished" else DEFAULT_TIMEOUT
        self.timeout = timeout

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.file}"

    def __repr__(self) -> str:
        return f"Hook({self.key}, name={self.name}, optional={self.optional}, timeout={self.timeout})"


def hook_name(file: str) -> str:
    """"30-luks.py" -> "luks"; "luks" -> "luks": the name messages use."""
    base = file[:-3] if file.endswith(".py") else file
    head, sep, rest = base.partition("-")
    return rest if sep and head.isdigit() and rest else base


def parse_manifest(text: str) -> dict[str, Settings]:
    """hooks.conf -> {"<stage>/<file>": {"name":..., "optional": bool, "timeout": float}}.
    Raises ValueError naming the line for anything but the format above."""
    out: dict[str, Settings] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, *fields = line.split()
        stage = key.rpartition("/")[0]
        if stage not in HOOK_STAGES:
            raise ValueError(f"{HOOKS_MANIFEST} line {n}: {key!r} is not in a hook stage folder "
                             f"({', '.join(HOOK_STAGES)})")
        out[key] = _settings(fields, n)
    return out


def _settings(fields: list[str], n: int) -> Settings:
    entry: Settings = {}
    for f in fields:
        name, sep, value = f.partition("=")
        if not sep:
            raise ValueError(f"{HOOKS_MANIFEST} line {n}: expected name=value, got {f!r}")
        if name == "name":
            entry["name"] = value
        elif name == "optional":
            if value not in ("0", "1"):
                raise ValueError(f"{HOOKS_MANIFEST} line {n}: optional= takes 0 or 1, not {value!r}")
            entry["optional"] = value == "1"
        elif name == "timeout":
            try:
                entry["timeout"] = float(value)
            except ValueError:
                raise ValueError(f"{HOOKS_MANIFEST} line {n}: timeout={value!r} is not a number") from None
            if entry["timeout"] < 0:
                raise ValueError(f"{HOOKS_MANIFEST} line {n}: timeout must not be negative")
        else:
            raise ValueError(f"{HOOKS_MANIFEST} line {n}: unknown setting {name!r}")
    return entry


def format_manifest(hooks: Iterable[tuple[str, str, bool, float | None]]) -> str:
    """The inverse of parse_manifest, for the builder: hooks is [(key, name, optional, timeout)]."""
    lines = ["# pyinit hooks: <stage>/<file> name= optional= timeout= (written by pyinit-mkinitramfs)"]
    for key, name, optional, timeout in sorted(hooks):
        line = f"{key} name={name} optional={1 if optional else 0}"
        if timeout is not None:
            line += f" timeout={timeout:g}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def list_hooks(stage: str, root: str = HOOKS_DIR, manifest: dict[str, Settings] | None = None) -> list[Hook]:
    """The hooks of one stage folder, ordered by file name. Sub-folders are skipped (the
    initqueue's own sub-stages live there), and so are files that are neither .py nor
    executable (a README)."""
    folder = os.path.join(root, stage)
    try:
        files = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for file in files:
        path = os.path.join(folder, file)
        if not os.path.isfile(path):
            continue
        if not file.endswith(".py") and not os.access(path, os.X_OK):
            log.warning(f"hook {stage}/{file} is neither a .py module nor executable: skipped")
            continue
        settings = (manifest or {}).get(f"{stage}/{file}", {})
        out.append(Hook(stage, file, path, **settings))
    return out
