"""A clean copy of this checkout, and a hash of it, for builds that must not write into the
worktree: `pip install .` (setuptools leaves build/ and *.egg-info beside the sources) and
dpkg-buildpackage (which writes the .deb into the parent folder).

The copy holds the files on disk (committed or not: the tests check the tree as it is), minus
what builds, tests and tools leave behind.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Names skipped at any depth, and paths skipped from the top of the checkout.
SKIP_NAMES = ("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".hypothesis", ".git", ".venv", ".cache")
SKIP_TOP = ("build", "dist", "results", "out", "pyinit/_libc.py", "debian/.debhelper", "debian/pyinit",
            "debian/files", "debian/debhelper-build-stamp", "debian/*.substvars", "debian/*.debhelper.log",
            ".pybuild")


def _skipped(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(name, p) for p in SKIP_NAMES):
        return True
    return any(fnmatch.fnmatch(rel, p) for p in SKIP_TOP)


def files(root: Path = REPO, under: tuple[str, ...] = ()) -> list[str]:
    """Relative paths of the files (and symlinks) of the tree, sorted; `under` limits them to
    those folders or files."""
    out = []
    starts = [root / u for u in under] if under else [root]
    for start in starts:
        if start.is_file() or start.is_symlink():
            rel = str(start.relative_to(root))
            if not _skipped(rel):
                out.append(rel)
            continue
        for dirpath, dirs, names in os.walk(start):
            base = Path(dirpath).relative_to(root)
            dirs[:] = sorted(d for d in dirs if not _skipped(str(base / d) if str(base) != "." else d))
            for n in names:
                rel = str(base / n) if str(base) != "." else n
                if not _skipped(rel):
                    out.append(rel)
    return sorted(set(out))


def digest(paths: list[str], root: Path = REPO, extra: str = "") -> str:
    """sha256 over the names, modes and contents of `paths` (and `extra`), hex."""
    h = hashlib.sha256(extra.encode())
    for rel in paths:
        p = root / rel
        st = p.lstat()
        h.update(f"\0{rel}\0{st.st_mode:o}\0".encode())
        h.update(os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
    return h.hexdigest()


def copy(dest: Path, paths: list[str], root: Path = REPO) -> None:
    """Copy `paths` (relative to root) into dest, keeping modes and symlinks."""
    for rel in paths:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target, follow_symlinks=False)
