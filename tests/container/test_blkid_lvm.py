"""The LVM2_member probe against blkid on a physical volume made by the real pvcreate.

pvcreate refuses plain files, so the image is put on a loop device (root needed; no
device-mapper: pvcreate writes the label without activating anything)."""
from __future__ import annotations

import os
import subprocess

import pytest

from pyinit import blkid
from tests.support.hosttools import blank, blkid_export, tool

pytestmark = pytest.mark.container


def test_lvm2_member_agrees_with_blkid(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the LVM probe test needs root (losetup, pvcreate)", pytrace=False)
    img = blank(tmp_path / "pv.img", 16)
    loop = subprocess.run([tool("losetup"), "-f", "--show", str(img)], capture_output=True, text=True)
    assert loop.returncode == 0, loop.stderr
    dev = loop.stdout.strip()
    try:
        # The lvm tools complain about inherited fds (pytest's); LVM_SUPPRESS_FD_WARNINGS quiets that.
        env = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}
        pv = subprocess.run([tool("pvcreate"), "-y", "-ff", "--norestorefile",
                             "--uuid", "Pyinit-Test-UUID-aaaa-bbbb-cccc-dddddd", dev],
                            capture_output=True, text=True, env=env)
        assert pv.returncode == 0, pv.stderr
    finally:
        subprocess.run([tool("losetup"), "-d", dev])
    theirs = blkid_export(img)
    with open(img, "rb") as f:
        ours = blkid.probe(f)
    assert theirs["TYPE"] == "LVM2_member"
    assert ours == {"TYPE": "LVM2_member", "VERSION": theirs["VERSION"], "UUID": theirs["UUID"]}
    assert ours["UUID"] == "Pyinit-Test-UUID-aaaa-bbbb-cccc-dddddd"
