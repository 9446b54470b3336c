"""Hooks for an image: `--hook NAME|PATH` (host files and folders: include.py).

A hook is a folder (the project's hooks/<name>/, or any path) holding its scripts and a
`hook.toml` that says what it needs and when it runs:

    description = "unlock LUKS devices with cryptsetup"
    requires = ["network"]             # other hooks this one needs (packed with it)
    binaries = ["cryptsetup"]          # programs (PATH, /usr/sbin, /sbin...), with their
                                       # shared-library closure; or absolute host paths
    dlopen = ["libtss2-esys.so.0",     # libraries the binaries load with dlopen(), which
              "/usr/lib/*/cryptsetup/libcryptsetup-token-systemd-tpm2.so"]
                                       # DT_NEEDED does not show: a soname is looked up as
                                       # the loader would (ld.so.conf, then its default
                                       # directories) and packed in the image's library
                                       # folder; an absolute path (or a glob: every match)
                                       # is packed at that same path.
                                       # Each comes with its own closure; `verify` checks
                                       # them (/etc/pyinit/dlopen lists them)
    modules = ["dm_crypt", "xts"]      # kernel modules, with their dependency closure
    files = ["/etc/crypttab", "SRC:DST"]   # host files (same path, or SRC:DST)
    python_modules = ["json"]          # modules the Python scripts import lazily; the
                                       # imports written in the scripts are found by themselves
    python_packages = ["pyroute2"]     # site packages packed whole
    python_allow_missing = ["trio"]    # optional imports of those packages
    python_exclude = ["pyroute2.ndb"]  # parts of those packages not to pack

    [[run]]                            # one table per script
    stage = "initqueue/settled"        # see pyinit.names.HOOK_STAGES
    file = "luks.py"                   # in the folder: a .py module with run(context), or
                                       # an executable in any language
    order = 30                         # the NN of NN-name in the image: the order in a stage
    optional = false                   # true: a failure is a warning, not a stop
    timeout = 0                        # seconds; 0 means none; default 120 (finished: 30)

In the image, a script becomes /usr/lib/pyinit/hooks/<stage>/<NN>-<hook>[.py] and its
settings a line of /etc/pyinit/hooks.conf. Binaries go to /usr/bin (the image's /sbin and
/bin point there). Every file keeps its host mode, so a key file made 0600 stays 0600.
"""
from __future__ import annotations

import ast
import glob
import os
import posixpath
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from mkinitramfs import elf, include, ldso, parts, paths, shipped
from mkinitramfs.errors import MkinitramfsError
from mkinitramfs.image import Image
from mkinitramfs.include import IncludeError
from mkinitramfs.ldso import Abi
from pyinit.names import HOOK_STAGES as STAGE_DIRS

SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_KEYS = {"description", "requires", "binaries", "dlopen", "modules", "files", "python_modules", "python_packages",
         "python_allow_missing", "python_exclude", "run"}
_RUN_KEYS = {"stage", "file", "order", "optional", "timeout"}
# A line of /etc/pyinit/hooks.conf: (stage/NN-name, hook, optional, timeout or None).
ManifestRow = tuple[str, str, bool, float | None]


class HookError(MkinitramfsError):
    """A hook that cannot go into the image; the message names the hook and says why."""


@dataclass
class Script:
    stage: str
    file: str  # host path
    order: int
    optional: bool
    timeout: float | None

    @property
    def python(self) -> bool:
        return self.file.endswith(".py")


@dataclass
class HookDecl:
    name: str
    folder: str
    description: str = ""
    requires: list[str] = field(default_factory=list)
    binaries: list[str] = field(default_factory=list)
    dlopen: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)  # (host, image)
    python_modules: list[str] = field(default_factory=list)
    python_packages: list[str] = field(default_factory=list)
    python_allow_missing: list[str] = field(default_factory=list)
    python_exclude: list[str] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)


def project_hooks_dir() -> str:
    """The project's hooks/ of this checkout or install (mkinitramfs.shipped; PYINIT_HOOKS_DIR
    overrides it)."""
    env = os.environ.get("PYINIT_HOOKS_DIR")
    if env:
        return env
    return shipped.path("hooks")


def find_hook(spec: str) -> str:
    """NAME (a folder of the project's hooks/) or a path to a hook folder."""
    folder = spec if "/" in spec or spec.startswith(".") else os.path.join(project_hooks_dir(), spec)
    if not os.path.isfile(os.path.join(folder, "hook.toml")):
        known = ""
        base = project_hooks_dir()
        if os.path.isdir(base):
            names = sorted(n for n in os.listdir(base) if os.path.isfile(os.path.join(base, n, "hook.toml")))
            known = f"; the project's hooks are: {', '.join(names)}" if names else ""
        raise HookError(f"hook {spec!r}: no {folder}/hook.toml{known}")
    return folder


def parse_decl(text: str, name: str, folder: str) -> HookDecl:
    """hook.toml text -> HookDecl. Pure apart from checking that the scripts exist."""
    import tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise HookError(f"hook {name}: {folder}/hook.toml: {e}") from None
    where = f"hook {name} ({folder}/hook.toml)"
    unknown = set(data) - _KEYS
    if unknown:
        raise HookError(f"{where}: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KEYS))}")
    decl = HookDecl(name=name, folder=folder, description=str(data.get("description", "")))
    for key in ("requires", "binaries", "dlopen", "modules", "python_modules", "python_packages",
                "python_allow_missing", "python_exclude"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise HookError(f"{where}: {key} must be a list of non-empty strings")
        setattr(decl, key, list(value))
    for f in data.get("files", []):
        if not isinstance(f, str) or not f:
            raise HookError(f"{where}: files must be a list of paths or SRC:DST")
        try:
            decl.files.append(include.parse_include(f))
        except IncludeError as e:
            raise HookError(f"{where}: files: {e}") from None
    runs = data.get("run", [])
    if not isinstance(runs, list) or not runs:
        raise HookError(f"{where}: no [[run]] table: say which script runs at which stage")
    for r in runs:
        unknown = set(r) - _RUN_KEYS
        if unknown:
            raise HookError(f"{where}: [[run]] has unknown keys {', '.join(sorted(unknown))}")
        stage, file = r.get("stage"), r.get("file")
        if stage not in STAGE_DIRS:
            raise HookError(f"{where}: stage {stage!r} is not one of {', '.join(STAGE_DIRS)}")
        if not isinstance(file, str) or not file or "/" in file:
            raise HookError(f"{where}: [[run]] file must name a script in the hook's folder")
        order = r.get("order", 50)
        if not isinstance(order, int) or not 0 <= order <= 99:
            raise HookError(f"{where}: order must be an integer from 0 to 99")
        timeout = r.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise HookError(f"{where}: timeout must be a number of seconds (0: none)")
        optional = r.get("optional", False)
        if not isinstance(optional, bool):
            raise HookError(f"{where}: optional must be true or false")
        decl.scripts.append(Script(stage, os.path.join(folder, file), order, optional,
                                   None if timeout is None else float(timeout)))
    return decl


def load_hook(spec: str) -> HookDecl:
    folder = find_hook(spec)
    name = os.path.basename(os.path.normpath(folder))
    with open(os.path.join(folder, "hook.toml")) as f:
        decl = parse_decl(f.read(), name, folder)
    for s in decl.scripts:
        if not os.path.isfile(s.file):
            raise HookError(f"hook {name}: script {s.file} does not exist")
        if not s.python and not os.access(s.file, os.X_OK):
            raise HookError(f"hook {name}: {s.file} is neither a .py module nor executable (chmod +x)")
    return decl


def load_hooks(specs: list[str]) -> list[HookDecl]:
    """Every hook asked for, and the hooks they require (project hooks, by name), once each."""
    out: dict[str, HookDecl] = {}
    pending = list(specs)
    while pending:
        spec = pending.pop(0)
        decl = load_hook(spec)
        if decl.name in out:
            if os.path.realpath(out[decl.name].folder) != os.path.realpath(decl.folder):
                raise HookError(f"two different hooks are named {decl.name}: {out[decl.name].folder}, {decl.folder}")
            continue
        out[decl.name] = decl
        pending.extend(r for r in decl.requires if r not in out)
    return list(out.values())


def script_imports(path: str) -> list[str]:
    """Top-level names of the modules a Python script imports (anywhere in it)."""
    with open(path, "rb") as f:
        try:
            tree = ast.parse(f.read(), path)
        except SyntaxError as e:
            raise HookError(f"{path}: {e}") from None
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
    return list(dict.fromkeys(out))


def python_needs(decls: list[HookDecl]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(extra_modules, packages, allow_missing, excludes) for mkinitramfs.python.add_python."""
    packages = [p for d in decls for p in d.python_packages]
    extra = []
    for d in decls:
        extra.extend(d.python_modules)
        for s in d.scripts:
            if s.python:
                extra.extend(script_imports(s.file))
    extra = [m for m in dict.fromkeys(extra)
             if m.split(".")[0] not in packages and m.split(".")[0] != "pyinit"]
    allow = [m for d in decls for m in d.python_allow_missing]
    exclude = [m for d in decls for m in d.python_exclude]
    return extra, list(dict.fromkeys(packages)), list(dict.fromkeys(allow)), list(dict.fromkeys(exclude))


def which(name: str, hook: str = "") -> str:
    if name.startswith("/"):
        if not os.path.isfile(name):
            raise HookError(f"hook {hook}: binary {name} does not exist")
        return name
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":" + SEARCH_PATH)
    if not found:
        raise HookError(f"hook {hook}: binary {name!r} not found on this machine (searched PATH and {SEARCH_PATH})")
    return found


def image_script_name(decl: HookDecl, script: Script, taken: set[str]) -> str:
    base = f"{script.order:02d}-{decl.name}"
    stem = os.path.splitext(os.path.basename(script.file))[0]
    name = base if base not in taken else f"{base}-{stem}"
    taken.add(name)
    return name + (".py" if script.python else "")


def add_hooks(image: Image, decls: list[HookDecl], *, part: str = parts.HOOKS) -> list[ManifestRow]:
    """Put the hooks' scripts, binaries (with their ELF closure) and files into `image`, and
    /etc/pyinit/hooks.conf. Returns the manifest rows (key, name, optional, timeout)."""
    rows: list[ManifestRow] = []
    binaries: dict[str, str] = {}  # image path -> host path
    taken: dict[str, set[str]] = {}
    image.add_dir(paths.HOOKS_DIR, part=part)
    for d in decls:
        for s in d.scripts:
            name = image_script_name(d, s, taken.setdefault(s.stage, set()))
            dest = posixpath.join(paths.HOOKS_DIR, s.stage, name)
            if dest in image:
                raise HookError(f"hook {d.name}: {dest} is already in the image (two hooks of the same name?)")
            mode = 0o644 if s.python else 0o755
            image.add_file(dest, source=s.file, mode=mode, part=part)
            rows.append((f"{s.stage}/{name}", d.name, s.optional, s.timeout))
        for b in d.binaries:
            host = which(b, d.name)
            dest = posixpath.join("/usr/bin", os.path.basename(b))
            if binaries.get(dest, host) != host:
                raise HookError(f"binary {dest}: two hooks want different files ({binaries[dest]}, {host})")
            binaries[dest] = host
        for src, dst in d.files:
            try:
                include.add_include(image, src, dst, part=part)
            except IncludeError as e:
                raise HookError(f"hook {d.name}: {e}") from None
    for dest, host in sorted(binaries.items()):
        real = os.path.realpath(host)
        if elf.is_elf_file(real):
            elf.add_elf_file(image, dest, real, part=part, mode=0o755)
        else:
            image.add_file(dest, source=real, mode=0o755, part=part)
    elf_binaries = [os.path.realpath(h) for h in binaries.values() if elf.is_elf_file(os.path.realpath(h))]
    dlopened = add_dlopen_libraries(image, decls, elf_binaries)
    if elf_binaries or dlopened:
        elf.add_closure(image, sorted(set(elf_binaries)) + dlopened, part=parts.LIBRARIES)
    image.add_file(paths.HOOKS_MANIFEST, data=format_manifest(rows).encode(), part=part)
    return rows


def find_dlopen(entry: str, hook: str, *, abi: Abi | None = None, interp: str | None = None,
                ld_so_conf: str | None = "/etc/ld.so.conf",
                system_dirs: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """[(host path, image path or "" for the library folder)] for one `dlopen` entry: an
    absolute path or glob (every match, packed at its own path), or a soname found where
    the loader would find it. Raises HookError naming the entry."""
    if entry.startswith("/"):
        found = sorted(glob.glob(entry)) if glob.has_magic(entry) else ([entry] if os.path.exists(entry) else [])
        found = [f for f in found if os.path.isfile(f)]
        if not found:
            raise HookError(f"hook {hook}: dlopen library {entry} does not exist on this machine")
        return [(f, f) for f in found]
    if "/" in entry:
        raise HookError(f"hook {hook}: dlopen entry {entry!r}: a soname (libfoo.so.1) or an absolute path")
    abi = abi or (64, True, "EM_X86_64")
    dirs = (ldso.ld_so_conf_dirs(ld_so_conf) if ld_so_conf else []) + \
        (list(system_dirs) if system_dirs is not None else elf.system_search_path(interp, abi))
    for d in dirs:
        cand = os.path.join(d, entry)
        if os.path.isfile(cand) and elf.is_elf_file(cand):
            try:
                if elf.read_elf(cand).abi() != abi:
                    continue
            except elf.ElfError:
                continue
            return [(cand, "")]
    raise HookError(f"hook {hook}: dlopen library {entry} not found in {', '.join(dict.fromkeys(dirs))} "
                    "(is its Debian package installed?)")


def add_dlopen_libraries(image: Image, decls: list[HookDecl], elf_binaries: list[str]) -> list[str]:
    """Pack every hook's `dlopen` libraries (not their closure: the caller adds it) and list
    them in /etc/pyinit/dlopen for `verify`. Returns their host paths."""
    wanted = [(d.name, e) for d in decls for e in d.dlopen]
    if not wanted:
        return []
    ref = elf_binaries[0] if elf_binaries else os.path.realpath(sys.executable)
    obj = elf.read_elf(ref)
    interp = obj.interp
    if interp is None:
        interp = elf.read_elf(os.path.realpath(sys.executable)).interp
    libdir = elf.default_libdir(interp, obj.abi())
    hosts, lines = [], []
    for hook, entry in wanted:
        for host, dest in find_dlopen(entry, hook, abi=obj.abi(), interp=interp):
            real = os.path.realpath(host)
            target = dest or posixpath.join(libdir, os.path.basename(host))
            elf.add_elf_file(image, target, real, part=parts.LIBRARIES)
            hosts.append(real)
            lines.append(f"{dest or os.path.basename(host)} {hook}")
    image.add_file(paths.DLOPEN_LIST, data=("# libraries hooks' programs dlopen(): NAME-OR-PATH HOOK\n"
                                      + "".join(ln + "\n" for ln in dict.fromkeys(lines))).encode(), part=parts.HOOKS)
    return list(dict.fromkeys(hosts))


def format_manifest(rows: list[ManifestRow]) -> str:
    from pyinit.hookmanifest import format_manifest as fmt
    return fmt(rows)
