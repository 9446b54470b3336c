"""`unpack FILE DIR`: write the tree the kernel would unpack into a host directory, safely.

An image is untrusted input here, and unpack often runs as root. Names that would escape
DIR are refused, with the name in the error, before anything is written: absolute names,
names with a '..' component, and names whose parent, earlier in the archive, is a symlink
(the kernel would follow it; on the host it could point anywhere). DIR must be empty or
missing, and yours; a new DIR is made 0700 (an existing one is set 0700) until the unpack
is done, so nobody else can reach into it meanwhile, and only then gets the image's mode
for "/". Every path is opened component by component from DIR's file descriptor with
O_NOFOLLOW, and owner, mode and times are set on the open descriptor (fchown, fchmod,
futimens) or with follow_symlinks=False: never through a symlink.

Without consent (`--same-owner`), an image's setuid/setgid bits are dropped, files belong
to whoever unpacks, and device nodes are skipped with a warning: an unpacked initramfs
must not become a setuid-root program or a raw disk node in someone's folder. With it
(as root), owners, set-id bits and device nodes are restored as in the image.
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable

from mkinitramfs import archive
from mkinitramfs.errors import MkinitramfsError

SETID = stat.S_ISUID | stat.S_ISGID


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


class UnpackError(MkinitramfsError):
    """An image that cannot be unpacked safely into that folder; the message names the member."""


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


def _prepare(dest: str) -> bool:
    """Check or make DIR; True when it was made here."""
    if os.path.lexists(dest):
        st = os.lstat(dest)
        if not stat.S_ISDIR(st.st_mode):
            raise UnpackError(f"{dest}: not a directory")
        if os.listdir(dest):
            raise UnpackError(f"{dest}: not empty; unpack into an empty or new directory")
        if st.st_uid != os.geteuid():
            raise UnpackError(f"{dest}: owned by uid {st.st_uid}, not by you: whoever owns it could change it "
                              "while it is written; unpack into a new directory")
        return False
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    os.mkdir(dest, 0o700)
    return True


def unpack(buf: bytes, dest: str, *, warn: Callable[[str], None] = _stderr,
           max_size: int | None = archive.DEFAULT_MAX_SIZE, same_owner: bool = False) -> int:
    """Unpack the image `buf` into `dest`; returns the number of names written."""
    segments = archive.read_image(buf, max_size)
    check_names(segments)
    tree = archive.unpack_model(buf, max_size)
    _prepare(dest)
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    os.fchmod(root_fd, 0o700)  # until the end: nobody else reaches into it meanwhile
    writer = _Writer(root_fd, same_owner and os.geteuid() == 0, warn)
    try:
        count = sum(writer.write(path, tree[path]) for path in sorted(tree) if path != "/")  # parents sort first
        writer.finish_dirs(tree["/"])
    except OSError as e:
        raise UnpackError(f"{dest}: {e.filename or ''}: {e.strerror}") from None
    finally:
        os.close(root_fd)
    return count


class _Writer:
    """Writes the names of an unpacked tree below `root_fd`, never through a symlink."""

    def __init__(self, root_fd: int, restore: bool, warn: Callable[[str], None]) -> None:
        self.root_fd = root_fd
        self.restore = restore  # owners, set-id bits and device nodes as in the image
        self.warn = warn
        self.written: dict[int, str] = {}  # id(node) -> first path written (hard links)
        self.dirs: list[tuple[str, archive.Node]] = []

    def perm(self, node: archive.Node) -> int:
        mode = stat.S_IMODE(node.mode)
        return mode if self.restore else mode & ~SETID

    def write(self, path: str, node: archive.Node) -> int:
        """Create `path`; 1 when a name was made, 0 when it was skipped (with a warning)."""
        rel = path.lstrip("/")
        fd, name = _open_parent(self.root_fd, rel)
        try:
            first = self.written.get(id(node))
            if first is not None:
                pfd, pname = _open_parent(self.root_fd, first)
                try:
                    os.link(pname, name, src_dir_fd=pfd, dst_dir_fd=fd, follow_symlinks=False)
                finally:
                    os.close(pfd)
                return 1
            if node.kind == "dir":
                os.mkdir(name, 0o700, dir_fd=fd)
                self.dirs.append((path, node))
                return 1
            if node.kind == "symlink":
                os.symlink(node.target, name, dir_fd=fd)
                if self.restore:
                    os.chown(name, node.uid, node.gid, dir_fd=fd, follow_symlinks=False)
                return 1
            if node.kind == "file":
                self._file(fd, name, node)
            elif node.kind in ("chardev", "blockdev", "fifo", "socket"):
                if not self._special(fd, name, rel, node):
                    return 0
            else:
                self.warn(f"pyinit-mkinitramfs: warning: {rel}: unknown type {node.mode:o}, skipped")
                return 0
            self.written[id(node)] = rel
            return 1
        finally:
            os.close(fd)

    def _file(self, fd: int, name: str, node: archive.Node) -> None:
        wfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        try:
            view = memoryview(node.data)
            while view:
                view = view[os.write(wfd, view):]
            if self.restore:
                os.fchown(wfd, node.uid, node.gid)
            os.fchmod(wfd, self.perm(node))  # after fchown, which clears set-id bits
            os.utime(wfd, (node.mtime, node.mtime))
        finally:
            os.close(wfd)

    def _special(self, fd: int, name: str, rel: str, node: archive.Node) -> bool:
        """A device node, fifo or socket; False when skipped."""
        if node.kind in ("chardev", "blockdev") and not self.restore:
            self.warn(f"pyinit-mkinitramfs: warning: {rel}: a {node.kind} "
                      f"{node.rdev[0]},{node.rdev[1]}: skipped (--same-owner, as root, makes device nodes)")
            return False
        try:
            os.mknod(name, stat.S_IFMT(node.mode) | 0o600, os.makedev(*node.rdev), dir_fd=fd)
        except PermissionError:
            self.warn(f"pyinit-mkinitramfs: warning: {rel}: cannot make a {node.kind} (not root), skipped")
            return False
        if self.restore:
            os.chown(name, node.uid, node.gid, dir_fd=fd, follow_symlinks=False)
        os.chmod(name, self.perm(node), dir_fd=fd, follow_symlinks=False)
        os.utime(name, (node.mtime, node.mtime), dir_fd=fd, follow_symlinks=False)
        return True

    def finish_dirs(self, root: archive.Node) -> None:
        """Modes, owners and times of the directories, the deepest first and "/" last: their
        mode may forbid writing into them, and every name created inside changed their mtime."""
        for path, node in sorted(self.dirs, key=lambda d: d[0], reverse=True):
            fd, name = _open_parent(self.root_fd, path.lstrip("/"))
            try:
                dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            finally:
                os.close(fd)
            try:
                _finish_dir(dfd, node, self.restore, self.perm(node))
            finally:
                os.close(dfd)
        _finish_dir(self.root_fd, root, self.restore, self.perm(root))


def _finish_dir(fd: int, node: archive.Node, restore: bool, mode: int) -> None:
    if restore:
        os.fchown(fd, node.uid, node.gid)
    os.fchmod(fd, mode)
    os.utime(fd, (node.mtime, node.mtime))
