"""Kernel modules at boot, the way kmod's modprobe loads them.

The image carries, under /usr/lib/modules/<kver>/, the kmod index files the builder wrote
for the modules it packed (read with pyinit/kmodindex.py's rules); configuration comes from
modprobe.d and the command line (pyinit/modprobe_d.py); names and MODALIAS strings are
matched against modules.alias by pyinit/modalias.py.

`ModuleDB.load(name)` resolves a name or alias, loads soft "pre" dependencies, then hard
dependencies, then the module, then soft "post" ones; built-in modules count as loaded. The
eager list /etc/pyinit/modules.load (the builder's explicit --modules, in dependency order,
`<name> <path-in-image> <required|optional> [params...]`) is still honoured first.

Compressed modules (.ko.xz/.ko.gz/.ko.zst) are given to finit_module() with
MODULE_INIT_COMPRESSED_FILE; a kernel without in-kernel decompression says EOPNOTSUPP or
EINVAL, and then xz and gzip are decompressed in Python and loaded with init_module().

This module is imported by the modprobe the kernel runs for its own requests
(pyinit/modprobe.py): keep its imports small; pyinit.syscalls (cffi) is imported only when
a module is really loaded.
"""
from __future__ import annotations

import errno
import os

from pyinit import kmodindex, read_text
from pyinit.errors import ModuleError
from pyinit.kmodindex import normalize
from pyinit.modalias import AliasIndex, glob_match, is_device_alias
from pyinit.modprobe_d import MODPROBE_DIRS, Config, parse_cmdline_modules, read_config
from pyinit.names import MODULES_LOAD, MODULES_ROOT

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pyinit.log import Logger

# --------------------------------------------------------------------------- the eager list

class ModuleLine:
    __slots__ = ("name", "params", "path", "required")

    def __init__(self, name: str, path: str, required: bool, params: str) -> None:
        self.name, self.path, self.required, self.params = name, path, required, params

    def __repr__(self) -> str:
        return f"ModuleLine({self.name}, {self.path}, required={self.required})"


def parse_modules_load(text: str) -> list[ModuleLine]:
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 3 or fields[2] not in ("required", "optional"):
            raise ValueError(f"{MODULES_LOAD} line {n}: expected '<name> <path> required|optional', got {line!r}")
        out.append(ModuleLine(fields[0], fields[1], fields[2] == "required", " ".join(fields[3:])))
    return out


def modules_from_dep(text: str, moddir: str) -> list[ModuleLine]:
    """Every module of a modules.dep, dependencies first, all optional: for images whose
    modules another tool collected (dracut --add pyinit writes no modules.load; the modules
    it installed and its depmod's modules.dep say what to load)."""
    paths, deps = kmodindex.parse_modules_dep(text)
    out: list[ModuleLine] = []
    placed: set[str] = set()

    def visit(name: str, depth: int = 0) -> None:
        if name in placed or name not in paths or depth > 64:
            return
        placed.add(name)
        # modules.dep lists a module's dependencies in the order modprobe unloads them:
        # the last one is loaded first.
        for dep in reversed(deps[name]):
            visit(dep, depth + 1)
        out.append(ModuleLine(name, os.path.join(moddir, paths[name]), False, ""))

    for name in paths:
        visit(name)
    return out


# --------------------------------------------------------------------------- loading

# Modules loaded for a device's MODALIAS get the kernel's own `async_probe` parameter, which
# every module accepts (kernel/module/main.c: unknown_module_param_cb). Since Linux 5.18,
# finit_module() of a module without it ends in async_synchronize_full(): it waits for
# every asynchronous job in the kernel, such as libata resetting the empty ports of a PIIX
# IDE controller (0.3 s under QEMU). The root's own driver, loaded next, then waits its turn
# behind probes of devices that do not hold the root. With it, the load returns at once and
# the probe goes on beside PID 1, as in udev's parallel workers; pyinit learns of the disks
# from their uevents either way. Loads by name (the eager list, the root's filesystem, the
# hooks' modules) stay synchronous: their callers expect the device once the call returns.
ASYNC_PROBE = "async_probe=1"

def loaded_modules(proc_modules: str = "/proc/modules") -> set[str]:
    return {line.split(" ", 1)[0] for line in read_text(proc_modules).splitlines() if line.strip()}


def load_module(path: str, params: str = "") -> str | None:
    """Load one module file: how it was loaded, "plain", "in-kernel" (a compressed file the
    kernel decompressed) or "python" (decompressed here); None when it already was (EEXIST).
    Raises OSError."""
    from pyinit import syscalls as sc
    compressed = path.endswith(kmodindex.COMPRESSED)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            sc.finit_module(fd, params, sc.MODULE_INIT_COMPRESSED_FILE if compressed else 0, path)
            return "in-kernel" if compressed else "plain"
        except OSError as e:
            if e.errno == errno.EEXIST:
                return None
            # Kernels without in-kernel decompression say EINVAL/EOPNOTSUPP: do it ourselves.
            if not (compressed and e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS)):
                raise
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        image = kmodindex.decompress(f.read(), path)
    try:
        sc.init_module(image, params, path)
    except OSError as e:
        if e.errno == errno.EEXIST:
            return None
        raise
    return "python"


def load_all(lines: list[ModuleLine], log: Logger, db: ModuleDB | None = None) -> list[tuple[ModuleLine, OSError]]:
    """Load every line of the eager list in order. Returns the failures of required modules;
    optional failures are logged at debug level only. With `db`, options from modprobe.d and
    the command line apply and never-load blacklists are honoured."""
    failures = []
    already = db.loaded if db is not None else loaded_modules()
    for m in lines:
        name = normalize(m.name)
        if name in already:
            continue
        if db is not None and name in db.config.never:
            log.info(f"module {m.name} not loaded: blacklisted on the command line")
            continue
        params = " ".join(p for p in (m.params, db.config.option_string(name) if db is not None else "") if p)
        try:
            how = load_module(m.path, params)
            if how is not None:
                log.debug(f"loaded module {m.name}" + (f" ({params})" if params else ""))
                if db is not None:
                    db.note(how)
            already.add(name)
        except OSError as e:
            if m.required:
                log.error(f"module {m.name} ({m.path}) failed to load: {os.strerror(e.errno) if e.errno else e}")
                failures.append((m, e))
            else:
                log.debug(f"optional module {m.name} not loaded: {e}")
    return failures


class ModuleDB:
    """The image's module index and configuration, read once, with modprobe's loading rules.

    Index files are read lazily: the modprobe helper that only resolves "fs-xfs" never
    builds the MODALIAS index's prefix table... but it does read modules.alias once.
    """

    def __init__(self, root: str | None = None, *, cmdline_params: Iterable[tuple[str, str | None]] = (),
                 conf_dirs: Iterable[str] = MODPROBE_DIRS, log: Logger | None = None) -> None:
        self.root = root or f"{MODULES_ROOT}/{os.uname().release}"
        self.log = log
        self._paths: dict[str, str] | None = None
        self._deps: dict[str, list[str]] = {}
        self._aliases: AliasIndex | None = None
        self._builtin: set[str] | None = None
        self._softdeps: dict[str, tuple[list[str], list[str]]] | None = None
        self.config = Config()
        read_config(self.config, conf_dirs)
        self.wanted = self.apply_cmdline(cmdline_params)
        self.loaded = loaded_modules()
        self.failed: dict[str, str] = {}  # name -> why, so a bad module is tried once
        self.count = 0  # modules loaded by this DB
        self.decompression: str | None = None  # how the last compressed module was loaded
        # (path, params) -> how, or None; the one place that calls the kernel (tests replace it)
        self.load_file: Callable[[str, str], str | None] = load_module
        self.eager: set[str] = set()  # names of the eager list (modules.load), once it was loaded

    def on_demand(self) -> bool:
        """Whether a device's MODALIAS could still load a module of the image: some module
        that is neither on the eager list nor loaded has a device alias. A host-only image
        loads all of its drivers at every boot, and then replaying the bus devices' uevents
        only to look their MODALIAS up finds nothing to load (90 ms of pyinit's boot under
        QEMU/TCG). Modules only the kernel asks for by name (efivarfs as "fs-efivarfs", for
        gpt-auto) do not count."""
        pending = {n for n in self.paths if n not in self.eager and n not in self.loaded}
        if not pending:
            return False
        return any(module in pending and is_device_alias(pattern)
                   for bucket in self.aliases.by_prefix.values() for pattern, module in bucket)

    def apply_cmdline(self, params: Iterable[tuple[str, str | None]]) -> dict[str, list[str]]:
        """The command line's module options and blacklists; returns its load lists."""
        return parse_cmdline_modules(params, self.config)

    def note(self, how: str) -> None:
        if how in ("in-kernel", "python"):
            self.decompression = how

    # -- reading the index
    def _read(self, name: str) -> str:
        return read_text(f"{self.root}/{name}")

    @property
    def paths(self) -> dict[str, str]:
        """name -> the module file's absolute path."""
        if self._paths is None:
            paths, self._deps = kmodindex.parse_modules_dep(self._read("modules.dep"))
            self._paths = {n: p if p.startswith("/") else f"{self.root}/{p}" for n, p in paths.items()}
        return self._paths

    @property
    def deps(self) -> dict[str, list[str]]:
        self.paths  # noqa: B018 - reads modules.dep
        return self._deps

    @property
    def builtin(self) -> set[str]:
        if self._builtin is None:
            self._builtin = kmodindex.parse_builtin(self._read("modules.builtin"))
        return self._builtin

    @property
    def aliases(self) -> AliasIndex:
        if self._aliases is None:
            self._aliases = AliasIndex(kmodindex.parse_aliases(self._read("modules.alias")))
        return self._aliases

    @property
    def softdeps(self) -> dict[str, tuple[list[str], list[str]]]:
        if self._softdeps is None:
            soft = kmodindex.parse_softdeps(self._read("modules.softdep"))
            soft.update(self.config.softdeps)  # modprobe.d replaces the module's own
            self._softdeps = soft
        return self._softdeps

    # -- resolving
    def resolve(self, name: str) -> tuple[list[str], bool]:
        """A module name or alias -> (module names, whether it was an alias)."""
        for pattern, module in self.config.aliases:
            if glob_match(pattern, name):
                return [module], True
        n = normalize(name)
        if n in self.paths or n in self.builtin:
            return [n], False
        return self.aliases.lookup(name), True

    # -- loading
    def load(self, name: str, reason: str = "") -> list[str]:
        """modprobe <name>: returns the modules loaded now. Raises ModuleError when `name`
        matches nothing at all or its module fails to load."""
        modules, via_alias = self.resolve(name)
        if not modules:
            raise ModuleError(f"{name}: no module in the image matches it")
        done: list[str] = []
        errors = []
        ok = 0
        for m in modules:
            if m in self.config.never or (via_alias and m in self.config.blacklist):
                if self.log:
                    self.log.debug(f"module {m} ({name}) not loaded: blacklisted")
                continue
            try:
                self._load_one(m, done, (name,))
                ok += 1
            except ModuleError as e:
                errors.append(str(e))
        if errors and not ok:
            raise ModuleError("; ".join(errors))
        if done and self.log:
            self.log.debug(f"loaded {', '.join(done)}" + (f" for {reason}" if reason else f" for {name}"))
        return done

    def load_quietly(self, name: str, reason: str = "") -> list[str]:
        try:
            return self.load(name, reason)
        except ModuleError as e:
            if self.log:
                self.log.debug(f"modprobe {name}: {e}")
            return []

    def _load_one(self, name: str, done: list[str], chain: tuple[str, ...], probe_async: bool = False) -> None:
        if name in self.loaded or (name in self.builtin and name not in self.paths):
            return
        if name in self.failed:
            raise ModuleError(self.failed[name])
        if name in chain[:-1] or len(chain) > 64:
            return  # a softdep cycle
        if name in self.config.never:
            raise ModuleError(f"{name} is blacklisted on the command line (needed by {' -> '.join(chain)})")
        path = self.paths.get(name)
        if path is None:
            raise ModuleError(f"module {name} (needed by {' -> '.join(chain)}) is not in the image")
        pre, post = self.softdeps.get(name, ([], []))
        for soft in pre:
            self._load_soft(soft, done, (*chain, name), probe_async)
        for dep in self.deps.get(name, ()):
            self._load_one(dep, done, (*chain, dep), probe_async)
        options = self.config.option_string(name)
        if probe_async and "async_probe" not in options:  # modprobe.d or the command line decide first
            options = f"{options} {ASYNC_PROBE}".strip()
        try:
            how = self.load_file(path, options)
        except OSError as e:
            why = f"module {name}: {os.strerror(e.errno) if e.errno else e}"
            self.failed[name] = why
            raise ModuleError(why) from None
        if how:
            done.append(name)
            self.count += 1
            self.note(how)
        self.loaded.add(name)
        for soft in post:
            self._load_soft(soft, done, (*chain, name), probe_async)

    def _load_soft(self, soft: str, done: list[str], chain: tuple[str, ...], probe_async: bool) -> None:
        """A soft dependency may be absent or fail (crc32c_intel on a CPU without SSE4.2)."""
        modules, via_alias = self.resolve(soft)
        for m in modules:
            if m in self.config.never or (via_alias and m in self.config.blacklist):
                continue
            try:
                self._load_one(m, done, (*chain, m), probe_async)
            except ModuleError:
                pass

    def load_modalias(self, modalias: str) -> list[str]:
        """What udev's kmod builtin does for a device's MODALIAS: every match, blacklist applied.
        The driver and its dependencies probe asynchronously (ASYNC_PROBE)."""
        done: list[str] = []
        for m in self.aliases.lookup(modalias):
            if m in self.config.never or m in self.config.blacklist:
                continue
            try:
                self._load_one(m, done, (modalias,), probe_async=True)
            except ModuleError as e:
                if self.log:
                    self.log.warning(f"{modalias}: {e}")
        if done and self.log:
            self.log.debug(f"loaded {', '.join(done)} for {modalias}")
        return done
