"""The unlock side of the luks hook, pure parts: crypttab(5) parsing, rd.luks.* over crypttab,
the LUKS2 metadata (tokens, Argon2 memory), the prompt on several consoles (ptys), secrets
wiped, and the builder's dlopen lists checked by verify."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

from pyinit import askpass, cmdline, crypttab, luks2
from tests.support.hooks import load_hook

pytestmark = pytest.mark.unit
U1 = "5e1f0000-0000-4000-8000-0000000000aa"
U2 = "5e1f0000-0000-4000-8000-0000000000bb"


# -- crypttab(5) -------------------------------------------------------------------------

def test_crypttab_fields_comments_quotes_and_keyfile_forms():
    text = f"""
# comment
root   UUID={U1}   none   discard,tries=2
 swap /dev/sda3 /dev/urandom swap,cipher=aes-xts-plain64,size=512
data  LABEL=data  /etc/keys/data.key:UUID={U2}  keyfile-offset=16,keyfile-size=32,keyfile-timeout=10s
"odd name" PARTUUID=abc -
bare /dev/vdb
"""
    entries, problems = crypttab.parse(text)
    assert problems == []
    root, swap, data, odd, bare = entries
    assert (root.name, root.uuid, root.keyfile) == ("root", U1, None)
    assert root.options.discard and root.options.tries == 2 and root.options.given == ["discard", "tries"]
    assert swap.keyfile == "/dev/urandom" and swap.options.unknown == ["swap"]
    assert data.keyfile_path == "/etc/keys/data.key" and data.keyfile_device == f"UUID={U2}"
    assert (data.options.keyfile_offset, data.options.keyfile_size, data.options.keyfile_timeout) == (16, 32, 10.0)
    assert odd.name == "odd name" and odd.keyfile is None
    assert bare.keyfile is None and bare.options.tries == crypttab.DEFAULT_TRIES
    # what the builder writes reads back the same
    again, _ = crypttab.parse(crypttab.format_entries(entries))
    assert [(e.name, e.device, e.keyfile, e.options_text) for e in again] == \
           [(e.name, e.device, e.keyfile, e.options_text) for e in entries]


@pytest.mark.parametrize("line, words", [
    ("onlyname", "2 fields" if False else "got 1 fields"),
    ("a b c d e", "got 5 fields"),
    ("a/b UUID=x none", "no '/' allowed"),
    ("a UUID=x relative.key", "absolute path"),
    ("a UUID=x none tries=two", "tries=two: not a whole number"),
    ("a UUID=x none tries=-1", "must be at least 0"),
    ("a UUID=x none timeout=5parsecs", "unknown time unit"),
    ("a UUID=x none header=hdr.img", "absolute path to the detached header"),
    ("a UUID=x none keyfile-size=0", "at least 1"),
    ("a UUID=x none tries", "tries needs a value"),
    ('a "UUID=x none', "unterminated"),
])
def test_crypttab_bad_lines_are_named_and_skipped(line, words):
    entries, problems = crypttab.parse(f"good UUID={U1}\n{line}\n")
    assert [e.name for e in entries] == ["good"]
    assert len(problems) == 1 and problems[0].startswith("line 2: ") and words in problems[0], problems


def test_crypttab_duplicate_names_keep_the_first():
    entries, problems = crypttab.parse(f"a UUID={U1}\na UUID={U2}\n")
    assert [e.uuid for e in entries] == [U1] and "listed twice" in problems[0]


@pytest.mark.parametrize("text, seconds", [("30", 30), ("30s", 30), ("500ms", 0.5), ("2min", 120), ("1h", 3600),
                                           ("1min 30s", 90), ("1.5s", 1.5), ("0", 0)])
def test_timespans(text, seconds):
    assert crypttab.parse_timespan(text) == pytest.approx(seconds)


def test_options_map_to_cryptsetup_and_systemd_flags():
    o = crypttab.parse_options("discard,read-only,same-cpu-crypt,no-read-workqueue,header=/etc/h.img,luks,initramfs")
    assert o.cryptsetup_args() == ["--allow-discards", "--readonly", "--perf-same_cpu_crypt",
                                   "--perf-no_read_workqueue", "--header", "/etc/h.img"]
    assert o.systemd_options() == ["discard", "no-read-workqueue", "read-only", "same-cpu-crypt", "header=/etc/h.img"]
    assert o.unknown == []  # Debian's luks and initramfs words are known and change nothing
    t = crypttab.parse_options("tpm2-device=auto,fido2-device=,token-timeout=2min,headless,timeout=0")
    assert (t.tpm2_device, t.fido2_device, t.token_timeout, t.headless, t.timeout) == ("auto", "", 120, True, 0)


def test_cmdline_options_split_per_device():
    common, per = crypttab.cmdline_options(["tpm2-device=auto", f"{U1}=discard", f"luks-{U1}=tries=5", None])
    assert common == "tpm2-device=auto" and per == {U1: "discard,tries=5"}


# -- rd.luks.* over the image's crypttab -----------------------------------------------------

@pytest.fixture(scope="module")
def luks():
    return load_hook("luks")


def test_command_line_wins_over_crypttab_option_by_option(luks):
    table = f"cryptroot UUID={U1} /etc/keys/root.key discard,tries=2,timeout=30\nlater UUID={U2} none noauto\n"
    c = cmdline.parse(f"root=/dev/mapper/cryptroot rd.luks.options={U1}=tries=4 rd.luks.options=headless")
    opts = luks.parse_options(c, table)
    o = opts.options_for(U1)
    assert (o.discard, o.tries, o.timeout, o.headless) == (True, 4, 30.0, True)
    assert opts.name_for(U1) == "cryptroot" and opts.keys_for(U1) == [("/etc/keys/root.key", None)]
    assert opts.wanted(U1) and not opts.wanted(U2)  # noauto
    assert opts.required() == [U1]
    # rd.luks.name / rd.luks.key / rd.luks.uuid win
    c = cmdline.parse(f"rd.luks.name={U1}=other rd.luks.key={U1}=/k1:LABEL=keys rd.luks.uuid={U2}")
    opts = luks.parse_options(c, table)
    assert opts.name_for(U1) == "other" and opts.keys_for(U1) == [("/k1", "LABEL=keys")]
    assert opts.wanted(U2) and opts.required() == [U2, U1]
    # rd.luks.crypttab=0: the table is not read
    opts = luks.parse_options(cmdline.parse("rd.luks.crypttab=0"), table)
    assert opts.crypttab == [] and opts.name_for(U1) == f"luks-{U1}"


@pytest.mark.parametrize("line, words", [("rd.luks.key=", "needs"), ("rd.luks.key=relative", "absolute"),
                                         # the message quotes the word as written, its UUID= too
                                         (f"rd.luks.key={U1}=k:/dev/vdb", f"rd.luks.key={U1}=k:/dev/vdb: "),
                                         ("rd.luks.options=tries=x", "rd.luks.options: tries=x"),
                                         ("rd.luks.name=nope", "UUID=NAME")])
def test_bad_command_line_words(luks, line, words):
    with pytest.raises(ValueError, match=words):
        luks.parse_options(cmdline.parse(line))


def test_packed_keyfile_users(luks):
    """A key file is unlinked once all the devices it opens are open; with rd.luks.key=PATH
    and no rd.luks.uuid, any device found may use it: it stays until pre-mount."""
    opts = luks.parse_options(cmdline.parse(f"rd.luks.key=/k rd.luks.uuid={U1} rd.luks.uuid={U2}"))
    assert luks.key_users(opts, "/k") == {U1, U2}
    assert luks.key_users(luks.parse_options(cmdline.parse("rd.luks.key=/k")), "/k") is None
    opts = luks.parse_options(cmdline.parse(""), f"a UUID={U1} /k\nb UUID={U2} /k2\n")
    assert luks.key_users(opts, "/k") == {U1} and luks.key_users(opts, "/k2") == {U2}


def test_fido2_and_tpm2_devices_are_found_in_sysfs(luks, tmp_path):
    sysc, dev = tmp_path / "class", tmp_path / "dev"
    (sysc / "hidraw" / "hidraw0" / "device").mkdir(parents=True)
    (sysc / "hidraw" / "hidraw0" / "device" / "report_descriptor").write_bytes(b"\x05\x01\x09\x06")  # a keyboard
    dev.mkdir()
    (dev / "hidraw0").touch()
    assert luks.find_fido2("auto", str(sysc), str(dev)) is None
    (sysc / "hidraw" / "hidraw1" / "device").mkdir(parents=True)
    (sysc / "hidraw" / "hidraw1" / "device" / "report_descriptor").write_bytes(b"\x06\xd0\xf1\x09\x01")
    assert luks.find_fido2("auto", str(sysc), str(dev)) is None  # no node yet
    (dev / "hidraw1").touch()
    assert luks.find_fido2("auto", str(sysc), str(dev)) == "auto"
    assert luks.find_tpm2("auto", str(sysc), str(dev)) is None
    (sysc / "tpmrm" / "tpmrm0").mkdir(parents=True)
    (dev / "tpmrm0").touch()
    assert luks.find_tpm2("auto", str(sysc), str(dev)) == str(dev / "tpmrm0")
    assert luks.find_tpm2(str(dev / "tpm9"), str(sysc), str(dev)) is None


# -- LUKS2 metadata -------------------------------------------------------------------------

def luks2_header(meta: dict, size: int = 16384) -> bytes:
    head = bytearray(4096)
    head[:6] = luks2.MAGIC
    head[6:8] = (2).to_bytes(2, "big")
    head[8:16] = size.to_bytes(8, "big")
    area = json.dumps(meta).encode()
    return bytes(head) + area + bytes(size - 4096 - len(area))


META = {"keyslots": {"0": {"type": "luks2", "kdf": {"type": "argon2id", "memory": 1048576, "time": 4, "cpus": 1}},
                     "1": {"type": "luks2", "kdf": {"type": "pbkdf2", "hash": "sha512", "iterations": 1000}},
                     "2": {"type": "luks2", "kdf": {"type": "argon2id", "memory": 65536}}},
        "tokens": {"0": {"type": "systemd-tpm2", "keyslots": ["1"], "tpm2-pin": False},
                   "1": {"type": "systemd-recovery", "keyslots": ["2"]},
                   "2": {"type": "systemd-fido2", "keyslots": ["3"], "fido2-clientPin-required": True}}}


def test_luks2_metadata_tokens_and_keyslots(tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(luks2_header(META) + bytes(4096))
    meta = luks2.read_metadata(str(disk))
    assert [(t.id, t.type, t.keyslots, t.needs_pin) for t in luks2.tokens(meta)] == \
           [("0", "systemd-tpm2", ["1"], False), ("1", "systemd-recovery", ["2"], False),
            ("2", "systemd-fido2", ["3"], True)]
    # the TPM2 and FIDO2 keyslots hold random keys: a typed passphrase can open 0 and 2
    assert [s.id for s in luks2.passphrase_keyslots(meta)] == ["0", "2"]
    luks1 = tmp_path / "l1.img"
    luks1.write_bytes(b"LUKS\xba\xbe\x00\x01" + bytes(600))
    assert luks2.read_metadata(str(luks1)) is None
    with pytest.raises(luks2.Luks2Error, match="power of two"):
        luks2.header_size(b"LUKS\xba\xbe\x00\x02" + (1 << 40).to_bytes(8, "big"))


def test_argon2_memory_problem_is_named_with_the_fix():
    meta = {"keyslots": {"0": {"type": "luks2", "kdf": {"type": "argon2id", "memory": 1048576}}}}
    assert luks2.mem_available_kib("MemTotal: 500000 kB\nMemAvailable:   400000 kB\n") == 400000
    msg = luks2.memory_problem(meta, 400000, "/dev/vda")
    assert "keyslot 0: argon2id 1024 MiB" in msg and "390 MiB available" in msg
    assert "cryptsetup luksConvertKey --key-slot 0 --pbkdf-memory 199680 /dev/vda" in msg and "more memory" in msg
    assert luks2.memory_problem(meta, 2 << 20, "/dev/vda") is None
    # one keyslot that fits is enough: no problem to report before trying
    assert luks2.memory_problem(META, 400000, "/dev/vda") is None


# -- the prompt ----------------------------------------------------------------------------

def test_console_paths_from_console_words(tmp_path):
    for n in ("tty0", "ttyS0"):
        (tmp_path / n).touch()
    assert askpass.console_paths(["tty0", "ttyS0,115200n8", "ttyS0", "null", "ttyS9"], str(tmp_path)) == \
        [str(tmp_path / "tty0"), str(tmp_path / "ttyS0")]
    assert askpass.console_paths([], str(tmp_path)) == ["/dev/console"]


def test_prompt_on_every_console_first_answer_wins_without_echo():
    import termios
    pairs = [os.openpty() for _ in range(2)]
    paths = [os.ttyname(s) for _, s in pairs]
    seen = {}

    def answer():
        time.sleep(0.3)
        for m, s in pairs:  # both got the prompt, and echo is off while it waits
            seen.setdefault("prompts", []).append(os.read(m, 100))
            seen.setdefault("echo", []).append(bool(termios.tcgetattr(s)[3] & termios.ECHO))
        os.write(pairs[1][0], b"s3cret\n")

    t = threading.Thread(target=answer)
    t.start()
    got = askpass.ask("Passphrase: ", paths, timeout=10)
    t.join()
    assert isinstance(got, bytearray) and got == bytearray(b"s3cret")
    assert seen["prompts"] == [b"Passphrase: ", b"Passphrase: "] and seen["echo"] == [False, False]
    for m, s in pairs:
        assert termios.tcgetattr(s)[3] & termios.ECHO  # given back
        assert b"s3cret" not in os.read(m, 100)  # never echoed
        os.close(m)
        os.close(s)
    askpass.wipe(got)
    assert got == bytearray()


def test_prompt_times_out_and_ends_at_end_of_input(tmp_path):
    m, s = os.openpty()
    t0 = time.monotonic()
    assert askpass.ask("P: ", [os.ttyname(s)], timeout=0.3) is None
    assert time.monotonic() - t0 < 5
    os.close(m)
    os.close(s)
    r, w = os.pipe()
    os.write(w, b"last-line-without-newline")
    os.close(w)
    assert askpass.ask("P: ", [f"/proc/self/fd/{r}"], timeout=5) == bytearray(b"last-line-without-newline")
    os.close(r)


def test_wipe_overwrites_in_place():
    secret = bytearray(b"hunter2")
    view = memoryview(secret)  # sees the same memory: the overwrite is in place
    askpass.wipe(secret)
    assert bytes(view) == bytes(7)
    view.release()
    askpass.wipe(secret)
    assert secret == bytearray()


# -- dlopen lists and verify -----------------------------------------------------------------

def test_hook_dlopen_key_and_verify(tmp_path):
    from mkinitramfs import cpio, elf, hookpack
    from mkinitramfs.image import Image
    from mkinitramfs.verify import verify
    decl = hookpack.parse_decl('dlopen = ["libz.so.1"]\n[[run]]\nstage="cmdline"\nfile="x.py"\n', "t", str(tmp_path))
    assert decl.dlopen == ["libz.so.1"]
    with pytest.raises(hookpack.HookError, match="dlopen must be a list"):
        hookpack.parse_decl('dlopen = "libz.so.1"\n[[run]]\nstage="cmdline"\nfile="x.py"\n', "t", str(tmp_path))
    with pytest.raises(hookpack.HookError, match=r"libnothere\.so\.7 not found"):
        hookpack.find_dlopen("libnothere.so.7", "t")
    with pytest.raises(hookpack.HookError, match="does not exist"):
        hookpack.find_dlopen("/nowhere/*/libx.so", "t")
    true = os.path.realpath(shutil.which("true"))
    img = Image()
    img.add_file("/usr/bin/true", source=true, mode=0o755)
    img.add_file("/init", data=b"#!/usr/bin/true\n", mode=0o755)
    img.add_node("/dev/console", "chardev", 5, 1)
    hosts = hookpack.add_dlopen_libraries(img, [decl], [true])
    elf.add_closure(img, [true, *hosts])
    assert "/usr/lib/libz.so.1" in img and "libz.so.1 t" in img.get("/etc/pyinit/dlopen").data.decode()
    rep = verify(cpio.write(img))
    assert rep.ok and "dlopen: 1 libraries of the hooks found in the image" in rep.notes, rep
    del img.entries["/usr/lib/libz.so.1"]
    rep = verify(cpio.write(img))
    assert any(p.startswith("libz.so.1: hook t loads it with dlopen(), and it is in none of")
               for p in rep.problems), rep


# -- the unlock order, with cryptsetup and the console replaced ------------------------------

class FakeLog:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda msg: self.lines.append((level, msg))


class FakeContext:
    def __init__(self, line=""):
        self.cmdline = cmdline.parse(line)
        self.env = {}
        self.log = FakeLog()
        self.boot = type("Boot", (), {})()


@pytest.fixture
def rig(luks, monkeypatch, tmp_path):
    """luks with cryptsetup answering from `accept` (passphrases and key files that open),
    the console answering from `answers`, and /dev/mapper in tmp_path."""
    state = {"accept": {b"good"}, "answers": [], "asked": [], "seen": [], "mapper": tmp_path / "mapper"}
    state["mapper"].mkdir()

    def fake_run(context, argv, secret=None, env=None):
        if secret is not None:
            given = bytes(secret)
        else:
            with open(argv[argv.index("--key-file") + 1], "rb") as f:
                given = f.read()
        state["seen"].append((argv, given, secret))
        if given in state["accept"]:
            (state["mapper"] / argv[-1]).touch()
            return 0, "Key slot 0 unlocked.\nCommand successful.\n"
        if given == b"oom":
            return 1, "Not enough available memory to open a keyslot.\n"
        return 2, "No key available with this passphrase.\n"

    def fake_ask(prompt, paths, timeout=None, log=None):
        state["asked"].append(prompt)
        return bytearray(state["answers"].pop(0)) if state["answers"] else None

    real_exists = os.path.exists
    monkeypatch.setattr(luks, "run_with_secret", fake_run)
    monkeypatch.setattr(askpass, "ask", fake_ask)
    monkeypatch.setattr(luks.os.path, "exists", lambda p: real_exists(
        str(state["mapper"] / p[len("/dev/mapper/"):]) if p.startswith("/dev/mapper/") else p))
    monkeypatch.setattr(luks, "_mem_available", lambda: 4 << 20)
    return state


def unlock_all(luks, context, devices, table=None):
    opts = luks.parse_options(context.cmdline, table)
    state = context.boot.__dict__.setdefault("luks_state", {})
    for node, uuid in devices:
        luks.unlock(context, node, uuid, opts.name_for(uuid, node), opts, state)
    return state


def test_one_passphrase_for_several_devices_and_it_is_wiped(luks, rig):
    ctx = FakeContext()
    rig["answers"] = [b"bad-pass", b"good"]
    state = unlock_all(luks, ctx, [("/dev/vda", U1), ("/dev/vdb", U2)])
    assert rig["asked"] == [f"Enter passphrase for /dev/vda (luks-{U1}): "] * 2  # none for vdb
    wrong = rig["seen"][0][2]
    assert wrong == bytearray(bytes(8)) or wrong == bytearray()  # wiped once refused
    assert [m for lvl, m in ctx.log.lines if "unlocked" in m] == [
        f"luks: unlocked /dev/vda as /dev/mapper/luks-{U1} with a passphrase (keyslot 0)",
        f"luks: unlocked /dev/vdb as /dev/mapper/luks-{U2} with a passphrase that opened an earlier device (keyslot 0)"]
    cached = state["passphrases"][0]
    luks.forget_secrets(ctx, luks.parse_options(ctx.cmdline), state)
    assert cached == bytearray() and "passphrases" not in state
    assert not any("good" in m or "bad-pass" in m for _, m in ctx.log.lines)


def test_tries_nofail_and_headless(luks, rig):
    from pyinit.hooks import HookFailed
    table = f"data UUID={U1} none tries=2,nofail\nroot UUID={U2} none headless\n"
    ctx = FakeContext()
    rig["answers"] = [b"x", b"y", b"z"]
    state = unlock_all(luks, ctx, [("/dev/vda", U1)], table)
    assert len(rig["asked"]) == 2 and state["given_up"] == {U1}
    assert any("after 2 passphrase tries (nofail: the boot goes on without /dev/mapper/data)" in m
               for _, m in ctx.log.lines)
    with pytest.raises(HookFailed, match="headless forbids a prompt"):
        unlock_all(luks, ctx, [("/dev/vdb", U2)], table)
    assert len(rig["asked"]) == 2


def test_not_enough_memory_is_not_a_wrong_passphrase(luks, rig):
    from pyinit.hooks import HookFailed
    rig["answers"] = [b"oom", b"good"]
    with pytest.raises(HookFailed, match=r"not enough memory to open a keyslot.*luksConvertKey"):
        unlock_all(luks, FakeContext(), [("/dev/vda", U1)])
    assert len(rig["asked"]) == 1  # the right passphrase could never work here: not asked again


def test_keyfile_then_unlinked_when_its_devices_are_open(luks, rig, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"good")
    ctx = FakeContext(f"rd.luks.key={key} rd.luks.uuid={U1} rd.luks.uuid={U2} rd.luks.options=discard")
    unlock_all(luks, ctx, [("/dev/vda", U1)])
    assert key.exists()  # U2 may still need it
    unlock_all(luks, ctx, [("/dev/vdb", U2)])
    assert not key.exists() and rig["asked"] == []
    assert "--allow-discards" in rig["seen"][0][0] and "--key-file" in rig["seen"][0][0]
