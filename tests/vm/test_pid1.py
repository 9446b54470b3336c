"""PID 1 under a real kernel: bad init=, an exception at each stage, rescue sessions and
breakpoints, a root that never appears, consoles that do not exist, orphans, signals and
Ctrl-Alt-Del, the real init's first look and the boot report.

Every test checks that its fault was really there (the injected-fault line, the console
line naming the bad path, the missing fds...) and that the kernel never said "Attempted to
kill init". Faults are injected with the test-only /etc/pyinit/test-actions
(devtools/testactions.py), appended to a built image as a small cpio (devtools/testimage.py).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from devtools.qemu import boot
from devtools.rootdisk import make_root_disk, read_file_from_disk, read_report_from_disk
from devtools.testimage import TEST_ACTIONS, with_files, without
from tests.support.boots import BOOT_JSON
from tests.support.builder import REPO, run_builder

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
SERIES = "6.12"
CHECK = {"/etc/realinit-check": BOOT_JSON + "\n", "/etc/realinit-save": BOOT_JSON + "\n"}
PROMPT = "pyinit rescue> "


def never_panicked(r):
    assert not r.timed_out, r
    assert not r.panicked and "Attempted to kill init" not in r.console, r


def handed_over(r):
    never_panicked(r)
    rep = r.report
    assert rep is not None and rep.done and rep.pid == 1, r
    return rep


def first_look(rep, console="/dev/console"):
    """The real init's first look at itself: only fds 0-2, nothing blocked or ignored."""
    assert rep.inherited_fds == {0: console, 1: console, 2: console}, rep.fds
    assert rep.exec_blocked() == set() and rep.exec_ignored() == set(), rep.exec_status
    assert rep.files.get(BOOT_JSON) is True, rep.files


def disk(tmp_path, **kw):
    files = {**CHECK, **kw.pop("extra_files", {})}
    return make_root_disk(tmp_path / "root.img", extra_files=files, **kw)


@pytest.fixture(scope="module")
def kernel(kernels):
    return kernels[SERIES]


@pytest.fixture(scope="module")
def plain(pyinit_image):
    return pyinit_image(SERIES)


@pytest.fixture(scope="module")
def with_busybox(pyinit_image):
    return pyinit_image(SERIES, extra=("--busybox",))


def inject(image, tmp_path, actions: str):
    return with_files(image, tmp_path / "test.img", {TEST_ACTIONS: actions})


# ---------------------------------------------------------------------------- init=

@pytest.mark.parametrize("init, reason", [
    ("/sbin/missing-init", "/sbin/missing-init does not exist in the new root (or is a dangling symlink)"),
    ("/etc", "/etc is a directory"),
    ("/sbin/not-executable", "/sbin/not-executable is not executable (mode 644)"),
])
def test_bad_init_falls_back_with_the_reason(init, reason, kernel, plain, tmp_path, console_log):
    d = disk(tmp_path, extra_files={"/sbin/not-executable": "no shebang, mode 644\n"})
    r = boot(kernel, plain, f"root=UUID={d.uuid} init={init}", disks=[d.path], log=console_log)
    rep = handed_over(r)
    assert f"pyinit: init={init} cannot be used: {reason}; trying /sbin/init" in r.console, r
    assert "exec /sbin/init" in r.console
    first_look(rep)


# ---------------------------------------------------------------------------- faults

@pytest.mark.parametrize("stage", ["cmdline", "pre-udev", "pre-trigger", "initqueue", "pre-mount", "mount",
                                   "pre-pivot", "cleanup"])
def test_exception_at_each_stage_reboots_cleanly(stage, kernel, plain, tmp_path, console_log):
    """rd.shell=0 and the harness's panic=-1: the emergency action is a reboot, at once;
    QEMU's -no-reboot then ends the VM."""
    d = disk(tmp_path)
    r = boot(kernel, inject(plain, tmp_path, f"{stage} fail\n"), f"root=UUID={d.uuid} rd.shell=0",
             disks=[d.path], log=console_log)
    never_panicked(r)
    assert "TEST-ONLY: /etc/pyinit/test-actions is present" in r.console, r  # the fault was there
    assert f"pyinit: boot failed at stage {stage}: InjectedFault: TEST-ONLY fault injected" in r.console, r
    assert f"pyinit: asked for: root=UUID={d.uuid}" in r.console, r
    assert "pyinit: next step: " in r.console, r
    assert "pyinit: rd.shell=0: no rescue shell" in r.console, r
    assert "emergency action from panic=-1: reboot" in r.console, r
    assert "reboot: Restarting system" in r.console, r
    assert r.report is None


def test_a_failing_emergency_handler_powers_off_cleanly(kernel, plain, tmp_path, console_log):
    d = disk(tmp_path)
    r = boot(kernel, inject(plain, tmp_path, "mount fail\nrescue fail\n"),
             f"root=UUID={d.uuid} rd.emergency=poweroff", disks=[d.path], log=console_log)
    never_panicked(r)
    assert "pyinit: the emergency handler itself failed (InjectedFault" in r.console, r
    assert "emergency action from rd.emergency=poweroff: poweroff" in r.console, r
    assert "reboot: Power down" in r.console, r


def test_root_never_appears(kernel, plain, tmp_path, console_log):
    d = disk(tmp_path, label="here")
    r = boot(kernel, plain, "root=LABEL=elsewhere rd.timeout=3 rd.shell=0", disks=[d.path], log=console_log)
    never_panicked(r)
    c = r.console
    assert "pyinit: boot failed at stage initqueue: root device LABEL=elsewhere did not appear within 3 s" in c, r
    # what was found: the disk with its TYPE, UUID and LABEL; the modules; the next step
    assert f'/dev/vda (254:0) TYPE="ext4" UUID="{d.uuid}" LABEL="here"' in c, r
    assert re.search(r"pyinit: kernel modules loaded \(\d+\): .*virtio_blk", c), r
    assert "pyinit: next step: check root= against" in c, r
    assert "reboot: Restarting system" in c, r


def test_mount_failure_names_the_device_the_type_and_the_errno(kernel, plain, tmp_path, console_log):
    d = disk(tmp_path)
    r = boot(kernel, plain, f"root=UUID={d.uuid} rootfstype=btrfs rd.shell=0", disks=[d.path], log=console_log)
    never_panicked(r)
    c = r.console
    # the fault was there: the image has no btrfs module, the kernel knows no such filesystem
    assert f"pyinit: boot failed at stage mount: cannot mount /dev/vda (root=UUID={d.uuid}) on /sysroot: " \
           "btrfs: No such device (errno 19)" in c, r
    assert f"pyinit: asked for: root=UUID={d.uuid}, rootfstype=btrfs" in c, r
    assert f'pyinit: root device found: /dev/vda (254:0) TYPE="ext4" UUID="{d.uuid}"' in c, r
    assert "pyinit: next step: check rootfstype= and rootflags=" in c, r
    assert "reboot: Restarting system" in c, r


# ---------------------------------------------------------------------------- rescue

def test_rescue_console_then_continue_resumes_the_boot(kernel, plain, tmp_path, console_log):
    d = disk(tmp_path, label="rescued")
    answers = [(PROMPT, "blkid\n"), (PROMPT, "lsmod\n"), (PROMPT, "ls /sysroot\n"), (PROMPT, "dmesg 3\n"),
               (PROMPT, "nosuchcommand\n"), (PROMPT, "continue\n")]
    r = boot(kernel, inject(plain, tmp_path, "mount fail once\n"), "root=LABEL=rescued", disks=[d.path],
             console_input=answers, log=console_log)
    rep = handed_over(r)
    c = r.console
    assert "pyinit: boot failed at stage mount: InjectedFault" in c, r
    assert "rescue console (no /bin/sh in this image)" in c, r
    session = c.split("rescue console (no /bin/sh", 1)[1].split("resuming the boot", 1)[0]
    assert f'/dev/vda (254:0) TYPE="ext4" UUID="{d.uuid}" LABEL="rescued"' in session, session
    assert re.search(r"^ext4\s+\d+", session, re.M), session  # lsmod
    assert "nosuchcommand: unknown command" in session, session
    assert "pyinit: leaving the rescue session: resuming the boot at stage mount" in c, r
    first_look(rep)
    saved = json.loads(read_file_from_disk(d.path, "/realinit-saved" + BOOT_JSON))
    assert [f["stage"] for f in saved["failures"]] == ["mount"]
    assert saved["rescues"][0]["kind"] == "console"
    assert [s["ok"] for s in saved["stages"] if s["name"] == "mount"] == [False, True]


def test_rescue_shell_from_busybox(kernel, with_busybox, tmp_path, console_log):
    d = disk(tmp_path)
    r = boot(kernel, inject(with_busybox, tmp_path, "pre-mount fail once\n"), f"root=UUID={d.uuid}",
             disks=[d.path], console_input=[("pyinit rescue# ", "echo SHELL-$((6*7)) on $(tty); exit\n")],
             log=console_log)
    rep = handed_over(r)
    assert "SHELL-42 on /dev/ttyS0" in r.console, r  # the real tty, not /dev/console: job control works
    assert "pyinit: rescue shell ended: exit status 0" in r.console, r
    first_look(rep)


def test_breakpoints_before_a_stage_and_before_the_switch(kernel, plain, tmp_path, console_log):
    d = disk(tmp_path)
    answers = [(PROMPT, "ls /sysroot\n"), (PROMPT, "continue\n"), (PROMPT, "ls /sysroot/sbin\n"),
               (PROMPT, "continue\n")]
    r = boot(kernel, plain, f"root=UUID={d.uuid} rd.break=pre-mount rd.break", disks=[d.path],
             console_input=answers, log=console_log)
    rep = handed_over(r)
    c = r.console
    first = c.index("rd.break=pre-mount: stopped before stage pre-mount")
    second = c.index("rd.break: stopped before switching root to /sysroot")
    assert first < c.index("mounted /dev/vda on /sysroot") < second < c.index("switched root with")
    listing = re.search(r"rescue> ls /sysroot/sbin\n(.*?)\npyinit rescue> ", c[second:], re.S)
    assert listing and "init" in listing.group(1).split(), c[second:]  # /sysroot is mounted by then
    first_look(rep)


# ---------------------------------------------------------------------------- consoles

@pytest.mark.parametrize("console", ["null", "ttyS9"])
def test_no_console_at_all(console, kernel, plain, tmp_path, console_log):
    """No console= the kernel can open: init starts without fds 0-2. Nothing shows on the
    serial port; the real init's report comes from the disk, pyinit's lines from the kernel
    log as the real init read it."""
    d = disk(tmp_path)
    r = boot(kernel, plain, f"console={console} root=UUID={d.uuid}", disks=[d.path], log=console_log,
             console=None)
    never_panicked(r)
    assert r.returncode == 0 and "REALINIT" not in r.console, r
    from devtools.rootdisk import parse_report
    rep = parse_report(read_report_from_disk(d.path))
    assert rep.done and rep.pid == 1
    assert f"console={console}" in rep.cmdline_args
    records = rep.kmsg_records()
    # the fault was there: pyinit found fds 0-2 closed and said so, at warning priority
    assert (4, "pyinit: no console: fds [0, 1, 2] were not open at start and /dev/console cannot be "
               "opened (console=null, or a console that does not exist): messages go to /dev/kmsg only") \
        in records, records
    assert any(p == 6 and t.startswith("pyinit: found root device") for p, t in records), records
    assert any(p == 5 and t.startswith("pyinit: switched root with MS_MOVE") for p, t in records), records
    first_look(rep, console="/dev/null")


def test_image_without_dev_console(kernel, plain, tmp_path, console_log):
    """The kernel's own built-in initramfs (usr/default_cpio_list) provides /dev/console
    even when the image has none: the boot is the same."""
    image = without(plain, tmp_path / "no-console.img", ["/dev/console"])
    listing = run_builder("ls", str(image)).stdout
    assert "dev/null" in listing and " dev/console" not in listing, listing  # the fault was there
    d = disk(tmp_path)
    r = boot(kernel, image, f"root=UUID={d.uuid}", disks=[d.path], log=console_log)
    rep = handed_over(r)
    assert "pyinit: switched root with MS_MOVE" in r.console
    first_look(rep)


# ---------------------------------------------------------------------------- processes

ORPHANS_AND_SIGNALS = """\
pre-trigger run /bin/sh -c '(sleep 3001 &); (sh -c "exit 0" &); exit 0'
initqueue run /bin/sh -c 'kill -USR1 1; kill -TERM 1; kill -HUP 1; kill -USR2 1; sleep 1'
pre-mount run /bin/sh -c 'kill -USR2 1; sleep 1'
"""


@pytest.fixture(scope="module")
def busy_boot(kernel, with_busybox, tmp_path_factory, artifacts):
    """One boot with orphans left by a hook-like process and signals sent to PID 1, with
    `quiet`: every check below reads the real init's report and the saved boot report."""
    tmp = tmp_path_factory.mktemp("busy")
    d = disk(tmp)
    r = boot(kernel, inject(with_busybox, tmp, ORPHANS_AND_SIGNALS), f"root=UUID={d.uuid} quiet",
             disks=[d.path], log=artifacts / "busy_boot.log")
    saved = read_file_from_disk(d.path, "/realinit-saved" + BOOT_JSON)
    return r, d, saved, tmp


def test_orphans_are_stopped_and_reaped_before_the_real_init(busy_boot):
    r, _, saved, _ = busy_boot
    rep = handed_over(r)
    texts = [t for _, t in rep.kmsg_records()]
    assert any(t.startswith("pyinit: TEST-ONLY: running /bin/sh -c (sleep 3001 &)") for t in texts), texts
    # the zombie (sh -c "exit 0") was reaped at the stage boundary, the live orphan stopped
    assert any(re.match(r"pyinit: status: processes: .*\d+ sleep \(S, parent 1\)", t) for t in texts), texts
    assert any(re.match(r"pyinit: stopping processes left by the initramfs before the real init runs: "
                        r"\d+ \(\w+\)$", t) for t in texts), texts
    procs = rep.processes()
    assert not any("3001" in args for *_, args in procs), procs
    assert not any(state == "Z" for _, _, state, _, _ in procs), procs
    data = json.loads(saved)
    assert data["processes"]["reaped"] >= 2 and len(data["processes"]["stopped"]) == 1, data["processes"]


def test_signals_before_the_switch(busy_boot):
    r, *_ = busy_boot
    rep = handed_over(r)
    by_text = {t: p for p, t in rep.kmsg_records()}
    assert any(t.startswith("pyinit: status (SIGUSR1): machine mode") for t in by_text), by_text
    assert by_text.get("pyinit: SIGTERM received: ignored in the initramfs (SIGINT reboots, SIGPWR powers off)") == 5
    assert "pyinit: SIGHUP received: ignored in the initramfs (SIGINT reboots, SIGPWR powers off)" in by_text
    assert "pyinit: SIGUSR2 received: debug logging on" in by_text
    assert "pyinit: SIGUSR2 received: debug logging off" in by_text
    # debug lines meanwhile (between the two SIGUSR2), at debug priority
    assert by_text.get("pyinit: stage pre-mount starts") == 7, by_text
    assert "pyinit: stage mount starts" not in by_text, by_text


def test_quiet_keeps_the_console_clean_but_not_the_kernel_log(busy_boot):
    r, *_ = busy_boot
    rep = handed_over(r)
    before_real_init = r.console.split("REALINIT:", 1)[0]  # the report itself lists the kernel log
    assert "pyinit: found root device" not in before_real_init, r  # info: not on a quiet console
    assert "TEST-ONLY: /etc/pyinit/test-actions is present" in before_real_init, r  # a warning still is
    assert any(p == 6 and t.startswith("pyinit: found root device") for p, t in rep.kmsg_records())


def test_real_init_first_look_and_boot_report(busy_boot):
    r, _, saved, tmp = busy_boot
    rep = handed_over(r)
    first_look(rep)
    assert rep.mount_at("/").fstype == "ext4"
    data = json.loads(saved)
    assert data["result"] == "ok" and data["mode"] == "machine" and data["switch"] == "MS_MOVE"
    assert [s["name"] for s in data["stages"]] == ["cmdline", "pre-udev", "pre-trigger", "initqueue",
                                                    "pre-mount", "mount", "pre-pivot", "cleanup"]
    assert data["started"] < data["stages"][0]["start"] <= data["stages"][-1]["end"] <= data["finished"]
    assert data["finished"] <= rep.uptime + 0.01  # /proc/uptime has two decimals
    path = tmp / "boot.json"
    path.write_bytes(saved)
    table = subprocess.run([sys.executable, "-m", "pyinit.analyze", str(path)], capture_output=True,
                           text=True, cwd=REPO)
    assert table.returncode == 0 and "initqueue" in table.stdout and "(kernel)" in table.stdout, table
    plot = subprocess.run([sys.executable, "-m", "pyinit.analyze", "plot", str(path)], capture_output=True,
                          text=True, cwd=REPO)
    assert plot.returncode == 0
    assert len([e for e in ET.fromstring(plot.stdout).iter() if e.tag.endswith("rect") and e.get("class")]) == 9


def test_sigpwr_powers_off_cleanly(kernel, with_busybox, tmp_path, console_log):
    d = disk(tmp_path)
    r = boot(kernel, inject(with_busybox, tmp_path, "pre-mount run /bin/sh -c 'kill -PWR 1; sleep 60'\n"),
             f"root=UUID={d.uuid}", disks=[d.path], log=console_log)
    never_panicked(r)
    assert "pyinit: SIGPWR received: poweroff" in r.console, r
    assert "reboot: Power down" in r.console and r.report is None, r


def test_ctrl_alt_del_reboots_cleanly(kernel, plain, tmp_path, console_log):
    """QEMU presses Ctrl-Alt-Del (QMP send-key) while pyinit waits for a root that never
    comes: the kernel sends SIGINT to PID 1 (pyinit disabled its immediate reboot)."""
    d = disk(tmp_path)
    keys = [{"type": "qcode", "data": k} for k in ("ctrl", "alt", "delete")]

    def press(machine):
        assert machine.wait_for("waiting for root device", 240) is not None, machine.text()
        machine.execute("send-key", keys=keys)

    r = boot(kernel, plain, "root=UUID=00000000-0000-4000-8000-000000000000 rootwait", disks=[d.path],
             qmp=True, on_start=press, log=console_log)
    never_panicked(r)
    assert "rootwait: no time limit" in r.console, r  # it was waiting, with no timeout of its own
    assert "pyinit: Ctrl-Alt-Del or SIGINT received: reboot" in r.console, r
    assert "reboot: Restarting system" in r.console, r
