"""Test-only variants of a built image, without rebuilding it.

    with_files(image, out, {"/etc/pyinit/test-actions": "mount fail once\\n"})
        appends an uncompressed cpio holding those files (the kernel unpacks concatenated
        archives in order, so they are added to, or replace, the image's own);
    without(image, out, ["/dev/console"])
        rewrites the image without those paths (the kernel cannot remove a name, so this
        one re-reads every segment and writes one archive again, uncompressed).

The container runner (`pyinit-mkinitramfs run`) unpacks such images the same way.
"""
from __future__ import annotations

from pathlib import Path

from mkinitramfs import archive, cpio
from mkinitramfs.image import Entry, Image

TEST_ACTIONS = "/etc/pyinit/test-actions"


def with_files(image: Path, out: Path, files: dict[str, str | bytes]) -> Path:
    raw = Path(image).read_bytes()
    extra = Image()
    for path, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        extra.add_file(path, data=data, mode=0o755 if data.startswith(b"#!") else 0o644)
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
