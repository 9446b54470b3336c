"""Assembling an image: base layout, device nodes, the interpreter, pyinit, modules, /init."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from mkinitramfs import compress, cpio, kmod, manifest, microcode, safety, strip
from mkinitramfs.image import Image

# Nodes the kernel and the interpreter need before pyinit mounts devtmpfs over /dev: the
# kernel opens /dev/console for init's stdin/stdout/stderr *before* running /init.
DEVICE_NODES = (
    ("/dev/console", "chardev", 5, 1, 0o600),
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
BASE_DIRS = ("/dev", "/proc", "/sys", "/run", "/sysroot", "/tmp", "/etc/pyinit", "/usr/bin", "/usr/lib")
# usr-merge style links, made only where the builder did not put a real directory.
USRMERGE_LINKS = (("/bin", "usr/bin"), ("/sbin", "usr/bin"), ("/lib", "usr/lib"))

# Standard-library modules that stdlib functions pyinit calls import lazily (see assemble()).
LAZY_STDLIB: tuple[str, ...] = ()

# pyinit imports these lazily and copes without them: python-prctl (with its _prctl extension
# and libcap) only in container child mode. Packed when the target interpreter has them.
# pyinit.testing exists only in test images (devtools/testimage.py adds it).
PYINIT_OPTIONAL = ("prctl", "_prctl", "pyinit.testing")

# pyinit imports lzma only to load an .ko.xz the kernel cannot decompress itself. Modules are
# decompressed at build time unless --keep-module-compression, and then lzma, its _lzma
# extension and liblzma (about 90 kB of the compressed image) are never used at boot.
MODULE_DECOMPRESSORS = ("lzma", "_lzma")

INIT_SCRIPT = """#!{python} -IS
# pyinit: the initramfs's PID 1. -I: ignore the environment and user site; -S: no site.
from pyinit.__main__ import main
main()
"""
# The modprobe the kernel runs for its own requests while pyinit is in charge (pyinit points
# /proc/sys/kernel/modprobe at it). Not /sbin/modprobe, the kernel's default: the kernel asks
# for crypto modules while it boots, and each request would start an interpreter for nothing.
MODPROBE_PATH = "/usr/lib/pyinit/modprobe"
MODPROBE_SCRIPT = """#!{python} -IS
import sys
from pyinit.modprobe import main
sys.exit(main())
"""
MODES = ("explicit", "host-only", "generic")
# Modules every image carries (when the kernel has them as modules), loaded only on demand:
# efivarfs, which pyinit mounts to read the boot loader's LoaderDevicePartUUID when it finds
# the root without root= (pyinit/gptauto.py). Debian's kernels build it as a module.
ON_DEMAND_ALWAYS = ("fs-efivarfs",)
FIRMWARE_DIRS = ["/lib/firmware"]
HOST_MODPROBE_DIRS = ("/etc/modprobe.d", "/usr/lib/modprobe.d")
CHECKER_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


@dataclass
class BuildOptions:
    output: str
    kver: str
    moddir: str = "/lib/modules"
    modules: list[str] = field(default_factory=list)
    compression: str = "zstd"
    level: int | None = None
    python: str = sys.executable
    mtime: int | None = None  # None: SOURCE_DATE_EPOCH, else 0
    hooks: list[str] = field(default_factory=list)  # --hook NAME|PATH (mkinitramfs.hookpack)
    includes: list[str] = field(default_factory=list)  # --include SRC:DST
    # issue 7: a distribution's builder (see cli_inspect.add_build_options)
    microcode: str = "none"
    microcode_dir: str = "/lib/firmware"
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
    firmware_dirs: list[str] = field(default_factory=lambda: list(FIRMWARE_DIRS))
    keep_module_compression: bool = False
    fsck: list[str] = field(default_factory=list)  # filesystem types whose checker to pack
    no_fsck: bool = False  # host-only packs the root's checker unless this is set
    host_sys: str = "/sys"  # where host-only looks (tests point these at a fake machine)
    host_mountinfo: str = "/proc/self/mountinfo"
    # issue 10: ELF programs and libraries without symbol tables and debug sections
    # (mkinitramfs.strip); --no-strip packs them as they are
    strip: bool = True
    host_crypttab: str = "/etc/crypttab"  # host-only with the luks hook: the root chain's entries


@dataclass
class BuildResult:
    image: Image
    cpio_size: int
    compressed_size: int
    seconds: float
    modules: kmod.Selection | None
    python_executable: str
    early_size: int = 0
    notes: list[str] = field(default_factory=list)
    mode: str = "explicit"
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


class BuildError(Exception):
    pass


@dataclass
class Assembled:
    image: Image
    selection: kmod.Selection | None
    executable: str
    eager: int = 0
    host_notes: list[str] = field(default_factory=list)
    packed: kmod.Packed | None = None
    fsck: list[str] = field(default_factory=list)
    stripped: strip.StripReport | None = None
    host: object = None  # hostonly.HostRoot of a host-only build

    def __iter__(self):  # the foundation's (image, selection, executable) unpacking
        return iter((self.image, self.selection, self.executable))


def assemble(opts: BuildOptions) -> Assembled:
    from mkinitramfs import python as pypack

    if opts.mode not in MODES:
        raise BuildError(f"unknown mode {opts.mode!r}; one of {', '.join(MODES)}")

    image = Image()
    for d in BASE_DIRS:
        image.add_dir(d, part="base")
    image.add_dir("/tmp", mode=0o1777, part="base")
    for path, kind, major, minor, mode in DEVICE_NODES:
        image.add_node(path, kind, major, minor, mode, part="base")
    seed_path, seed_data, seed_mode = HASH_SEED_FILE
    image.add_file(seed_path, data=seed_data, mode=seed_mode, part="base")

    # The builder packs the pyinit that ships beside it (this checkout or this install), not
    # whatever `pyinit` the target interpreter would happen to import.
    import pyinit
    from mkinitramfs import hookpack
    decls = hookpack.load_hooks(opts.hooks)
    hook_modules, hook_packages, hook_allow, hook_exclude = hookpack.python_needs(decls)
    ensure_libc_module(os.path.dirname(pyinit.__file__))
    # follow_function_imports=False: imports inside functions are followed in pyinit and the
    # hooks' Python (their lazy imports are real boot paths) but not inside the standard
    # library, whose function-level imports (ssl, ctypes, readline...) would triple the image
    # for code pyinit never calls. A stdlib module imported lazily by a stdlib function that
    # pyinit does call must be named in LAZY_STDLIB.
    unused = () if opts.keep_module_compression or hook_packages or hook_modules else MODULE_DECOMPRESSORS
    layout = pypack.add_python(image, opts.python, package_dirs={"pyinit": os.path.dirname(pyinit.__file__)},
                               packages=["pyinit", *hook_packages],
                               extra_modules=[*LAZY_STDLIB, *hook_modules],
                               allow_missing=[*hook_allow, *PYINIT_OPTIONAL, *unused],
                               excludes=[*pypack.DEFAULT_EXCLUDES, *hook_exclude, *unused],
                               follow_function_imports=False)
    image.add_file("/init", data=INIT_SCRIPT.format(python=layout.executable).encode(), mode=0o755,
                   part="pyinit")
    image.add_file(MODPROBE_PATH, data=MODPROBE_SCRIPT.format(python=layout.executable).encode(), mode=0o755,
                   part="pyinit")

    out = Assembled(image, None, layout.executable)
    explicit = [m for arg in opts.modules for m in arg.split(",") if m]
    explicit += [m for d in decls for m in d.modules if m not in explicit]
    image.add_file("/etc/pyinit/kernel-version", data=f"{opts.kver}\n".encode(), part="pyinit")
    fsck_types = list(opts.fsck)
    if explicit or opts.mode != "explicit":
        idx = kmod.ModuleIndex.load(opts.moddir, opts.kver)
        names = list(explicit)
        eager = None  # all of them
        if opts.mode == "host-only":
            from mkinitramfs import hostonly
            try:
                host = out.host = hostonly.detect(opts.host_sys, opts.host_mountinfo)
                host_names, out.host_notes = hostonly.map_to_target(host, idx)
            except hostonly.HostOnlyError as e:
                raise BuildError(str(e)) from None
            names = host_names + [n for n in names if n not in host_names]
            if not opts.no_fsck and host.fstype not in fsck_types and _find_checker(host.fstype, elf_only=True):
                fsck_types.append(host.fstype)
            _add_host_modprobe_conf(image)
        elif opts.mode == "generic":
            generic = kmod.generic_modules(idx)
            names = generic + [n for n in names if n not in generic]
            eager = {m.name for m in kmod.select(idx, explicit).modules} if explicit else set()
        names, eager = _add_on_demand(idx, names, eager)
        out.selection = kmod.select(idx, names)
        out.packed = kmod.pack_modules(image, idx, out.selection, eager=eager,
                                       keep_compressed=opts.keep_module_compression,
                                       firmware_dirs=opts.firmware_dirs)
        load = out.packed.modules_load
        out.eager = len(out.selection.modules) if eager is None else len(eager)
    else:
        load = f"# kernel {opts.kver}: no modules\n"
    image.add_file("/etc/pyinit/modules.load", data=load.encode(), part="pyinit")
    for fstype in fsck_types:
        _add_checker(image, fstype)
        out.fsck.append(fstype)

    if decls:
        hookpack.add_hooks(image, decls)
    if out.host is not None and out.host.crypt and any(d.name == "luks" for d in decls):
        _add_host_crypttab(image, opts, out)
    for arg in opts.includes:
        hookpack.add_include(image, *hookpack.parse_include(arg))
    if opts.busybox:
        from mkinitramfs import busybox
        busybox.add_busybox(image, opts.busybox)
    from mkinitramfs import rescue
    try:
        rescue.add_rescue(image, opts.rescue, opts.rescue_password_from)
    except rescue.RescueError as e:
        raise BuildError(str(e)) from None

    for link, target in USRMERGE_LINKS:
        if link not in image:
            image.add_symlink(link, target, part="base")
    if opts.strip:
        # Once, after everything is in: whoever added an ELF file (python, hooks, fsck,
        # busybox) marked it, and kernel modules and firmware never are (mkinitramfs.strip).
        out.stripped = strip.strip_image(image)
    return out


def _add_host_crypttab(image: Image, opts: BuildOptions, out: Assembled) -> None:
    """Host-only with the luks hook: the machine's /etc/crypttab entries of the root's
    dm-crypt devices, as /etc/crypttab in the image, with the key files and detached headers
    they name (a key file on another device, or a device node, stays where it is)."""
    from mkinitramfs import hookpack, hostonly
    from pyinit import crypttab
    try:
        with open(opts.host_crypttab, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except FileNotFoundError:
        return
    except OSError as e:
        raise BuildError(f"{opts.host_crypttab}: {e.strerror}") from None
    entries, problems = crypttab.parse(text)
    for p in problems:
        out.host_notes.append(f"crypttab: {opts.host_crypttab} {p}: ignored")
    chosen = hostonly.crypttab_for_root(entries, out.host.crypt, hostonly.resolve_device)
    if not chosen:
        return
    image.add_file("/etc/crypttab", data=crypttab.format_entries(chosen).encode(), part="hooks")
    for e in chosen:
        out.host_notes.append(f"crypttab: {e.name} ({e.device}) packed, for the root's /dev/mapper/{e.name}")
        files = [e.options.header] if e.options.header else []
        if e.keyfile_path and not e.keyfile_device and not e.keyfile_path.startswith("/dev/"):
            files.append(e.keyfile_path)
        for path in files:
            if path in image:
                continue
            try:
                hookpack.add_include(image, path, path, part="include")
            except hookpack.HookError as err:
                raise BuildError(f"crypttab entry {e.name} (line {e.line}) names {path}: {err}") from None
            out.host_notes.append(f"crypttab: {path} packed for {e.name} (the luks hook unlinks a key file "
                                  "once its device is open)")


def _add_on_demand(idx: kmod.ModuleIndex, names: list[str], eager: set[str] | None):
    """`names` plus the ON_DEMAND_ALWAYS modules the kernel has as files, kept out of the
    modules loaded at every boot (`eager`, None: all of `names`)."""
    extra = [m for alias in ON_DEMAND_ALWAYS for m in idx.resolve(alias)
             if m in idx.paths and m not in names]
    if not extra:
        return names, eager
    if eager is None:
        eager = {m.name for m in kmod.select(idx, names).modules} if names else set()
    return names + extra, eager


def _find_checker(fstype: str, elf_only: bool = False) -> str | None:
    for d in CHECKER_DIRS:
        path = os.path.join(d, f"fsck.{fstype}")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            if elf_only:
                with open(path, "rb") as f:
                    if f.read(4) != b"\x7fELF":
                        return None  # fsck.xfs and fsck.btrfs are shell scripts that do nothing
            return path
    return None


def _add_checker(image: Image, fstype: str) -> None:
    """fsck.<type> with its shared libraries; pyinit runs it before mounting the root."""
    from mkinitramfs import elf
    path = _find_checker(fstype)
    if path is None:
        raise BuildError(f"--fsck {fstype}: no fsck.{fstype} in {', '.join(CHECKER_DIRS)} on this machine")
    real = os.path.realpath(path)
    try:
        elf.add_closure(image, [real], part="fsck")
        elf.add_elf_file(image, f"/usr/bin/fsck.{fstype}", real, part="fsck", mode=0o755)
    except elf.ElfError as e:
        raise BuildError(f"fsck.{fstype} ({real}): {e}") from None
    if "/etc/mtab" not in image:
        image.add_symlink("/etc/mtab", "../proc/self/mounts", part="fsck")  # e2fsck asks what is mounted


def _add_host_modprobe_conf(image: Image) -> None:
    """The machine's own modprobe.d (options, blacklists) go with a host-only image."""
    for d in HOST_MODPROBE_DIRS:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            src = os.path.join(d, n)
            if n.endswith(".conf") and os.path.isfile(src) and f"{d}/{n}" not in image:
                image.add_file(f"{d}/{n}", source=src, mode=0o644, part="config")


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
    image, selection, executable = a
    safety.check(image, allow_secrets=opts.allow_secrets + included_files(opts.includes),
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
        from mkinitramfs.verify import verify
        report = verify(data)
        if not report.ok:
            raise BuildError(f"the image would not boot pyinit, not writing {opts.output}:\n  "
                             + "\n  ".join(report.problems))
    write_atomically(opts.output, data)
    if opts.manifest:
        records = manifest.merge(manifest.from_image(early_image, mtime) if early_image else {},
                                 manifest.from_image(image, mtime))
        write_atomically(opts.manifest, manifest.render(records.values()).encode(), mode=0o644)
    return BuildResult(image, len(raw), len(packed), time.monotonic() - t0, selection, executable,
                       early_size=len(early), notes=notes, mode=opts.mode, eager=a.eager, host_notes=a.host_notes,
                       firmware=a.packed.firmware if a.packed else [],
                       missing_firmware=a.packed.missing_firmware if a.packed else [], fsck=a.fsck,
                       stripped=a.stripped)


def included_files(includes) -> list[str]:
    """Image paths of the single files named by --include: asked for by name (a key file,
    say), unlike what a folder include sweeps in."""
    from mkinitramfs import hookpack
    out = []
    for arg in includes:
        src, dst = hookpack.parse_include(arg)
        if os.path.isfile(src):
            out.append(dst)
    return out


def write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """Temporary file in the same directory, fsync, rename: a failed build never leaves a
    half-written image where a bootloader would find it.

    The folder may be writable by others (a build into /tmp, a shared ESP mount): the
    temporary file is made by tempfile.mkstemp (a random name, O_CREAT|O_EXCL|O_NOFOLLOW:
    never an existing file, never through a symlink someone planted), its mode is set on
    the open descriptor (fchmod: never on whatever the name points at later), and the name
    must still be that file when it is renamed into place."""
    import tempfile
    directory = os.path.dirname(os.path.abspath(path))
    # ".NAME.tmpXXXXXXXX": the kernel postrm hook removes leftovers by that pattern
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp", dir=directory)
    st = os.fstat(fd)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        now = os.lstat(tmp)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise BuildError(f"{tmp}: replaced by something else while it was written; not installing it as {path}")
        os.replace(tmp, path)
    except BaseException:
        try:
            left = os.lstat(tmp)
            if (left.st_dev, left.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(tmp)  # ours: remove it; someone else's: leave it alone
        except OSError:
            pass
        raise


def size_table(result: BuildResult) -> str:
    """Entries and bytes by part; with stripping on, the bytes strip removed by part too."""
    parts = result.image.size_by_part()
    order = ["base", "interpreter", "libraries", "stdlib", "site-packages", "pyinit", "modules", "firmware", "fsck",
             "config", "hooks"]
    names = [p for p in order if p in parts] + sorted(p for p in parts if p not in order)
    removed = result.stripped.removed if result.stripped is not None else None
    header = ("part", "entries", "bytes") + (("stripped",) if removed is not None else ())

    def row(*cells: str, strip_removed: int | None = None) -> tuple[str, ...]:
        if removed is None:
            return cells
        return cells + (_human(strip_removed) if strip_removed else "-",)

    rows = [header]
    for name in names:
        n, b = parts[name]
        rows.append(row(name, str(n), _human(b), strip_removed=removed.get(name, 0) if removed is not None else None))
    total_n = sum(n for n, _ in parts.values())
    total_b = sum(b for _, b in parts.values())
    rows.append(row("total (content)", str(total_n), _human(total_b),
                    strip_removed=result.stripped.total if result.stripped is not None else None))
    width = len(header)
    for label, size in ([("early microcode cpio", result.early_size)] if result.early_size else []) + \
            [("cpio archive", result.cpio_size), ("compressed", result.compressed_size)]:
        rows.append((label, "", _human(size)) + ("",) * (width - 3))
    widths = [max(len(r[i]) for r in rows) for i in range(width)]
    lines = []
    for i, r in enumerate(rows):
        cells = [f"{r[0]:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * (sum(widths) + 2 * (width - 1)))
    if result.stripped is None:
        lines.append("ELF files packed as they are (--no-strip)")
    elif result.stripped.stripped:
        lines.append(f"strip: {len(result.stripped.stripped)} of {result.stripped.checked} ELF files had symbol "
                     f"tables or debug sections, {_human(result.stripped.total)} removed")
    else:
        lines.append(f"strip: none of the {result.stripped.checked} ELF files had symbol tables or debug "
                     "sections (already stripped)")
    return "\n".join(lines)


def _human(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.2f} MiB"
