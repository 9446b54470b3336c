"""Loading the kernel modules the image carries, in the order the builder computed.

The builder writes /etc/pyinit/modules.load: one module per line, in dependency order,
`<name> <path-in-image> <required|optional> [params...]`. Optional lines are soft
dependencies (crc32c-intel fails with ENODEV on a CPU without SSE4.2; that is fine).
"""
import errno
import os

from pyinit import syscalls as sc

MODULES_LOAD = "/etc/pyinit/modules.load"
KERNEL_VERSION = "/etc/pyinit/kernel-version"


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
        import gzip
        return gzip.decompress(raw)
    if path.endswith(".zst"):
        raise OSError(errno.ENOTSUP, f"{path}: zstd modules need the kernel's in-kernel decompression")
    return raw


def load_module(path: str, params: str = "") -> bool:
    """Load one module file. True when loaded now, False when it already was (EEXIST)."""
    compressed = path.endswith((".xz", ".gz", ".zst"))
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            sc.finit_module(fd, params, sc.MODULE_INIT_COMPRESSED_FILE if compressed else 0, path)
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
    return True


def load_all(lines: list[ModuleLine], log) -> list[tuple[ModuleLine, OSError]]:
    """Load every line in order. Returns the failures of required modules; optional failures
    are logged at debug level only."""
    failures = []
    already = loaded_modules()
    for m in lines:
        if m.name.replace("-", "_") in already:
            continue
        try:
            if load_module(m.path, m.params):
                log.debug(f"loaded module {m.name}")
        except OSError as e:
            if m.required:
                log.error(f"module {m.name} ({m.path}) failed to load: {os.strerror(e.errno) if e.errno else e}")
                failures.append((m, e))
            else:
                log.debug(f"optional module {m.name} not loaded: {e}")
    return failures
