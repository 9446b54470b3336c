"""The set of entries that make up an image: files, directories, symlinks, device nodes.

An `Image` is a mapping from absolute in-image path to `Entry`. Parent directories are
implied: `add_*` creates them (mode 0755) when missing. Ownership is root unless asked.
Every entry also records which *part* of the image it belongs to (interpreter, stdlib,
pyinit, modules, ...) so the builder can print a size table by part.
"""
from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from mkinitramfs import parts
from mkinitramfs.errors import MkinitramfsError

_TYPE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


class ImageError(MkinitramfsError):
    """A problem with what was asked to go into an image; the message names the path."""


@dataclass
class Entry:
    path: str
    kind: str
    mode: int = 0o644
    data: bytes | None = None  # file content, when given in memory
    source: str | None = None  # file content, read from this host path at write time
    target: str = ""  # symlink target
    rdev: tuple[int, int] = (0, 0)  # device nodes: (major, minor)
    uid: int = 0
    gid: int = 0
    part: str = parts.OTHER
    link_to: str | None = None  # a hard link: the path of the entry whose inode it shares
    # An ELF program or shared library the builder resolved (elf.add_elf_file): strip may
    # remove its symbol tables and debug sections (mkinitramfs.strip). Never a kernel module.
    strippable: bool = False

    @property
    def full_mode(self) -> int:
        return _TYPE_BITS[self.kind] | (self.mode & 0o7777)

    def content(self) -> bytes:
        if self.kind == "symlink":
            return self.target.encode()
        if self.kind != "file":
            return b""
        if self.data is not None:
            return self.data
        if self.source is not None:
            with open(self.source, "rb") as f:
                return f.read()
        return b""

    def size(self) -> int:
        if self.link_to is not None:
            return 0  # the bytes are counted once, on the primary name
        if self.kind == "file" and self.data is None and self.source is not None:
            return os.stat(self.source).st_size
        return len(self.content())


# The kernel's limits for what init/initramfs.c can create (include/uapi/linux/limits.h):
# a path of at most PATH_MAX bytes with its NUL, each component at most NAME_MAX bytes (the
# rootfs is tmpfs/ramfs), a symlink target that symlink(2) accepts (under PATH_MAX with its
# NUL). The kernel skips a member past them *silently*, so the builder refuses them.
PATH_MAX = 4096
NAME_MAX = 255


def check_limits(path: str, target: str | None = None) -> None:
    """Raise ImageError naming `path` when the kernel could not unpack it."""
    raw = path.lstrip("/").encode("utf-8", "surrogateescape")
    if raw == b"TRAILER!!!":
        # the name that ends a newc archive: the kernel would create nothing for it (found
        # by a long property-test run: the archive ended at this member)
        raise ImageError(f"{path}: the name of the cpio end marker cannot be an entry")
    if len(raw) + 1 > PATH_MAX:
        raise ImageError(f"{path}: name is {len(raw)} bytes, the kernel's limit is {PATH_MAX - 1}")
    for part in raw.split(b"/"):
        if len(part) > NAME_MAX:
            raise ImageError(f"{path}: component {part[:40].decode('utf-8', 'replace')}... is {len(part)} bytes, "
                             f"the kernel's limit is {NAME_MAX}")
    if target is not None:
        t = target.encode("utf-8", "surrogateescape")
        if not t or b"\0" in t:
            raise ImageError(f"{path}: symlink target {target!r} is empty or holds a NUL")
        if len(t) + 1 > PATH_MAX:
            raise ImageError(f"{path}: symlink target is {len(t)} bytes, the kernel's limit is {PATH_MAX - 1}")


def normalize(path: str) -> str:
    """'usr//lib/./x' -> '/usr/lib/x'; refuses '..' so nothing escapes the image root."""
    if not path or "\0" in path:
        raise ImageError(f"bad image path {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"image path {path!r} contains '..'")
    return "/" + "/".join(parts)


@dataclass
class Image:
    entries: dict[str, Entry] = field(default_factory=dict)
    # What the build output must tell about the contents (a library only for some CPUs, a
    # file strip could not shrink): one line each, shown by the builder.
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def __contains__(self, path: str) -> bool:
        return normalize(path) in self.entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries.values())

    def get(self, path: str) -> Entry | None:
        return self.entries.get(normalize(path))

    def _put(self, entry: Entry) -> Entry:
        entry.path = normalize(entry.path)
        if entry.path == "/":
            raise ImageError("the image root '/' is implied and cannot be added")
        check_limits(entry.path, entry.target if entry.kind == "symlink" else None)
        self._ensure_parents(entry.path, entry.part)
        old = self.entries.get(entry.path)
        if old is not None and old.kind == "dir" and entry.kind == "dir":
            return old
        if old is not None and old.kind == "dir" and entry.kind != "dir":
            raise ImageError(f"{entry.path}: already a directory in the image, cannot add a {entry.kind}")
        self.entries[entry.path] = entry
        return entry

    def _ensure_parents(self, path: str, part: str) -> None:
        parent = posixpath.dirname(path)
        missing = []
        while parent != "/":
            existing = self.entries.get(parent)
            if existing is not None:
                if existing.kind == "symlink":
                    # A parent that is a symlink (e.g. /lib -> usr/lib): resolve inside the image.
                    raise ImageError(f"{path}: parent {parent} is a symlink in the image; add the resolved path")
                if existing.kind != "dir":
                    raise ImageError(f"{path}: parent {parent} is a {existing.kind}, not a directory")
                break
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for d in reversed(missing):
            self.entries[d] = Entry(d, "dir", 0o755, part=part)

    def add_dir(self, path: str, mode: int = 0o755, part: str = parts.BASE) -> Entry:
        return self._put(Entry(path, "dir", mode, part=part))

    def add_file(self, path: str, *, data: bytes | None = None, source: str | None = None,
                 mode: int | None = None, part: str = parts.OTHER) -> Entry:
        if (data is None) == (source is None):
            raise ImageError(f"{path}: give exactly one of data= or source=")
        if source is not None:
            try:
                st = os.stat(source)
            except OSError as e:
                raise ImageError(f"{path}: cannot read source {source}: {e.strerror}") from None
            if not stat.S_ISREG(st.st_mode):
                raise ImageError(f"{path}: source {source} is not a regular file")
            if mode is None:
                mode = st.st_mode & 0o7777
        if mode is None:
            mode = 0o644
        return self._put(Entry(path, "file", mode, data=data, source=source, part=part))

    def add_symlink(self, path: str, target: str, part: str = parts.BASE) -> Entry:
        if not target:
            raise ImageError(f"{path}: empty symlink target")
        return self._put(Entry(path, "symlink", 0o777, target=target, part=part))

    def add_hardlink(self, path: str, existing: str, part: str | None = None) -> Entry:
        """`path` becomes another name of the file (or device node) at `existing`: one inode
        in the archive (same ino, nlink = number of names, data on the last name, as GNU
        cpio writes it), one inode after the kernel unpacks it."""
        primary = self.get(existing)
        if primary is None:
            raise ImageError(f"{path}: hard link target {existing} is not in the image")
        while primary.link_to is not None:
            primary = self.entries[primary.link_to]
        if primary.kind not in ("file", "chardev", "blockdev", "fifo"):
            raise ImageError(f"{path}: cannot hard-link to {existing}, a {primary.kind}")
        return self._put(Entry(path, primary.kind, primary.mode, rdev=primary.rdev, uid=primary.uid,
                               gid=primary.gid, part=part or primary.part, link_to=primary.path))

    def add_node(self, path: str, kind: str, major: int, minor: int, mode: int = 0o600,
                 part: str = parts.BASE) -> Entry:
        if kind not in ("chardev", "blockdev"):
            raise ImageError(f"{path}: device kind must be chardev or blockdev, not {kind}")
        if not (0 <= major <= 0xFFF and 0 <= minor <= 0xFFFFF):
            raise ImageError(f"{path}: device {major},{minor} is beyond the kernel's 12-bit major, 20-bit minor")
        return self._put(Entry(path, kind, mode, rdev=(major, minor), part=part))

    def sorted_entries(self) -> list[Entry]:
        """Entries sorted by path, so a parent always precedes its children."""
        return [self.entries[p] for p in sorted(self.entries)]

    def size_by_part(self) -> dict[str, tuple[int, int]]:
        """part -> (number of entries, bytes of content)."""
        out: dict[str, tuple[int, int]] = {}
        for e in self.entries.values():
            n, b = out.get(e.part, (0, 0))
            out[e.part] = (n + 1, b + (e.size() if e.kind == "file" else 0))
        return out


def materialize(image: Image, root: str) -> None:
    """Write the image's tree into a host directory (for container tests and `unpack`).

    `root` must exist. Entries are created in sorted order; device nodes need privileges.
    """
    for e in image.sorted_entries():
        dest = os.path.join(root, e.path.lstrip("/"))
        if e.kind == "dir":
            os.makedirs(dest, exist_ok=True)
            os.chmod(dest, e.mode)
        elif e.link_to is not None:
            continue  # below, once every primary exists
        elif e.kind == "file":
            with open(dest, "wb") as f:
                f.write(e.content())
            os.chmod(dest, e.mode)
        elif e.kind == "symlink":
            os.symlink(e.target, dest)
        elif e.kind in ("chardev", "blockdev"):
            os.mknod(dest, e.full_mode, os.makedev(*e.rdev))
        elif e.kind == "fifo":
            os.mkfifo(dest, e.mode)
        if e.kind != "symlink":
            os.chown(dest, e.uid, e.gid, follow_symlinks=False)
            os.chmod(dest, e.mode)  # again: chown clears set-id bits
    for e in image.sorted_entries():
        if e.link_to is not None:
            os.link(os.path.join(root, e.link_to.lstrip("/")), os.path.join(root, e.path.lstrip("/")))
