"""update-initramfs (mkinitramfs/update_initramfs.py): initramfs-tools' command line and
which kernels each form acts on, the trigger deferral inside maintainer scripts, and the
whole command against a boot folder in a temporary directory (the builder replaced by a
recorder: the builder itself is tested elsewhere, and VM-tested through this command in
tests/vm/test_lifecycle.py)."""
from __future__ import annotations

import os

import pytest

from mkinitramfs import update_initramfs as ui

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("argv, mode, version, bootdir, verbose", [
    (["-u"], "u", None, "/boot", False),
    (["-c", "-k", "6.1.0-50-amd64"], "c", "6.1.0-50-amd64", "/boot", False),
    (["-d", "-k6.1.0-50-amd64", "-v"], "d", "6.1.0-50-amd64", "/boot", True),
    (["-u", "-k", "all", "-b", "/mnt/boot", "-t"], "u", "all", "/mnt/boot", False),
    (["-c", "-u"], "u", None, "/boot", False),  # the last mode wins
    (["-vuk", "7.3.4+deb13-amd64"], "u", "7.3.4+deb13-amd64", "/boot", True),  # bundled, as getopt allows
])
def test_parse(argv, mode, version, bootdir, verbose):
    req = ui.parse(argv)
    assert (req.mode, req.version, req.bootdir, req.verbose) == (mode, version, bootdir, verbose)


@pytest.mark.parametrize("argv, words", [
    ([], "at least one of -c, -u, or -d"), (["-u", "extra"], "Extra argument 'extra'"),
    (["-x"], "option -x not recognized"), (["-k"], "requires argument"),
])
def test_parse_errors(argv, words):
    with pytest.raises(ui.UsageError, match=words):
        ui.parse(argv)


def test_help():
    assert ui.parse(["-h"]) is None and ui.parse(["--help"]) is None


INSTALLED = ["7.3.4+deb13-amd64", "6.12.95+deb13-amd64", "6.1.0-50-amd64"]  # newest first


def pick(argv, images=("6.12.95+deb13-amd64", "6.1.0-50-amd64"), linked=None, running="6.1.0-50-amd64"):
    return ui.versions_for(ui.parse(argv), INSTALLED, lambda v: v in images, linked, running)


def test_which_kernels():
    assert pick(["-u"]) == ["6.12.95+deb13-amd64"]  # the newest kernel that has an image
    assert pick(["-u", "-k", "all"]) == ["6.12.95+deb13-amd64", "6.1.0-50-amd64"]
    assert pick(["-c", "-k", "all"]) == INSTALLED
    assert pick(["-d", "-k", "all"]) == ["6.12.95+deb13-amd64", "6.1.0-50-amd64"]
    assert pick(["-u", "-k", "7.3.4+deb13-amd64"]) == ["7.3.4+deb13-amd64"]  # named: made if missing
    # no image at all: the linked one, then the running one if it has an image, else nothing
    assert pick(["-u"], images=(), linked="6.1.0-50-amd64") == ["6.1.0-50-amd64"]
    assert pick(["-u"], images=()) == []
    for argv, words in [(["-c"], "Create mode requires a version"), (["-d"], "Delete mode requires a version")]:
        with pytest.raises(ui.UsageError, match=words):
            pick(argv)


def test_deferral_only_for_a_lone_u_in_a_maintainer_script():
    script = {"DPKG_MAINTSCRIPT_PACKAGE": "lvm2"}
    assert ui.defers(["-u"], script)
    assert not ui.defers(["-u"], {})
    assert not ui.defers(["-u", "-k", "all"], script)
    assert not ui.defers(["-c", "-k", "6.1.0-50-amd64"], script)  # the kernel hooks: at once


def test_natural_order_without_linux_version():
    versions = ["6.1.0-9-amd64", "6.1.0-50-amd64", "6.12.95+deb13-amd64", "7.3.4+deb13-amd64"]
    assert sorted(versions, key=ui._natural, reverse=True) == \
        ["7.3.4+deb13-amd64", "6.12.95+deb13-amd64", "6.1.0-50-amd64", "6.1.0-9-amd64"]


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A boot folder with three kernels, two images; builds and post-update hooks recorded."""
    boot = tmp_path / "boot"
    boot.mkdir()
    for v in INSTALLED:
        (boot / f"vmlinuz-{v}").write_bytes(b"kernel")
    for v in INSTALLED[1:]:
        (boot / f"initrd.img-{v}").write_bytes(b"old")
    (boot / f"initrd.img-{INSTALLED[2]}.bak").write_bytes(b"older")
    calls = []

    def fake_build(version, bootdir, verbose):
        calls.append(("build", version))
        (boot / f"initrd.img-{version}").write_bytes(b"new")
        return 0

    monkeypatch.setattr(ui, "build", fake_build)
    monkeypatch.setattr(ui, "post_update", lambda v, image: calls.append(("post-update", v, image)) or 0)
    monkeypatch.setattr(ui, "installed_versions", lambda bootdir: list(INSTALLED))
    monkeypatch.setattr(ui, "linked_version", lambda: None)
    monkeypatch.setattr(ui, "boot_is_readonly", lambda bootdir: False)
    return boot, calls


def test_update_all_rebuilds_each_image_and_runs_the_post_update_hooks(machine):
    boot, calls = machine
    assert ui.main(["-u", "-k", "all", "-b", str(boot)], environ={}) == 0
    assert calls == [("build", INSTALLED[1]), ("post-update", INSTALLED[1], str(boot / f"initrd.img-{INSTALLED[1]}")),
                     ("build", INSTALLED[2]), ("post-update", INSTALLED[2], str(boot / f"initrd.img-{INSTALLED[2]}"))]


def test_create_and_delete(machine, capsys):
    boot, calls = machine
    assert ui.main(["-c", "-k", INSTALLED[0], "-b", str(boot)], environ={}) == 0
    assert (boot / f"initrd.img-{INSTALLED[0]}").read_bytes() == b"new"
    created = [("build", INSTALLED[0]), ("post-update", INSTALLED[0], str(boot / f"initrd.img-{INSTALLED[0]}"))]
    assert calls == created
    assert ui.main(["-d", "-k", INSTALLED[2], "-b", str(boot)], environ={}) == 0
    assert not (boot / f"initrd.img-{INSTALLED[2]}").exists()
    assert not (boot / f"initrd.img-{INSTALLED[2]}.bak").exists()
    assert calls == created  # deleting builds nothing and runs no post-update hook
    assert (boot / f"vmlinuz-{INSTALLED[2]}").exists()
    assert f"update-initramfs: Deleting {boot}/initrd.img-{INSTALLED[2]}" in capsys.readouterr().out


def test_a_failed_build_stops_with_its_status(machine, monkeypatch):
    boot, calls = machine
    monkeypatch.setattr(ui, "build", lambda version, bootdir, verbose: calls.append(("build", version)) or 1)
    assert ui.main(["-u", "-k", "all", "-b", str(boot)], environ={}) == 1
    assert calls == [("build", INSTALLED[1])]  # no post-update hook, no further kernel


def test_read_only_boot_is_left_alone(machine, monkeypatch, capsys):
    boot, calls = machine
    monkeypatch.setattr(ui, "boot_is_readonly", lambda bootdir: True)
    monkeypatch.setattr(ui, "in_chroot", lambda: False)
    assert ui.main(["-u", "-b", str(boot)], environ={}) == 0
    assert calls == [] and "is ro mounted" in capsys.readouterr().err


def test_usage_errors_exit_2(machine, capsys):
    boot, _ = machine
    assert ui.main(["-c", "-b", str(boot)], environ={}) == 2
    assert "Create mode requires a version argument" in capsys.readouterr().err
    assert ui.main(["-u", "-b", str(boot / "nowhere")], environ={}) == 1


def test_in_a_maintainer_script_a_lone_u_activates_the_trigger(machine, monkeypatch, capsys, tmp_path):
    _, calls = machine
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "trigger.log"
    (bin_dir / "dpkg-trigger").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    os.chmod(bin_dir / "dpkg-trigger", 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert ui.main(["-u"], environ={"DPKG_MAINTSCRIPT_PACKAGE": "lvm2"}) == 0
    assert log.read_text() == "--no-await update-initramfs\n"
    assert "deferring update (trigger activated)" in capsys.readouterr().out
    assert calls == []
