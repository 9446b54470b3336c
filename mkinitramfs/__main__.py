"""pyinit-mkinitramfs: build and inspect pyinit initramfs images."""
from __future__ import annotations

import argparse
import stat
import sys

from mkinitramfs import archive, build, compress, cpio, kmod
from mkinitramfs.hookpack import HookError
from mkinitramfs.image import ImageError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyinit-mkinitramfs", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build an image")
    b.add_argument("-o", "--output", required=True, help="image file to write")
    b.add_argument("--kver", required=True, help="kernel version the image is for (uname -r)")
    b.add_argument("--moddir", default="/lib/modules", help="folder holding KVER/modules.dep (default /lib/modules)")
    b.add_argument("--modules", action="append", default=[], metavar="NAME[,NAME...]",
                   help="kernel modules to include with their dependencies (repeatable)")
    b.add_argument("--compress", default="zstd", choices=compress.METHODS, help="compression (default zstd)")
    b.add_argument("--level", type=int, default=None, help="compression level")
    b.add_argument("--python", default=sys.executable, help="interpreter to pack (default: this one)")
    b.add_argument("--hook", action="append", default=[], metavar="NAME|PATH",
                   help="a hook from the project's hooks/ or a hook folder; repeatable")
    b.add_argument("--include", action="append", default=[], metavar="SRC:DST",
                   help="a host file or folder to put at DST (modes kept: a 0600 key stays 0600); repeatable")
    b.add_argument("-q", "--quiet", action="store_true", help="do not print the size table")

    ls = sub.add_parser("ls", help="list the contents of an image")
    ls.add_argument("file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            return _build(args)
        if args.command == "ls":
            return _ls(args)
    except (build.BuildError, kmod.KmodError, ImageError, cpio.CpioError, compress.CompressError,
            HookError) as e:
        print(f"pyinit-mkinitramfs: error: {e}", file=sys.stderr)
        return 1
    except _packing_errors() as e:
        print(f"pyinit-mkinitramfs: error: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"pyinit-mkinitramfs: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    return 2


def _packing_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    try:
        from mkinitramfs.elf import ElfError
        errors.append(ElfError)
    except ImportError:
        pass
    try:
        from mkinitramfs import python as pypack
        errors.extend(e for e in (getattr(pypack, "PythonPackError", None),) if e)
    except ImportError:
        pass
    return tuple(errors) or (ImportError,)


def _build(args) -> int:
    opts = build.BuildOptions(output=args.output, kver=args.kver, moddir=args.moddir, modules=args.modules,
                              compression=args.compress, level=args.level, python=args.python,
                              hooks=args.hook, includes=args.include)
    result = build.build(opts)
    if not args.quiet:
        print(f"pyinit-mkinitramfs: wrote {args.output} for kernel {args.kver} in {result.seconds:.2f} s "
              f"({args.compress})")
        if result.modules and result.modules.builtin:
            print(f"built into the kernel (nothing to pack): {', '.join(result.modules.builtin)}")
        print(build.size_table(result))
    return 0


def _mode_string(mode: int) -> str:
    return stat.filemode(mode)


def _ls(args) -> int:
    with open(args.file, "rb") as f:
        buf = f.read()
    segments = archive.read_image(buf)
    for n, seg in enumerate(segments):
        print(f"# segment {n}: offset {seg.offset}, {seg.compression}, {seg.size} bytes "
              f"({seg.unpacked_size} unpacked), {len(seg.members)} entries")
        for m in seg.members:
            if m.kind in ("chardev", "blockdev"):
                size = f"{m.rdev[0]},{m.rdev[1]}"
            else:
                size = str(len(m.data))
            line = f"{_mode_string(m.mode)} {m.uid:>4} {m.gid:>4} {size:>10} {m.name}"
            if m.kind == "symlink":
                line += f" -> {m.target}"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
