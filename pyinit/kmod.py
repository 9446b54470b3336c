"""Kernel modules at boot, the way kmod's modprobe loads them.

The image carries, under /usr/lib/modules/<kver>/, the kmod index files the builder wrote
for the modules it packed: modules.dep (paths relative to that folder), modules.alias,
modules.softdep, modules.builtin. Configuration comes from modprobe.d in the image
(/etc/modprobe.d, /run/modprobe.d, /usr/lib/modprobe.d: `options`, `blacklist`, `alias`,
`softdep`; files sorted by name, /etc winning over the same name elsewhere) and from the
kernel command line:

    <module>.<param>=value      options for a module loaded later (kmod's rule)
    modprobe.blacklist=a,b      like `blacklist a`: never loaded through an alias (a MODALIAS,
                                a kernel request such as fs-xfs); still loaded when named
    rd.driver.blacklist=a,b     never loaded by pyinit at all, not even by name or as a
    module_blacklist=a,b        dependency (the kernel itself refuses module_blacklist ones)
    rd.driver.pre=a,b           loaded first, before the image's own list
    modules-load=, rd.modules-load=   loaded with the image's own list (names or aliases)
    rd.driver.post=a,b          loaded after the first coldplug pass

`ModuleDB.load(name)` resolves a name or alias, loads soft "pre" dependencies, then hard
dependencies, then the module, then soft "post" ones; built-in modules count as loaded. The
eager list /etc/pyinit/modules.load (the builder's explicit --modules, in dependency order,
`<name> <path-in-image> <required|optional> [params...]`) is still honoured first.

Compressed modules (.ko.xz/.ko.gz/.ko.zst) are given to finit_module() with
MODULE_INIT_COMPRESSED_FILE; a kernel without in-kernel decompression says EOPNOTSUPP or
EINVAL, and then xz and gzip are decompressed in Python and loaded with init_module().

This module is imported by the modprobe the kernel runs for its own requests
(pyinit/modprobe.py): keep its imports to errno and os; pyinit.syscalls (cffi) is imported
only when a module is really loaded.
"""
import errno
import os

from pyinit.errors import ModuleError
from pyinit.names import MODULES_LOAD, MODULES_ROOT

MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d")
COMPRESSED = (".xz", ".gz", ".zst")


def normalize(name: str) -> str:
    return name.replace("-", "_")


def module_name(path: str) -> str:
    """kernel/fs/ext4/ext4.ko.xz -> ext4; crc32c-intel.ko -> crc32c_intel (kmod's rule)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in COMPRESSED:
        if base.endswith(suffix):
            base = base[:-len(suffix)]
    if base.endswith(".ko"):
        base = base[:-3]
    return normalize(base)


# --------------------------------------------------------------------------- the eager list

class ModuleLine:
    __slots__ = ("name", "path", "required", "params")

    def __init__(self, name, path, required, params):
        self.name, self.path, self.required, self.params = name, path, required, params

    def __repr__(self):
        return f"ModuleLine({self.name}, {self.path}, required={self.required})"


def parse_modules_load(text: str) -> list[ModuleLine]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
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
    deps: dict[str, list[str]] = {}
    order = []
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if not sep or not path.strip():
            continue
        deps[path.strip()] = rest.split()
        order.append(path.strip())
    out: list[ModuleLine] = []
    placed: set[str] = set()

    def visit(path: str, depth: int = 0) -> None:
        if path in placed or depth > 64:
            return
        placed.add(path)
        # modules.dep lists a module's dependencies in the order modprobe unloads them:
        # the last one is loaded first.
        for dep in reversed(deps.get(path, [])):
            visit(dep, depth + 1)
        name = os.path.basename(path).split(".ko", 1)[0]
        out.append(ModuleLine(name, os.path.join(moddir, path), False, ""))

    for path in order:
        visit(path)
    return out


# --------------------------------------------------------------------------- pure parsers

def parse_modules_dep(text: str, root: str) -> tuple[dict, dict]:
    """modules.dep -> ({name: absolute path}, {name: [dependency names]})."""
    paths, deps = {}, {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if not sep:
            continue
        path = path.strip()
        name = module_name(path)
        paths[name] = path if path.startswith("/") else f"{root}/{path}"
        deps[name] = [module_name(p) for p in rest.split()]
    return paths, deps


def parse_softdep(words: list[str]) -> tuple[str, list[str], list[str]] | None:
    """["softdep", "ext4", "pre:", "crc32c", "post:", "x"] -> ("ext4", ["crc32c"], ["x"])."""
    if len(words) < 3:
        return None
    pre, post, bucket = [], [], None
    for w in words[2:]:
        if w == "pre:":
            bucket = pre
        elif w == "post:":
            bucket = post
        elif bucket is not None:
            bucket.append(w)
    return normalize(words[1]), pre, post


class Config:
    """What modprobe.d and the command line say: options, blacklists, aliases, softdeps."""

    __slots__ = ("options", "blacklist", "never", "aliases", "softdeps", "ignored")

    def __init__(self):
        self.options: dict[str, list[str]] = {}
        self.blacklist: set[str] = set()  # not through aliases
        self.never: set[str] = set()  # not at all
        self.aliases: list[tuple[str, str]] = []
        self.softdeps: dict[str, tuple[list[str], list[str]]] = {}
        self.ignored: list[str] = []  # install/remove commands: we run no shell for them

    def add_options(self, name: str, text: str) -> None:
        if text:
            self.options.setdefault(normalize(name), []).append(text)

    def option_string(self, name: str) -> str:
        return " ".join(self.options.get(name, ()))


def parse_modprobe_conf(text: str, conf: Config, source: str = "modprobe.d") -> None:
    """One modprobe.d file into `conf` (lines continued with a trailing backslash)."""
    logical, pending = [], ""
    for line in text.splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    for line in logical:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        cmd = words[0]
        if cmd == "options" and len(words) >= 2:
            conf.add_options(words[1], " ".join(words[2:]))
        elif cmd == "blacklist" and len(words) == 2:
            conf.blacklist.add(normalize(words[1]))
        elif cmd == "alias" and len(words) == 3:
            conf.aliases.append((words[1], normalize(words[2])))
        elif cmd == "softdep":
            parsed = parse_softdep(words)
            if parsed:
                name, pre, post = parsed
                conf.softdeps[name] = (pre, post)  # modprobe.d replaces the module's own
        elif cmd in ("install", "remove"):
            conf.ignored.append(f"{source}: {line}")


def parse_cmdline_modules(params, conf: Config) -> dict[str, list[str]]:
    """Module settings from the kernel command line's (param, value) pairs into `conf`.
    Returns the lists of names to load: {"pre": [...], "load": [...], "post": [...]}."""
    wanted = {"pre": [], "load": [], "post": []}

    def names(value):
        return [n for n in (value or "").split(",") if n]

    for param, value in params:
        if param == "modprobe.blacklist":
            conf.blacklist.update(normalize(n) for n in names(value))
        elif param in ("module_blacklist", "rd.driver.blacklist", "rdblacklist"):
            conf.never.update(normalize(n) for n in names(value))
        elif param in ("rd.driver.pre", "rdloaddriver"):
            wanted["pre"] += names(value)
        elif param in ("modules-load", "rd.modules-load", "modules_load", "rd.modules_load"):
            wanted["load"] += names(value)
        elif param == "rd.driver.post":
            wanted["post"] += names(value)
        elif value is not None and "." in param and not param.startswith(("rd.", "modprobe.")):
            module, _, option = param.partition(".")
            if module and option:
                # The kernel stripped the quotes; give them back to a value with spaces.
                conf.add_options(module, f'{option}="{value}"' if " " in value else f"{option}={value}")
    return wanted


# --------------------------------------------------------------------------- alias matching

_WILD = "*?[\\"


def _first_wild(pattern: str) -> int:
    for i, c in enumerate(pattern):
        if c in _WILD:
            return i
    return len(pattern)


def glob_match(pattern: str, text: str) -> bool:
    """fnmatch(3) without flags: * ? [set] [!set] and backslash escapes; whole-string match."""
    p = t = 0
    star_p = star_t = -1
    np, nt = len(pattern), len(text)
    while t < nt:
        if p < np:
            c = pattern[p]
            if c == "*":
                star_p, star_t = p, t
                p += 1
                continue
            if c == "?":
                p += 1
                t += 1
                continue
            if c == "[":
                end, ok = _match_class(pattern, p, text[t])
                if end is not None:
                    if ok:
                        p, t = end, t + 1
                        continue
                elif text[t] == "[":  # an unclosed [ is a literal
                    p += 1
                    t += 1
                    continue
            else:
                if c == "\\" and p + 1 < np:
                    p += 1
                    c = pattern[p]
                if c == text[t]:
                    p += 1
                    t += 1
                    continue
        if star_p < 0:
            return False
        star_t += 1
        p, t = star_p + 1, star_t
    while p < np and pattern[p] == "*":
        p += 1
    return p == np


def _match_class(pattern: str, p: int, ch: str):
    """Match ch against the [set] at pattern[p]; returns (index after it, matched) or
    (None, False) when the set is not closed."""
    i = p + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    matched = False
    first = True
    while i < len(pattern) and (pattern[i] != "]" or first):
        first = False
        lo = pattern[i]
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            if lo <= ch <= pattern[i + 2]:
                matched = True
            i += 3
        else:
            if lo == ch:
                matched = True
            i += 1
    if i >= len(pattern):
        return None, False
    return i + 1, matched != negate


class AliasIndex:
    """modules.alias, indexed by each pattern's literal prefix (the text before its first
    wildcard): a lookup tries only the patterns whose prefix starts the alias, so a
    MODALIAS is matched against a handful of patterns, not thousands."""

    __slots__ = ("by_prefix", "lengths", "count")

    def __init__(self, pairs=()):
        self.by_prefix: dict[str, list[tuple[str, str]]] = {}
        self.lengths: list[int] = []
        self.count = 0
        for pattern, module in pairs:
            self.add(pattern, module)

    def add(self, pattern: str, module: str) -> None:
        n = _first_wild(pattern)
        key = pattern[:n]
        bucket = self.by_prefix.get(key)
        if bucket is None:
            self.by_prefix[key] = bucket = []
            if n not in self.lengths:
                self.lengths.append(n)
                self.lengths.sort()
        bucket.append((pattern, module))
        self.count += 1

    def lookup(self, alias: str) -> list[str]:
        """Modules whose pattern matches `alias`, in file order within a prefix, no repeats."""
        out = []
        for n in self.lengths:
            if n > len(alias):
                break
            bucket = self.by_prefix.get(alias[:n])
            if not bucket:
                continue
            for pattern, module in bucket:
                if module not in out and (len(pattern) == n and pattern == alias or glob_match(pattern, alias)):
                    out.append(module)
        return out


def parse_alias_file(text: str) -> AliasIndex:
    idx = AliasIndex()
    for line in text.splitlines():
        if line.startswith("alias "):
            words = line.split()
            if len(words) == 3:
                idx.add(words[1], normalize(words[2]))
    return idx


# --------------------------------------------------------------------------- loading

def loaded_modules(proc_modules: str = "/proc/modules") -> set[str]:
    try:
        with open(proc_modules) as f:
            return {line.split(" ", 1)[0] for line in f if line.strip()}
    except OSError:
        return set()


def _decompress(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".xz"):
        import lzma
        return lzma.decompress(raw)
    if path.endswith(".gz"):
        import zlib
        return zlib.decompress(raw, 16 + zlib.MAX_WBITS)
    if path.endswith(".zst"):
        raise OSError(errno.ENOTSUP, f"{path}: this kernel cannot decompress zstd modules itself and the image "
                                     "has no zstd decompressor; build the image without --keep-module-compression")
    return raw


# How the last compressed module was loaded: "in-kernel" or "python" (for the log line).
decompression = {"mode": None}


def load_module(path: str, params: str = "") -> bool:
    """Load one module file. True when loaded now, False when it already was (EEXIST)."""
    from pyinit import syscalls as sc
    compressed = path.endswith(COMPRESSED)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            sc.finit_module(fd, params, sc.MODULE_INIT_COMPRESSED_FILE if compressed else 0, path)
            if compressed:
                decompression["mode"] = "in-kernel"
            return True
        except OSError as e:
            if e.errno == errno.EEXIST:
                return False
            # Kernels without in-kernel decompression say EINVAL/EOPNOTSUPP: do it ourselves.
            if not (compressed and e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS)):
                raise
    finally:
        os.close(fd)
    try:
        sc.init_module(_decompress(path), params, path)
    except OSError as e:
        if e.errno == errno.EEXIST:
            return False
        raise
    decompression["mode"] = "python"
    return True


def load_all(lines: list[ModuleLine], log, db=None) -> list[tuple[ModuleLine, OSError]]:
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
            if load_module(m.path, params):
                log.debug(f"loaded module {m.name}" + (f" ({params})" if params else ""))
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

    Files are read lazily: the modprobe helper that only resolves "fs-xfs" never builds the
    MODALIAS index's prefix table for other buses... but it does read modules.alias once.
    """

    def __init__(self, root: str | None = None, *, cmdline_params=(), conf_dirs=MODPROBE_DIRS, log=None):
        self.root = root or f"{MODULES_ROOT}/{os.uname().release}"
        self.log = log
        self._paths = self._deps = self._aliases = self._builtin = self._softdeps = None
        self.config = Config()
        self._read_config(conf_dirs)
        self.wanted = self.apply_cmdline(cmdline_params)
        self.loaded = loaded_modules()
        self.failed: dict[str, str] = {}  # name -> why, so a bad module is tried once
        self.count = 0  # modules loaded by this DB
        self.load_file = load_module  # (path, params) -> bool; the one place that calls the kernel

    def apply_cmdline(self, params) -> dict:
        """The command line's module options and blacklists; returns its load lists."""
        return parse_cmdline_modules(params, self.config)

    # -- reading the index
    def _read(self, name: str) -> str:
        try:
            with open(f"{self.root}/{name}") as f:
                return f.read()
        except OSError:
            return ""

    @property
    def paths(self) -> dict:
        if self._paths is None:
            self._paths, self._deps = parse_modules_dep(self._read("modules.dep"), self.root)
        return self._paths

    @property
    def deps(self) -> dict:
        self.paths  # noqa: B018 - reads modules.dep
        return self._deps

    @property
    def builtin(self) -> set:
        if self._builtin is None:
            self._builtin = {module_name(line) for line in self._read("modules.builtin").split()}
        return self._builtin

    @property
    def aliases(self) -> AliasIndex:
        if self._aliases is None:
            self._aliases = parse_alias_file(self._read("modules.alias"))
        return self._aliases

    @property
    def softdeps(self) -> dict:
        if self._softdeps is None:
            soft = {}
            for line in self._read("modules.softdep").splitlines():
                parsed = parse_softdep(line.split()) if line.startswith("softdep ") else None
                if parsed:
                    name, pre, post = parsed
                    old = soft.get(name, ([], []))
                    soft[name] = (old[0] + pre, old[1] + post)
            soft.update(self.config.softdeps)
            self._softdeps = soft
        return self._softdeps

    def _read_config(self, dirs) -> None:
        files: dict[str, str] = {}
        for d in dirs:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                if n.endswith(".conf") and n not in files:  # the first directory wins
                    files[n] = f"{d}/{n}"
        for n in sorted(files):
            try:
                with open(files[n]) as f:
                    parse_modprobe_conf(f.read(), self.config, files[n])
            except OSError:
                continue

    # -- resolving
    def is_known(self, name: str) -> bool:
        n = normalize(name)
        return n in self.paths or n in self.builtin

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

    def _load_one(self, name: str, done: list[str], chain: tuple) -> None:
        if name in self.loaded or name in self.builtin and name not in self.paths:
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
        pre, post = self.softdeps.get(name, ((), ()))
        for soft in pre:
            self._load_soft(soft, done, chain + (name,))
        for dep in self.deps.get(name, ()):
            self._load_one(dep, done, chain + (dep,))
        try:
            if self.load_file(path, self.config.option_string(name)):
                done.append(name)
                self.count += 1
        except OSError as e:
            why = f"module {name}: {os.strerror(e.errno) if e.errno else e}"
            self.failed[name] = why
            raise ModuleError(why) from None
        self.loaded.add(name)
        for soft in post:
            self._load_soft(soft, done, chain + (name,))

    def _load_soft(self, soft: str, done: list[str], chain: tuple) -> None:
        """A soft dependency may be absent or fail (crc32c_intel on a CPU without SSE4.2)."""
        modules, via_alias = self.resolve(soft)
        for m in modules:
            if m in self.config.never or (via_alias and m in self.config.blacklist):
                continue
            try:
                self._load_one(m, done, chain + (m,))
            except ModuleError:
                pass

    def load_modalias(self, modalias: str) -> list[str]:
        """What udev's kmod builtin does for a device's MODALIAS: every match, blacklist applied."""
        done = []
        for m in self.aliases.lookup(modalias):
            if m in self.config.never or m in self.config.blacklist:
                continue
            try:
                self._load_one(m, done, (modalias,))
            except ModuleError as e:
                if self.log:
                    self.log.warning(f"{modalias}: {e}")
        if done and self.log:
            self.log.debug(f"loaded {', '.join(done)} for {modalias}")
        return done
