"""Fixtures for the VM tier: images built by pyinit-mkinitramfs, cached per test session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# what an ext4 root on virtio-blk needs; virtio_pci is built in from 6.12 on
BASE_MODULES = {"6.1": "virtio_pci,virtio_blk,ext4", "6.12": "virtio_blk,ext4", "7.x": "virtio_blk,ext4"}


def run_builder(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The builder as users run it, in a subprocess; `python -m mkinitramfs` from this
    checkout, so the code under test is this tree's (tests/unit checks the console script).
    `env` adds to the environment (e.g. SOURCE_DATE_EPOCH)."""
    return subprocess.run([sys.executable, "-m", "mkinitramfs", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env} if env else None)


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def pyinit_image(kernels, image_cache):
    """pyinit_image(series, modules=None, compress="zstd", extra=()) -> path, built once.
    modules=None: the series' base modules; modules="": no --modules at all (with --generic...)."""
    built: dict[tuple, Path] = {}

    def get(series: str, modules: str | None = None, compress: str = "zstd", extra: tuple = ()) -> Path:
        key = (series, modules, compress, extra)
        if key not in built:
            kernel = kernels[series]
            out = image_cache / f"pyinit-{series}-{len(built)}.img"
            mods = () if modules == "" else ("--modules", modules or BASE_MODULES[series])
            r = run_builder("build", "-o", str(out), "--kver", kernel.kver, "--moddir", str(kernel.moddir),
                            *mods, "--compress", compress, *extra)
            assert r.returncode == 0, f"build failed:\n{r.stdout}\n{r.stderr}"
            built[key] = out
        return built[key]
    return get
