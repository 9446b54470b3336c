"""The linux_raid_member probe against blkid on md members made by the real mdadm.

This host's kernel has no md driver, so mdadm runs in a guest (devtools.diskbuilder: Debian's
kernel, md_mod and raid1, a shell recipe); the members it wrote are then probed here, by
pyinit and by util-linux's blkid, for each superblock format: 0.90 and 1.0 at the end of the
device, 1.1 at its start, 1.2 at 4 KiB."""
from __future__ import annotations

import pytest

from devtools.diskbuilder import build_disks
from devtools.rootdisk import make_root_disk
from pyinit import blkid
from tests.support.hosttools import blkid_export

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

RECIPE = """
md() { mdadm --create "$@" --run --level=1 --raid-devices=2 --homehost=pyinit; }
md /dev/md0 --metadata=1.2 --name=twelve /dev/vda /dev/vdb
md /dev/md1 --metadata=0.90 /dev/vdc missing
md /dev/md2 --metadata=1.0 --name=ten /dev/vdd missing
md /dev/md3 --metadata=1.1 --name=eleven /dev/vde missing
for n in 0 1 2 3; do mdadm --stop /dev/md$n; done
"""
MEMBERS = [("md12a.img", "1.2"), ("md12b.img", "1.2"), ("md090.img", "0.90"), ("md10.img", "1.0"),
           ("md11.img", "1.1")]


@pytest.fixture(scope="module")
def members(kernels, tmp_path_factory, artifacts):
    root = make_root_disk(tmp_path_factory.mktemp("mdroot") / "root.img", size_mb=16)
    return build_disks(kernels["6.1"], RECIPE, [(name, 16) for name, _ in MEMBERS], root.path,
                       root_key="md-probe-members", log=artifacts / "md_diskbuilder.log")


@pytest.mark.parametrize("index", range(len(MEMBERS)), ids=[f"{n}-{v}" for n, v in MEMBERS])
def test_md_member_agrees_with_blkid(index, members):
    path = members[index]
    theirs = blkid_export(path)
    assert theirs.get("TYPE") == "linux_raid_member", f"mdadm did not make a member: {theirs}"
    with open(path, "rb") as f:
        ours = blkid.probe(f)
    for key in ("TYPE", "UUID", "UUID_SUB", "LABEL"):
        assert ours.get(key) == theirs.get(key), f"{key}: ours {ours}, blkid {theirs}"
    assert ours["VERSION"].startswith(MEMBERS[index][1]), ours
    if index == 1:  # the two 1.2 members share the array's UUID, each has its own device UUID
        with open(members[0], "rb") as f:
            first = blkid.probe(f)
        assert first["UUID"] == ours["UUID"] and first["UUID_SUB"] != ours["UUID_SUB"]
