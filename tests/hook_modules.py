"""Loading a shipped hook's Python file as a module, for unit tests of its pure parts.

Hooks live in hooks/<name>/<name>.py and are not importable as a package: in an image they
sit in a stage folder and pyinit loads them by path, as this does.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from mkinitramfs import shipped

HOOKS = Path(shipped.path("hooks"))


def load_hook(name: str):
    """hooks/<name>/<name>.py, executed as a module named <name>_hook."""
    spec = importlib.util.spec_from_file_location(f"{name}_hook", HOOKS / name / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
