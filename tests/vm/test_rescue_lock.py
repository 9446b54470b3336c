"""The lockable rescue console under a real kernel (issue 12, item 4), two boots:

- a `--rescue off` image (with busybox's /bin/sh in it, so a shell *could* run) whose boot
  fails, with rd.shell=1 and rd.break asking for sessions: no session opens, the
  diagnosis is there, pyinit waits for Ctrl-Alt-Del (panic=0), and a command typed at the
  console does not run; QEMU then presses Ctrl-Alt-Del and the machine reboots cleanly;
- a `--rescue password` image (root's yescrypt hash from a shadow file) stopped by
  rd.break: a wrong password first ("Login incorrect"), then the right one opens pyinit's
  console, and `continue` goes on to the real init.
"""
from __future__ import annotations

import ctypes

import pytest

from devtools.qemu import boot
from devtools.rootdisk import make_root_disk
from tests.support.builder import run_builder

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
SERIES = "6.12"
PROMPT = "pyinit rescue> "
ASK = "(or press Control-D to go on without it): "
KEYS = [{"type": "qcode", "data": k} for k in ("ctrl", "alt", "delete")]


def yescrypt(password: bytes) -> str:
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt.restype = ctypes.c_char_p
    return lib.crypt(password, lib.crypt_gensalt(b"$y$", 0, None, 0)).decode()


def build(kernel, out, *extra):
    r = run_builder("build", "-o", str(out), "--kver", kernel.kver, "--moddir", str(kernel.moddir),
                    "--modules", "virtio_blk,ext4", "-q", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_rescue_off_runs_nothing_typed_at_the_console(kernels, tmp_path, console_log):
    kernel = kernels[SERIES]
    image = build(kernel, tmp_path / "off.img", "--busybox", "--rescue", "off")
    listing = run_builder("ls", str(image)).stdout
    assert " bin/sh" in listing or "usr/bin/sh" in listing, listing  # a shell that could have run
    d = make_root_disk(tmp_path / "root.img", label="here")

    def type_then_reset(machine):
        assert machine.wait_for("halted: pyinit keeps running", 240) is not None, machine.text()
        machine.send("echo PWNED-$((6*7)) > /dev/console\n")
        # the kernel's tty echo shows the line arrived; nothing reads it
        assert machine.wait_for("echo PWNED-", 30) is not None, machine.text()
        machine.send("\x04")  # and an end of input, which a session would take as "continue"
        machine.execute("send-key", keys=KEYS)

    r = boot(kernel, image, "root=LABEL=elsewhere rd.timeout=3 rd.shell=1 rd.break=initqueue panic=0",
             disks=[d.path], qmp=True, on_start=type_then_reset, log=console_log, timeout=400)
    c = r.console
    assert not r.timed_out and not r.panicked, r
    # the failure was real, and diagnosed
    assert "pyinit: boot failed at stage initqueue: root device LABEL=elsewhere did not appear within 3 s" in c, r
    assert f'TYPE="ext4" UUID="{d.uuid}" LABEL="here"' in c, r
    # rd.break and rd.shell asked; the image said no, twice
    assert c.count("the rescue console is off in this image (pyinit-mkinitramfs --rescue off)") == 2, r
    assert "rescue shell. Leave it" not in c and "pyinit rescue#" not in c, r
    assert "PWNED-42" not in c, r  # the command never ran
    assert "pyinit: Ctrl-Alt-Del or SIGINT received: reboot" in c and "reboot: Restarting system" in c, r


def test_rescue_password_opens_only_after_the_right_one(kernels, tmp_path, console_log):
    kernel = kernels[SERIES]
    shadow = tmp_path / "shadow"
    shadow.write_text(f"root:{yescrypt(b'right horse')}:19000:0:99999:7:::\n")
    image = build(kernel, tmp_path / "pw.img", "--rescue", "password", "--rescue-password-from", str(shadow))
    listing = run_builder("ls", str(image)).stdout
    assert any(line.startswith("-rw-------") and line.endswith(" etc/pyinit/rescue.shadow")
               for line in listing.splitlines()), listing
    d = make_root_disk(tmp_path / "root.img")
    r = boot(kernel, image, f"root=UUID={d.uuid} rd.break=pre-mount", disks=[d.path], log=console_log, timeout=400,
             console_input=[(ASK, "wrong horse\n"), (ASK, "right horse\n"), (PROMPT, "cat /etc/pyinit/rescue\n"),
                            (PROMPT, "continue\n")])
    c = r.console
    assert not r.timed_out and not r.panicked, r
    assert "pyinit: rd.break=pre-mount: stopped before stage pre-mount" in c, r
    first, second = c.index(ASK), c.index(ASK, c.index(ASK) + 1)
    assert c.index("Login incorrect") in range(first, second), r  # the wrong one was refused...
    assert "rescue: wrong root password (try 1 of 3)" in c, r
    assert c.index("rescue console (no /bin/sh in this image)") > second, r  # ...the console opened after the right one
    session = c.split("rescue console (no /bin/sh", 1)[1]
    assert "password\n" in session, session  # cat /etc/pyinit/rescue, inside the session
    assert "horse" not in c, r  # typed with echo off
    rep = r.report
    assert rep is not None and rep.done and rep.pid == 1, r
    assert rep.mount_at("/").source == "/dev/vda", rep.mounts
