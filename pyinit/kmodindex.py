"""kmod's index files and naming rules, for the builder and the init alike. Pure.

The builder reads the target kernel's modules.dep, modules.softdep, modules.alias and
modules.builtin to choose the modules and writes the same files, for the modules it packed,
into the image (mkinitramfs/kmod.py); PID 1 and the image's modprobe read those
(pyinit/kmod.py). Both sides parse and write them here, with kmod's rules:

- a module's name is its file name without .ko and compression suffix, with '-' read as
  '_' (kmod's modname_normalize: crc32c-intel.ko.xz is crc32c_intel);
- modules.dep: `path: dep-path dep-path...`, paths relative to the module folder, each
  module's dependencies in the order modprobe unloads them (the last one loads first);
- modules.softdep: `softdep NAME pre: A B post: C`; several lines for one module add up
  (`parse_softdeps`); a modprobe.d softdep replaces them (pyinit/modprobe_d.py);
- modules.alias: `alias PATTERN NAME` (PATTERN an fnmatch pattern, pyinit/modalias.py);
- modules.builtin: one path per line, a module built into the kernel.

`decompress` is the one decompressor of module and firmware files on both sides: lzma for
.xz, zlib for .gz (both in every CPython, and PID 1 already carries them; `gzip` would cost
PID 1 more imports for the same zlib). .zst needs a zstd library: the builder passes
python-zstandard's; PID 1 has none (the library is not worth its size in every image:
kernels that compress modules with zstd decompress them themselves).
"""
from __future__ import annotations

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

COMPRESSED = (".xz", ".gz", ".zst")


def normalize(name: str) -> str:
    return name.replace("-", "_")


def strip_compression(path: str) -> str:
    """kernel/fs/ext4/ext4.ko.xz -> kernel/fs/ext4/ext4.ko"""
    for suffix in COMPRESSED:
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return path


def module_name(path: str) -> str:
    """kernel/fs/ext4/ext4.ko.xz -> ext4; crc32c-intel.ko -> crc32c_intel (kmod's rule)."""
    base = strip_compression(path.rsplit("/", 1)[-1])
    if base.endswith(".ko"):
        base = base[:-3]
    return normalize(base)


def _lines(text: str) -> list[str]:
    """The lines that say something: stripped, no blank or comment lines."""
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


# --------------------------------------------------------------------------- reading

def parse_modules_dep(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """modules.dep -> ({name: path as written}, {name: [dependency names]}), in file order."""
    paths: dict[str, str] = {}
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        path = path.strip()
        if not sep or not path:
            continue
        name = module_name(path)
        paths[name] = path
        deps[name] = [module_name(p) for p in rest.split()]
    return paths, deps


def parse_softdep(words: list[str]) -> tuple[str, list[str], list[str]] | None:
    """["softdep", "ext4", "pre:", "crc32c", "post:", "x"] -> ("ext4", ["crc32c"], ["x"])."""
    if len(words) < 3:
        return None
    pre: list[str] = []
    post: list[str] = []
    bucket = None
    for w in words[2:]:
        if w == "pre:":
            bucket = pre
        elif w == "post:":
            bucket = post
        elif bucket is not None:
            bucket.append(w)
    return normalize(words[1]), pre, post


def parse_softdeps(text: str) -> dict[str, tuple[list[str], list[str]]]:
    """modules.softdep -> {name: (pre, post)}; the lines of one module add up."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for line in _lines(text):
        words = line.split()
        parsed = parse_softdep(words) if words[0] == "softdep" else None
        if parsed is not None:
            name, pre, post = parsed
            old_pre, old_post = out.get(name, ([], []))
            out[name] = (old_pre + pre, old_post + post)
    return out


def parse_aliases(text: str) -> list[tuple[str, str]]:
    """modules.alias -> [(pattern, module name)], in file order."""
    out = []
    for line in _lines(text):
        words = line.split()
        if len(words) == 3 and words[0] == "alias":
            out.append((words[1], normalize(words[2])))
    return out


def parse_builtin(text: str) -> set[str]:
    """modules.builtin -> the names of the modules built into the kernel."""
    return {module_name(line) for line in _lines(text)}


# --------------------------------------------------------------------------- writing

def format_dep(path: str, deps: Iterable[str]) -> str:
    return f"{path}: {' '.join(deps)}".rstrip()


def format_softdep(name: str, pre: list[str], post: list[str]) -> str:
    return f"softdep {name}" + (" pre: " + " ".join(pre) if pre else "") + (" post: " + " ".join(post) if post else "")


def format_alias(pattern: str, module: str) -> str:
    return f"alias {pattern} {module}"


# --------------------------------------------------------------------------- decompressing

def decompress(raw: bytes, name: str, zstd: Callable[[bytes], bytes] | None = None) -> bytes:
    """A module's (or firmware file's) bytes, decompressed according to its file name;
    unchanged without a compression suffix. Raises OSError naming the file for damaged data
    (a module file is input: the caller reports that one file and goes on) and for .zst
    without `zstd`."""
    import errno
    try:
        if name.endswith(".xz"):
            import lzma
            return lzma.decompress(raw)
        if name.endswith(".gz"):
            return _gunzip(raw)
    except Exception as e:  # lzma.LZMAError, zlib.error: the data, not the program, is wrong
        raise OSError(errno.EINVAL, f"{name}: damaged compressed data ({e})") from None
    if name.endswith(".zst"):
        if zstd is None:
            raise OSError(errno.ENOTSUP, f"{name}: this kernel cannot decompress zstd modules itself and the "
                                         "image has no zstd decompressor; build the image without "
                                         "--keep-module-compression")
        return zstd(raw)
    return raw


def _gunzip(raw: bytes) -> bytes:
    """Every member of a gzip file, as gzip.decompress reads them."""
    import zlib
    out = []
    while raw:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out.append(d.decompress(raw))
        out.append(d.flush())
        if not d.eof:
            raise ValueError("truncated gzip data")
        raw = d.unused_data.lstrip(b"\0")  # gzip.decompress skips zero padding between members
    return b"".join(out)
