"""The Debian package's sources (debian/) agree with the project: one version, every file
debian/pyinit.install names exists (the kernel hooks executable), the relations a distribution
expects of an initramfs generator. The package itself is built and installed by
tests/vm/test_lifecycle.py."""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from devtools import debpkg

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def control_field(name: str) -> list[str]:
    text = (REPO / "debian" / "control").read_text()
    m = re.search(rf"^{name}:(.*(?:\n[ \t].*)*)", text.split("\n\n", 1)[1], re.M)
    assert m, name
    return [w.strip() for w in m.group(1).replace("\n", " ").split(",") if w.strip()]


def test_one_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert debpkg.version(REPO) == project


def test_installed_files_exist():
    for line in (REPO / "debian" / "pyinit.install").read_text().splitlines():
        src, dest = line.split()
        assert (REPO / src).is_file(), src
        if dest.startswith(("etc/kernel/", "usr/lib/kernel/", "usr/sbin/")):
            assert os.access(REPO / src, os.X_OK), f"{src} must be executable"


def test_relations_of_an_initramfs_generator():
    assert control_field("Provides") == ["linux-initramfs-tool"]
    conflicts = control_field("Conflicts")
    for other in ("dracut", "initramfs-tools", "tiny-initramfs", "live-tools", "linux-initramfs-tool"):
        assert other in conflicts, other
    depends = control_field("Depends")
    for dep in ("python3-cffi-backend", "python3-pyelftools", "python3-prctl", "python3-zstandard", "linux-base"):
        assert dep in depends, dep
    assert "python3-pyroute2" in control_field("Recommends")
    assert (REPO / "debian" / "pyinit.triggers").read_text().count("interest-await update-initramfs") == 1


def test_parse_lintian():
    text = ("W: pyinit: no-manual-page [usr/sbin/update-initramfs]\n"
            "E: pyinit changes: bad-distribution-in-changes-file foo\n"
            "I: pyinit: package-contains-documentation-outside-usr-share-doc [x]\n"
            "running with root privileges is not recommended!\n")
    assert debpkg.parse_lintian(text) == [("W", "no-manual-page"), ("E", "bad-distribution-in-changes-file"),
                                          ("I", "package-contains-documentation-outside-usr-share-doc")]


def test_make_deb_installs_every_build_dependency():
    """devtools/setup.sh deb (make deb) installs what debian/control's Build-Depends names."""
    text = (REPO / "debian" / "control").read_text().split("\n\n", 1)[0]
    m = re.search(r"^Build-Depends:(.*(?:\n[ \t].*)*)", text, re.M)
    build_deps = {item.strip().split(" ")[0] for item in m.group(1).replace("\n", " ").split(",") if item.strip()}
    build_deps.discard("debhelper-compat")  # provided by debhelper
    setup = (REPO / "devtools" / "setup.sh").read_text()
    listed = set(re.search(r'DEB_PACKAGES="([^"]*)"', setup).group(1).split())
    assert build_deps | {"debhelper", "dpkg-dev", "fakeroot", "lintian"} <= listed, build_deps - listed
