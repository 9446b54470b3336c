"""devtools.kernels' pure parts and its pinning: which packages make a kernel (6.x's one
image package, Debian 13's split linux-binary/modules/base), which series a release belongs
to, and that adding a series to an existing index fetches only that series.

apt and dpkg are replaced by a recorder here: what is tested is the bookkeeping, not apt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from devtools import kernels as K

pytestmark = pytest.mark.unit

# `apt-cache show` stanzas as trixie-backports and bookworm give them (Depends abridged).
META_7 = K.parse_stanzas(
    "Package: linux-image-amd64\nVersion: 7.3.4-1~bpo13+1\n"
    "Depends: linux-base-amd64 (= 7.3.4-1~bpo13+1), linux-image-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1),"
    " linux-modules-amd64 (= 7.3.4-1~bpo13+1)\n")
IMAGE_7 = K.parse_stanzas(
    "Package: linux-image-7.3.4+deb13-amd64\nVersion: 7.3.4-1~bpo13+1\n"
    "Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool,\n"
    " linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1),\n"
    " linux-modules-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)\n"
    "Pre-Depends: linux-base (>= 4.17~)\n")
IMAGE_61 = K.parse_stanzas(
    "Package: linux-image-6.1.0-50-amd64\nVersion: 6.1.176-1\n"
    "Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool\n")


def test_the_metapackage_names_the_release():
    assert K.resolve_image(META_7) == ("linux-image-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "7.3.4+deb13-amd64")


def test_debian_13_kernels_are_split_into_parts_of_the_same_release():
    assert K.kernel_parts(IMAGE_7, "7.3.4+deb13-amd64") == [
        ("linux-base-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
        ("linux-binary-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
        ("linux-modules-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
    ]
    assert K.kernel_parts(IMAGE_61, "6.1.0-50-amd64") == []  # 6.x: the image package holds it all


@pytest.mark.parametrize("series, kver, ok", [
    ("6.1", "6.1.0-50-amd64", True), ("6.1", "6.12.95+deb12-amd64", False),
    ("6.12", "6.12.95+deb12-amd64", True), ("7.x", "7.3.4+deb13-amd64", True), ("7.x", "6.12.9", False),
    ("7.x", "70.1", False),
])
def test_series_matches(series, kver, ok):
    assert K.series_matches(series, kver) is ok


def _tree(kernels_dir: Path, kver: str, layout: str) -> None:
    d = kernels_dir / kver
    if layout == "6":
        (d / "boot").mkdir(parents=True)
        (d / "boot" / f"vmlinuz-{kver}").write_bytes(b"kernel")
        (d / "boot" / f"config-{kver}").write_text("CONFIG_X=y\n")
        (d / "lib/modules" / kver).mkdir(parents=True)
    else:
        (d / "usr/lib/modules" / kver).mkdir(parents=True)
        (d / "usr/lib/modules" / kver / "vmlinuz").write_bytes(b"kernel")
        (d / "usr/lib/modules" / kver / "config").write_text("CONFIG_X=y\n")
        (d / "lib").mkdir()
        (d / "lib/modules").symlink_to("../usr/lib/modules")
    (d / K.DONE_MARKER).write_text("x\n")


def test_both_layouts_give_vmlinuz_and_config(tmp_path):
    _tree(tmp_path, "6.1.0-50-amd64", "6")
    _tree(tmp_path, "7.3.4+deb13-amd64", "7")
    k6 = K._kernel_from("6.1", "6.1.0-50-amd64", tmp_path / "6.1.0-50-amd64")
    k7 = K._kernel_from("7.x", "7.3.4+deb13-amd64", tmp_path / "7.3.4+deb13-amd64")
    assert k6.vmlinuz.read_bytes() == k7.vmlinuz.read_bytes() == b"kernel"
    assert k6.config.name == "config-6.1.0-50-amd64" and k7.config == k7.modules / "config"
    assert k7.modules.is_dir() and not k6.nullfs_root and k7.nullfs_root


class FakeApt:
    """Answers apt-cache show from a table and records what would be downloaded."""
    # class-wide: the code under test makes its own instance; each test resets them
    shows: ClassVar[list[str]] = []
    downloads: ClassVar[list[str]] = []
    TABLE: ClassVar[dict[str, str]] = {
        "linux-image-amd64/trixie-backports": META_7,
        "linux-image-7.3.4+deb13-amd64=7.3.4-1~bpo13+1": IMAGE_7,
    }

    def __init__(self, base):
        self.base = base

    def setup(self):
        self.base.mkdir(parents=True, exist_ok=True)

    def update(self):
        pass

    def show(self, spec):
        FakeApt.shows.append(spec)
        if spec not in self.TABLE:
            raise K.KernelFetchError(f"the test did not expect apt-cache show {spec}")
        return self.TABLE[spec]

    def download(self, package, version, dest):
        FakeApt.downloads.append(package)
        deb = dest / f"{package}_{version}_amd64.deb"
        deb.write_bytes(b"")
        return deb


def test_adding_a_series_fetches_it_alone_and_keeps_the_pinned_ones(tmp_path, monkeypatch):
    kdir = tmp_path / "kernels"
    kdir.mkdir()
    _tree(kdir, "6.1.0-50-amd64", "6")
    _tree(kdir, "6.12.95+deb12-amd64", "6")
    old = {"6.1": {"kver": "6.1.0-50-amd64", "package": "linux-image-6.1.0-50-amd64", "version": "6.1.176-1",
                   "suite": "bookworm"},
           "6.12": {"kver": "6.12.95+deb12-amd64", "package": "linux-image-6.12.95+deb12-amd64",
                    "version": "6.12.95-1~bpo12+1", "suite": "bookworm-backports"}}
    (kdir / K.INDEX_NAME).write_text(json.dumps(old))
    assert K._load_index(kdir) is None  # 7.x is missing: not complete

    unpacked = []

    def fake_unpack(debs, kver, kernels_dir):
        unpacked.append((sorted(d.name.split("_")[0] for d in debs), kver))
        _tree(kernels_dir, kver, "7")
        return kernels_dir / kver

    monkeypatch.setattr(K, "_PrivateApt", FakeApt)
    monkeypatch.setattr(K, "_unpack", fake_unpack)
    FakeApt.shows, FakeApt.downloads = [], []
    got = K.ensure_kernels(tmp_path)
    assert {s: k.kver for s, k in got.items()} == {
        "6.1": "6.1.0-50-amd64", "6.12": "6.12.95+deb12-amd64", "7.x": "7.3.4+deb13-amd64"}
    # 6.1 and 6.12 were neither looked up nor downloaded again
    assert not any("bookworm" in s or "6.1" in s for s in FakeApt.shows), FakeApt.shows
    assert sorted(FakeApt.downloads) == ["linux-base-7.3.4+deb13-amd64", "linux-binary-7.3.4+deb13-amd64",
                                         "linux-image-7.3.4+deb13-amd64", "linux-modules-7.3.4+deb13-amd64"]
    assert len(unpacked) == 1 and unpacked[0][1] == "7.3.4+deb13-amd64"
    index = json.loads((kdir / K.INDEX_NAME).read_text())
    assert index["6.1"] == old["6.1"] and index["6.12"] == old["6.12"]  # the old entries, unchanged
    assert index["7.x"]["parts"] == ["linux-base-7.3.4+deb13-amd64=7.3.4-1~bpo13+1",
                                     "linux-binary-7.3.4+deb13-amd64=7.3.4-1~bpo13+1",
                                     "linux-modules-7.3.4+deb13-amd64=7.3.4-1~bpo13+1"]
    assert not list((tmp_path / "apt" / "debs").iterdir())  # the .debs are removed once unpacked
    # complete now: the next call reads the index and asks apt nothing
    FakeApt.shows = []
    assert K.ensure_kernels(tmp_path)["7.x"].vmlinuz.is_file() and FakeApt.shows == []
