"""Test-only variants of a built image, without rebuilding it.

    with_files(image, out, {"/etc/pyinit/test-actions": "mount fail once\\n"})
        appends an uncompressed cpio holding those files (the kernel unpacks concatenated
        archives in order, so they are added to, or replace, the image's own). With
        test-actions, the module that reads them goes in too: devtools/testactions.py as
        pyinit/testing.py beside the image's pyinit package (no real image carries it);
    without(image, out, ["/dev/console"])
        rewrites the image without those paths (the kernel cannot remove a name, so this
        one re-reads every segment and writes one archive again, uncompressed).

The container runner (`pyinit-mkinitramfs run`) unpacks such images the same way.
"""
from __future__ import annotations

import posixpath
from pathlib import Path

from mkinitramfs import archive, cpio
from mkinitramfs.image import Entry, Image
from pyinit.names import TEST_ACTIONS as TEST_ACTIONS  # tests import it from here

TESTING_MODULE = Path(__file__).with_name("testactions.py")


def pyinit_dir(raw: bytes) -> str:
    """Where the image's pyinit package is (/usr/lib/python3.X/pyinit)."""
    for m in archive.members(raw):
        if m.name.endswith("/pyinit/__init__.pyc") or m.name.endswith("/pyinit/__init__.py"):
            return "/" + posixpath.dirname(m.name)
    raise ValueError("no pyinit package in the image")


def with_files(image: Path, out: Path, files: dict[str, str | bytes]) -> Path:
    raw = Path(image).read_bytes()
    extra = Image()
    for path, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        extra.add_file(path, data=data, mode=0o755 if data.startswith(b"#!") else 0o644)
    if TEST_ACTIONS in files:
        # A source file: the guest's interpreter compiles it (whatever its version), once.
        extra.add_file(f"{pyinit_dir(raw)}/testing.py", data=TESTING_MODULE.read_bytes(), mode=0o644)
    pad = b"\0" * ((-len(raw)) % 512)
    Path(out).write_bytes(raw + pad + cpio.write(extra))
    return Path(out)


def without(image: Path, out: Path, paths: list[str]) -> Path:
    drop = {p.lstrip("/") for p in paths}
    members = archive.members(Path(image).read_bytes())
    missing = drop - {m.name for m in members}
    if missing:
        raise ValueError(f"not in {image}: {', '.join(sorted(missing))}")
    img = Image()
    for m in members:
        if m.name in drop or m.name in (".", ""):
            continue
        kind = m.kind
        e = Entry("/" + m.name, kind, m.mode & 0o7777, data=m.data if kind == "file" else None,
                  target=m.target, rdev=m.rdev, uid=m.uid, gid=m.gid)
        img.entries[e.path] = e
    Path(out).write_bytes(cpio.write(img))
    return Path(out)
