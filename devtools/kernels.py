"""Fetch Debian's real kernels into a cache, without installing them on the host.

Three series are used by the VM tests and the benchmarks:

* ``"6.1"``  -- bookworm's ``linux-image-amd64`` (6.1.0-NN-amd64, plain ``.ko``)
* ``"6.12"`` -- bookworm-backports' ``linux-image-amd64`` (6.12.x+deb12-amd64, ``.ko.xz``)
* ``"7.x"``  -- trixie-backports' ``linux-image-amd64``, the newest 7.x (7.3.4+deb13-amd64,
  ``.ko.xz``), where the initramfs sits on a tmpfs over nullfs and pivot_root works

Debian 13's kernels are split: ``linux-image-<kver>`` is an empty package that depends on
``linux-binary-<kver>`` (vmlinuz and config in ``usr/lib/modules/<kver>/``),
``linux-modules-<kver>`` and ``linux-base-<kver>`` (modules.builtin*, modules.order,
System.map). Every dependency named ``*-<kver>`` with an exact version is fetched and
unpacked into the same tree; for 6.x there is none and the image package holds it all.
trixie-backports is fetched without trixie: nothing is installed, only downloaded.

Everything goes through a private apt configuration that lives in the cache dir
(own sources.list, lists, archives, ``Dir::State::status=/dev/null``), so the host's
apt state is neither read for packages nor changed. The concrete package is resolved from
the metapackage's ``Depends`` in each suite, downloaded with ``apt-get download``, unpacked
with ``dpkg-deb -x`` and given a ``modules.dep`` with ``depmod -b`` (Debian's package
ships none: the postinst normally makes it).

The result is pinned: once ``<cache>/kernels/kernels.json`` names a finished tree for every
series, later calls read it and touch no network, so every run of the tests uses the same
kernels until ``refresh=True`` (CLI ``--refresh``) asks for the current ones. A series
missing from the index (one added to ``SERIES`` after the index was written) is fetched
alone: the series already pinned keep their kernels and are not downloaded again.

Needs the Debian packages ``apt``, ``dpkg``, ``kmod`` (depmod) and
``debian-archive-keyring``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# series -> suite whose linux-image-amd64 gives that series. One home for the list: the
# tests (tests/conftest.py) and the benchmark take their kernels from here.
SERIES = {
    "6.1": "bookworm",
    "6.12": "bookworm-backports",
    "7.x": "trixie-backports",
}

INDEX_NAME = "kernels.json"
DONE_MARKER = ".pyinit-kernel-complete"


class KernelFetchError(RuntimeError):
    pass


def series_matches(series: str, kver: str) -> bool:
    """Whether a kernel release belongs to a series: "6.1" takes 6.1.*, "7.x" any 7.*."""
    prefix = series[:-2] if series.endswith(".x") else series
    return kver.startswith(prefix + ".")


@dataclass(frozen=True)
class Kernel:
    series: str  # a key of SERIES: "6.1", "6.12", "7.x"
    kver: str  # e.g. "6.1.0-50-amd64", what `uname -r` prints in the guest
    root: Path  # the unpacked packages: root/boot (6.x), root/lib/modules
    vmlinuz: Path
    moddir: Path  # the folder holding <kver>/modules.dep, i.e. root/lib/modules

    @property
    def modules(self) -> Path:
        """``moddir/<kver>``: where modules.dep, modules.alias, kernel/ are."""
        return self.moddir / self.kver

    @property
    def config(self) -> Path:
        """The kernel's .config: ``boot/config-<kver>`` (6.x) or ``<modules>/config`` (7.x)."""
        return _first_existing(self.root / "boot" / f"config-{self.kver}", self.modules / "config")

    @property
    def nullfs_root(self) -> bool:
        """Linux 7.0 and later: the initramfs is a tmpfs over nullfs, pivot_root works."""
        return int(self.kver.split(".", 1)[0]) >= 7

    @property
    def module_ext(self) -> str:
        """".ko" or ".ko.xz" (or ".ko.zst"), read from the first line of modules.dep."""
        with open(self.modules / "modules.dep", encoding="utf-8") as f:
            for line in f:
                name = line.split(":", 1)[0].strip()
                if name:
                    return name[name.index(".ko"):]
        raise KernelFetchError(f"{self.modules}/modules.dep lists no module")


def default_cache() -> Path:
    env = os.environ.get("PYINIT_CACHE")
    return Path(env) if env else REPO / ".cache"


def _run(argv: list[str], *, env: dict | None = None, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise KernelFetchError(
            f"{argv[0]} not found: install the Debian packages apt, dpkg and kmod") from e
    if proc.returncode != 0:
        raise KernelFetchError(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc.stdout


class _PrivateApt:
    """apt-get / apt-cache driven by a configuration file of our own."""

    def __init__(self, base: Path):
        self.base = base
        self.conf = base / "apt.conf"

    def setup(self) -> None:
        for d in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        if not Path(KEYRING).exists():
            raise KernelFetchError(f"{KEYRING} missing: install debian-archive-keyring")
        lines = [f"deb [signed-by={KEYRING}] {MIRROR} {suite} main\n"
                 for suite in dict.fromkeys(SERIES.values())]
        (self.base / "sources.list").write_text("".join(lines))
        b = self.base
        import pwd
        user = pwd.getpwuid(os.getuid()).pw_name
        self.conf.write_text(
            f'Dir::Etc::SourceList "{b}/sources.list";\n'
            f'Dir::Etc::SourceParts "{b}/sources.list.d";\n'
            f'Dir::Etc::PreferencesParts "{b}/preferences.d";\n'
            f'Dir::Etc::Preferences "{b}/preferences";\n'
            f'Dir::State::Lists "{b}/lists";\n'
            'Dir::State::status "/dev/null";\n'
            f'Dir::Cache "{b}";\n'
            f'Dir::Cache::Archives "{b}/archives";\n'
            'Dir::Cache::pkgcache "";\n'
            'Dir::Cache::srcpkgcache "";\n'
            'Acquire::Languages "none";\n'
            # apt drops to the _apt user to download, which cannot write into a cache
            # dir owned by root (a warning) or by a developer (an error): download as
            # whoever runs this.
            f'APT::Sandbox::User "{user}";\n'
        )

    def env(self) -> dict:
        return {**os.environ, "APT_CONFIG": str(self.conf), "LC_ALL": "C.UTF-8",
                "DEBIAN_FRONTEND": "noninteractive"}

    def update(self) -> None:
        _run(["apt-get", "-q", "update"], env=self.env())

    def show(self, spec: str) -> list[dict[str, str]]:
        """``apt-cache show spec`` parsed into one dict per stanza."""
        out = _run(["apt-cache", "show", spec], env=self.env())
        return parse_stanzas(out)

    def download(self, package: str, version: str, dest: Path) -> Path:
        _run(["apt-get", "-q", "download", f"{package}={version}"], env=self.env(), cwd=dest)
        # apt-get download names the file <pkg>_<version with ':' as %3a>_<arch>.deb
        matches = sorted(dest.glob(f"{package}_*.deb"))
        quoted = version.replace(":", "%3a")
        for m in matches:
            if m.name.startswith(f"{package}_{quoted}_"):
                return m
        raise KernelFetchError(f"apt-get download left no {package} {version} in {dest}")


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Parse deb822 stanzas (``apt-cache show`` output); continuation lines are joined."""
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


_IMAGE_DEP = re.compile(r"^(linux-image-(\S+))\s*\(=\s*([^)\s]+)\)$")
_EXACT_DEP = re.compile(r"^(\S+)\s*\(=\s*([^)\s]+)\)$")


def resolve_image(stanzas: list[dict[str, str]]) -> tuple[str, str, str]:
    """From the metapackage's stanzas (one suite), the concrete (package, version, kver).

    ``Depends: linux-image-6.1.0-50-amd64 (= 6.1.176-1)`` -> the package is named after
    the kernel release, so kver is the package name minus ``linux-image-``.
    """
    for stanza in stanzas:
        for dep in stanza.get("Depends", "").split(","):
            m = _IMAGE_DEP.match(dep.strip())
            if m and not m.group(2).endswith("-unsigned"):
                return m.group(1), m.group(3), m.group(2)
    raise KernelFetchError(f"no linux-image-* dependency in {stanzas!r}")


def kernel_parts(stanzas: list[dict[str, str]], kver: str) -> list[tuple[str, str]]:
    """The (package, version) pairs a ``linux-image-<kver>`` stanza depends on that belong to
    the same kernel release: exact-version dependencies named ``*-<kver>``. Debian 13's
    split packages (linux-binary-, linux-modules-, linux-base-<kver>); none for 6.x."""
    parts: list[tuple[str, str]] = []
    for stanza in stanzas[:1]:
        for dep in stanza.get("Depends", "").split(","):
            for alternative in dep.split("|"):
                m = _EXACT_DEP.match(alternative.strip())
                if m and m.group(1).endswith("-" + kver) and (m.group(1), m.group(2)) not in parts:
                    parts.append((m.group(1), m.group(2)))
    return parts


def _first_existing(*paths: Path) -> Path:
    """The first of ``paths`` that exists, else the first (for the error message)."""
    return next((p for p in paths if p.exists()), paths[0])


def _vmlinuz(kdir: Path, kver: str) -> Path:
    # 6.x: boot/vmlinuz-<kver>; Debian 13's linux-binary: usr/lib/modules/<kver>/vmlinuz
    return _first_existing(kdir / "boot" / f"vmlinuz-{kver}", kdir / "usr/lib/modules" / kver / "vmlinuz")


def _kernel_from(series: str, kver: str, kdir: Path) -> Kernel:
    return Kernel(series=series, kver=kver, root=kdir, vmlinuz=_vmlinuz(kdir, kver),
                  moddir=kdir / "lib" / "modules")


def _unpack(debs: list[Path], kver: str, kernels_dir: Path) -> Path:
    final = kernels_dir / kver
    if (final / DONE_MARKER).exists():
        return final
    names = ", ".join(d.name for d in debs)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kver}.", dir=kernels_dir))
    try:
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        moddir = tmp / "lib" / "modules"
        if not (moddir / kver).is_dir() and (tmp / "usr/lib/modules" / kver).is_dir():
            # merged-/usr packaging: depmod -b looks under <base>/lib/modules
            (tmp / "lib").mkdir(exist_ok=True)
            (tmp / "lib" / "modules").symlink_to("../usr/lib/modules")
        if not (moddir / kver).is_dir():
            raise KernelFetchError(f"{names}: no lib/modules/{kver}")
        if not _vmlinuz(tmp, kver).is_file():
            raise KernelFetchError(f"{names}: neither boot/vmlinuz-{kver} nor usr/lib/modules/{kver}/vmlinuz")
        depmod = shutil.which("depmod") or "/usr/sbin/depmod"
        if not Path(depmod).exists():
            raise KernelFetchError("depmod not found: install the Debian package kmod")
        _run([depmod, "-b", str(tmp), kver])
        (tmp / DONE_MARKER).write_text("".join(d.name + "\n" for d in debs))
        if final.exists():  # a half-finished earlier attempt
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _read_index(kernels_dir: Path) -> dict[str, dict]:
    try:
        data = json.loads((kernels_dir / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pinned(kernels_dir: Path, data: dict[str, dict]) -> dict[str, Kernel]:
    """The series of the index whose unpacked tree is finished."""
    result = {}
    for series in SERIES:
        entry = data.get(series)
        kver = entry.get("kver") if isinstance(entry, dict) else None
        if kver and (kernels_dir / kver / DONE_MARKER).exists():
            result[series] = _kernel_from(series, kver, kernels_dir / kver)
    return result


def _load_index(kernels_dir: Path) -> dict[str, Kernel] | None:
    """Every series of SERIES from the index, or None when one is missing or unfinished."""
    found = _pinned(kernels_dir, _read_index(kernels_dir))
    return found if len(found) == len(SERIES) else None


def ensure_kernels(cache: Path | None = None, *, refresh: bool = False,
                   log=None) -> dict[str, Kernel]:
    """Return ``{"6.1": Kernel, "6.12": Kernel, "7.x": Kernel}``, fetching them on first use.

    Instant and network-free once done (the index file is the finished marker). Safe to
    call from several processes at once (pytest-xdist workers): a file lock serialises.
    ``log`` is an optional callable taking a progress message.
    """
    cache = Path(cache) if cache is not None else default_cache()
    kernels_dir = cache / "kernels"
    kernels_dir.mkdir(parents=True, exist_ok=True)
    if not refresh and (found := _load_index(kernels_dir)):
        return found
    say = log or (lambda msg: None)
    with open(kernels_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not refresh and (found := _load_index(kernels_dir)):
            return found  # another process finished while we waited
        index = _read_index(kernels_dir)
        pinned = {} if refresh else _pinned(kernels_dir, index)
        apt = _PrivateApt(cache / "apt")
        apt.setup()
        say("apt-get update (private configuration)")
        apt.update()
        debs = cache / "apt" / "debs"
        debs.mkdir(exist_ok=True)
        result: dict[str, Kernel] = {}
        for series, suite in SERIES.items():
            if series in pinned:  # the kernel the tests used so far: kept, not re-resolved
                result[series] = pinned[series]
                continue
            package, version, kver = resolve_image(apt.show(f"linux-image-amd64/{suite}"))
            if not series_matches(series, kver):
                raise KernelFetchError(
                    f"{suite}'s linux-image-amd64 gives {kver}, not a {series} kernel")
            parts = kernel_parts(apt.show(f"{package}={version}"), kver)
            if not (kernels_dir / kver / DONE_MARKER).exists():
                fetched = []
                try:
                    for name, ver in [(package, version), *parts]:
                        say(f"downloading {name} {ver}")
                        fetched.append(apt.download(name, ver, debs))
                    say(f"unpacking {', '.join(d.name for d in fetched)}, depmod {kver}")
                    _unpack(fetched, kver, kernels_dir)
                finally:
                    for deb in fetched:  # 100+ MB each; the unpacked tree is what we use
                        deb.unlink(missing_ok=True)
            result[series] = _kernel_from(series, kver, kernels_dir / kver)
            index[series] = {"kver": kver, "package": package, "version": version,
                             "suite": suite}
            if parts:
                index[series]["parts"] = [f"{name}={ver}" for name, ver in parts]
        tmp = kernels_dir / (INDEX_NAME + ".tmp")
        tmp.write_text(json.dumps(index, indent=2) + "\n")
        tmp.rename(kernels_dir / INDEX_NAME)
        return result


def summary(kernels: dict[str, Kernel]) -> dict:
    return {s: {"kver": k.kver, "vmlinuz": str(k.vmlinuz), "moddir": str(k.moddir),
                "module_ext": k.module_ext} for s, k in kernels.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.kernels", description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=None,
                   help="cache folder (default: $PYINIT_CACHE or <repo>/.cache)")
    p.add_argument("--refresh", action="store_true",
                   help="ask apt for the current kernels instead of the pinned ones")
    args = p.parse_args(argv)
    try:
        kernels = ensure_kernels(args.cache, refresh=args.refresh,
                                 log=lambda m: print(m, file=sys.stderr))
    except KernelFetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary(kernels), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
