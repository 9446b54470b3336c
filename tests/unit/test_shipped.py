"""The shipped folders (hooks/, kernel/, dracut/, initramfs-tools/): one module says where
they are, in a checkout and in an install, and every packaging file agrees with it."""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from mkinitramfs import hookpack, shipped

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_a_checkout_finds_the_top_level_folders():
    for folder in shipped.FOLDERS:
        assert shipped.path(folder) == str(REPO / folder)
        assert os.path.isdir(shipped.path(folder))
    assert hookpack.project_hooks_dir() == str(REPO / "hooks")
    assert hookpack.find_hook("network") == str(REPO / "hooks" / "network")


def test_an_install_finds_its_package_data(tmp_path):
    package = tmp_path / "site-packages" / "mkinitramfs"
    for folder in shipped.FOLDERS:
        (package / shipped.INSTALLED_DIR / folder).mkdir(parents=True)
        assert shipped.path(folder, str(package)) == str(package / shipped.INSTALLED_DIR / folder)
    # without the package data (a checkout), the folder beside the package
    assert shipped.path("hooks", str(tmp_path / "src" / "mkinitramfs")) == str(tmp_path / "src" / "hooks")


def test_unknown_folder_is_an_error():
    with pytest.raises(ValueError, match="not a shipped folder"):
        shipped.path("tests")


def test_command_prints_the_folder(capsys):
    assert shipped.main(["dracut"]) == 0
    assert capsys.readouterr().out.strip() == str(REPO / "dracut")
    assert shipped.main(["nope"]) == 2


def test_the_sdist_carries_every_shipped_folder():
    manifest = (REPO / "MANIFEST.in").read_text()
    grafted = set(re.findall(r"^graft (\S+)$", manifest, re.M))
    assert set(shipped.FOLDERS) <= grafted


def test_a_missing_hook_names_the_folder_it_looked_in_and_the_known_hooks():
    with pytest.raises(hookpack.HookError) as e:
        hookpack.find_hook("no-such-hook")
    assert str(REPO / "hooks" / "no-such-hook") in str(e.value)
    assert "network" in str(e.value)


def test_every_package_folder_is_installed():
    # setuptools installs the packages pyproject.toml lists, not their subfolders: a folder of
    # modules missing there (mkinitramfs/pytarget, the programs the target interpreter runs)
    # would be missing from the wheel and the Debian package, and only a regular install would
    # show it.
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {init.parent.relative_to(REPO).as_posix().replace("/", ".")
               for top in ("pyinit", "mkinitramfs") for init in (REPO / top).rglob("__init__.py")}
    assert "mkinitramfs.pytarget" in on_disk
    assert listed == on_disk
