"""The builder against hostile hosts (issue 12, items 8-9): secret detection that folder
includes cannot walk around, PGP private keys, the dracut-install path checked as build
is, and an atomic write that no planted symlink or swapped name can redirect."""
import os
import stat

import pytest

from mkinitramfs import atomic, dracut, include, safety
from mkinitramfs.errors import BuildError
from mkinitramfs.image import Image
from mkinitramfs.include import IncludeError

pytestmark = pytest.mark.unit

PEM = (b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + b"b3BlbnNzaC1rZXktdjEAAAAA" * 4
       + b"\n-----END OPENSSH PRIVATE KEY-----\n")
PGP = (b"-----BEGIN PGP PRIVATE KEY BLOCK-----\nComment: a test key\n\n"
       b"lQOYBGXkZQoBCADKp1u0q2ZlYW5k3xQm9yQm9yQm9yQm9yQm9yQm9yQm9yQm9yQm9yQm9y\n=abcd\n"
       b"-----END PGP PRIVATE KEY BLOCK-----\n")


def test_a_folder_include_does_not_follow_a_symlink_out_of_the_folder(tmp_path):
    """/etc/foo/key -> /root/secret: the folder's contents are checked, and the secret
    outside must not come along through the link (it used to, and as a folder's content
    it was then... packed silently only if its content did not look like a key)."""
    secret = tmp_path / "root" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"the root password is hunter2\n")
    folder = tmp_path / "etc" / "foo"
    folder.mkdir(parents=True)
    (folder / "conf").write_text("x=1\n")
    os.symlink(secret, folder / "key")
    os.symlink("conf", folder / "alias")  # inside: followed
    img = Image()
    include.add_include(img, str(folder), "/etc/foo")
    key = img.entries["/etc/foo/key"]
    assert key.kind == "symlink" and key.target == str(secret)
    assert img.entries["/etc/foo/alias"].kind == "file"
    assert all(b"hunter2" not in (e.content() or b"") for e in img.entries.values() if e.kind == "file")


def test_a_symlink_loop_in_a_folder_include_is_an_error(tmp_path):
    folder = tmp_path / "conf"
    (folder / "sub").mkdir(parents=True)
    os.symlink("..", folder / "sub" / "up")
    with pytest.raises(IncludeError, match=r"symlink loop"):
        include.add_include(Image(), str(folder), "/etc/conf")


def test_pgp_and_gnupg_private_keys_are_secrets():
    assert safety.secret_reason("/etc/keys/signing.asc", PGP) == "it holds a PGP private key block"
    assert safety.secret_reason("/etc/x", b"(21:protected-private-key(3:rsa(1:n257:") == "it is a GnuPG private key"
    assert safety.secret_reason("/root/.gnupg/private-keys-v1.d/ABCD.key", None) is not None
    # a library that only names the armor line is not a key
    assert safety.secret_reason("/usr/lib/libgpgme.so", b"\x7fELF ... -----BEGIN PGP PRIVATE KEY BLOCK-----") is None
    assert safety.secret_reason("/usr/share/doc", b"say -----BEGIN PGP PRIVATE KEY BLOCK----- in a sentence") is None


def test_dracut_install_refuses_secrets_as_build_does(tmp_path, monkeypatch):
    img = Image()
    img.add_file("/init", data=b"#!/usr/bin/python3 -IS\n", mode=0o755)
    img.add_file("/etc/keys/signing.asc", data=PGP)
    monkeypatch.setattr(dracut, "assemble", lambda *a, **k: img)
    staging = tmp_path / "initdir"
    staging.mkdir()
    with pytest.raises(safety.SafetyError, match=r"/etc/keys/signing.asc: looks like a secret"):
        dracut.install(str(staging), "6.1.0-x")
    assert not (staging / "etc" / "keys" / "signing.asc").exists()
    # asked for by name: packed
    assert dracut.install(str(staging), "6.1.0-x", allow_secrets=["/etc/keys/*"]) >= 2


def test_atomic_write_never_follows_a_planted_symlink(tmp_path):
    """The old temporary name (.NAME.tmpPID) was predictable and opened with O_TRUNC: a
    symlink planted there made root truncate and overwrite its target."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "initrd.img"
    for name in (f".initrd.img.tmp{os.getpid()}", ".initrd.img.tmp"):
        os.symlink(victim, tmp_path / name)
    atomic.write_atomically(str(out), b"image", mode=0o600)
    assert victim.read_bytes() == b"precious"
    assert out.read_bytes() == b"image" and stat.S_IMODE(out.stat().st_mode) == 0o600


def test_atomic_write_sets_the_mode_on_the_descriptor_and_checks_the_name(tmp_path, monkeypatch):
    """Someone swaps the temporary name for a symlink to a victim after the data is written:
    the mode must not reach the victim (chmod by name did), and the swapped name must not
    be renamed over the image."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o640)
    out = tmp_path / "initrd.img"
    real_fsync = os.fsync

    def fsync_then_swap(fd):
        real_fsync(fd)
        for name in os.listdir(tmp_path):
            if name.startswith(".initrd.img.tmp"):
                os.unlink(tmp_path / name)
                os.symlink(victim, tmp_path / name)
    monkeypatch.setattr(os, "fsync", fsync_then_swap)
    with pytest.raises(BuildError, match="replaced by something else"):
        atomic.write_atomically(str(out), b"image", mode=0o600)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o640 and victim.read_bytes() == b"precious"
    assert not out.exists()
