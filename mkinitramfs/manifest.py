"""A manifest of an unpacked tree: one line per path with type, permissions, owner, mtime,
content hash (files), target (symlinks), device numbers (nodes) and hard-link groups.

Three producers render the same format, so their outputs compare as text:
- the builder, from the entries it wrote (`build --manifest FILE`);
- the reader, from the kernel's model of unpacking an image file (`ls --manifest`);
- a test inside a VM guest, from what the kernel really unpacked (tests/vm).

Line format (sorted by path, fields separated by one space):
    PATH KIND MODE UID GID MTIME DETAIL [link=PATH]
KIND is file/dir/symlink/chardev/blockdev/fifo/socket, MODE four octal digits, MTIME '-'
for symlinks (the kernel's do_utime() follows symlinks, so a link keeps its creation time),
DETAIL is "SIZE:SHA256" for files, "->TARGET" for symlinks, "MAJ,MIN" for device nodes, '-'
otherwise. Hard-linked names: the first name of the inode (in path order) is shown as is,
each other name carries link=FIRST. Bytes outside printable ASCII, spaces and backslashes
are written as \\xNN.
"""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from mkinitramfs.archive import Tree
from mkinitramfs.image import Image

KIND_BITS = {
    "file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK, "fifo": stat.S_IFIFO, "socket": stat.S_IFSOCK,
}
KIND_OF_BITS = {v: k for k, v in KIND_BITS.items()}


@dataclass
class Record:
    path: str  # "/a/b"
    kind: str
    mode: int  # permission bits (0o7777)
    uid: int
    gid: int
    mtime: int | None
    size: int = 0
    sha256: str = ""
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    inode: Hashable = None  # names with the same non-None inode are hard links


def escape(text: str) -> str:
    out = []
    for b in text.encode("utf-8", "surrogateescape"):
        if 0x21 <= b < 0x7F and b != 0x5C:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def render(records: Iterable[Record]) -> str:
    recs = sorted(records, key=lambda r: r.path)
    first_name: dict[Hashable, str] = {}
    lines = []
    for r in recs:
        if r.kind == "file":
            detail = f"{r.size}:{r.sha256}"
        elif r.kind == "symlink":
            detail = "->" + escape(r.target)
        elif r.kind in ("chardev", "blockdev"):
            detail = f"{r.rdev[0]},{r.rdev[1]}"
        else:
            detail = "-"
        mtime = "-" if r.kind == "symlink" or r.mtime is None else str(r.mtime)
        line = f"{escape(r.path)} {r.kind} {r.mode & 0o7777:04o} {r.uid} {r.gid} {mtime} {detail}"
        if r.inode is not None and r.kind != "dir":
            if r.inode in first_name:
                line += " link=" + escape(first_name[r.inode])
            else:
                first_name[r.inode] = r.path
        lines.append(line)
    return "".join(line + "\n" for line in lines)


def _file_record(path: str, kind: str, mode: int, uid: int, gid: int, mtime: int | None, data: bytes,
                 target: str, rdev: tuple[int, int], inode: Hashable) -> Record:
    if kind == "file":
        return Record(path, kind, mode & 0o7777, uid, gid, mtime, len(data), hashlib.sha256(data).hexdigest(),
                      inode=inode)
    return Record(path, kind, mode & 0o7777, uid, gid, mtime, target=target, rdev=rdev, inode=inode)


def from_image(image: Image, mtime: int) -> dict[str, Record]:
    """What the builder wrote: {path: Record} from an Image's entries."""
    out: dict[str, Record] = {}
    linked = {e.link_to for e in image.entries.values() if e.link_to}
    for e in image.sorted_entries():
        primary = image.entries[e.link_to] if e.link_to else e
        inode = primary.path if (e.link_to or e.path in linked) else None
        out[e.path] = _file_record(e.path, primary.kind, primary.mode, primary.uid, primary.gid, mtime,
                                   primary.content() if primary.kind == "file" else b"", primary.target,
                                   primary.rdev, inode)
    return out


def from_tree(tree: Tree) -> dict[str, Record]:
    """What the kernel would unpack: {path: Record} from archive.unpack_model()'s tree
    (the root "/" left out)."""
    counts: dict[int, int] = {}
    for node in tree.values():
        counts[id(node)] = counts.get(id(node), 0) + 1
    out = {}
    for path, n in tree.items():
        if path == "/":
            continue
        inode = id(n) if counts[id(n)] > 1 else None
        out[path] = _file_record(path, n.kind, n.mode, n.uid, n.gid, n.mtime, n.data, n.target, n.rdev, inode)
    return out


def merge(*layers: dict[str, Record]) -> dict[str, Record]:
    """Several segments' records, later ones replacing earlier ones of the same path."""
    out: dict[str, Record] = {}
    for layer in layers:
        out.update(layer)
    return out


def from_directory(root: str) -> dict[str, Record]:
    """A host directory tree (e.g. unpacked by GNU cpio or bsdtar): {"/path": Record}."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = "/" + os.path.relpath(full, root)
            kind = KIND_OF_BITS.get(stat.S_IFMT(st.st_mode), "unknown")
            data = b""
            target = ""
            if kind == "file":
                with open(full, "rb") as f:
                    data = f.read()
            elif kind == "symlink":
                target = os.readlink(full)
            inode = (st.st_dev, st.st_ino) if st.st_nlink > 1 and kind != "dir" else None
            rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("chardev", "blockdev") else (0, 0)
            out[rel] = _file_record(rel, kind, st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime), data, target,
                                    rdev, inode)
    return out
