"""The command line of pyinit-mkinitramfs: its argument tables, parsing (with the settings
file under build and uki), the dispatch to the commands, and the one place where the
builder's errors are caught and printed.

The commands themselves are cli_build.py (build, uki, dracut-install, run) and
cli_inspect.py (ls, unpack, verify, diff); update-initramfs is dispatched before this, by
__main__.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from mkinitramfs import archive, build, busybox, cli_build, cli_inspect, compress, config, microcode, rescue
from mkinitramfs.errors import MkinitramfsError

DESCRIPTION = "pyinit-mkinitramfs: build and inspect pyinit initramfs images."

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cli_build.build_command,
    "uki": cli_build.uki_command,
    "dracut-install": cli_build.dracut_install_command,
    "run": cli_build.run_command,
    "ls": cli_inspect.ls_command,
    "unpack": cli_inspect.unpack_command,
    "verify": cli_inspect.verify_command,
    "diff": cli_inspect.diff_command,
}


def main(argv: list[str]) -> int:
    """Run one command; a builder error is printed here, naming the problem, and gives exit
    status 1 (2 for diff, whose 1 means "different")."""
    failed = 2 if argv[:1] == ["diff"] else 1  # diff(1)'s codes: 0 same, 1 different, 2 trouble
    try:
        args = parse(parsers(), argv)
        return COMMANDS[args.command](args)
    except MkinitramfsError as e:  # every error the builder raises on purpose (errors.py)
        print(f"pyinit-mkinitramfs: error: {e}", file=sys.stderr)
        return failed
    except BrokenPipeError:
        # `pyinit-mkinitramfs ls | head`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return failed
    except OSError as e:  # a file named on the command line is missing, unreadable...
        where = f"{e.filename}: " if e.filename else ""
        print(f"pyinit-mkinitramfs: error: {where}{e.strerror or e}", file=sys.stderr)
        return failed


def parse(p: Parsers, argv: list[str]) -> argparse.Namespace:
    """The command's options; build's and uki's with the settings file under them, run's
    with the words after "--" as `words` (argparse's subparsers mishandle them)."""
    if argv[:1] == ["run"]:
        cut = argv.index("--") if "--" in argv else len(argv)
        args = p.top.parse_args(argv[:cut])
        args.words = argv[cut + 1:]
        return args
    if argv[:1] in (["build"], ["uki"]):
        sub = p.build if argv[:1] == ["build"] else p.uki
        return config.parse_build_args(p.top, sub, argv, config.config_path(_config_option(argv)),
                                       file_table=p.build, not_from_file=("output",) if sub is p.uki else ())
    return p.top.parse_args(argv)


def _config_option(argv: list[str]) -> str | None:
    """--config's value, looked up before parsing (the file may give required options)."""
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class Parsers:
    top: argparse.ArgumentParser
    build: argparse.ArgumentParser  # the table of settings the configuration file mirrors (config.py)
    uki: argparse.ArgumentParser


def parsers() -> Parsers:
    p = argparse.ArgumentParser(prog="pyinit-mkinitramfs", description=DESCRIPTION,
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

    _add_inspect_commands(sub)
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
    return Parsers(p, b, u)


def add_build_arguments(b: argparse.ArgumentParser) -> None:
    """The options that say what goes into an image: `build`'s, and `uki`'s too (one table,
    which the configuration file mirrors)."""
    b.add_argument("--kver", required=True, help="kernel version the image is for (uname -r)")
    b.add_argument("--moddir", default=build.MODDIR, help=f"folder holding KVER/modules.dep (default {build.MODDIR})")
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
                   help="where to find the firmware the packed modules name "
                        f"(repeatable; default {build.FIRMWARE_DIR})")
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
    b.add_argument("--busybox", nargs="?", const=busybox.DEFAULT, default=None, metavar="PATH",
                   help=f"add a static busybox (default {busybox.DEFAULT}) as /bin/sh with its applets, "
                        "so rd.shell gives a shell")
    b.add_argument("--no-strip", action="store_true",
                   help="pack ELF programs and libraries as they are, with their symbol tables and debug "
                        "sections (by default binutils' strip removes them; kernel modules never)")
    b.add_argument("--rescue", default=rescue.DEFAULT, choices=rescue.POLICIES,
                   help="who gets a rescue session when the boot fails or rd.break asks: open (anyone at the "
                        "console, the default), password (the root password first), off (nobody; rd.shell and "
                        "rd.break cannot open it)")
    b.add_argument("--rescue-password-from", default=None, metavar="FILE",
                   help="with --rescue password: the shadow file whose root hash is packed (mode 0600), "
                        "e.g. /etc/shadow")
    b.add_argument("-q", "--quiet", action="store_true", help="do not print the size table")
    _add_distribution_options(b)


def _add_distribution_options(b: argparse.ArgumentParser) -> None:
    """What a distribution's builder asks for: the settings file, early microcode, the
    manifest, the safety switches."""
    b.add_argument("--config", default=None, metavar="FILE",
                   help=f"settings file (TOML; default {config.DEFAULT_PATH} when it exists; "
                        "'none' reads none); the command line wins over it")
    b.add_argument("--microcode", default="none", choices=microcode.CHOICES,
                   help="early microcode cpio before the main archive: auto (this CPU's vendor and model), "
                        "intel, amd, all, none (default)")
    b.add_argument("--microcode-dir", default=build.FIRMWARE_DIR, metavar="DIR",
                   help=f"firmware folder holding intel-ucode/ and amd-ucode/ (default {build.FIRMWARE_DIR})")
    b.add_argument("--manifest", default=None, metavar="FILE",
                   help="also write the manifest of what the kernel will unpack (sha256 per file)")
    b.add_argument("--allow-secret", action="append", default=[], metavar="GLOB",
                   help="image paths that may hold secrets (shadow files, private keys); others stop the build")
    b.add_argument("--allow-owner", action="append", default=[], metavar="GLOB",
                   help="image paths that may be owned by someone other than root")
    b.add_argument("--no-verify", action="store_true",
                   help="do not check the finished image (init, libraries, modules) before installing it")


def _add_inspect_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ls = sub.add_parser("ls", help="list the contents of an image, segment by segment")
    ls.add_argument("file")
    ls.add_argument("--manifest", action="store_true",
                    help="print the manifest of the tree the kernel unpacks instead (sha256 per file)")
    _max_size_option(ls)
    up = sub.add_parser("unpack", help="unpack an image into a new or empty directory")
    up.add_argument("file")
    up.add_argument("directory")
    up.add_argument("--same-owner", action="store_true",
                    help="as root: restore the image's owners, setuid/setgid bits and device nodes (without it "
                         "files belong to you, set-id bits are dropped and device nodes skipped)")
    _max_size_option(up)
    v = sub.add_parser("verify", help="check that an image has what pyinit needs to boot")
    v.add_argument("file")
    _max_size_option(v)
    d = sub.add_parser("diff", help="compare the trees two images unpack to")
    d.add_argument("a")
    d.add_argument("b")
    _max_size_option(d)


def _max_size_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-size", type=_size, default=archive.DEFAULT_MAX_SIZE, metavar="SIZE",
                   help="stop with an error when the image unpacks to more than SIZE (bytes, or 512M, 8G; "
                        "default 4G): an image is untrusted input")


def _size(text: str) -> int:
    try:
        return archive.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
