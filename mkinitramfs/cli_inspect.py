"""The commands that look into images: ls, unpack, verify and diff (their options are in
cli.py's tables). An image is untrusted input: each reads at most --max-size bytes."""
from __future__ import annotations

import argparse
import os
import stat
import sys
import time

from mkinitramfs import archive, compress, manifest, unpack, verify


def _read(path: str, max_size: int = archive.DEFAULT_MAX_SIZE) -> bytes:
    """The image file, refused before reading when it alone is past the limit."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_size:
            raise compress.LimitExceeded(f"{path} is {size} bytes, more than the limit of {max_size} "
                                                 "(--max-size raises it)")
        return f.read(max_size + 1)


def segment_label(seg: archive.Segment) -> str:
    if seg.compression == "none" and seg.members and all(
            m.name.startswith("kernel") for m in seg.members) and any(
            m.name.startswith("kernel/x86/microcode/") for m in seg.members):
        return "early microcode, uncompressed"
    return f"{seg.compression}" if seg.compression != "none" else "uncompressed"


def ls_command(args: argparse.Namespace) -> int:
    buf = _read(args.file, args.max_size)
    if args.manifest:
        sys.stdout.write(manifest.render(manifest.from_tree(archive.unpack_model(buf, args.max_size)).values()))
        return 0
    for n, seg in enumerate(archive.read_image(buf, args.max_size)):
        print(f"# segment {n}: offset {seg.offset}, {segment_label(seg)}, {seg.size} bytes "
              f"({seg.unpacked_size} unpacked), {len(seg.members)} entries")
        starts = set(seg.archive_starts)
        seen: dict[archive.LinkKey, str] = {}
        for i, m in enumerate(seg.members):
            if i in starts:
                seen = {}
            size = f"{m.rdev[0]},{m.rdev[1]}" if m.kind in ("chardev", "blockdev") else str(len(m.data))
            line = f"{stat.filemode(m.mode)} {m.uid:>4} {m.gid:>4} {size:>10} {m.name}"
            if m.kind == "symlink":
                line += f" -> {m.target}"
            elif m.nlink >= 2 and m.kind != "dir":
                key = (m.dev, m.ino, stat.S_IFMT(m.mode))
                if key in seen:
                    line += f" (hard link to {seen[key]})"
                else:
                    seen[key] = m.name
                    line += f" ({m.nlink} names)"
            print(line)
    return 0


def unpack_command(args: argparse.Namespace) -> int:
    n = unpack.unpack(_read(args.file, args.max_size), args.directory, max_size=args.max_size,
               same_owner=args.same_owner)
    print(f"pyinit-mkinitramfs: unpacked {n} names into {args.directory}")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    rep = verify.verify(_read(args.file, args.max_size), max_size=args.max_size)
    for note in rep.notes:
        print(f"ok: {note}")
    for p in rep.problems:
        print(f"PROBLEM: {p}")
    print(f"pyinit-mkinitramfs: {args.file}: " + ("verified" if rep.ok else f"{len(rep.problems)} problem(s)"))
    return 0 if rep.ok else 1


def describe_change(a: manifest.Record, b: manifest.Record) -> str:
    parts = []
    if a.kind != b.kind:
        return f"{a.kind} -> {b.kind}"
    if a.mode != b.mode:
        parts.append(f"mode {a.mode:04o} -> {b.mode:04o}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        parts.append(f"owner {a.uid}:{a.gid} -> {b.uid}:{b.gid}")
    if (a.size, a.sha256) != (b.size, b.sha256):
        parts.append(f"content {a.size} bytes {a.sha256[:12]} -> {b.size} bytes {b.sha256[:12]}")
    if a.target != b.target:
        parts.append(f"target {a.target} -> {b.target}")
    if a.rdev != b.rdev:
        parts.append(f"device {a.rdev[0]},{a.rdev[1]} -> {b.rdev[0]},{b.rdev[1]}")
    if a.mtime != b.mtime and a.kind != "symlink":
        parts.append(f"mtime {_when(a.mtime)} -> {_when(b.mtime)}")
    return ", ".join(parts)


def _when(t: int | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def diff_images(buf_a: bytes, buf_b: bytes, max_size: int | None = archive.DEFAULT_MAX_SIZE) -> list[str]:
    """Lines describing how the trees differ ([] when they unpack to the same tree)."""
    out: list[str] = []
    seg_a = [segment_label(s) for s in archive.read_image(buf_a, max_size)]
    seg_b = [segment_label(s) for s in archive.read_image(buf_b, max_size)]
    if seg_a != seg_b:
        out.append(f"segments: {' + '.join(seg_a)}  ->  {' + '.join(seg_b)}")
    ma = manifest.from_tree(archive.unpack_model(buf_a, max_size))
    mb = manifest.from_tree(archive.unpack_model(buf_b, max_size))
    links_a = _link_groups(ma)
    links_b = _link_groups(mb)
    for path in sorted(set(ma) | set(mb)):
        a, b = ma.get(path), mb.get(path)
        if a is not None and b is None:
            out.append(f"- {path} ({a.kind})")
        elif a is None and b is not None:
            out.append(f"+ {path} ({b.kind}{', ' + str(b.size) + ' bytes' if b.kind == 'file' else ''})")
        elif a is not None and b is not None:
            change = describe_change(a, b)
            if links_a.get(path) != links_b.get(path):
                change = ", ".join(filter(None, [change, f"hard links {links_a.get(path)} -> {links_b.get(path)}"]))
            if change:
                out.append(f"~ {path}: {change}")
    return out


def _link_groups(records: dict[str, manifest.Record]) -> dict[str, tuple[str, ...]]:
    groups: dict[object, list[str]] = {}
    for path, r in records.items():
        if r.inode is not None:
            groups.setdefault(r.inode, []).append(path)
    return {p: tuple(sorted(g)) for g in groups.values() for p in g}


def diff_command(args: argparse.Namespace) -> int:
    lines = diff_images(_read(args.a, args.max_size), _read(args.b, args.max_size), args.max_size)
    for line in lines:
        print(line)
    if not lines:
        print(f"pyinit-mkinitramfs: {args.a} and {args.b} unpack to the same tree")
    return 1 if lines else 0
