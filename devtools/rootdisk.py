"""Small root disks for the guest, and the report their /sbin/init prints.

``make_root_disk()`` builds a raw disk image holding one filesystem (no partition table)
from a staging folder, with no mount and no loop device (``mkfs.ext4 -d``), so it needs no
root privileges. The root holds a static busybox, the usual empty mount points and
``/sbin/init``: the "real init", a busybox sh script (``STANDARD_INIT``) that prints a
report on the console, saves the same report as ``/realinit.report`` on the disk and
powers off at once.

Every report line starts with ``REALINIT`` so tests can pick it out of a noisy serial log::

    REALINIT: uptime 2.31
    REALINIT-PID: 1
    REALINIT-CMDLINE: console=ttyS0 root=/dev/vda panic=-1
    REALINIT-KERNEL: 6.1.0-50-amd64                   (uname -r)
    REALINIT-STATUS: SigBlk:<TAB>0000000000000000     (also SigIgn, SigCgt, NSpid)
    REALINIT-EXEC-STATUS: SigIgn:<TAB>0000000000001000  (also SigBlk)
    REALINIT-FD: 0 -> /dev/console
    REALINIT-MOUNT: <a line of /proc/<pid>/mountinfo>
    REALINIT-MOUNTED: /sys                            (mounted by the script itself)
    REALINIT-IP: 2: eth0    inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0 ...  (ip -o -4 addr)
    REALINIT-ROUTE: default via 10.0.2.2 dev eth0     (ip -4 route)
    REALINIT-CWD: /
    REALINIT-ROOT: /
    REALINIT-ENV: HOME=/
    REALINIT-FILE: /etc/fstab missing                 (paths listed in /etc/realinit-check)
    REALINIT-PROC: 1 0 S sh | /bin/busybox sh /sbin/init   (pid ppid state comm | argv;
                                                      kernel threads left out)
    REALINIT-KMSG: <14>[    1.23] pyinit: ...         (the kernel log's pyinit lines, raw:
                                                      <facility*8+priority>)
    REALINIT-CAT: /sys/module/x/parameters/y = 64     (first line of each path in /etc/realinit-cat)
    REALINIT-LINK: /dev/disk/by-id/x -> ../../sda1    (the symlinks in each folder of /etc/realinit-ls)
    REALINIT-DONE

Files listed in /etc/realinit-save are copied onto the disk under /realinit-saved/ (e.g.
/realinit-saved/run/pyinit/boot.json) with the report, for ``read_file_from_disk``.

Facts the report states about the init process are read from ``/proc/<$$>/...`` of the
script's own process ($$ is 1 when it really is PID 1; if it is not, REALINIT-PID says so
and the rest still describes the script and not someone else). They are collected by a
subshell, so the collector's own fds (a pipe, the directory being listed) never show up in
REALINIT-FD.

Signals: REALINIT-STATUS is the script's live /proc/<pid>/status, and busybox ash changes
dispositions as it starts: it always ignores SIGQUIT (like bash) and catches SIGINT and
SIGCHLD. REALINIT-EXEC-STATUS is read by a child command, which ash gives back the
dispositions it inherited: its SigBlk and SigIgn are what the real init was exec'd with,
except that an inherited SIGCHLD ignore cannot be seen (ash resets it to the default).
Use ``Report.exec_blocked()`` / ``Report.exec_ignored()`` to check that the initramfs
reset its signal state before exec'ing the real init.

The one fd the script itself adds is busybox sh's handle on the script file
(fd 10 or above, pointing at the init path): ``Report.inherited_fds`` leaves it out.

Needs the Debian packages ``busybox-static`` and ``e2fsprogs``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

# Applets given a symlink in /bin, for people and hooks; the scripts call $BB directly.
APPLETS = ("sh", "ash", "cat", "ls", "mount", "umount", "echo", "sed", "grep", "tr",
           "readlink", "sleep", "sync", "poweroff", "reboot", "mkdir", "dmesg", "ps",
           "uname", "cp", "mv", "rm", "ln", "stat", "test", "[", "true", "false", "env")

MOUNT_POINTS = ("proc", "sys", "dev", "run", "tmp", "mnt")

STANDARD_INIT = r"""#!/bin/busybox sh
# The "real init" of pyinit's test disks: report, save the report, power off.
# It must never hang and never wait for input: every path ends in `poweroff -f`, and if
# even that fails the script exits, the kernel panics and QEMU (-no-reboot) stops.
BB=/bin/busybox
P=$$
R=/run/realinit.report

# The earliest moment the real init sees: read the clock before anything else.
[ -r /proc/uptime ] || $BB mount -t proc proc /proc
UP=
[ -r /proc/uptime ] && read UP _ < /proc/uptime

# A watchdog, in case a mount or a sync blocks on a sick device.
( $BB sleep 120; echo "REALINIT-ERROR: watchdog fired"; $BB poweroff -f ) &

MOUNTED=
is_mounted() { $BB grep -q "^[^ ]* $1 " /proc/mounts; }
is_mounted /sys || { $BB mount -t sysfs sysfs /sys && MOUNTED="$MOUNTED /sys"; }
is_mounted /run || { $BB mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run && MOUNTED="$MOUNTED /run"; }

report() {
    echo "REALINIT: uptime ${UP:-unknown}"
    echo "REALINIT-PID: $P"
    printf 'REALINIT-CMDLINE: '; $BB cat /proc/cmdline
    echo "REALINIT-KERNEL: $($BB uname -r)"
    $BB grep -E '^(SigBlk|SigIgn|SigCgt|NSpid):' /proc/$P/status | $BB sed 's/^/REALINIT-STATUS: /'
    # A child command shows the mask and ignored signals as inherited at exec, without
    # the shell's own changes (see the module docstring).
    $BB grep -E '^(SigBlk|SigIgn):' /proc/self/status | $BB sed 's/^/REALINIT-EXEC-STATUS: /'
    for f in /proc/$P/fd/*; do
        t=$($BB readlink "$f") && echo "REALINIT-FD: ${f##*/} -> $t"
    done
    $BB sed 's/^/REALINIT-MOUNT: /' /proc/$P/mountinfo
    for m in $MOUNTED; do echo "REALINIT-MOUNTED: $m"; done
    # the network as the initramfs left it (interfaces configured there stay configured)
    $BB ip -o -4 addr 2>/dev/null | $BB sed 's/^/REALINIT-IP: /'
    $BB ip -4 route 2>/dev/null | $BB sed 's/^/REALINIT-ROUTE: /'
    echo "REALINIT-CWD: $($BB readlink /proc/$P/cwd)"
    echo "REALINIT-ROOT: $($BB readlink /proc/$P/root)"
    $BB tr '\0' '\n' < /proc/$P/environ | $BB sed 's/^/REALINIT-ENV: /'
    if [ -r /etc/realinit-check ]; then
        while IFS= read -r p; do
            [ -n "$p" ] || continue
            if [ -e "$p" ] || [ -L "$p" ]; then s=exists; else s=missing; fi
            echo "REALINIT-FILE: $p $s"
        done < /etc/realinit-check
    fi
    for d in /proc/[0-9]*; do
        s=$($BB sed -E 's/^([0-9]+) \((.*)\) ([A-Za-z]) ([0-9]+) .*/\1 \4 \3 \2/' "$d/stat" 2>/dev/null) || continue
        set -- $s
        [ "$1" = 2 ] || [ "$2" = 2 ] || [ -z "$s" ] && continue   # kthreadd and kernel threads
        echo "REALINIT-PROC: $s | $($BB tr '\0' ' ' < "$d/cmdline" 2>/dev/null)"
    done
    $BB dmesg -r 2>/dev/null | $BB grep ' pyinit: ' | $BB sed 's/^/REALINIT-KMSG: /'
    if [ -r /etc/realinit-cat ]; then
        while IFS= read -r p; do
            [ -n "$p" ] || continue
            v=
            [ -r "$p" ] && IFS= read -r v < "$p"
            echo "REALINIT-CAT: $p = $v"
        done < /etc/realinit-cat
    fi
    if [ -r /etc/realinit-ls ]; then
        while IFS= read -r d; do
            for f in "$d"/*; do
                [ -L "$f" ] && echo "REALINIT-LINK: $f -> $($BB readlink "$f")"
            done
        done < /etc/realinit-ls
    fi
    echo "REALINIT-DONE"
}

# Collect in a subshell that opens the file itself: PID 1's own fds stay as inherited.
if ( exec > "$R" && report ) && [ -s "$R" ]; then
    # Kernel messages must not cut report lines in two: quiet the console meanwhile.
    LVL=
    [ -r /proc/sys/kernel/printk ] && read LVL _ < /proc/sys/kernel/printk
    $BB dmesg -n 1
    $BB cat "$R"
    [ -n "$LVL" ] && $BB dmesg -n "$LVL"
else
    echo "REALINIT-ERROR: cannot write $R, reporting on the console only"
    R=
    ( report )
fi

# Keep the report on the disk too; remounting read-only again flushes the ext4 journal,
# so debugfs (which does not replay journals) finds the file.
if $BB mount -o remount,rw /; then
    if [ -n "$R" ]; then $BB cp "$R" /realinit.report; else ( exec > /realinit.report && report ); fi
    if [ -r /etc/realinit-save ]; then
        while IFS= read -r p; do
            [ -f "$p" ] || continue
            $BB mkdir -p "/realinit-saved${p%/*}" && $BB cp "$p" "/realinit-saved$p"
        done < /etc/realinit-save
    fi
    $BB sync
    $BB mount -o remount,ro / || echo "REALINIT-ERROR: cannot remount / read-only"
else
    echo "REALINIT-ERROR: cannot remount / read-write"
fi
$BB sync
$BB poweroff -f
exit 1
"""

REPORT_PATH = "/realinit.report"


# ---------------------------------------------------------------------------- busybox

def find_static_busybox() -> Path:
    """The host's statically linked busybox, or a clear error naming the package."""
    for cand in BUSYBOX_CANDIDATES:
        p = Path(cand)
        if p.is_file() and is_static_elf(p):
            return p
    raise FileNotFoundError(
        "no statically linked busybox at " + " or ".join(BUSYBOX_CANDIDATES) +
        ": install the Debian package busybox-static (the plain busybox package is "
        "dynamically linked and cannot run on the test disks)")


def is_static_elf(path: Path) -> bool:
    """True when the ELF file has no PT_INTERP program header (no dynamic loader)."""
    import struct
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only: all we run is x86-64
            return False
        end = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack_from(end + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, = struct.unpack_from(end + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


# ---------------------------------------------------------------------------- disks

@dataclass(frozen=True)
class RootDisk:
    path: Path
    uuid: str
    label: str | None
    fs: str


def stage_root(staging: Path, *, init: str | bytes | None = STANDARD_INIT,
               extra_files: dict[str, bytes | str] | None = None,
               busybox: Path | None = None) -> None:
    """Fill ``staging`` with the root tree: busybox, mount points, /sbin/init, extras.

    ``init=None`` leaves /sbin/init out (for tests of init= and its fallbacks).
    ``extra_files`` maps a path inside the root to its content; parents are created, and
    a file whose content starts with ``#!`` is made executable.
    """
    busybox = busybox or find_static_busybox()
    for d in ("bin", "sbin", "etc", *MOUNT_POINTS):
        (staging / d).mkdir(parents=True, exist_ok=True)
    os.chmod(staging / "tmp", 0o1777)
    shutil.copyfile(busybox, staging / "bin" / "busybox")
    os.chmod(staging / "bin" / "busybox", 0o755)
    for applet in APPLETS:
        (staging / "bin" / applet).symlink_to("busybox")
    if init is not None:
        _write(staging, "sbin/init", init)
    for rel, content in (extra_files or {}).items():
        _write(staging, rel, content)


def _write(root: Path, rel: str, content: str | bytes) -> None:
    data = content.encode() if isinstance(content, str) else content
    target = root / rel.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.write_bytes(data)
    os.chmod(target, 0o755 if data.startswith(b"#!") else 0o644)


def _mkfs_ext(fs: str) -> Callable[..., None]:
    def make(image: Path, staging: Path, *, uuid: str, label: str | None) -> None:
        argv = ["mkfs." + fs, "-q", "-F", "-d", str(staging), "-U", uuid,
                "-E", "root_owner=0:0"]
        if label:
            argv += ["-L", label]
        _run([*argv, str(image)], package="e2fsprogs")
    return make


def xfs_protofile(staging: Path) -> str:
    """mkfs.xfs's prototype file for a tree (xfsprogs 6.1 has no "populate from a folder"):
    a header, the root's mode, then one line per entry, "$" closing each directory. Every
    file is owned by root. Names may not contain spaces; files are copied from `staging`."""
    lines = ["/dev/null", "0 0", "d--755 0 0"]

    def mode(st) -> str:
        return ("u" if st.st_mode & stat.S_ISUID else "-") + ("g" if st.st_mode & stat.S_ISGID else "-") + \
            f"{st.st_mode & 0o777:03o}"

    def walk(d: Path, depth: int) -> None:
        for entry in sorted(d.iterdir()):
            if any(c.isspace() for c in entry.name):
                raise ValueError(f"{entry}: an xfs prototype file cannot name it (whitespace)")
            st = entry.lstat()
            pad = " " * depth
            if stat.S_ISLNK(st.st_mode):
                lines.append(f"{pad}{entry.name} l{mode(st)} 0 0 {os.readlink(entry)}")
            elif stat.S_ISDIR(st.st_mode):
                lines.append(f"{pad}{entry.name} d{mode(st)} 0 0")
                walk(entry, depth + 1)
                lines.append(f"{pad}$")
            elif stat.S_ISREG(st.st_mode):
                lines.append(f"{pad}{entry.name} -{mode(st)} 0 0 {entry}")
            else:
                raise ValueError(f"{entry}: only files, folders and symlinks go into a test root")

    walk(staging, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


def _mkfs_xfs(image: Path, staging: Path, *, uuid: str, label: str | None) -> None:
    if image.stat().st_size < XFS_MIN_MB * 1024 * 1024:
        raise ValueError(f"xfs needs at least {XFS_MIN_MB} MiB (mkfs.xfs refuses smaller)")
    with tempfile.NamedTemporaryFile("w", prefix="pyinit-xfs.", suffix=".proto") as proto:
        proto.write(xfs_protofile(staging))
        proto.flush()
        argv = ["mkfs.xfs", "-q", "-f", "-m", f"uuid={uuid}", "-p", proto.name]
        if label:
            argv += ["-L", label]
        _run([*argv, str(image)], package="xfsprogs")


def _mkfs_btrfs(image: Path, staging: Path, *, uuid: str, label: str | None) -> None:
    argv = ["mkfs.btrfs", "-q", "-f", "-U", uuid, "--rootdir", str(staging)]
    if label:
        argv += ["-L", label]
    _run([*argv, str(image)], package="btrfs-progs")


def _mkfs_vfat(image: Path, staging: Path, *, uuid: str, label: str | None) -> None:
    """FAT has no symlinks, owners or modes: only files and folders are copied (with mtools,
    no mount), the applet symlinks are left out (the standard init calls $BB by path).
    `uuid` is FAT's 32-bit volume id: give it as "XXXX-XXXX"."""
    argv = ["mkfs.vfat", "-i", uuid.replace("-", "")]
    if label:
        argv += ["-n", label]
    _run([*argv, str(image)], package="dosfstools")
    for d in sorted(p for p in staging.rglob("*") if p.is_dir() and not p.is_symlink()):
        _run(["mmd", "-i", str(image), "::/" + str(d.relative_to(staging))], package="mtools")
    for f in sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink()):
        _run(["mcopy", "-i", str(image), str(f), "::/" + str(f.relative_to(staging))], package="mtools")


XFS_MIN_MB = 300

# fs name -> maker(image, staging, uuid=, label=). The image file already has its size.
# Another filesystem is one function and one entry here; make_root_disk() and its callers
# stay as they are.
MAKERS: dict[str, Callable[..., None]] = {
    "ext2": _mkfs_ext("ext2"),
    "ext3": _mkfs_ext("ext3"),
    "ext4": _mkfs_ext("ext4"),
    "xfs": _mkfs_xfs,
    "btrfs": _mkfs_btrfs,
    "vfat": _mkfs_vfat,
}


def make_root_disk(path: Path, *, fs: str = "ext4", size_mb: int = 64,
                   label: str | None = None, uuid: str | None = None,
                   init: str | bytes | None = STANDARD_INIT,
                   extra_files: dict[str, bytes | str] | None = None) -> RootDisk:
    """Write a raw disk image at ``path`` holding one ``fs`` filesystem with the test root.

    ``uuid`` defaults to a fresh random one (returned, for ``root=UUID=``); for vfat it is
    the volume id, "XXXX-XXXX".
    """
    if fs not in MAKERS:
        raise ValueError(f"no maker for fs {fs!r}; known: {', '.join(sorted(MAKERS))}")
    path = Path(path)
    if uuid is None:
        uuid = str(uuidlib.uuid4())
        if fs == "vfat":
            uuid = uuid[:4].upper() + "-" + uuid[4:8].upper()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyinit-root.") as tmp:
        staging = Path(tmp) / "root"
        staging.mkdir()
        stage_root(staging, init=init, extra_files=extra_files)
        with open(path, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        MAKERS[fs](path, staging, uuid=uuid, label=label)
    return RootDisk(path=path, uuid=uuid, label=label, fs=fs)


@dataclass(frozen=True)
class Partition:
    """One partition of a test GPT disk. ``fs=None`` leaves it unformatted; ``root=True``
    puts the test root (busybox, /sbin/init) on it, else an empty filesystem."""
    name: str  # the GPT partition name (PARTLABEL)
    size_mb: int
    fs: str | None = "ext4"
    label: str | None = None
    root: bool = False
    extra_files: dict[str, bytes | str] | None = None
    type_code: str = "8300"  # sgdisk's short type code (8300 Linux filesystem, ef00 ESP, 8200 swap) or a GUID
    uuid: str | None = None  # the filesystem's UUID (default: a fresh one)
    partuuid: str | None = None  # the GPT entry's unique GUID (default: a fresh one)
    attributes: tuple[int, ...] = ()  # GPT attribute bits to set (63 no-auto, 60 read-only, 59 grow-fs)
    image: Path | None = None  # copy this file in as the partition's content (fs=None): a LUKS container


@dataclass(frozen=True)
class PartInfo:
    number: int
    partuuid: str
    partlabel: str
    fs: str | None
    uuid: str | None  # the filesystem's UUID
    label: str | None


@dataclass(frozen=True)
class GptDisk:
    path: Path
    ptuuid: str
    parts: tuple[PartInfo, ...]

    def part(self, number: int) -> PartInfo:
        return next(p for p in self.parts if p.number == number)


def make_gpt_disk(path: Path, partitions: list[Partition], *,
                  init: str | bytes | None = STANDARD_INIT) -> GptDisk:
    """A raw disk with a GPT (made by sgdisk) holding several partitions, each with its own
    filesystem made by the real mkfs in a separate file and copied in (sparsely) at its
    offset: no loop device, no root privileges. GUIDs are chosen here, so callers know every
    PARTUUID without reading the table back. Partitions start at 1 MiB and are aligned to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = 1 + sum(p.size_mb for p in partitions) + 1  # 1 MiB before, room for the backup GPT
    with open(path, "wb") as f:
        f.truncate(total * 1024 * 1024)
    ptuuid = str(uuidlib.uuid4())
    argv = ["sgdisk", "-o", "-U", ptuuid]
    infos = []
    start = 2048
    for n, p in enumerate(partitions, 1):
        partuuid = p.partuuid or str(uuidlib.uuid4())
        sectors = p.size_mb * 2048
        argv += ["-n", f"{n}:{start}:{start + sectors - 1}", "-c", f"{n}:{p.name}", "-t", f"{n}:{p.type_code}",
                 "-u", f"{n}:{partuuid}"]
        for bit in p.attributes:
            argv += ["-A", f"{n}:set:{bit}"]
        infos.append((n, start, p, partuuid))
        start += sectors
    _run([*argv, str(path)], package="gdisk")
    parts = []
    with tempfile.TemporaryDirectory(prefix="pyinit-gpt.") as tmp:
        for n, first, p, partuuid in infos:
            fs_uuid = None
            if p.fs is not None:
                fs_uuid = p.uuid or str(uuidlib.uuid4())
                img = Path(tmp) / f"part{n}.img"
                staging = Path(tmp) / f"root{n}"
                staging.mkdir()
                if p.root:
                    stage_root(staging, init=init, extra_files=p.extra_files)
                else:
                    for rel, content in (p.extra_files or {}).items():
                        _write(staging, rel, content)
                with open(img, "wb") as f:
                    f.truncate(p.size_mb * 1024 * 1024)
                MAKERS[p.fs](img, staging, uuid=fs_uuid, label=p.label)
                copy_sparse(img, path, first * 512)
            elif p.image is not None:
                if Path(p.image).stat().st_size > p.size_mb * 1024 * 1024:
                    raise ValueError(f"{p.image} does not fit in partition {n} ({p.size_mb} MiB)")
                copy_sparse(Path(p.image), path, first * 512)
            parts.append(PartInfo(n, partuuid, p.name, p.fs, fs_uuid, p.label))
    return GptDisk(path, ptuuid, tuple(parts))


def copy_sparse(src: Path, dst: Path, offset: int) -> None:
    """Copy src's data regions into dst at offset, skipping holes (a 300 MiB xfs is mostly
    holes)."""
    with open(src, "rb") as fi, open(dst, "r+b") as fo:
        size = os.fstat(fi.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                data_at = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            hole_at = os.lseek(fi.fileno(), data_at, os.SEEK_HOLE)
            fi.seek(data_at)
            fo.seek(offset + data_at)
            left = hole_at - data_at
            while left:
                chunk = fi.read(min(left, 1 << 20))
                fo.write(chunk)
                left -= len(chunk)
            pos = hole_at


def make_btrfs_subvolume_disk(path: Path, *, subvolume: str = "@root", size_mb: int = 128,
                              label: str | None = None, uuid: str | None = None,
                              init: str | bytes | None = STANDARD_INIT,
                              extra_files: dict[str, bytes | str] | None = None) -> RootDisk:
    """A btrfs whose test root lives in a subvolume, for rootflags=subvol=. The top level
    holds only the subvolume: a mount without subvol= finds no /sbin/init.

    btrfs-progs 6.2 cannot make subvolumes from a folder (--subvol came in 6.10), so this
    mounts the new filesystem on a loop device (root privileges) and fills the subvolume."""
    if os.geteuid() != 0:
        raise PermissionError("a btrfs subvolume disk needs root (loop mount, btrfs subvolume create)")
    path = Path(path)
    uuid = uuid or str(uuidlib.uuid4())
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyinit-btrfs.") as tmp:
        staging = Path(tmp) / "root"
        staging.mkdir()
        stage_root(staging, init=init, extra_files=extra_files)
        empty = Path(tmp) / "empty"
        empty.mkdir()
        with open(path, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        _mkfs_btrfs(path, empty, uuid=uuid, label=label)
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        _run(["mount", "-o", "loop", str(path), str(mnt)], package="mount")
        try:
            _run(["btrfs", "subvolume", "create", str(mnt / subvolume)], package="btrfs-progs")
            _run(["cp", "-a", f"{staging}/.", str(mnt / subvolume)], package="coreutils")
        finally:
            _run(["umount", str(mnt)], package="mount")
    return RootDisk(path=path, uuid=uuid, label=label, fs="btrfs")


def read_file_from_disk(path: Path, inner: str) -> bytes | None:
    """Read one file out of an ext2/3/4 image with debugfs (no mount); None if absent.

    debugfs reads the on-disk structures without replaying the journal: a file still only
    in the journal is not seen (the standard init remounts / read-only to flush it).
    """
    debugfs = shutil.which("debugfs") or "/usr/sbin/debugfs"
    proc = subprocess.run([debugfs, "-R", f"cat {inner}", str(path)], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"debugfs on {path} failed: {proc.stderr.decode(errors='replace')}")
    # debugfs exits 0 even when the file is missing; it says so on stderr
    if b"not found" in proc.stderr or b"File not found" in proc.stderr:
        return None
    return proc.stdout


def read_report_from_disk(path: Path) -> str | None:
    data = read_file_from_disk(path, REPORT_PATH)
    return None if data is None else data.decode(errors="replace")


def _run(argv: list[str], *, package: str) -> None:
    exe = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
    if not exe:
        raise FileNotFoundError(f"{argv[0]} not found: install the Debian package {package}")
    proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


# ---------------------------------------------------------------------------- the report

@dataclass(frozen=True)
class Mount:
    """One line of /proc/<pid>/mountinfo."""
    mount_id: int
    parent_id: int
    devno: str  # "major:minor"
    root: str  # the path inside the filesystem that is mounted here
    mountpoint: str
    options: str  # per-mount options: "ro,relatime"
    fstype: str
    source: str
    super_options: str  # per-superblock options: "ro,errors=remount-ro"

    @property
    def readonly(self) -> bool:
        return "ro" in self.options.split(",")


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo_line(line: str) -> Mount:
    left, sep, right = line.partition(" - ")
    if not sep:
        raise ValueError(f"not a mountinfo line: {line!r}")
    a = left.split()
    b = right.split()
    return Mount(mount_id=int(a[0]), parent_id=int(a[1]), devno=a[2], root=_unescape(a[3]),
                 mountpoint=_unescape(a[4]), options=a[5], fstype=b[0],
                 source=_unescape(b[1]) if len(b) > 1 else "",
                 super_options=b[2] if len(b) > 2 else "")


@dataclass
class Report:
    uptime: float | None = None
    pid: int | None = None
    cmdline: str = ""
    kernel: str | None = None
    status: dict[str, str] = field(default_factory=dict)
    exec_status: dict[str, str] = field(default_factory=dict)
    fds: dict[int, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    mounted_by_init: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)  # `ip -o -4 addr` lines
    routes: list[str] = field(default_factory=list)  # `ip -4 route` lines
    cwd: str | None = None
    root: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bool] = field(default_factory=dict)
    procs: list[str] = field(default_factory=list)
    kmsg: list[str] = field(default_factory=list)
    cat: dict[str, str] = field(default_factory=dict)  # path -> first line ("" when unreadable)
    links: dict[str, str] = field(default_factory=dict)  # symlink path -> its target (REALINIT-LINK)
    errors: list[str] = field(default_factory=list)
    done: bool = False

    def ipv4(self) -> dict[str, list[str]]:
        """Interface name -> its IPv4 addresses with prefix ("10.0.2.15/24"), from REALINIT-IP."""
        out: dict[str, list[str]] = {}
        for line in self.addresses:
            m = re.match(r"\d+:\s+(\S+)\s+inet\s+(\S+)", line)
            if m:
                out.setdefault(m.group(1), []).append(m.group(2))
        return out

    def processes(self) -> list[tuple[int, int, str, str, str]]:
        """(pid, ppid, state, comm, argv) of the processes the real init saw (no kernel threads)."""
        out = []
        for line in self.procs:
            head, _, args = line.partition(" | ")
            parts = head.split(" ", 3)
            if len(parts) == 4 and parts[0].isdigit() and parts[1].isdigit():
                out.append((int(parts[0]), int(parts[1]), parts[2], parts[3], args.strip()))
        return out

    def kmsg_records(self) -> list[tuple[int, str]]:
        """(priority, text) of the kernel log's pyinit lines, text from "pyinit: " on."""
        out = []
        for line in self.kmsg:
            m = re.match(r"<(\d+)>\[[^\]]*\]\s?(.*)$", line)
            if m:
                out.append((int(m.group(1)) & 7, m.group(2)))
        return out

    def mountinfo(self) -> list[Mount]:
        return [parse_mountinfo_line(line) for line in self.mounts]

    def mount_at(self, mountpoint: str = "/") -> Mount | None:
        """The mount visible at ``mountpoint``: the last (topmost) one listed there."""
        found = [m for m in self.mountinfo() if m.mountpoint == mountpoint]
        return found[-1] if found else None

    @property
    def cmdline_args(self) -> list[str]:
        return self.cmdline.split()

    def signals(self, key: str, *, exec_time: bool = False) -> set[int]:
        """Signal numbers set in a SigBlk/SigIgn/SigCgt mask (live, or as exec'd)."""
        source = self.exec_status if exec_time else self.status
        return mask_to_signals(source.get(key, "0"))

    def exec_blocked(self) -> set[int]:
        """Signals blocked when the real init was exec'd."""
        return self.signals("SigBlk", exec_time=True)

    def exec_ignored(self) -> set[int]:
        """Signals ignored when the real init was exec'd (SIGCHLD cannot be seen)."""
        return self.signals("SigIgn", exec_time=True)

    @property
    def inherited_fds(self) -> dict[int, str]:
        """fds minus busybox sh's own handle on the script file (fd >= 10)."""
        init_paths = {"/sbin/init", "/etc/init", "/bin/init"}
        for arg in self.cmdline_args:
            if arg.startswith("init="):
                init_paths.add(arg[5:])
        return {n: t for n, t in self.fds.items() if not (n >= 10 and t in init_paths)}


def mask_to_signals(hexmask: str) -> set[int]:
    """"0000000000001000" -> {13}: bit n-1 stands for signal n."""
    mask = int(hexmask, 16)
    return {n + 1 for n in range(64) if mask >> n & 1}


_LINE = re.compile(r"REALINIT(?:-([A-Z][A-Z-]*))?(?::\s?(.*))?$")


# Report kinds whose lines simply accumulate: kind -> (Report field, strip the value?).
_LIST_KINDS = {
    "MOUNT": ("mounts", False),
    "MOUNTED": ("mounted_by_init", True),
    "IP": ("addresses", False),
    "ROUTE": ("routes", False),
    "PROC": ("procs", False),
    "KMSG": ("kmsg", False),
    "ERROR": ("errors", False),
}


def parse_report(console_text: str) -> Report:
    """Parse the REALINIT lines out of a console log (or the saved report file).

    Lines may carry noise before the marker (a kernel message that did not end its line);
    ``\\r`` are dropped. When the log holds more than one report (a rebooting guest), the
    last one that starts with ``REALINIT: uptime`` is parsed. Raises ValueError when there
    is none.
    """
    lines = console_text.replace("\r", "").split("\n")
    start = None
    for i, line in enumerate(lines):
        if "REALINIT: uptime" in line:
            start = i
    if start is None:
        raise ValueError("no 'REALINIT: uptime' line in the text")
    rep = Report()
    for line in lines[start:]:
        m = _LINE.search(line)
        if not m:
            continue
        kind, value = m.group(1) or "", m.group(2) or ""
        if kind == "":
            if value.startswith("uptime "):
                try:
                    rep.uptime = float(value.split()[1])
                except (IndexError, ValueError):
                    rep.uptime = None
        elif kind == "PID":
            rep.pid = int(value) if value.strip().isdigit() else None
        elif kind == "CMDLINE":
            rep.cmdline = value.strip()
        elif kind == "KERNEL":
            rep.kernel = value.strip()
        elif kind in ("STATUS", "EXEC-STATUS"):
            key, _, v = value.partition(":")
            (rep.status if kind == "STATUS" else rep.exec_status)[key.strip()] = v.strip()
        elif kind == "FD":
            num, _, target = value.partition(" -> ")
            if num.strip().isdigit():
                rep.fds[int(num)] = target
        elif kind == "CWD":
            rep.cwd = value
        elif kind == "ROOT":
            rep.root = value
        elif kind == "ENV":
            key, _, v = value.partition("=")
            rep.env[key] = v
        elif kind == "CAT":
            path, _, v = value.partition(" = ")
            rep.cat[path] = v
        elif kind == "LINK":
            path, _, target = value.partition(" -> ")
            rep.links[path] = target
        elif kind == "FILE":
            path, _, state = value.rpartition(" ")
            rep.files[path] = state == "exists"
        elif kind in _LIST_KINDS:
            field_name, strip = _LIST_KINDS[kind]
            getattr(rep, field_name).append(value.strip() if strip else value)
        elif kind == "DONE":
            rep.done = True
            break
    return rep


def find_report(console_text: str) -> Report | None:
    """parse_report, or None when the text holds no report."""
    try:
        return parse_report(console_text)
    except ValueError:
        return None
