"""The build mode rule (mkinitramfs/mode.py): explicit, host-only, generic, and the default:
host-only on the machine itself with its root in sight, generic in a chroot or container."""
from __future__ import annotations

import os

import pytest

from mkinitramfs import mode

pytestmark = pytest.mark.unit

HOST = ("22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "23 22 0:5 / /dev rw - devtmpfs devtmpfs rw\n")
# mmdebstrap's chroot: the host's ext4, seen from a folder of it
CHROOT = ("301 300 254:0 /tmp/mmdebstrap.Xy12 / rw,relatime - ext4 /dev/vda rw\n"
          "302 301 0:21 / /proc rw - proc proc rw\n")
# a btrfs subvolume mounted as the root: a whole tree
SUBVOL = "30 1 0:33 /@rootfs / rw,relatime - btrfs /dev/nvme0n1p2 rw,ssd,space_cache=v2,subvolid=256,subvol=/@rootfs\n"
OVERLAY = "500 400 0:52 / / rw - overlay overlay rw,lowerdir=/var/lib/docker/l/A\n"


@pytest.mark.parametrize("text, problem", [
    (HOST, None), (SUBVOL, None), (OVERLAY, None),
    (CHROOT, "/ is the folder /tmp/mmdebstrap.Xy12 of the ext4 filesystem on /dev/vda"),
    # a chroot into a folder: the mount holding it is outside, so not listed at all
    ("302 301 0:21 / /proc rw - proc proc rw\n", "no filesystem is mounted at /"),
    # escapes in mountinfo: a space in the target folder
    ("1 0 8:1 /srv/my\\040root / rw - ext4 /dev/sda1 rw\n", "the folder /srv/my root of"),
    # the last mount at / is the one seen
    (HOST + CHROOT.splitlines()[0] + "\n", "/tmp/mmdebstrap.Xy12"),
])
def test_tree_is_not_its_filesystem(text, problem):
    found = mode.tree_is_not_its_filesystem(text)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def fake_proc(tmp_path, *, pid1_root, mountinfo=HOST, environ=b"HOME=/\0TERM=linux\0"):
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "self").mkdir()
    (proc / "self" / "mountinfo").write_text(mountinfo)
    if environ is not None:
        (proc / "1" / "environ").write_bytes(environ)
    if pid1_root is not None:
        os.symlink(pid1_root, proc / "1" / "root")
    return proc


def test_confinement_on_the_machine_itself(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    proc = fake_proc(tmp_path, pid1_root=root)
    assert mode.confinement(str(root), str(proc), str(tmp_path / "run")) is None


def test_confinement_in_a_chroot_by_pid1s_root(tmp_path):
    root, other = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    other.mkdir()
    proc = fake_proc(tmp_path, pid1_root=other)
    assert mode.confinement(str(root), str(proc), str(tmp_path / "run")) == "a chroot (/ is not PID 1's root)"


def test_confinement_by_mountinfo_when_pid1s_root_cannot_be_read(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    proc = fake_proc(tmp_path, pid1_root=None, mountinfo=CHROOT)
    why = mode.confinement(str(root), str(proc), str(tmp_path / "run"))
    assert why.startswith("a chroot or container (/ is the folder /tmp/mmdebstrap.Xy12"), why
    # and no /proc at all
    assert "is not mounted" in mode.confinement(str(root), str(tmp_path / "noproc"), str(tmp_path / "run"))


def test_confinement_in_containers(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    proc = fake_proc(tmp_path, pid1_root=root, environ=b"PATH=/bin\0container=podman\0")
    assert mode.confinement(str(root), str(proc), str(tmp_path / "run")) == \
        "a container (container=podman in PID 1's environment)"
    run = tmp_path / "run"
    (run / "systemd").mkdir(parents=True)
    (run / "systemd" / "container").write_text("systemd-nspawn\n")
    proc2 = fake_proc(tmp_path / "b", pid1_root=root, environ=None)
    assert mode.confinement(str(root), str(proc2), str(run)) == \
        "a container (systemd-nspawn, from " + str(run) + "/systemd/container)"


def test_dockerenv_alone_is_not_a_container(tmp_path):
    root = tmp_path / "root"
    (root).mkdir()
    (root / ".dockerenv").write_text("")
    proc = fake_proc(tmp_path, pid1_root=root)
    assert mode.confinement(str(root), str(proc), str(tmp_path / "run")) is None


def choose(**kw):
    kw.setdefault("host_only", False)
    kw.setdefault("generic", False)
    kw.setdefault("modules", [])
    kw.setdefault("confined", lambda: None)
    kw.setdefault("root_visible", lambda: None)
    kw.setdefault("tree_problem", lambda: None)
    return mode.choose(**kw)


def test_named_modes_keep_their_meaning():
    assert choose(generic=True) == ("generic", "")
    assert choose(host_only=True) == ("host-only", "")
    assert choose(modules=["virtio_blk,ext4"]) == ("explicit", "")
    assert choose(modules=[","]) [0] == "host-only"  # no module named: the default rule
    with pytest.raises(mode.ModeError, match="exclude each other"):
        choose(host_only=True, generic=True)
    # --generic never asks where it runs
    assert choose(generic=True, confined=lambda: pytest.fail("asked"))[0] == "generic"


def test_the_default_on_the_machine_itself_is_host_only():
    m, why = choose()
    assert m == "host-only" and "built on the machine it is for" in why


def test_the_default_in_a_chroot_is_generic_and_says_why():
    m, why = choose(confined=lambda: "a chroot (/ is not PID 1's root)",
                    root_visible=lambda: pytest.fail("host-only detection must not run in a chroot"))
    assert m == "generic"
    assert why.startswith("generic image: this build runs in a chroot (/ is not PID 1's root)")


def test_the_default_without_a_visible_root_is_generic():
    m, why = choose(root_visible=lambda: "the root filesystem is overlay on overlay, which is not a block device")
    assert m == "generic" and "overlay on overlay" in why


def test_explicit_host_only_in_a_chroot():
    # a folder of another filesystem (mmdebstrap's target): refused, naming what was found
    with pytest.raises(mode.ModeError) as e:
        choose(host_only=True, confined=lambda: "a chroot (/ is not PID 1's root)",
               tree_problem=lambda: "/ is the folder /tmp/x of the ext4 filesystem on /dev/vda, not a filesystem")
    assert "--host-only cannot work here" in str(e.value) and "/tmp/x" in str(e.value) and "--generic" in str(e.value)
    # a whole filesystem mounted at / (a rescue chroot, debian-installer's /target): done, and said
    m, why = choose(host_only=True, confined=lambda: "a chroot (/ is not PID 1's root)")
    assert m == "host-only" and "as asked, in a chroot" in why
