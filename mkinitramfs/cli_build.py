"""The commands that make and run images: build, uki, dracut-install and run, from the
parsed command line (cli.py) to the library calls, and what each prints."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from mkinitramfs import build, container, dracut, mode, sizes, uki
from mkinitramfs.uki import UkiError


def build_command(args: argparse.Namespace) -> int:
    return _build(args, args.output)


def uki_command(args: argparse.Namespace) -> int:
    """build's image, then systemd-stub around it and the kernel (mkinitramfs/uki.py)."""
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
        code = _build(args, initrd_path)
        if code:
            return code
        with open(initrd_path, "rb") as f:
            initrd = f.read()
    image = uki.assemble(stub, vmlinuz, initrd, cmdline=args.cmdline, os_release=os_release,
                         uname=version or args.kver)
    uki.write(args.output, image, args.secureboot_key, args.secureboot_certificate)
    if not args.quiet:
        signed = " signed," if args.secureboot_key else ""
        print(f"pyinit-mkinitramfs: wrote the UKI {args.output} ({sizes.human(len(image))},{signed} "
              f"stub {stub_path}, kernel {version or args.kver}, initramfs {sizes.human(len(initrd))}"
              + (f", command line {args.cmdline!r}" if args.cmdline is not None else ", no .cmdline") + ")")
    return 0


def dracut_install_command(args: argparse.Namespace) -> int:
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


def run_command(args: argparse.Namespace) -> int:
    code = container.run(args.image, args.root, words=args.words, child=args.child, rw=args.rw,
                         timeout=args.timeout)
    print(f"pyinit-mkinitramfs: container ended: {container.describe_status(code)}", file=sys.stderr)
    return code


def _build(args: argparse.Namespace, output: str) -> int:
    """`build`, or the image of `uki` (written to `output` instead of args.output)."""
    chosen, why = mode.choose(host_only=args.host_only, generic=args.generic, modules=args.modules)
    if why:  # the rule chose (or an explicit --host-only runs in a chroot): say so, --quiet or not
        print(f"pyinit-mkinitramfs: {why}", file=sys.stderr)
    opts = _options(args, chosen, output)
    result = build.build(opts)
    for note in result.notes:
        print(f"pyinit-mkinitramfs: {note}", file=sys.stderr)
    if not args.quiet:
        print(f"pyinit-mkinitramfs: wrote {output} for kernel {args.kver} in {result.seconds:.2f} s "
              f"({args.compress}, {chosen})")
        print("\n".join(_summary(result, opts)))
    return 0


def _options(args: argparse.Namespace, chosen: str, output: str) -> build.BuildOptions:
    return build.BuildOptions(
        output=output, kver=args.kver, moddir=args.moddir, modules=args.modules, mode=chosen,
        compression=args.compress, level=args.level, python=args.python,
        hooks=args.hook, includes=args.include, busybox=args.busybox,
        firmware_dirs=args.firmware_dir or [build.FIRMWARE_DIR],
        keep_module_compression=args.keep_module_compression,
        fsck=[t for arg in args.fsck for t in arg.split(",") if t], no_fsck=args.no_fsck,
        strip=not args.no_strip,
        microcode=args.microcode, microcode_dir=args.microcode_dir, manifest=args.manifest,
        allow_secrets=args.allow_secret, allow_owners=args.allow_owner, verify=not args.no_verify,
        rescue=args.rescue, rescue_password_from=args.rescue_password_from)


def _summary(result: build.BuildResult, opts: build.BuildOptions) -> list[str]:
    """What a build that is not --quiet prints after its first line: how the modules were
    chosen and packed, firmware, fsck, then the size table."""
    lines = [f"host-only: {note}" for note in result.host_notes]
    if result.modules is not None:
        lines.append(f"modules: {len(result.modules.modules)} packed, {result.eager} loaded at every boot, "
                     "the rest on demand (MODALIAS, filesystem type, kernel requests)")
    if result.modules and result.modules.builtin:
        lines.append(f"built into the kernel (nothing to pack): {', '.join(result.modules.builtin)}")
    if result.firmware:
        lines.append(f"firmware: {len(result.firmware)} files")
    if result.missing_firmware:
        names = ", ".join(f"{fw} ({mod})" for fw, mod in result.missing_firmware[:8])
        more = f" and {len(result.missing_firmware) - 8} more" if len(result.missing_firmware) > 8 else ""
        lines.append(f"warning: firmware named by packed modules but not found in "
                     f"{', '.join(opts.firmware_dirs)}: {names}{more} (those devices may not work)")
    if result.fsck:
        lines.append(f"fsck: {', '.join('fsck.' + t for t in result.fsck)}")
    lines.append(sizes.size_table(result))
    return lines
