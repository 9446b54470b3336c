"""The lockable rescue console (issue 12, item 4): the builder packs the policy and root's
hash (0600), pyinit checks a typed password with libxcrypt's crypt(3) through cffi, and
`off` or a wrong password opens nothing, whatever rd.shell / rd.break say. The boots are in
tests/vm/test_rescue_lock.py."""
import ctypes
import stat

import pytest

from mkinitramfs.image import Image
from pyinit import rescue, syscalls

pytestmark = pytest.mark.unit


def yescrypt(password: bytes) -> bytes:
    """A fresh $y$ hash made by the host's libcrypt (as passwd would), independently of pyinit."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt.restype = ctypes.c_char_p
    return lib.crypt(password, lib.crypt_gensalt(b"$y$", 0, None, 0))


def test_crypt_through_cffi_agrees_with_libcrypt():
    h = yescrypt(b"right")
    assert h.startswith(b"$y$")
    assert syscalls.crypt(b"right", h) == h and syscalls.crypt(b"wrong", h) != h
    sha = ctypes.CDLL("libcrypt.so.1")
    sha.crypt.restype = ctypes.c_char_p
    h6 = sha.crypt(b"right", b"$6$saltsalt$")
    assert syscalls.crypt(b"right", h6) == h6
    assert syscalls.crypt(b"x", b"!") is None and syscalls.crypt(b"x", b"") is None


@pytest.mark.parametrize("line, error", [
    ("root:!:19000::::::", "no password to check"),
    ("root:*:19000::::::", "no password to check"),
    ("root::19000::::::", "no password to check"),
    ("daemon:*:19000::::::", "no root entry"),
    ("root:plaintext:1::::::", r"not a crypt\(3\) hash"),
])
def test_root_hash_refuses_what_cannot_be_checked(line, error):
    from mkinitramfs import rescue as build_rescue
    with pytest.raises(build_rescue.RescueError, match=error):
        build_rescue.root_hash(line + "\n", "/etc/shadow")


def test_the_builder_packs_the_policy_and_a_0600_hash_with_libcrypt(tmp_path):
    from mkinitramfs import rescue as build_rescue
    shadow = tmp_path / "shadow"
    h = yescrypt(b"right").decode()
    shadow.write_text(f"daemon:*:1::::::\nroot:{h}:19000:0:99999:7:::\n")
    img = Image()
    build_rescue.add_rescue(img, "password", str(shadow))
    assert img.entries["/etc/pyinit/rescue"].content() == b"password\n"
    packed = img.entries["/etc/pyinit/rescue.shadow"]
    assert packed.content() == h.encode() + b"\n" and packed.mode == 0o600
    assert any(p.endswith("/libcrypt.so.1") for p in img.entries)
    off = Image()
    build_rescue.add_rescue(off, "off", None)
    assert off.entries["/etc/pyinit/rescue"].content() == b"off\n" and "/etc/pyinit/rescue.shadow" not in off.entries
    with pytest.raises(build_rescue.RescueError, match="needs --rescue-password-from"):
        build_rescue.add_rescue(Image(), "password", None)


@pytest.fixture
def image_files(tmp_path, monkeypatch):
    policy, hashfile = tmp_path / "rescue", tmp_path / "rescue.shadow"
    monkeypatch.setattr(rescue, "RESCUE_POLICY", str(policy))
    monkeypatch.setattr(rescue, "RESCUE_SHADOW", str(hashfile))
    monkeypatch.setattr(rescue, "_say", lambda ctx, text: None)
    return policy, hashfile


class Ctx:
    console = None


def typing(monkeypatch, answers):
    from pyinit import askpass
    asked = []

    def read_line(prompt, console="/dev/console"):
        asked.append(prompt)
        return answers.pop(0) if answers else None
    monkeypatch.setattr(askpass, "read_line", read_line)
    return asked


def test_password_opens_only_after_the_right_one(image_files, monkeypatch):
    policy, hashfile = image_files
    policy.write_text("password\n")
    hashfile.write_bytes(yescrypt(b"right") + b"\n")
    asked = typing(monkeypatch, ["wrong", "right"])
    assert rescue.authorize(Ctx(), "boot failed") is True and len(asked) == 2
    asked = typing(monkeypatch, ["wrong", "nope", "again", "right"])
    assert rescue.authorize(Ctx(), "boot failed") is False and len(asked) == rescue.PASSWORD_TRIES
    typing(monkeypatch, [])  # Ctrl-D
    assert rescue.authorize(Ctx(), "boot failed") is False


def test_off_and_broken_policies_open_nothing(image_files, monkeypatch):
    policy, _ = image_files
    asked = typing(monkeypatch, ["anything"])
    policy.write_text("off\n")
    assert rescue.authorize(Ctx(), "x") is False and asked == []
    assert rescue.session(Ctx(), "x") == "refused"
    policy.write_text("sometimes\n")  # a file that names no policy: closed
    assert rescue.policy(str(policy)) == "off"
    policy.write_text("password\n")  # no hash file: closed
    assert rescue.authorize(Ctx(), "x") is False
    policy.unlink()  # an image built before --rescue: open, as before
    assert rescue.policy(str(policy)) == "open" and rescue.authorize(Ctx(), "x") is True


def test_the_lock_is_not_a_command_line_word():
    """rd.shell / rd.break decide whether to offer a session; the image decides who gets one:
    nothing of the policy is read from the command line."""
    import inspect
    src = inspect.getsource(rescue.authorize) + inspect.getsource(rescue.policy)
    assert "cmdline" not in src and "rd." not in src
    assert stat.S_IMODE(0o600) == 0o600
