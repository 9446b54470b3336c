"""A minimal Debian 13 (trixie) tree whose python3.13 builds pyinit's images, for `make bench`.

The builder learns about the interpreter it packs by running it, and packs that
interpreter's own libc, libm... found by its own loader's rules. Debian 13's python3.13
needs trixie's glibc (2.41), which this Debian 12 host does not have; a loader invoked by
hand (`ld.so --library-path`) would run it, but the builder would still resolve its
libraries on the host's paths and pack bookworm's libc beside trixie's interpreter. So the
whole builder runs *inside* a trixie tree, as pyinit-mkinitramfs runs on a Debian 13 system:

    chroot TREE python3.13 -m mkinitramfs build ...   (this checkout bind-mounted on /src)

The tree is made once by mmdebstrap (variant essential + python3 and pyinit's build
dependencies from trixie), cached under <cache>/bench-debian13/<key>/ (key: the package list
and RECIPE), file-locked, and never changes afterwards. Needs root (chroot, mount) and the
Debian package mmdebstrap.
"""
from __future__ import annotations

import fcntl
import hashlib
import shlex
import shutil
import subprocess
from pathlib import Path

from devtools.kernels import Kernel, default_cache

REPO = Path(__file__).resolve().parent.parent
MIRROR = "http://deb.debian.org/debian"
SUITE = "trixie"
# python3: 3.13 and its stdlib; the builder's own needs (pyelftools, zstandard); what the
# image packs from the target's site-packages (cffi's backend, prctl); e2fsck to pack as the
# root's checker; binutils for strip.
PACKAGES = ("python3", "python3-pyelftools", "python3-zstandard", "python3-cffi-backend", "python3-prctl",
            "e2fsprogs", "binutils")
RECIPE = 1
DONE = ".pyinit-tree-complete"


class TreeError(RuntimeError):
    pass


def tree_dir(cache: Path | None = None) -> Path:
    key = hashlib.sha256(f"{RECIPE} {SUITE} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    return (cache or default_cache()) / "bench-debian13" / key


def ensure_tree(cache: Path | None = None, log=print) -> Path:
    """The tree, made on first use (a few minutes: ~70 MB from deb.debian.org)."""
    tree = tree_dir(cache)
    if (tree / DONE).exists():
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    with open(tree.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (tree / DONE).exists():
            return tree
        if shutil.which("mmdebstrap") is None:
            raise TreeError("mmdebstrap not found: apt-get install mmdebstrap (devtools/setup.sh bench)")
        if tree.exists():
            shutil.rmtree(tree)
        log(f"debian13: mmdebstrap {SUITE} with {', '.join(PACKAGES)} into {tree}")
        r = subprocess.run(["mmdebstrap", "--variant=essential", "--mode=root", f"--include={','.join(PACKAGES)}",
                            SUITE, str(tree), f"deb {MIRROR} {SUITE} main"],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise TreeError(f"mmdebstrap failed: {(r.stderr or r.stdout).strip()[-800:]}")
        (tree / DONE).write_text("")
    return tree


def python_version(tree: Path) -> str:
    r = subprocess.run(["chroot", str(tree), "/usr/bin/python3", "-c", "import sys; print(sys.version.split()[0])"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or "?"


def build_argv(tree: Path, kernel: Kernel, out: Path, *args: str) -> list[str]:
    """argv that builds `out` with the tree's python3 running this checkout's builder for
    `kernel`, in a private mount namespace (the host's mounts stay as they are)."""
    kdir = kernel.moddir / kernel.kver
    out = Path(out).resolve()
    inner = " ".join(shlex.quote(a) for a in (
        "/usr/bin/python3", "-m", "mkinitramfs", "build", "-q", "-o", f"/out/{out.name}", "--kver", kernel.kver,
        "--moddir", "/kmod", *args))
    script = f"""set -e
T={shlex.quote(str(tree))}
mkdir -p "$T/src" "$T/kmod/{kernel.kver}" "$T/out" "$T/proc"
mount --bind {shlex.quote(str(REPO))} "$T/src"
mount --bind {shlex.quote(str(kdir))} "$T/kmod/{kernel.kver}"
mount --bind {shlex.quote(str(out.parent))} "$T/out"
mount -t proc proc "$T/proc"
exec chroot "$T" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=/src HOME=/ {inner}
"""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
