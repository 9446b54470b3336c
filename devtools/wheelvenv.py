"""A regular (not editable) install of this tree, as a new user makes it: a fresh venv of
Debian's /usr/bin/python3 and `pip install '.[network]'` from a copy of the checkout.

The venv is cached under <cache>/wheel-venv/<key>/, the key being a hash of everything pip
installs from (the packages, the shipped folders, pyproject.toml, setup.py, MANIFEST.in) and
of the interpreter, so `make test` reinstalls only when one of them changed. A venv cannot be
moved (its scripts name their interpreter by absolute path), so it is made in its final
folder, under a file lock, and a stamp file says it is complete. The newest few are kept.

    python3 -m devtools.wheelvenv      # prints the venv's folder
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools import sourcetree
from devtools.kernels import default_cache

PYTHON = "/usr/bin/python3"  # Debian's, not whatever python3 is first on PATH
EXTRAS = "network"
# What `pip install .` reads; the shipped folders come from mkinitramfs/shipped.py.
INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "pyinit", "mkinitramfs")
STAMP = ".pyinit-wheel-installed"
KEEP = 3


class WheelVenvError(RuntimeError):
    pass


def inputs() -> list[str]:
    from mkinitramfs import shipped
    return sourcetree.files(under=(*INPUTS, *shipped.FOLDERS))


def key(paths: list[str] | None = None) -> str:
    version = subprocess.run([PYTHON, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                             check=True).stdout
    return sourcetree.digest(paths if paths is not None else inputs(), extra=f"{version}\0{EXTRAS}")[:16]


def _clean_env() -> dict:
    """No PYTHONPATH (it would put this checkout before the install) and no pyenv shims."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def ensure(cache: Path | None = None, log=None) -> Path:
    """The venv's folder (bin/pyinit-mkinitramfs inside), made on first use."""
    say = log or (lambda msg: None)
    base = (Path(cache) if cache else default_cache()) / "wheel-venv"
    base.mkdir(parents=True, exist_ok=True)
    paths = inputs()
    venv = base / key(paths)
    if (venv / STAMP).exists():
        os.utime(venv / STAMP)
        return venv
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / STAMP).exists():
            return venv
        if venv.exists():
            shutil.rmtree(venv)  # an earlier attempt that did not finish
        with tempfile.TemporaryDirectory(prefix="pyinit-wheel-src.") as tmp:
            src = Path(tmp) / "pyinit"
            sourcetree.copy(src, paths)
            say(f"creating {venv} from {PYTHON}")
            _run([PYTHON, "-m", "venv", str(venv)])
            say(f"pip install '.[{EXTRAS}]' (not editable) from a copy of the checkout")
            _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", f".[{EXTRAS}]"],
                 cwd=src)
        (venv / STAMP).write_text(" ".join(paths) + "\n")
        _prune(base, venv)
    return venv


def _prune(base: Path, current: Path) -> None:
    done = sorted((p for p in base.iterdir() if (p / STAMP).exists() and p != current),
                  key=lambda p: (p / STAMP).stat().st_mtime, reverse=True)
    for old in done[KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _run(argv: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=_clean_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise WheelVenvError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                             f"\n{proc.stderr[-3000:]}")


def run_env() -> dict:
    """The environment to run the installed console scripts in (nothing of the checkout)."""
    return _clean_env()


if __name__ == "__main__":
    try:
        print(ensure(log=lambda m: print(m, file=sys.stderr)))
    except WheelVenvError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
