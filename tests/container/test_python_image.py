"""Build the Python part of an image, unpack it into a directory and run it under chroot:
the packed tree must be self-contained (no host path, no environment, no site).

Runs as root (chroot). Prints the size table by part (see it with `pytest -s`).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import textwrap

import pytest

from mkinitramfs import python as P
from mkinitramfs import sizes
from mkinitramfs.image import Image, materialize

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for chroot"),
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def _targets():
    out = []
    if os.path.exists(VENV_PYTHON):
        out.append(pytest.param(VENV_PYTHON, id="venv-debian"))
    for d in sorted(glob.glob("/root/.pyenv/versions/3.1[1-9]*")):
        exe = os.path.join(d, "bin", "python3")
        if os.path.exists(exe):
            out.append(pytest.param(exe, id="pyenv-" + os.path.basename(d)))
    return out or [pytest.param(None, marks=pytest.mark.skip("no target interpreter"))]


def _can_import(python: str, name: str) -> bool:
    return subprocess.run([python, "-I", "-c", f"import {name}"], capture_output=True).returncode == 0


def fake_pyinit(tmp_path, python: str) -> tuple[str, list[str]]:
    """A stand-in for pyinit: eager os/json/signal (+ _cffi_backend), lazy prctl."""
    have_cffi = _can_import(python, "_cffi_backend")
    have_prctl = _can_import(python, "prctl")
    d = tmp_path / "src" / "pyinit"
    d.mkdir(parents=True)
    imports = ["os", "json", "signal"] + (["_cffi_backend"] if have_cffi else [])
    lazy = ("import prctl  # lazily, as pyinit would\n    return prctl.capbset.sys_admin"
            if have_prctl else "return None")
    (d / "__init__.py").write_text(
        '"""A fake pyinit for image tests."""\n'
        f"import {', '.join(imports)}\n\n\n"
        f"def capabilities():\n    {lazy}\n")
    (d / "__main__.py").write_text("import pyinit, sys\nprint('pyinit main', sys.argv[0])\n")
    checks = imports + (["prctl"] if have_prctl else [])
    return str(d), checks


PROBE = textwrap.dedent("""\
    import json, sys
    import {imports}
    import pyinit
    files = sorted({{m.__name__: getattr(m, "__file__", None) for m in list(sys.modules.values())}}.items(),
                   key=lambda kv: kv[0])
    print(json.dumps({{
        "ok": True,
        "path": sys.path,
        "prefix": sys.prefix,
        "exec_prefix": sys.exec_prefix,
        "executable": sys.executable,
        "files": [f for _, f in files if f],
        "code": [pyinit.capabilities.__code__.co_filename, json.JSONDecoder.decode.__code__.co_filename],
        "utf8_mode": sys.flags.utf8_mode,
    }}))
    """)


def run_in(root: str, *args: str) -> subprocess.CompletedProcess:
    # env={}: no PATH, no LANG, no PYTHON*; the initramfs has none of them either.
    return subprocess.run([CHROOT, root, *args], capture_output=True, text=True, env={}, timeout=120)


def build(tmp_path, python: str, **kw):
    pkg, checks = fake_pyinit(tmp_path, python)
    image = Image()
    layout = P.add_python(image, python, package_dirs={"pyinit": pkg}, **kw)
    root = tmp_path / "root"
    root.mkdir()
    materialize(image, str(root))
    return image, layout, str(root), checks


def check_tree(image, layout, root, checks, label):
    interp = layout.interpreter
    proc = run_in(root, "/usr/bin/python3", "-IS", "-c", PROBE.format(imports=", ".join(checks)))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"]
    # sys.path names only the image's own directories (the zip need not exist).
    assert tuple(out["path"]) == interp.image_search_path
    assert out["prefix"] == out["exec_prefix"] == "/usr"
    assert out["executable"] == "/usr/bin/python3"
    for f in out["files"] + out["code"]:
        assert f.startswith(interp.image_stdlib + "/"), f"host path leaked: {f}"
    assert out["utf8_mode"] == 1  # no locale in the tree: CPython falls back to UTF-8 mode

    proc = run_in(root, layout.executable, "-IS", "-m", "pyinit")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pyinit main")

    # Nothing in the tree points back at the host.
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                assert not os.readlink(p).startswith("/"), p
    print(f"\n[{label}] {interp.executable} {'.'.join(map(str, interp.version))}, "
          f"{len(layout.stdlib_modules)} stdlib modules")
    for part, (entries, size) in sorted(image.size_by_part().items()):
        print(f"  {part:<16} {entries:>6} entries {sizes.human(size):>10}")


@pytest.mark.parametrize("python", _targets())
def test_packed_python_runs_in_chroot(tmp_path, python):
    image, layout, root, checks = build(tmp_path, python)
    assert "json" in checks and "signal" in checks
    if "_cffi_backend" in checks:
        assert layout.modules["_cffi_backend"].path.startswith(layout.interpreter.image_dynload + "/")
    check_tree(image, layout, root, checks, os.path.basename(python))


@pytest.mark.parametrize("python", _targets())
def test_lean_stripped_python_runs_in_chroot(tmp_path, python):
    image, layout, root, checks = build(tmp_path, python, follow_function_imports=False, strip=True)
    check_tree(image, layout, root, checks, os.path.basename(python) + " lean+strip")
