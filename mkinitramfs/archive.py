"""Reading a whole initramfs file: possibly several concatenated segments (an uncompressed
early-microcode cpio, then the compressed main archive), as the kernel reads it."""
from __future__ import annotations

import stat
from dataclasses import dataclass, field

from mkinitramfs import compress
from mkinitramfs.cpio import CpioError, Member, read_archive, skip_padding

# An image is untrusted input: ls, verify, diff and unpack stop at this many unpacked bytes
# (every segment together), before allocating more (--max-size changes it).
DEFAULT_MAX_SIZE = 4 << 30


def parse_size(text: str) -> int:
    """"4G", "512M", "100k", "1048576" -> bytes (powers of 1024). ValueError naming it."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = units.get(t[-1:], 1)
    if mult != 1:
        t = t[:-1]
    try:
        n = int(float(t) * mult)
    except ValueError:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with K, M, G)") from None
    if n <= 0:
        raise ValueError(f"{text!r}: the size must be positive")
    return n


@dataclass
class Segment:
    offset: int  # where the segment starts in the file
    compression: str
    size: int  # bytes it takes in the file
    unpacked_size: int
    members: list[Member] = field(default_factory=list)
    # index in `members` where each archive of the segment starts (a compressed segment may
    # hold several archives, each ended by its trailer)
    archive_starts: list[int] = field(default_factory=lambda: [0])


def read_image(buf: bytes, max_size: int | None = DEFAULT_MAX_SIZE) -> list[Segment]:
    """Every segment of an image. Raises CpioError / CompressError naming the offset, and
    compress.LimitExceeded as soon as the segments unpack to more than `max_size` bytes."""
    segments = []
    total = 0
    pos = skip_padding(buf, 0)
    if pos >= len(buf):
        raise CpioError("empty image: no cpio archive found")
    while pos < len(buf):
        method = compress.detect(buf, pos)
        if method is None:
            raise CpioError(f"unrecognised data at offset {pos} (starts with {buf[pos:pos + 8].hex()}): "
                            "neither a newc cpio archive nor a known compression")
        left = None if max_size is None else max_size - total
        if method == "none":
            members, end = read_archive(buf, pos)
            total += end - pos
            if left is not None and end - pos > left:
                raise compress.LimitExceeded(f"the image unpacks to more than {max_size} bytes (the limit; "
                                             "--max-size raises it)")
            segments.append(Segment(pos, "none", end - pos, end - pos, members))
            pos = skip_padding(buf, end)
            continue
        try:
            data, end = compress.decompress_stream(buf, pos, method, left)
            total += len(data)
        except compress.CompressError:
            raise
        except Exception as e:  # zstd/lzma/zlib raise their own error types
            raise compress.CompressError(f"corrupt {method} data at offset {pos}: {e}") from None
        members = []
        starts = []
        inner = 0
        while inner < len(data):
            ms, inner = read_archive(data, inner)
            starts.append(len(members))
            members.extend(ms)
            inner = skip_padding(data, inner)
        segments.append(Segment(pos, method, end - pos, len(data), members, starts or [0]))
        pos = skip_padding(buf, end)
    return segments


def members(buf: bytes, max_size: int | None = DEFAULT_MAX_SIZE) -> list[Member]:
    """The tree the kernel would unpack: later members replace earlier ones of the same name."""
    out: dict[str, Member] = {}
    for seg in read_image(buf, max_size):
        for m in seg.members:
            out[m.name] = m
    return [out[k] for k in sorted(out)]


# ---------------------------------------------------------------------------------------
# The tree the kernel unpacks: a model of init/initramfs.c, for verify, diff and manifests.

@dataclass(eq=False)
class Node:
    """One inode of the unpacked tree; hard-linked names share the same Node object."""
    kind: str
    mode: int  # full st_mode
    uid: int
    gid: int
    mtime: int
    data: bytes = b""  # file content
    target: str = ""  # symlink target
    rdev: tuple[int, int] = (0, 0)
    children: int = 0  # directories: number of names directly inside


# The unpacked tree: "/path" -> Node, every name of a hard-linked inode the same Node.
Tree = dict[str, Node]
# The kernel's hard-link key within one archive: ((devmajor, devminor), ino, file type bits).
LinkKey = tuple[tuple[int, int], int, int]


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def unpack_model(buf: bytes, max_size: int | None = DEFAULT_MAX_SIZE) -> Tree:
    """What the kernel leaves in the rootfs after unpacking `buf`: {"/path": Node}.

    Follows init/initramfs.c: members are applied in order, segment after segment; a name
    whose parent is missing is skipped (the kernel creates no parents); an existing name of
    another type is removed first (a non-empty directory cannot be, and the member is then
    skipped); a directory that exists keeps its children and takes the new mode and owner;
    regular files and device nodes with nlink >= 2 and the same (dev, ino, type) within one
    archive are hard links to the first such name, and a later name's data (when it has
    any) becomes the shared inode's data; the link table is forgotten at each trailer.
    Names are taken relative to /, with '.' and '..' resolved lexically; parent components
    that are symlinks are not followed (the builder never relies on that).
    """
    tree: Tree = {"/": Node("dir", 0o40755, 0, 0, 0)}
    for seg in read_image(buf, max_size):
        links: dict[LinkKey, str] = {}
        starts = set(seg.archive_starts)
        for i, m in enumerate(seg.members):
            if i in starts:
                links = {}  # the kernel frees its link table at every trailer
            _apply(tree, links, m)
    return tree


def _lexical(name: str) -> str:
    parts: list[str] = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return "/" + "/".join(parts)


def _remove(tree: Tree, path: str) -> bool:
    node = tree.get(path)
    if node is None:
        return True
    if node.kind == "dir" and node.children:
        return False
    del tree[path]
    parent = tree.get(_parent(path))
    if parent is not None:
        parent.children -= 1
    return True


def _add(tree: Tree, path: str, node: Node) -> None:
    tree[path] = node
    tree[_parent(path)].children += 1


def _apply(tree: Tree, links: dict[LinkKey, str], m: Member) -> None:
    if not m.name:
        return  # "" (a name that starts with NUL): every syscall on it fails with ENOENT
    path = _lexical(m.name)
    if path == "/":
        if m.kind == "dir":  # "." : the root takes the mode and owner
            root = tree["/"]
            root.mode, root.uid, root.gid, root.mtime = m.mode, m.uid, m.gid, m.mtime
        return
    parent = tree.get(_parent(path))
    if parent is None or parent.kind != "dir":
        return  # the kernel's open/mkdir/mknod fails: ENOENT / ENOTDIR
    old = tree.get(path)
    kind = m.kind
    if kind not in ("dir", "symlink") and m.nlink >= 2 and kind in ("file", "chardev", "blockdev", "fifo", "socket"):
        key = (m.dev, m.ino, stat.S_IFMT(m.mode))
        first = links.get(key)
        if first is None:
            links[key] = path
        else:
            # maybe_link(): remove whatever is there, link(first, path)
            if not _remove(tree, path) or first not in tree:
                return
            node = tree[first]
            _add(tree, path, node)
            if kind == "file":
                node.uid, node.gid, node.mode, node.mtime = m.uid, m.gid, m.mode, m.mtime
                if m.data:
                    node.data = m.data
            return
    if old is not None and stat.S_IFMT(old.mode) != stat.S_IFMT(m.mode):
        if not _remove(tree, path):
            return
        old = None
    if kind == "dir":
        if old is not None:
            old.mode, old.uid, old.gid, old.mtime = m.mode, m.uid, m.gid, m.mtime
        else:
            _add(tree, path, Node("dir", m.mode, m.uid, m.gid, m.mtime))
    elif kind == "symlink":
        if old is not None or not m.target:
            return  # symlink(2): EEXIST (clean_path(name, 0) only removes other types); "" is ENOENT
        _add(tree, path, Node("symlink", m.mode, m.uid, m.gid, m.mtime, target=m.target))
    elif kind == "file":
        if old is not None:  # O_TRUNC on the existing inode (hard links see it too)
            old.data, old.mode, old.uid, old.gid, old.mtime = m.data, m.mode, m.uid, m.gid, m.mtime
        else:
            _add(tree, path, Node("file", m.mode, m.uid, m.gid, m.mtime, data=m.data))
    elif kind in ("chardev", "blockdev", "fifo", "socket"):
        if old is not None:
            return  # mknod(2): EEXIST
        _add(tree, path, Node(kind, m.mode, m.uid, m.gid, m.mtime, rdev=kernel_rdev(*m.rdev)))


def kernel_rdev(major: int, minor: int) -> tuple[int, int]:
    """The device number the kernel makes of a header's rdevmajor/rdevminor: MKDEV() into a
    32-bit dev_t (12-bit major, 20-bit minor), bits beyond that lost (a damaged header's
    0x80000001 major, found by a long property-test run, reached os.makedev())."""
    dev = ((major << 20) | minor) & 0xFFFFFFFF
    return dev >> 20, dev & 0xFFFFF


def resolve(tree: Tree, path: str, *, follow_last: bool = True) -> str | None:
    """`path` with every symlink inside the tree followed (absolute targets are relative to
    the tree's root, as after a chroot); None when a component is missing or loops."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    cur = "/"
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            cur = _parent(cur)
            continue
        nxt = cur.rstrip("/") + "/" + part
        node = tree.get(nxt)
        if node is None:
            return None
        if node.kind == "symlink" and (parts or follow_last):
            hops += 1
            if hops > 40:
                return None
            target = node.target
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            if target.startswith("/"):
                cur = "/"
            continue
        if parts and node.kind != "dir":
            return None
        cur = nxt
    return cur
