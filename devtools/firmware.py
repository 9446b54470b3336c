"""Debian's microcode packages, unpacked into the cache for tests (never installed).

intel-microcode and amd64-microcode live in bookworm's non-free-firmware component. Like
devtools.kernels, a private apt configuration in <cache>/apt-firmware downloads them with
`apt-get download` and `dpkg-deb -x` unpacks them into <cache>/firmware, so
<cache>/firmware/lib/firmware holds intel-ucode/ and amd-ucode/ as on a Debian host. The
result is pinned once <cache>/firmware/.complete exists.

    python -m devtools.firmware      # prints the firmware folder
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from devtools.kernels import KEYRING, MIRROR, KernelFetchError, _PrivateApt, _run, default_cache

PACKAGES = ("intel-microcode", "amd64-microcode")
DONE = ".complete"


class _FirmwareApt(_PrivateApt):
    def setup(self) -> None:
        super().setup()
        (self.base / "sources.list").write_text(
            f"deb [signed-by={KEYRING}] {MIRROR} bookworm non-free-firmware\n")


def firmware_dir(cache: Path | None = None) -> Path:
    """<cache>/firmware/lib/firmware, fetched on first use."""
    cache = Path(cache) if cache is not None else default_cache()
    root = cache / "firmware"
    if (root / DONE).exists():
        return root / "lib" / "firmware"
    apt = _FirmwareApt(cache / "apt-firmware")
    apt.setup()
    apt.update()
    tmp = Path(tempfile.mkdtemp(prefix=".firmware.", dir=cache))
    try:
        for package in PACKAGES:
            stanzas = apt.show(package)
            if not stanzas:
                raise KernelFetchError(f"apt-cache show {package}: nothing")
            version = stanzas[0]["Version"]
            deb = apt.download(package, version, tmp)
            _run(["dpkg-deb", "-x", str(deb), str(tmp / "root")])
            deb.unlink()
        usr = tmp / "root" / "usr" / "lib" / "firmware"
        if not (tmp / "root" / "lib" / "firmware").exists() and usr.exists():
            (tmp / "root" / "lib").mkdir(exist_ok=True)
            (tmp / "root" / "lib" / "firmware").symlink_to("../usr/lib/firmware")
        (tmp / "root" / DONE).write_text(" ".join(PACKAGES) + "\n")
        if root.exists():
            shutil.rmtree(root)
        (tmp / "root").rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "lib" / "firmware"


def main() -> int:
    try:
        print(firmware_dir())
    except KernelFetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
