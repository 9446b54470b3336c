"""The busybox anchor initramfs: the benchmark's yardstick and a check of the VM harness.

"busybox sh script, modprobe of 4 modules, switch_root" (design/BENCHMARKS.md): a static
busybox, the modules needed to reach an ext4 root on virtio-blk (decompressed at build
time), and an /init script that insmods them in dependency order, waits for ``root=``,
mounts it, moves /dev /proc /sys /run under it and ``exec switch_root``s to its init.

It is deliberately dumb and independent of pyinit and mkinitramfs: when a pyinit VM test
fails, the same harness booting this image tells whether the harness or pyinit is at fault.

Module facts the closure handles (Debian's kernels):
- 6.1 builds virtio and virtio_pci as modules; 6.12 builds them in (modules.builtin).
  virtio_pci is the PCI bus driver, not a dependency of virtio_blk (udev would load it
  from the device's modalias), so it is named explicitly.
- ext4 (and jbd2) have ``softdep pre: crypto-crc32c``; that alias resolves to both
  crc32c_intel and crc32c_generic. Soft dependencies are loaded with failures ignored:
  crc32c_intel fails with ENODEV on TCG's default CPU, which lacks SSE4.2.
"""

from __future__ import annotations

import fnmatch
import gzip
import lzma
import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from devtools.kernels import Kernel
from devtools.rootdisk import find_static_busybox

DEFAULT_MODULES = ("virtio_pci", "virtio_blk", "ext4")


# ---------------------------------------------------------------------------- closure

def modname(path_or_name: str) -> str:
    """``kernel/fs/ext4/ext4.ko.xz`` or ``crc32c-intel`` -> ``ext4`` / ``crc32c_intel``."""
    base = path_or_name.rsplit("/", 1)[-1]
    if ".ko" in base:
        base = base[:base.index(".ko")]
    return base.replace("-", "_")


@dataclass
class ModuleIndex:
    """What depmod wrote, read once: paths, hard deps, soft deps, aliases, built-ins."""
    path: dict[str, str]  # name -> path relative to the modules dir
    deps: dict[str, list[str]]  # name -> names, as listed in modules.dep
    softdeps: dict[str, tuple[list[str], list[str]]]  # name -> (pre, post), unresolved
    aliases: list[tuple[str, str]]  # (pattern, module name)
    builtin: set[str]

    @classmethod
    def load(cls, moddir: Path) -> ModuleIndex:
        path, deps = {}, {}
        for line in (moddir / "modules.dep").read_text().splitlines():
            if ":" not in line:
                continue
            mod, _, rest = line.partition(":")
            name = modname(mod)
            path[name] = mod.strip()
            deps[name] = [modname(d) for d in rest.split()]
        softdeps: dict[str, tuple[list[str], list[str]]] = {}
        sd = moddir / "modules.softdep"
        for line in (sd.read_text().splitlines() if sd.exists() else []):
            words = line.split()
            if len(words) < 2 or words[0] != "softdep":
                continue
            pre, post = softdeps.setdefault(modname(words[1]), ([], []))
            bucket = None
            for w in words[2:]:
                if w in ("pre:", "post:"):
                    bucket = pre if w == "pre:" else post
                elif bucket is not None:
                    bucket.append(w)
        aliases = []
        for line in (moddir / "modules.alias").read_text().splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "alias":
                aliases.append((words[1], modname(words[2])))
        builtin = set()
        bi = moddir / "modules.builtin"
        for line in (bi.read_text().splitlines() if bi.exists() else []):
            if line.strip():
                builtin.add(modname(line.strip()))
        return cls(path, deps, softdeps, aliases, builtin)

    def resolve(self, name: str) -> list[str]:
        """A module name or alias -> loadable module names ([] when built in)."""
        norm = modname(name)
        if norm in self.path:
            return [norm]
        if norm in self.builtin:
            return []
        found = [mod for pattern, mod in self.aliases
                 if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(norm, pattern)]
        found = list(dict.fromkeys(found))
        if not found:
            raise LookupError(f"no module or alias {name!r} (and not built in)")
        return [m for m in found if m not in self.builtin]

    def closure(self, wanted: tuple[str, ...] | list[str]) -> list[tuple[str, bool]]:
        """Load order for ``wanted``: [(name, optional)], dependencies first.

        Hard dependencies (modules.dep) are required; soft dependencies are optional.
        """
        order: list[tuple[str, bool]] = []
        seen: dict[str, int] = {}

        def visit(name: str, optional: bool) -> None:
            if name in seen:
                if not optional:  # required by someone: no longer optional
                    i = seen[name]
                    order[i] = (name, False)
                return
            pre, post = self.softdeps.get(name, ([], []))
            for soft in pre:
                for m in self._soft(soft):
                    visit(m, True)
            # modules.dep lists the whole transitive closure; modprobe loads it from the end
            for dep in reversed(self.deps.get(name, [])):
                visit(dep, optional)
            seen[name] = len(order)
            order.append((name, optional))
            for soft in post:
                for m in self._soft(soft):
                    visit(m, True)

        for w in wanted:
            for m in self.resolve(w):
                visit(m, False)
        return order

    def _soft(self, name: str) -> list[str]:
        try:
            return self.resolve(name)
        except LookupError:
            return []


# ---------------------------------------------------------------------------- cpio

@dataclass
class Entry:
    name: str  # path inside the archive, no leading "/"
    mode: int  # full st_mode, type bits included
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def newc(entries: list[Entry]) -> bytes:
    """A newc ("070701") cpio archive, uid/gid 0 and mtime 0, with its trailer."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, ino: int, rdev=(0, 0), nlink=1) -> None:
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, e in enumerate(entries, start=1):
        add(e.name, e.mode, e.data, ino, e.rdev, 2 if stat.S_ISDIR(e.mode) else 1)
    add("TRAILER!!!", 0, b"", 0, nlink=1)
    return bytes(out)


def compress_bytes(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, compresslevel=9, mtime=0)
    if how == "xz":  # the kernel's xz decoder wants CRC32 checks, not the default CRC64
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    if how == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=19).compress(data)
    if how == "none":
        return data
    raise ValueError(f"unknown compression {how!r}: gzip, xz, zstd or none")


# ---------------------------------------------------------------------------- the image

INIT_TEMPLATE = r"""#!/bin/busybox sh
# busybox anchor initramfs (devtools/anchor.py): load modules, wait for root=, switch_root.
BB=/bin/busybox
$BB mount -t proc proc /proc
$BB mount -t sysfs sysfs /sys
$BB mount -t devtmpfs devtmpfs /dev
$BB mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
echo "ANCHOR: /init started"

fail() {
    echo "ANCHOR-ERROR: $*"
    $BB poweroff -f
    exit 1  # PID 1 exits: the kernel panics, and panic=-1 with -no-reboot ends QEMU
}

root= rootfstype= rootflags= init=/sbin/init mode=ro
for arg in $($BB cat /proc/cmdline); do
    case "$arg" in
        root=*) root=${arg#root=} ;;
        rootfstype=*) rootfstype=${arg#rootfstype=} ;;
        rootflags=*) rootflags=${arg#rootflags=} ;;
        init=*) init=${arg#init=} ;;
        rw) mode=rw ;;
        ro) mode=ro ;;
    esac
done
[ -n "$root" ] || fail "no root= on the command line"

M=/lib/modules
@INSMODS@

i=0
while :; do
    case "$root" in
        UUID=*|LABEL=*) dev=$($BB findfs "$root" 2>/dev/null) ;;
        *) dev=$root ;;
    esac
    [ -n "$dev" ] && [ -b "$dev" ] && break
    i=$((i + 1))
    [ $i -le 300 ] || fail "root device $root did not appear in 30 s"
    $BB usleep 100000
done

$BB mkdir -p /newroot
$BB mount ${rootfstype:+-t "$rootfstype"} -o "$mode${rootflags:+,$rootflags}" "$dev" /newroot \
    || fail "cannot mount $dev on /newroot"
for d in dev proc sys run; do
    if [ -d "/newroot/$d" ]; then $BB mount --move "/$d" "/newroot/$d"; else $BB umount -l "/$d"; fi
done
echo "ANCHOR: switch_root to $dev ($mode), init $init"
exec $BB switch_root -c /dev/console /newroot "$init"
fail "switch_root failed"
"""


def init_script(load_order: list[tuple[str, bool]]) -> str:
    lines = []
    for name, optional in load_order:
        f = f"$M/{name}.ko"
        if optional:
            lines.append(f'$BB insmod {f} 2>/dev/null || echo "ANCHOR: optional {name} not loaded"')
        else:
            lines.append(f'$BB insmod {f} || echo "ANCHOR-ERROR: insmod {name} failed"')
    return INIT_TEMPLATE.replace("@INSMODS@", "\n".join(lines))


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def build_busybox_anchor(kernel: Kernel, out: Path, modules=DEFAULT_MODULES,
                         compress: str = "gzip") -> Path:
    """Write the anchor initramfs for ``kernel`` to ``out`` and return ``out``.

    ``modules`` are names or aliases; their closure (modules.dep, soft deps) is added,
    built-in ones are skipped.
    """
    index = ModuleIndex.load(kernel.modules)
    order = index.closure(list(modules))
    busybox = find_static_busybox()

    d, f, lnk = stat.S_IFDIR | 0o755, stat.S_IFREG, stat.S_IFLNK | 0o777
    entries = [Entry(n, d) for n in ("bin", "dev", "proc", "sys", "run", "newroot", "lib",
                                      "lib/modules")]
    # The kernel opens /dev/console for init's stdio before /init runs: it must be here.
    entries.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(Entry("bin/busybox", f | 0o755, busybox.read_bytes()))
    entries.append(Entry("bin/sh", lnk, b"busybox"))
    for name, _optional in order:
        data = _read_module(kernel.modules / index.path[name])
        entries.append(Entry(f"lib/modules/{name}.ko", f | 0o644, data))
    entries.append(Entry("init", f | 0o755, init_script(order).encode()))

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(compress_bytes(newc(entries), compress))
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from devtools.kernels import ensure_kernels
    p = argparse.ArgumentParser(prog="python -m devtools.anchor")
    p.add_argument("series", choices=["6.1", "6.12"])
    p.add_argument("out", type=Path)
    p.add_argument("--compress", default="gzip")
    p.add_argument("--module", action="append", dest="modules")
    args = p.parse_args(argv)
    k = ensure_kernels()[args.series]
    index = ModuleIndex.load(k.modules)
    order = index.closure(args.modules or list(DEFAULT_MODULES))
    build_busybox_anchor(k, args.out, tuple(args.modules or DEFAULT_MODULES), args.compress)
    print(f"{args.out}: {args.out.stat().st_size} bytes, modules: "
          + " ".join(shlex.quote(n + ("?" if o else "")) for n, o in order))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
