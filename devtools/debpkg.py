"""`make deb`: build pyinit's Debian package with Debian's own tools, and check it with lintian.

    python3 -m devtools.debpkg            # writes dist/pyinit_VERSION_all.deb, prints lintian's verdict

dpkg-buildpackage (debhelper, dh-python's pybuild: debian/rules) runs in a clean copy of the
checkout (devtools/sourcetree.py): it writes the .deb, .buildinfo and .changes into the parent
of the source folder and build products into it, neither of which may be the worktree. The
build-dependencies are installed by `devtools/setup.sh deb` (make deb) or by make test's set-up.
PATH is Debian's own: a python3 from pyenv or a venv first on PATH must not build the package.
The test session builds the package the same way (tests/vm/test_lifecycle.py).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devtools import sourcetree

REPO = sourcetree.REPO
DIST = REPO / "dist"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DebBuildError(RuntimeError):
    pass


@dataclass
class Built:
    deb: Path
    version: str
    lintian: str  # lintian's output (empty when it has nothing to say)
    lintian_tags: list[tuple[str, str]]  # (E|W|I|..., tag)
    seconds: float


def version(root: Path = REPO) -> str:
    """The package version: the first line of debian/changelog."""
    first = (root / "debian" / "changelog").read_text().split("\n", 1)[0]
    m = re.match(r"^pyinit \(([^)]+)\)", first)
    if not m:
        raise DebBuildError(f"debian/changelog: cannot read the version from {first!r}")
    return m.group(1)


def env() -> dict:
    out = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    out.update(PATH=SAFE_PATH, LC_ALL="C.UTF-8", DEB_BUILD_OPTIONS="nocheck")
    return out


def _run(argv: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DebBuildError(f"{argv[0]} not found: run `make deb` (it installs the build tools), "
                            "or devtools/setup.sh") from None
    if check and proc.returncode != 0:
        raise DebBuildError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n"
                            f"{proc.stderr[-6000:]}")
    return proc


def parse_lintian(text: str) -> list[tuple[str, str]]:
    """(severity letter, tag) of each line "X: package[ type]: tag ..." of lintian's output."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^([EWIPXCNO]): [^:]+: (\S+)", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def build(dest: Path = DIST, log=None) -> Built:
    """Build the package from this tree; dest/pyinit_VERSION_all.deb; lintian on it."""
    import time
    say = log or (lambda msg: None)
    t0 = time.monotonic()
    ver = version()
    with tempfile.TemporaryDirectory(prefix="pyinit-deb.") as tmp:
        src = Path(tmp) / "pyinit"
        sourcetree.copy(src, sourcetree.files())
        say(f"dpkg-buildpackage -b in {src}")
        _run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=src)
        name = f"pyinit_{ver}_all.deb"
        built = Path(tmp) / name
        if not built.exists():
            raise DebBuildError(f"dpkg-buildpackage left no {name} in {tmp}: {sorted(os.listdir(tmp))}")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / name
        tmp_target = dest / f".{name}.tmp{os.getpid()}"
        shutil.copyfile(built, tmp_target)
        os.replace(tmp_target, target)
    say(f"lintian {target}")
    # --display-info: the informational tags too, so the README can name everything left.
    lint = _run(["lintian", "--display-info", "--tag-display-limit", "0", str(target)], cwd=dest, check=False)
    text = (lint.stdout + lint.stderr).strip()
    return Built(target, ver, text, parse_lintian(text), time.monotonic() - t0)


def main() -> int:
    try:
        b = build(log=lambda m: print(f"deb: {m}", file=sys.stderr))
    except DebBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"deb: wrote {b.deb.relative_to(REPO) if b.deb.is_relative_to(REPO) else b.deb} "
          f"({b.deb.stat().st_size} bytes) in {b.seconds:.0f} s")
    tags = [line for line in b.lintian.splitlines() if parse_lintian(line)]
    print("lintian: " + ("\n".join(tags) if tags else "no tags (errors, warnings or informational)"))
    errors = [t for s, t in b.lintian_tags if s == "E"]
    if errors:
        print(f"error: lintian reports errors: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
