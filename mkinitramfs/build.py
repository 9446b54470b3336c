"""Building an image: assemble its entries (the layout, the interpreter with pyinit, the
kernel modules of the build mode, fsck checkers, hooks, includes, busybox, the rescue lock),
then check it for secrets, archive, compress, put early microcode in front, verify it and
write it atomically."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import pyinit
from mkinitramfs import (
    atomic,
    busybox,
    compress,
    cpio,
    fsck,
    hookpack,
    hostfiles,
    hostonly,
    include,
    kmod,
    manifest,
    microcode,
    parts,
    paths,
    rescue,
    safety,
    strip,
    verify,
)
from mkinitramfs import python as pypack
from mkinitramfs.errors import BuildError
from mkinitramfs.image import Image
from mkinitramfs.mode import MODES

# Nodes the kernel and the interpreter need before pyinit mounts devtmpfs over /dev: the
# kernel opens /dev/console for init's stdin/stdout/stderr *before* running /init.
DEVICE_NODES = (
    (paths.CONSOLE, "chardev", 5, 1, 0o600),
    ("/dev/null", "chardev", 1, 3, 0o666),
    ("/dev/random", "chardev", 1, 8, 0o666),
    ("/dev/kmsg", "chardev", 1, 11, 0o644),
)
# CPython seeds its str hash with getrandom(GRND_NONBLOCK) and, when the kernel's RNG is not
# ready yet, falls back to reading /dev/urandom. Since Linux 5.18 that read makes the kernel
# generate jitter entropy until the RNG is ready: about a second under QEMU/TCG, on any CPU
# without RDRAND. So in the image, /dev/urandom is a regular file of zeros: the interpreter's
# hash seed (used for nothing security-related in PID 1) comes from it without waiting, and
# pyinit's devtmpfs mount over /dev hides it before anything else could read it. Where the
# RNG is ready early (RDRAND, a bootloader seed), getrandom() succeeds and the file is unused.
HASH_SEED_FILE = ("/dev/urandom", bytes(256), 0o444)
BASE_DIRS = ("/dev", "/proc", "/sys", "/run", paths.NEWROOT, "/tmp", "/etc/pyinit", "/usr/bin", "/usr/lib")
# usr-merge style links, made only where the builder did not put a real directory.
USRMERGE_LINKS = (("/bin", "usr/bin"), ("/sbin", "usr/bin"), ("/lib", "usr/lib"))

# Standard-library modules that stdlib functions pyinit calls import lazily (see assemble()).
LAZY_STDLIB: tuple[str, ...] = ()

# pyinit imports these lazily and copes without them: python-prctl (with its _prctl extension
# and libcap) only in container child mode. Packed when the target interpreter has them.
# pyinit.testing exists only in test images (devtools/testimage.py adds it).
PYINIT_OPTIONAL = ("prctl", "_prctl", "pyinit.testing")

# pyinit imports lzma (zlib) only to load an .ko.xz (.ko.gz) the kernel cannot decompress
# itself. Modules are decompressed at build time unless --keep-module-compression, and then
# lzma, its _lzma extension and liblzma (about 90 kB of the compressed image) are never used
# at boot; nor is zlib where it is an extension module rather than built in.
MODULE_DECOMPRESSORS = ("lzma", "_lzma", "zlib")

# pyinit's hook runner and what it alone imports (subprocess, threading, selectors, signal,
# enum's users, termios): packed only when the image has hooks (pyinit.__main__ imports it
# only when /usr/lib/pyinit/hooks exists). About 310 KB of .pyc and termios' extension.
HOOK_RUNNER = ("pyinit.hooks",)

INIT_SCRIPT = """#!{python} -IS
# pyinit: the initramfs's PID 1. -I: ignore the environment and user site; -S: no site.
from pyinit.__main__ import main
main()
"""
# paths.MODPROBE, the modprobe the kernel runs for its own requests while pyinit is in charge.
MODPROBE_SCRIPT = """#!{python} -IS
import sys
from pyinit.modprobe import main
sys.exit(main())
"""
# Modules every image carries (when the kernel has them as modules), loaded only on demand:
# efivarfs, which pyinit mounts to read the boot loader's LoaderDevicePartUUID when it finds
# the root without root= (pyinit/gptauto.py). Debian's kernels build it as a module.
ON_DEMAND_ALWAYS = ("fs-efivarfs",)
# This machine's folders a build reads unless told otherwise (Debian's): the kernels' module
# trees, and firmware (early microcode's intel-ucode/ and amd-ucode/ included).
MODDIR = "/lib/modules"
FIRMWARE_DIR = "/lib/firmware"


@dataclass
class BuildOptions:
    output: str
    kver: str
    moddir: str = MODDIR
    modules: list[str] = field(default_factory=list)
    compression: str = "zstd"
    level: int | None = None
    python: str = sys.executable
    mtime: int | None = None  # None: SOURCE_DATE_EPOCH, else 0
    hooks: list[str] = field(default_factory=list)  # --hook NAME|PATH (mkinitramfs.hookpack)
    includes: list[str] = field(default_factory=list)  # --include SRC:DST
    # a distribution's builder (cli._add_distribution_options)
    microcode: str = "none"
    microcode_dir: str = FIRMWARE_DIR
    manifest: str | None = None
    allow_secrets: list[str] = field(default_factory=list)
    allow_owners: list[str] = field(default_factory=list)
    verify: bool = True
    busybox: str | None = None  # --busybox [PATH]: a shell for rd.shell (mkinitramfs.busybox)
    rescue: str = "open"  # --rescue open|password|off (mkinitramfs.rescue)
    rescue_password_from: str | None = None
    # issue 3: explicit = exactly `modules` (the API's default); host-only = this machine's
    # root drivers and filesystem plus `modules`; generic = every storage, bus and filesystem
    # driver plus `modules`. `modules` (and the hooks' modules) load at every boot.
    mode: str = "explicit"
    firmware_dirs: list[str] = field(default_factory=lambda: [FIRMWARE_DIR])
    keep_module_compression: bool = False
    fsck: list[str] = field(default_factory=list)  # filesystem types whose checker to pack
    no_fsck: bool = False  # host-only packs the root's checker unless this is set
    host_sys: str = "/sys"  # where host-only looks (tests point these at a fake machine)
    host_mountinfo: str = "/proc/self/mountinfo"
    # issue 10: ELF programs and libraries without symbol tables and debug sections
    # (mkinitramfs.strip); --no-strip packs them as they are
    strip: bool = True
    host_crypttab: str = paths.CRYPTTAB  # host-only with the luks hook: the root chain's entries


@dataclass
class BuildResult:
    image: Image
    cpio_size: int
    compressed_size: int
    seconds: float
    modules: kmod.Selection | None
    early_size: int = 0
    notes: list[str] = field(default_factory=list)
    eager: int = 0  # modules loaded at every boot, whatever the machine
    host_notes: list[str] = field(default_factory=list)
    firmware: list[str] = field(default_factory=list)
    missing_firmware: list[tuple[str, str]] = field(default_factory=list)  # (file, module)
    fsck: list[str] = field(default_factory=list)
    stripped: strip.StripReport | None = None  # None: --no-strip


def source_date_epoch(explicit: int | None) -> int:
    if explicit is not None:
        return explicit
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value:
        try:
            return int(value)
        except ValueError:
            raise BuildError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from None
    return 0


@dataclass
class Assembled:
    image: Image
    selection: kmod.Selection | None = None
    eager: int = 0
    host_notes: list[str] = field(default_factory=list)
    packed: kmod.Packed | None = None
    fsck: list[str] = field(default_factory=list)
    stripped: strip.StripReport | None = None
    host: hostonly.HostRoot | None = None  # a host-only build's root, as found on this machine


def assemble(opts: BuildOptions, hooks: list[hookpack.HookDecl] | None = None) -> Assembled:
    """The image's entries, not yet archived: the layout, the interpreter with pyinit, the
    kernel modules of the build mode, fsck checkers, hooks, includes, busybox and the
    rescue lock; ELF files stripped last. `hooks`: the declarations of opts.hooks when the
    caller loaded them itself (dracut-install, which leaves their modules to dracut)."""
    if opts.mode not in MODES:
        raise BuildError(f"unknown mode {opts.mode!r}; one of {', '.join(MODES)}")
    image = Image()
    _add_base(image)
    decls = hookpack.load_hooks(opts.hooks) if hooks is None else hooks
    has_hooks = _has_hooks(opts, decls)
    _add_python(image, opts, decls, has_hooks)
    out = Assembled(image)
    image.add_file(paths.KERNEL_VERSION, data=f"{opts.kver}\n".encode(), part=parts.PYINIT)
    _add_modules(image, opts, decls, out)
    if out.host is not None:
        hostfiles.add_modprobe_conf(image)
    for fstype in _fsck_types(opts, out.host):
        fsck.add_checker(image, fstype)
        out.fsck.append(fstype)
    if decls:
        hookpack.add_hooks(image, decls)
    if out.host is not None and out.host.crypt and any(d.name == "luks" for d in decls):
        out.host_notes += hostfiles.add_crypttab(image, opts.host_crypttab, out.host.crypt)
    for arg in opts.includes:
        include.add_include(image, *include.parse_include(arg))
    if opts.busybox:
        busybox.add_busybox(image, opts.busybox)
    rescue.add_rescue(image, opts.rescue, opts.rescue_password_from)
    for link, target in USRMERGE_LINKS:
        if link not in image:
            image.add_symlink(link, target, part=parts.BASE)
    if not has_hooks and any(p.startswith(paths.HOOKS_DIR + "/") for p in image.entries):
        raise BuildError(f"something put files under {paths.HOOKS_DIR} without --hook, and the "
                         "image has no hook runner for them; pass them with --hook")
    if opts.strip:
        # Once, after everything is in: whoever added an ELF file (python, hooks, fsck,
        # busybox) marked it, and kernel modules and firmware never are (mkinitramfs.strip).
        out.stripped = strip.strip_image(image)
    return out


def _add_base(image: Image) -> None:
    """The folders, the device nodes needed before devtmpfs, and the hash-seed file."""
    for d in BASE_DIRS:
        image.add_dir(d, part=parts.BASE)
    image.add_dir("/tmp", mode=0o1777, part=parts.BASE)
    for path, kind, major, minor, mode in DEVICE_NODES:
        image.add_node(path, kind, major, minor, mode, part=parts.BASE)
    seed_path, seed_data, seed_mode = HASH_SEED_FILE
    image.add_file(seed_path, data=seed_data, mode=seed_mode, part=parts.BASE)


def _add_python(image: Image, opts: BuildOptions, decls: list[hookpack.HookDecl], has_hooks: bool) -> None:
    """The interpreter with what pyinit and the hooks' Python import, pyinit itself, /init
    and the modprobe script; the hook runner only when the image `has_hooks`."""
    # The builder packs the pyinit that ships beside it (this checkout or this install), not
    # whatever `pyinit` the target interpreter would happen to import.
    package_dir = os.path.dirname(pyinit.__file__)
    hook_modules, hook_packages, hook_allow, hook_exclude = hookpack.python_needs(decls)
    ensure_libc_module(package_dir)
    # follow_function_imports=False: imports inside functions are followed in pyinit and the
    # hooks' Python (their lazy imports are real boot paths) but not inside the standard
    # library, whose function-level imports (ssl, ctypes, readline...) would triple the image
    # for code pyinit never calls. A stdlib module imported lazily by a stdlib function that
    # pyinit does call must be named in LAZY_STDLIB.
    unused: tuple[str, ...] = () if opts.keep_module_compression or hook_packages or hook_modules \
        else MODULE_DECOMPRESSORS
    if not has_hooks:
        unused = (*unused, *HOOK_RUNNER)
    layout = pypack.add_python(image, opts.python, package_dirs={"pyinit": package_dir},
                               packages=["pyinit", *hook_packages],
                               extra_modules=[*LAZY_STDLIB, *hook_modules],
                               allow_missing=[*hook_allow, *PYINIT_OPTIONAL, *unused],
                               excludes=[*pypack.DEFAULT_EXCLUDES, *hook_exclude, *unused],
                               follow_function_imports=False)
    image.add_file(paths.INIT, data=INIT_SCRIPT.format(python=layout.executable).encode(), mode=0o755,
                   part=parts.PYINIT)
    image.add_file(paths.MODPROBE, data=MODPROBE_SCRIPT.format(python=layout.executable).encode(), mode=0o755,
                   part=parts.PYINIT)


def _has_hooks(opts: BuildOptions, decls: list[hookpack.HookDecl]) -> bool:
    """Whether the image gets hooks: --hook, or an --include that may fill the hooks' folder."""
    return bool(decls) or any(_near(include.parse_include(arg)[1], paths.HOOKS_DIR) for arg in opts.includes)


def _near(path: str, directory: str) -> bool:
    """`path` is `directory`, inside it, or one of its parents (an --include there may fill it)."""
    path, directory = path.rstrip("/") or "/", directory.rstrip("/")
    return path == directory or path.startswith(directory + "/") or directory.startswith(path.rstrip("/") + "/")


def _add_modules(image: Image, opts: BuildOptions, decls: list[hookpack.HookDecl], out: Assembled) -> None:
    """The kernel modules of the build mode with their index files and firmware, and
    /etc/pyinit/modules.load, the ones loaded at every boot: --modules and the hooks'
    modules, and with neither --host-only nor --generic, all of them. Host-only finds this
    machine's root first (out.host)."""
    explicit = [m for arg in opts.modules for m in arg.split(",") if m]
    explicit += [m for d in decls for m in d.modules if m not in explicit]
    if not explicit and opts.mode == "explicit":
        image.add_file(paths.MODULES_LOAD, data=f"# kernel {opts.kver}: no modules\n".encode(), part=parts.PYINIT)
        return
    idx = kmod.ModuleIndex.load(opts.moddir, opts.kver)
    eager: set[str] | None = None  # None: all of them
    if opts.mode == "host-only":
        host = out.host = hostonly.detect(opts.host_sys, opts.host_mountinfo)
        host_names, out.host_notes = hostonly.map_to_target(host, idx)
        names = host_names + [n for n in explicit if n not in host_names]
    elif opts.mode == "generic":
        generic = kmod.generic_modules(idx)
        names = generic + [n for n in explicit if n not in generic]
        eager = {m.name for m in kmod.select(idx, explicit).modules} if explicit else set()
    else:
        names = explicit
    names, eager = _add_on_demand(idx, names, eager)
    out.selection = kmod.select(idx, names)
    out.packed = kmod.pack_modules(image, idx, out.selection, eager=eager,
                                   keep_compressed=opts.keep_module_compression,
                                   firmware_dirs=opts.firmware_dirs)
    out.eager = len(out.selection.modules) if eager is None else len(eager)
    image.add_file(paths.MODULES_LOAD, data=out.packed.modules_load.encode(), part=parts.PYINIT)


def _add_on_demand(idx: kmod.ModuleIndex, names: list[str],
                   eager: set[str] | None) -> tuple[list[str], set[str] | None]:
    """`names` plus the ON_DEMAND_ALWAYS modules the kernel has as files, kept out of the
    modules loaded at every boot (`eager`, None: all of `names`)."""
    extra = [m for alias in ON_DEMAND_ALWAYS for m in idx.resolve(alias)
             if m in idx.paths and m not in names]
    if not extra:
        return names, eager
    if eager is None:
        eager = {m.name for m in kmod.select(idx, names).modules} if names else set()
    return names + extra, eager


def _fsck_types(opts: BuildOptions, host: hostonly.HostRoot | None) -> list[str]:
    """--fsck's types, and a host-only build's root filesystem unless --no-fsck (when this
    machine has a real checker for it)."""
    types = list(opts.fsck)
    if host is not None and not opts.no_fsck and host.fstype not in types \
            and fsck.find_checker(host.fstype, elf_only=True):
        types.append(host.fstype)
    return types


def ensure_libc_module(package_dir: str) -> None:
    """pyinit/_libc.py is generated by cffi when the package is built; a source checkout may
    not have it yet, or one generated before a function was added to its CDEF. Generate it
    here, where cffi and pycparser are available, so that the image never needs them."""
    path = os.path.join(package_dir, "_libc.py")
    try:
        from pyinit import _libc_build
        if os.path.exists(path) and not _libc_build.missing_names(path):
            return
        _libc_build.generate(package_dir)
    except Exception as e:  # cffi missing, read-only install...
        if os.path.exists(path):
            return  # an installed package's own module: use it as it is
        raise BuildError(f"{package_dir}/_libc.py is missing and could not be generated: {e}") from None


def build(opts: BuildOptions) -> BuildResult:
    if opts.compression not in compress.METHODS:
        raise BuildError(f"unknown compression {opts.compression!r}; choose one of {', '.join(compress.METHODS)}")
    t0 = time.monotonic()
    a = assemble(opts)
    image = a.image
    safety.check(image, allow_secrets=opts.allow_secrets + include.included_files(opts.includes),
                 allow_owners=opts.allow_owners)
    mtime = source_date_epoch(opts.mtime)
    raw = cpio.write(image, mtime=mtime)
    packed = compress.compress(raw, opts.compression, opts.level)
    notes: list[str] = [f"warning: {w}" for w in image.warnings]
    early_image = microcode.early_image(microcode.select(opts.microcode, opts.microcode_dir, notes=notes))
    # The early cpio goes first and uncompressed: the x86 loader reads it before anything
    # can decompress; the kernel then unpacks both segments into the rootfs.
    early = microcode.pad(cpio.write(early_image, mtime=mtime)) if early_image else b""
    data = early + packed
    if opts.verify:
        report = verify.verify(data)
        if not report.ok:
            raise BuildError(f"the image would not boot pyinit, not writing {opts.output}:\n  "
                             + "\n  ".join(report.problems))
    atomic.write_atomically(opts.output, data)
    if opts.manifest:
        records = manifest.merge(manifest.from_image(early_image, mtime) if early_image else {},
                                 manifest.from_image(image, mtime))
        atomic.write_atomically(opts.manifest, manifest.render(records.values()).encode(), mode=0o644)
    return BuildResult(image, len(raw), len(packed), time.monotonic() - t0, a.selection,
                       early_size=len(early), notes=notes, eager=a.eager, host_notes=a.host_notes,
                       firmware=a.packed.firmware if a.packed else [],
                       missing_firmware=a.packed.missing_firmware if a.packed else [], fsck=a.fsck,
                       stripped=a.stripped)
