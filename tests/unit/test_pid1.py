"""PID 1's pure parts: emergency actions, breakpoints, modes, signal policy, /proc parsing,
the boot report's JSON writer, pyinit-analyze, the rescue console's parsing, test actions."""
from __future__ import annotations

import json
import os
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from devtools import testactions as testing
from pyinit import analyze, names, process, proctable, report, rescue, rescue_console
from pyinit.cmdline import parse

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- emergency

@pytest.mark.parametrize("line, mode, expected", [
    ("root=/dev/vda", "machine", ("halt", 0.0)),
    ("root=/dev/vda", "container", ("poweroff", 0.0)),
    ("root=/dev/vda", "child", ("poweroff", 0.0)),
    ("rd.emergency=reboot", "machine", ("reboot", 0.0)),
    ("rd.emergency=poweroff panic=30", "machine", ("poweroff", 0.0)),
    ("panic=10", "machine", ("reboot", 10.0)),
    ("panic=-1", "machine", ("reboot", 0.0)),
    ("panic=0", "machine", ("halt", 0.0)),
    ("rd.emergency=explode panic=-1", "machine", ("reboot", 0.0)),
    ("rd.emergency=explode", "machine", ("halt", 0.0)),
    ("panic=soon", "machine", ("halt", 0.0)),
])
def test_decide_action(line, mode, expected):
    action, delay, why = rescue.decide_action(parse(line), mode)
    assert (action, delay) == expected, why
    if "explode" in line:
        assert "rd.emergency=explode is not one of halt, poweroff, reboot" in why


@pytest.mark.parametrize("line, allowed", [("", True), ("rd.shell", True), ("rd.shell=1", True),
                                           ("rd.shell=0", False), ("rd.shell=no", False)])
def test_rescue_allowed(line, allowed):
    assert rescue.rescue_allowed(parse(line)) is allowed


def test_describe_boot_error_and_plain_exception():
    from pyinit.errors import BootError
    assert rescue.describe(BootError("mount", "cannot mount", "try x")) == ("mount", "cannot mount", "try x")
    assert rescue.describe(ValueError("bad")) == ("unknown", "ValueError: bad", "")


# stage -> a word of its hint that names the next step. None: only hooks run at that stage,
# and a failing hook's own message (logged just before) is the next step, so the hint is the
# general one for any stage without its own.
NEXT_STEP = {
    "cmdline": "root=",
    "pre-udev": "--kver",
    "pre-trigger": None,
    "initqueue": "--modules",
    "pre-mount": None,
    "mount": "rootfstype=",
    "pre-pivot": "init=",
    "cleanup": "/dev, /proc, /sys and /run",
}


def test_every_stage_has_its_hint_decided():
    """A stage added or renamed (here or in the boot) without deciding its hint fails here:
    generic_hint's fallback would otherwise hide a hint table keyed by an old name."""
    assert set(NEXT_STEP) == set(names.STAGES)


@pytest.mark.parametrize("stage, word", NEXT_STEP.items())
def test_generic_hints_name_the_next_step(stage, word):
    fallback = rescue.generic_hint("no-such-stage")
    assert "rd.debug" in fallback
    hint = rescue.generic_hint(stage)
    if word is None:
        assert hint == fallback
    else:
        assert hint != fallback and word in hint, hint


# ---------------------------------------------------------------------------- breakpoints

def test_parse_breaks():
    assert rescue.parse_breaks(parse("root=/dev/vda")) == ([], False, [])
    assert rescue.parse_breaks(parse("rd.break")) == ([], True, [])
    assert rescue.parse_breaks(parse("rd.break=pre-mount,mount rd.break=cmdline")) == \
        (["pre-mount", "mount", "cmdline"], False, [])
    assert rescue.parse_breaks(parse("rd.break=premount rd.break")) == ([], True, ["premount"])
    assert names.STAGES == ("cmdline", "pre-udev", "pre-trigger", "initqueue", "pre-mount", "mount",
                                  "pre-pivot", "cleanup")


def test_install_breakpoints_puts_the_bare_break_before_the_switch():
    class Ctx:
        def __init__(self):
            self.before_switch = []
    ctx = Ctx()
    callables = rescue.install_breakpoints(ctx, parse("rd.break=mount rd.break"))
    assert len(callables) == 1 and len(ctx.before_switch) == 1


# ---------------------------------------------------------------------------- processes

@pytest.mark.parametrize("pid, ino, mode", [
    (1, process.PID_NS_INIT_INO, "machine"), (1, None, "machine"), (1, 4026532999, "container"),
    (4242, process.PID_NS_INIT_INO, "child"), (2, 4026532999, "child")])
def test_mode_for(pid, ino, mode):
    assert process.mode_for(pid, ino) == mode


def test_a_child_never_calls_reboot():
    for action in ("reboot", "poweroff", "halt", "exit"):
        assert process.plan_shutdown(action, "child") == "exit"
    assert process.plan_shutdown("reboot", "machine") == "reboot(RB_AUTOBOOT)"
    assert process.plan_shutdown("poweroff", "container") == "reboot(RB_POWER_OFF)"
    assert process.plan_shutdown("halt", "machine") == "sleep"


def test_signal_policy_is_documented_for_each_mode():
    for mode, table in process.ACTIONS.items():
        assert set(table) == {"SIGINT", "SIGPWR", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2"}, mode
    assert process.ACTIONS["machine"]["SIGINT"] == "reboot"
    assert process.ACTIONS["machine"]["SIGTERM"] == "ignore"
    assert process.ACTIONS["container"]["SIGTERM"] == "poweroff"
    assert "exit" in process.ACTIONS["child"].values()
    readme = (REPO / "README.md").read_text()
    for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGPWR", "Ctrl-Alt-Del"):
        assert name in readme


def test_parse_stat_with_odd_comm():
    assert proctable.parse_stat("123 (sleep) S 1 123 123 0 -1") == (123, "sleep", "S", 1)
    assert proctable.parse_stat("77 (a) b (c)) Z 5 77 77 0") == (77, "a) b (c)", "Z", 5)


def test_descendants_of():
    table = {1: ("init", "S", 0), 2: ("kthreadd", "S", 0), 3: ("kworker", "I", 2),
             10: ("sh", "S", 1), 11: ("sleep", "S", 10), 12: ("sleep", "Z", 11), 20: ("x", "S", 1)}
    assert proctable.descendants_of(1, table) == [10, 20, 11, 12]
    assert proctable.descendants_of(10, table) == [11, 12]
    assert proctable.descendants_of(99, table) == []


def test_describe_status():
    assert proctable.describe_status(0) == "exit status 0"
    assert proctable.describe_status(3 << 8) == "exit status 3"
    assert proctable.describe_status(15) == "killed by signal 15"


# ---------------------------------------------------------------------------- report

def test_dumps_is_json():
    obj = {"a": 1, "b": 2.5, "c": None, "d": True, "e": [1, "x", {"f": "q\"uo\\te\n\tnl\x01"}],
           "g": [], "h": {}, "i": "é ✓", "j": float("nan"), "k": (1, 2)}
    back = json.loads(report.dumps(obj))
    assert back["e"][2]["f"] == "q\"uo\\te\n\tnl\x01"
    assert back["i"] == "é ✓" and back["j"] is None and back["k"] == [1, 2]
    assert back["a"] == 1 and back["b"] == 2.5 and back["d"] is True and back["g"] == [] and back["h"] == {}
    assert json.loads(report.dumps("\udcff")) == "\udcff"  # a surrogate from a raw cmdline byte


def test_stage_entries_mark_failed_attempts():
    timings = [("cmdline", 1.0, 1.1), ("mount", 1.1, 1.2), ("mount", 5.0, 5.1), ("pre-pivot", 5.1, 5.2)]
    entries = report.stage_entries(timings, ["cmdline", "mount", "pre-pivot"])
    assert [e["ok"] for e in entries] == [True, False, True, True]
    entries = report.stage_entries([("initqueue", 1.0, 4.0)], ["cmdline"])
    assert entries[0]["ok"] is False


SAMPLE = {
    "format": 1, "kernel": "6.12.0-test", "cmdline": "root=/dev/vda <&>", "mode": "machine",
    "started": 2.5, "finished": 3.25, "result": "ok",
    "stages": [{"name": "cmdline", "start": 2.5, "end": 2.6, "ok": True},
               {"name": "mount", "start": 2.6, "end": 2.7, "ok": False},
               {"name": "mount", "start": 3.0, "end": 3.1, "ok": True}],
    "failures": [{"stage": "mount", "message": "boom", "at": 2.7}],
    "rescues": [{"why": "boot failed", "kind": "console", "start": 2.7, "end": 3.0}],
    "root": {"spec": "/dev/vda", "device": "/dev/vda", "fstype": "ext4"},
    "switch": "MS_MOVE", "init": "/sbin/init", "processes": {"reaped": 2, "stopped": [[12, "sleep"]]},
    "messages": [[4, 2.55, "a warning"]],
}


def test_analyze_table_and_summary(tmp_path):
    path = tmp_path / "boot.json"
    path.write_text(report.dumps(SAMPLE))
    data = analyze.load(str(path))
    text = analyze.table(data)
    assert "FAILED" in text and text.count("mount") == 2 and "rescue (console)" in text
    assert analyze.summary(data).startswith("Startup in the initramfs: 2.500s (kernel) + 750ms (pyinit)")
    more = analyze.details(data)
    assert "stopped before the switch: 12 (sleep)" in more and "warning at 2.55: a warning" in more


def test_analyze_svg_is_well_formed():
    root = ET.fromstring(analyze.svg(SAMPLE))
    rects = [e for e in root.iter() if e.tag.endswith("rect") and e.get("class")]
    assert [r.get("class") for r in rects] == ["kernel", "ok", "failed", "ok", "rescue"]
    assert all(float(r.get("width")) >= 1 for r in rects)


def test_analyze_cli(tmp_path, capsys):
    path = tmp_path / "boot.json"
    path.write_text(report.dumps(SAMPLE))
    assert analyze.main([str(path)]) == 0
    assert "Startup in the initramfs" in capsys.readouterr().out
    assert analyze.main(["plot", str(path), "-o", str(tmp_path / "b.svg")]) == 0
    ET.parse(tmp_path / "b.svg")
    (tmp_path / "bad.json").write_text("{}")
    assert analyze.main([str(tmp_path / "bad.json")]) == 1
    assert "not a pyinit boot report" in capsys.readouterr().err
    assert analyze.main([str(tmp_path / "missing.json")]) == 1


def test_analyze_is_a_console_script_and_not_in_images():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pyinit-analyze"] == "pyinit.analyze:main"
    from mkinitramfs.pyimports import DEFAULT_EXCLUDES
    assert "pyinit.analyze" in DEFAULT_EXCLUDES


# ---------------------------------------------------------------------------- rescue console

def test_split():
    assert rescue_console.split("  mount -t ext4 /dev/vda /sysroot ") == ["mount", "-t", "ext4", "/dev/vda",
                                                                         "/sysroot"]
    assert rescue_console.split('cat "/a b"') == ["cat", "/a b"]
    assert rescue_console.split("# comment") == []
    assert rescue_console.split('cat "unbalanced') == ["cat", '"unbalanced']


def test_parse_kmsg_record():
    assert rescue_console.parse_kmsg_record(b"6,339,5140900,-;pyinit: hello\n SUBSYSTEM=x\n") == \
        (6, 5.1409, "pyinit: hello")
    assert rescue_console.parse_kmsg_record(b"14,1,0,-;x\n")[0] == 6  # facility bits dropped
    assert rescue_console.parse_kmsg_record(b"garbage") is None


def test_find_module_file(tmp_path):
    load = tmp_path / "modules.load"
    load.write_text("virtio_blk /usr/lib/modules/k/virtio_blk.ko required\n")
    moddir = tmp_path / "mods"
    (moddir / "kernel/fs").mkdir(parents=True)
    (moddir / "kernel/fs/crc32c-generic.ko.xz").write_bytes(b"")
    assert rescue_console.find_module_file("virtio-blk", str(load), str(moddir)) == \
        "/usr/lib/modules/k/virtio_blk.ko"
    assert rescue_console.find_module_file("crc32c_generic", str(load), str(moddir)).endswith(".ko.xz")
    assert rescue_console.find_module_file("nope", str(load), str(moddir)) is None


def test_console_commands_on_a_pipe(tmp_path):
    """The console loop itself, on pipes: unknown commands, errors and EOF never end it badly."""
    (tmp_path / "f").write_text("content\n")
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    os.write(w_in, f"nosuch\nls {tmp_path}\ncat {tmp_path}/f {tmp_path}/missing\nmount -t\nhelp\n".encode())
    os.close(w_in)
    con = rescue_console.Console(None, r_in, w_out)
    assert con.run("test") == "eof"  # a pipe at its end: nobody is there
    os.close(w_out)
    out = os.read(r_out, 1 << 20).decode()
    os.close(r_in)
    os.close(r_out)
    assert "nosuch: unknown command" in out
    assert re.search(r"(^|> )f$", out, re.M) and "content" in out and "missing: No such file or directory" in out
    assert "usage: mount" in out and "switch-root [INIT]" in out
    assert out.count(rescue_console.PROMPT) == 6


def test_console_continue():
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    os.write(w_in, b"continue\nls\n")
    os.close(w_in)
    assert rescue_console.Console(None, r_in, w_out).run("x") == "continue"
    for fd in (r_in, r_out, w_out):
        os.close(fd)


# ---------------------------------------------------------------------------- test actions

def test_parse_test_actions():
    acts = testing.parse("# comment\nmount fail once\ninitqueue run /bin/sh -c 'kill -USR1 1'\n"
                         "switch spawn /bin/sleep 5\nrescue fail\n")
    assert acts == [("mount", "fail", ["once"]), ("initqueue", "run", ["/bin/sh", "-c", "kill -USR1 1"]),
                    ("switch", "spawn", ["/bin/sleep", "5"]), ("rescue", "fail", [])]
    with pytest.raises(ValueError, match="line 1: unknown stage 'mnt'"):
        testing.parse("mnt fail")
    with pytest.raises(ValueError, match="line 1: run needs a command"):
        testing.parse("mount run")
    with pytest.raises(ValueError, match="expected 'STAGE fail"):
        testing.parse("mount explode")


def test_container_cmdline():
    from mkinitramfs.container import container_cmdline, describe_status
    assert container_cmdline(["rd.debug"], "/dev/loop3") == "root=/dev/loop3 rd.debug\n"
    assert container_cmdline(["root=LABEL=x"], "/dev/loop3") == "root=LABEL=x\n"
    assert container_cmdline([], None) == "\n"
    assert describe_status(130) == "the namespace ended by power-off or halt (SIGINT)"
    assert describe_status(129) == "the namespace ended by reboot (SIGHUP)"
    assert describe_status(0) == "exit status 0"


# ---------------------------------------------------------------------------- log levels

@pytest.mark.parametrize("printk, quiet, shown", [
    ("7 4 1 7", False, {"DEBUG"}),                              # the kernel prints 0-6 itself
    ("4 4 1 7", True, {"WARNING"}),                             # quiet: console_loglevel 4
    ("5 4 1 7", False, {"NOTICE", "INFO", "DEBUG"}),            # loglevel=5
    ("1 4 1 7", False, {"ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG"}),
])
def test_console_echo_follows_the_kernel_console_level(printk, quiet, shown, tmp_path):
    """A line goes to the console from pyinit only when the kernel would not print it there
    itself: never twice, never missing (priority >= console_loglevel; quiet hides info)."""
    from pyinit import log
    path = tmp_path / "printk"
    path.write_text(printk + "\n")
    saved = dict(log._state)
    try:
        log.configure(quiet=quiet, printk_path=str(path))
        names = ("EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG")
        assert {n for i, n in enumerate(names) if log.echo_to_console(i)} == shown
    finally:
        log._state.update(saved)


def test_the_libc_stub_declares_what_cffi_generates():
    """pyinit/_libc.pyi (what mypy reads) and _libc_build.CDEF (what cffi generates) name the
    same functions."""
    import ast

    from pyinit import _libc_build
    tree = ast.parse((REPO / "pyinit" / "_libc.pyi").read_text())
    declared = {f.name for c in tree.body if isinstance(c, ast.ClassDef) and c.name in ("Lib", "CryptLib")
                for f in c.body if isinstance(f, ast.FunctionDef)}
    assert declared == set(_libc_build.names()) == {"mount", "umount2", "pivot_root", "chroot", "syscall",
                                                    "reboot", "crypt_rn"}
