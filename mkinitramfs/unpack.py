"""`unpack FILE DIR`: write the tree the kernel would unpack into a host directory, safely.

An image is untrusted input here. Names that would escape DIR are refused, with the name
in the error, before anything is written: absolute names, names with a '..' component, and
names whose parent, earlier in the archive, is a symlink (the kernel would follow it; on
the host it could point anywhere). DIR must be empty or missing, so no symlink already in
it can redirect a write; every path is then opened component by component from DIR's file
descriptor with O_NOFOLLOW, a second line of defence.

Ownership is restored when running as root (numeric ids, as in the image); device nodes
that cannot be made (not root) are skipped with a warning, as GNU cpio does.
"""
from __future__ import annotations

import os
import stat
import sys

from mkinitramfs import archive
from mkinitramfs.cpio import CpioError


class UnpackError(Exception):
    pass


def check_names(segments: list[archive.Segment]) -> None:
    """Refuse names that escape the destination (see the module docstring)."""
    symlinks: set[str] = set()
    for seg in segments:
        for m in seg.members:
            name = m.name
            if name.startswith("/"):
                raise UnpackError(f"{name!r}: absolute name in the archive, refusing to unpack it")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if ".." in parts:
                raise UnpackError(f"{name!r}: name with a '..' component, refusing to unpack it")
            path = "/".join(parts)
            for i in range(1, len(parts)):
                prefix = "/".join(parts[:i])
                if prefix in symlinks:
                    raise UnpackError(f"{name!r}: goes through {prefix!r}, a symlink in the archive; "
                                      "refusing to follow it")
            if m.kind == "symlink":
                symlinks.add(path)
            else:
                symlinks.discard(path)


def _open_parent(root_fd: int, rel: str) -> tuple[int, str]:
    """(fd of rel's parent directory, last component), walking with O_NOFOLLOW."""
    parts = rel.split("/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as e:
        os.close(fd)
        raise UnpackError(f"{rel}: cannot reach its directory without following a symlink: {e.strerror}") from None
    return fd, parts[-1]


def unpack(buf: bytes, dest: str, *, warn=lambda msg: print(msg, file=sys.stderr)) -> int:
    """Unpack the image `buf` into `dest`; returns the number of names written."""
    segments = archive.read_image(buf)
    check_names(segments)
    tree = archive.unpack_model(buf)
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest):
            raise UnpackError(f"{dest}: not a directory")
        if os.listdir(dest):
            raise UnpackError(f"{dest}: not empty; unpack into an empty or new directory")
    else:
        os.makedirs(dest)
    as_root = os.geteuid() == 0
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    written: dict[int, str] = {}  # id(node) -> first path written (hard links)
    dirs: list[tuple[str, archive.Node]] = []
    count = 0
    try:
        for path in sorted(tree):  # parents sort before their children
            if path == "/":
                continue
            node = tree[path]
            rel = path.lstrip("/")
            fd, name = _open_parent(root_fd, rel)
            try:
                first = written.get(id(node))
                if first is not None:
                    pfd, pname = _open_parent(root_fd, first)
                    try:
                        os.link(pname, name, src_dir_fd=pfd, dst_dir_fd=fd, follow_symlinks=False)
                    finally:
                        os.close(pfd)
                    count += 1
                    continue
                perm = stat.S_IMODE(node.mode)
                if node.kind == "dir":
                    os.mkdir(name, 0o700, dir_fd=fd)
                    dirs.append((path, node))
                    count += 1
                    continue
                if node.kind == "symlink":
                    os.symlink(node.target, name, dir_fd=fd)
                    if as_root:
                        os.chown(name, node.uid, node.gid, dir_fd=fd, follow_symlinks=False)
                    count += 1
                    continue
                if node.kind == "file":
                    wfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  0o600, dir_fd=fd)
                    with os.fdopen(wfd, "wb") as f:
                        f.write(node.data)
                elif node.kind in ("chardev", "blockdev", "fifo", "socket"):
                    try:
                        os.mknod(name, stat.S_IFMT(node.mode) | 0o600, os.makedev(*node.rdev), dir_fd=fd)
                    except PermissionError:
                        warn(f"pyinit-mkinitramfs: warning: {rel}: cannot make a {node.kind} (not root), skipped")
                        continue
                else:
                    warn(f"pyinit-mkinitramfs: warning: {rel}: unknown type {node.mode:o}, skipped")
                    continue
                if as_root:
                    os.chown(name, node.uid, node.gid, dir_fd=fd, follow_symlinks=False)
                os.chmod(name, perm, dir_fd=fd)  # after chown, which clears set-id bits
                os.utime(name, (node.mtime, node.mtime), dir_fd=fd, follow_symlinks=False)
                written[id(node)] = rel
                count += 1
            finally:
                os.close(fd)
        # Directories last, deepest first: their mode may forbid writing into them, and
        # every name created inside changed their mtime.
        for path, node in sorted(dirs, key=lambda d: d[0], reverse=True):
            rel = path.lstrip("/")
            fd, name = _open_parent(root_fd, rel)
            try:
                if as_root:
                    os.chown(name, node.uid, node.gid, dir_fd=fd, follow_symlinks=False)
                os.chmod(name, stat.S_IMODE(node.mode), dir_fd=fd)
                os.utime(name, (node.mtime, node.mtime), dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)
    except OSError as e:
        raise UnpackError(f"{dest}: {e.filename or ''}: {e.strerror}") from None
    finally:
        os.close(root_fd)
    return count


__all__ = ["unpack", "UnpackError", "check_names", "CpioError"]
