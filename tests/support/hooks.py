"""Hooks under test: a shipped hook's Python file loaded as a module (for unit tests of its
pure parts), and pyinit's hook runner on a folder of hooks written by the test.

Hooks live in hooks/<name>/<name>.py and are not importable as a package: in an image they
sit in a stage folder and pyinit loads them by path, as load_hook does.
"""
from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

from mkinitramfs import shipped
from pyinit import cmdline, hooks
from pyinit.context import Context

HOOKS = Path(shipped.path("hooks"))


def load_hook(name: str):
    """hooks/<name>/<name>.py, executed as a module named <name>_hook."""
    spec = importlib.util.spec_from_file_location(f"{name}_hook", HOOKS / name / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(path, text, mode=0o644):
    """A hook file (or any file) with `text` dedented, its folders made, with `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)


def Ctx(line="root=/dev/vda rd.x=1 quiet") -> Context:
    """The boot's Context as the runner sees it once the command line is read."""
    ctx = Context([], {"HOME": "/", "TERM": "linux"})
    ctx.cmdline = cmdline.parse(line)
    return ctx


def runner(tree, tmp_path, manifest=""):
    """pyinit's hook runner on the stage folders under `tree`, with `manifest` as the image's
    hooks.conf (names, optional, timeouts), for a boot whose command line is Ctx's."""
    (tmp_path / "hooks.conf").write_text(manifest)
    return hooks.Runner(Ctx(), str(tree), str(tmp_path / "hooks.conf"))
