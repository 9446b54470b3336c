"""pyinit-mkinitramfs: build and inspect pyinit initramfs images."""
from __future__ import annotations

import argparse
import sys

from mkinitramfs import build, cli_inspect, compress, config
from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.kmod import KmodError
from mkinitramfs.python import PythonError
from mkinitramfs.uki import UkiError

# Every error the builder raises on purpose derives from MkinitramfsError (errors.py), except
# these two, which kmod.py and python.py still define on their own.
FAILURES = (MkinitramfsError, KmodError, PythonError)


def add_build_arguments(b: argparse.ArgumentParser) -> None:
    """The options that say what goes into an image: `build`'s, and `uki`'s too (one table,
    which the configuration file mirrors)."""
    b.add_argument("--kver", required=True, help="kernel version the image is for (uname -r)")
    b.add_argument("--moddir", default="/lib/modules", help="folder holding KVER/modules.dep (default /lib/modules)")
    b.add_argument("--modules", action="append", default=[], metavar="NAME[,NAME...]",
                   help="kernel modules to include with their dependencies (repeatable); with neither "
                        "--host-only nor --generic, exactly these (and they load at every boot)")
    b.add_argument("--host-only", action="store_true",
                   help="the drivers and filesystem of this machine's root, plus --modules (without "
                        "--modules, the default on the machine itself; in a chroot or container the default "
                        "is --generic: see mkinitramfs/mode.py)")
    b.add_argument("--generic", action="store_true",
                   help="every storage, bus and filesystem driver, loaded on demand, plus --modules")
    b.add_argument("--firmware-dir", action="append", default=[], metavar="DIR",
                   help="where to find the firmware the packed modules name (repeatable; default /lib/firmware)")
    b.add_argument("--keep-module-compression", action="store_true",
                   help="pack modules compressed as the kernel tree has them (.ko.xz); the kernel or pyinit "
                        "decompresses them at boot")
    b.add_argument("--fsck", action="append", default=[], metavar="TYPE[,TYPE...]",
                   help="pack fsck.TYPE from this machine, run before mounting a root of that type")
    b.add_argument("--no-fsck", action="store_true", help="host-only: do not pack the root's fsck")
    b.add_argument("--compress", default="zstd", choices=compress.METHODS, help="compression (default zstd)")
    b.add_argument("--level", type=int, default=None, help="compression level")
    b.add_argument("--python", default=sys.executable, help="interpreter to pack (default: this one)")
    b.add_argument("--hook", action="append", default=[], metavar="NAME|PATH",
                   help="a hook from the project's hooks/ or a hook folder; repeatable")
    b.add_argument("--include", action="append", default=[], metavar="SRC:DST",
                   help="a host file or folder to put at DST (modes kept: a 0600 key stays 0600); repeatable")
    b.add_argument("--busybox", nargs="?", const="/bin/busybox", default=None, metavar="PATH",
                   help="add a static busybox (default /bin/busybox) as /bin/sh with its applets, "
                        "so rd.shell gives a shell")
    b.add_argument("--no-strip", action="store_true",
                   help="pack ELF programs and libraries as they are, with their symbol tables and debug "
                        "sections (by default binutils' strip removes them; kernel modules never)")
    b.add_argument("--rescue", default="open", choices=("open", "password", "off"),
                   help="who gets a rescue session when the boot fails or rd.break asks: open (anyone at the "
                        "console, the default), password (the root password first), off (nobody; rd.shell and "
                        "rd.break cannot open it)")
    b.add_argument("--rescue-password-from", default=None, metavar="FILE",
                   help="with --rescue password: the shadow file whose root hash is packed (mode 0600), "
                        "e.g. /etc/shadow")
    b.add_argument("-q", "--quiet", action="store_true", help="do not print the size table")
    cli_inspect.add_build_options(b)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyinit-mkinitramfs", description=__doc__,
                                epilog="pyinit-mkinitramfs update-initramfs {-c|-d|-u} [-k VERSION|all] [-b DIR] "
                                       "[-v]: initramfs-tools' update-initramfs, carried out by this builder "
                                       "(installed as /usr/sbin/update-initramfs by the Debian package)")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build an image")
    b.add_argument("-o", "--output", required=True, help="image file to write")
    add_build_arguments(b)

    u = sub.add_parser("uki", help="build an image and a Unified Kernel Image (systemd-stub) around it",
                       description="Build the initramfs as `build` does (the same options), then write a "
                                   "Unified Kernel Image: systemd-stub with .linux, .initrd, .cmdline, .osrel "
                                   "and .uname sections, bootable from EFI/BOOT/BOOTX64.EFI or a boot loader.")
    u.add_argument("-o", "--output", required=True, help="UKI file to write (an .efi)")
    u.add_argument("--kernel", required=True, metavar="VMLINUZ", help="the kernel (an EFI-stub bzImage) for --kver")
    u.add_argument("--cmdline", default=None, metavar="TEXT",
                   help="the kernel command line (.cmdline; without it the boot loader's options are used, "
                        "and with no root= pyinit finds the root by the Discoverable Partitions rules)")
    u.add_argument("--stub", default=None, metavar="PATH",
                   help="systemd-stub to use (default /usr/lib/systemd/boot/efi/linuxx64.efi.stub)")
    u.add_argument("--os-release", default=None, metavar="FILE", help=".osrel (default /etc/os-release)")
    u.add_argument("--initrd-output", default=None, metavar="FILE",
                   help="also keep the initramfs that went into the UKI")
    u.add_argument("--secureboot-key", default=None, metavar="KEY",
                   help="sign the UKI with sbsign (with --secureboot-certificate)")
    u.add_argument("--secureboot-certificate", default=None, metavar="CERT", help="the certificate for sbsign")
    add_build_arguments(u)

    d = sub.add_parser("dracut-install", help="put pyinit into a dracut staging folder (the dracut module's job)")
    d.add_argument("--initdir", help="dracut's $initdir")
    d.add_argument("--kver", help="kernel version ($kernel)")
    d.add_argument("--hook", action="append", default=[], metavar="NAME|PATH", help="a pyinit hook; repeatable")
    d.add_argument("--include", action="append", default=[], metavar="SRC:DST", help="a host file; repeatable")
    d.add_argument("--python", default=None, help="interpreter to pack (default: this one)")
    d.add_argument("--allow-secret", action="append", default=[], metavar="GLOB",
                   help="image paths that may hold secrets (as for build)")
    d.add_argument("--allow-owner", action="append", default=[], metavar="GLOB",
                   help="image paths that may be owned by someone other than root")
    d.add_argument("--print-modules", action="store_true",
                   help="only print the kernel modules the hooks need (for dracut's instmods)")

    cli_inspect.add_commands(sub)
    r = sub.add_parser("run", help="run an image's whole boot flow in a container, no VM (root)",
                       usage="pyinit-mkinitramfs run IMAGE --root DISK|DIR [--child] [--rw] [--timeout S] "
                             "[-- CMDLINE...]",
                       description="Unpack the image in a new mount and pid namespace and run its /init "
                                   "there, with a disk image (on a loop device) or a directory as the root. "
                                   "Words after -- are the kernel command line pyinit sees.")
    r.add_argument("image")
    r.add_argument("--root", required=True, metavar="DISK|DIR", help="root filesystem: a disk image or a directory")
    r.add_argument("--child", action="store_true", help="run pyinit as a child (a subreaper), not as PID 1")
    r.add_argument("--rw", action="store_true", help="attach the root read-write (default read-only)")
    r.add_argument("--timeout", type=float, default=None, help="kill the container after this many seconds")
    p.build_parser = b  # the table of settings the configuration file mirrors (config.py)
    p.uki_parser = u
    return p


def _config_option(argv: list[str]) -> str | None:
    """--config's value, looked up before parsing (the file may give required options)."""
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["update-initramfs"]:
        # initramfs-tools' command line and meaning (the /usr/sbin/update-initramfs of the package)
        from mkinitramfs import update_initramfs
        return update_initramfs.main(argv[1:])
    parser = _parser()
    failed = 2 if argv[:1] == ["diff"] else 1  # diff(1)'s codes: 0 same, 1 different, 2 trouble
    try:
        if argv[:1] == ["run"]:
            # Words after "--" are the container's kernel command line; argparse's subparsers
            # mishandle them, so they are split off first.
            cut = argv.index("--") if "--" in argv else len(argv)
            return _run(parser.parse_args(argv[:cut]), argv[cut + 1:])
        if argv[:1] in (["build"], ["uki"]):
            sub = parser.build_parser if argv[:1] == ["build"] else parser.uki_parser
            args = config.parse_build_args(parser, sub, argv, config.config_path(_config_option(argv)),
                                           file_table=parser.build_parser,
                                           not_from_file=("output",) if sub is parser.uki_parser else ())
        else:
            args = parser.parse_args(argv)
        if args.command == "build":
            return _build(args)
        if args.command == "uki":
            return _uki(args)
        if args.command == "dracut-install":
            return _dracut_install(args)
        if args.command in cli_inspect.COMMANDS:
            return cli_inspect.run(args)
    except FAILURES as e:
        print(f"pyinit-mkinitramfs: error: {e}", file=sys.stderr)
        return failed
    except OSError as e:  # a file named on the command line is missing, unreadable...
        print(f"pyinit-mkinitramfs: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return failed
    return 2


def _dracut_install(args) -> int:
    from mkinitramfs import dracut
    if args.print_modules:
        print(" ".join(dracut.hook_modules(args.hook)))
        return 0
    if not args.initdir or not args.kver:
        print("pyinit-mkinitramfs: error: dracut-install needs --initdir and --kver", file=sys.stderr)
        return 2
    n = dracut.install(args.initdir, args.kver, hooks=args.hook, includes=args.include, python=args.python,
                       allow_secrets=args.allow_secret, allow_owners=args.allow_owner)
    print(f"pyinit-mkinitramfs: pyinit installed into {args.initdir} ({n} files); /init is pyinit")
    return 0


def build_mode(args) -> tuple[str, str]:
    """(mode, why) by mkinitramfs.mode's rule; why is "" when the options named the mode."""
    from mkinitramfs import mode
    return mode.choose(host_only=args.host_only, generic=args.generic, modules=args.modules)


def _build(args, output: str | None = None) -> int:
    """`build`, or the image of `uki` (written to `output` instead of args.output)."""
    mode, why = build_mode(args)
    if why:  # the rule chose (or an explicit --host-only runs in a chroot): say so, --quiet or not
        print(f"pyinit-mkinitramfs: {why}", file=sys.stderr)
    output = output or args.output
    opts = build.BuildOptions(output=output, kver=args.kver, moddir=args.moddir, modules=args.modules,
                              compression=args.compress, level=args.level, python=args.python,
                              hooks=args.hook, includes=args.include, busybox=args.busybox, mode=mode,
                              firmware_dirs=args.firmware_dir or list(build.FIRMWARE_DIRS),
                              keep_module_compression=args.keep_module_compression,
                              fsck=[t for arg in args.fsck for t in arg.split(",") if t], no_fsck=args.no_fsck,
                              strip=not args.no_strip)
    opts.microcode, opts.microcode_dir, opts.manifest = args.microcode, args.microcode_dir, args.manifest
    opts.allow_secrets, opts.allow_owners, opts.verify = args.allow_secret, args.allow_owner, not args.no_verify
    opts.rescue, opts.rescue_password_from = args.rescue, args.rescue_password_from
    result = build.build(opts)
    for note in result.notes:
        print(f"pyinit-mkinitramfs: {note}", file=sys.stderr)
    if not args.quiet:
        print(f"pyinit-mkinitramfs: wrote {output} for kernel {args.kver} in {result.seconds:.2f} s "
              f"({args.compress}, {mode})")
        for note in result.host_notes:
            print(f"host-only: {note}")
        if result.modules is not None:
            print(f"modules: {len(result.modules.modules)} packed, {result.eager} loaded at every boot, "
                  "the rest on demand (MODALIAS, filesystem type, kernel requests)")
        if result.modules and result.modules.builtin:
            print(f"built into the kernel (nothing to pack): {', '.join(result.modules.builtin)}")
        if result.firmware:
            print(f"firmware: {len(result.firmware)} files")
        if result.missing_firmware:
            names = ", ".join(f"{fw} ({mod})" for fw, mod in result.missing_firmware[:8])
            more = f" and {len(result.missing_firmware) - 8} more" if len(result.missing_firmware) > 8 else ""
            print(f"warning: firmware named by packed modules but not found in "
                  f"{', '.join(opts.firmware_dirs)}: {names}{more} (those devices may not work)")
        if result.fsck:
            print(f"fsck: {', '.join('fsck.' + t for t in result.fsck)}")
        print(build.size_table(result))
    return 0


def _uki(args) -> int:
    """build's image, then systemd-stub around it and the kernel (mkinitramfs/uki.py)."""
    import os
    import tempfile

    from mkinitramfs import uki
    stub_path = uki.find_stub(args.stub)
    with open(args.kernel, "rb") as f:
        vmlinuz = f.read()
    version = uki.kernel_version(vmlinuz)
    if version is not None and version != args.kver:
        raise UkiError(f"--kernel {args.kernel} is Linux {version}, but --kver is {args.kver}: "
                       "the image's modules would not load")
    with open(stub_path, "rb") as f:
        stub = f.read()
    os_release = uki.read_os_release(args.os_release)
    directory = os.path.dirname(os.path.abspath(args.output))
    with tempfile.TemporaryDirectory(prefix=".pyinit-uki.", dir=directory) as tmp:
        initrd_path = args.initrd_output or os.path.join(tmp, "initrd.img")
        code = _build(args, output=initrd_path)
        if code:
            return code
        with open(initrd_path, "rb") as f:
            initrd = f.read()
    image = uki.assemble(stub, vmlinuz, initrd, cmdline=args.cmdline, os_release=os_release,
                         uname=version or args.kver)
    uki.write(args.output, image, args.secureboot_key, args.secureboot_certificate)
    if not args.quiet:
        signed = " signed," if args.secureboot_key else ""
        print(f"pyinit-mkinitramfs: wrote the UKI {args.output} ({len(image) / 1024 / 1024:.2f} MiB,{signed} "
              f"stub {stub_path}, kernel {version or args.kver}, initramfs {len(initrd) / 1024 / 1024:.2f} MiB"
              + (f", command line {args.cmdline!r}" if args.cmdline is not None else ", no .cmdline") + ")")
    return 0


def _run(args, words: list[str]) -> int:
    from mkinitramfs import container
    code = container.run(args.image, args.root, words=words, child=args.child, rw=args.rw, timeout=args.timeout)
    print(f"pyinit-mkinitramfs: container ended: {container.describe_status(code)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
