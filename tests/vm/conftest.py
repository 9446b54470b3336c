"""Fixtures for the VM tier: images built by pyinit-mkinitramfs, cached per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.builder import BASE_MODULES, run_builder


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
