"""pyinit's whole boot flow in containers (`pyinit-mkinitramfs run`): as PID 1 of a new pid
namespace and as an ordinary child (a subreaper), with a loop device or a directory as the
root; faults at every stage, signals, rescue sessions on a terminal.

Nothing here can reboot the host: pyinit runs in a pid namespace (reboot(2) there only ends
the namespace) and, as a child, never calls reboot(2) and has no CAP_SYS_BOOT.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from devtools.rootdisk import make_root_disk, stage_root
from devtools.testimage import TEST_ACTIONS, with_files
from mkinitramfs import archive, build

pytestmark = [pytest.mark.container, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]
POWEROFF = 128 + 2  # reboot(2) in a pid namespace ends it with SIGINT for a power-off
PROMPT_CONSOLE = "pyinit rescue> "

# The container's "real init": what it sees, then exit (ending the namespace).
CINIT = r"""#!/bin/busybox sh
B=/bin/busybox
echo "CINIT: pid $$"
$B cat /proc/self/status | $B grep -E '^(SigBlk|SigIgn):' | $B sed 's/^/CINIT-EXEC-STATUS: /'
P=$$
# listed from a subshell: the directory it reads is then not one of PID 1's own fds
( for f in /proc/$P/fd/*; do echo "CINIT-FD: ${f##*/} -> $($B readlink $f)"; done )
for d in /proc/[0-9]*; do
    echo "CINIT-PROC: ${d#/proc/} $($B tr '\0' ' ' < $d/cmdline 2>/dev/null)"
done
echo "CINIT-BOOTJSON-BEGIN"
$B cat /run/pyinit/boot.json
echo "CINIT-BOOTJSON-END"
exit 0
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """{"plain": path, "busybox": path}: images for the host's kernel, uncompressed."""
    d = tmp_path_factory.mktemp("images")
    out = {}
    for name, bb in (("plain", None), ("busybox", "/bin/busybox")):
        path = d / f"{name}.img"
        build.build(build.BuildOptions(output=str(path), kver=os.uname().release, compression="none",
                                       busybox=bb))
        out[name] = path
    return out


@pytest.fixture(scope="module")
def root_disk(tmp_path_factory):
    return make_root_disk(tmp_path_factory.mktemp("disk") / "root.img", init=CINIT)


def run(image, root, *words, child=False, timeout=120, stdin=subprocess.DEVNULL) -> tuple[int, str]:
    argv = [sys.executable, "-m", "mkinitramfs", "run", str(image), "--root", str(root),
            "--timeout", str(timeout)] + (["--child"] if child else []) + ["--", *words]
    r = subprocess.run(argv, stdin=stdin, capture_output=True, text=True, timeout=timeout + 60, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    return r.returncode, r.stdout + r.stderr


def boot_json(out: str) -> dict:
    m = re.search(r"CINIT-BOOTJSON-BEGIN\n(.*?)CINIT-BOOTJSON-END", out, re.S)
    assert m, out
    return json.loads(m.group(1))


def assert_clean_exec(out: str, pid: int | None = 1) -> None:
    if pid is not None:
        assert f"CINIT: pid {pid}\n" in out, out
    assert "CINIT-EXEC-STATUS: SigBlk:\t0000000000000000" in out, out
    assert "CINIT-EXEC-STATUS: SigIgn:\t0000000000000000" in out, out
    fds = {int(n): t for n, t in re.findall(r"CINIT-FD: (\d+) -> (.*)", out)}
    # busybox sh keeps its script open at fd >= 10: the rest is what pyinit handed over
    assert sorted(n for n in fds if n < 10) == [0, 1, 2], fds


def test_only_a_test_image_carries_the_fault_injection(images, tmp_path):
    def testing_modules(path):
        return [m.name for m in archive.members(path.read_bytes())
                if m.name.endswith(("pyinit/testing.py", "pyinit/testing.pyc", "etc/pyinit/test-actions"))]
    for image in images.values():
        assert testing_modules(image) == [], image  # a default image: no pyinit/testing, no test-actions
    test = with_files(images["plain"], tmp_path / "img", {TEST_ACTIONS: "mount fail\n"})
    names = testing_modules(test)
    assert "etc/pyinit/test-actions" in names and any(n.endswith("/pyinit/testing.py") for n in names), names


def test_boot_flow_as_pid1_of_a_pid_namespace(images, root_disk, tmp_path):
    code, out = run(images["plain"], root_disk.path, "rd.debug")
    assert code == 0, out
    assert "pyinit: container mode: pyinit is pid 1 of a pid namespace" in out, out
    # the host's kernel log was not touched: every line came to stdout with its priority
    assert "<6>pyinit: container mode: not loading kernel modules" in out, out
    assert "<5>pyinit: switched root with pivot_root" in out, out
    assert_clean_exec(out, pid=1)
    rep = boot_json(out)
    assert rep["result"] == "ok" and rep["mode"] == "container" and rep["switch"] == "pivot_root"
    assert [s["name"] for s in rep["stages"]] == ["cmdline", "pre-udev", "pre-trigger", "initqueue",
                                                   "pre-mount", "mount", "pre-pivot", "cleanup"]
    assert all(s["ok"] and s["end"] >= s["start"] >= rep["started"] for s in rep["stages"])
    assert rep["root"]["device"].startswith("/dev/loop") and rep["root"]["fstype"] == "ext4"
    saved = tmp_path / "boot.json"
    saved.write_text(json.dumps(rep))
    a = subprocess.run([sys.executable, "-m", "pyinit.analyze", str(saved)], capture_output=True, text=True,
                       cwd=REPO)
    assert a.returncode == 0 and "Startup in the initramfs" in a.stdout and "cleanup" in a.stdout, a
    p = subprocess.run([sys.executable, "-m", "pyinit.analyze", "plot", str(saved)], capture_output=True,
                       text=True, cwd=REPO)
    assert p.returncode == 0
    assert len([e for e in ET.fromstring(p.stdout).iter() if e.tag.endswith("rect") and e.get("class")]) == 9


def test_boot_flow_as_a_child_subreaper_with_a_directory_root(images, tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    stage_root(root, init=CINIT)
    # A hook-like process that reports who its parent is, then double-forks an orphan.
    image = with_files(images["busybox"], tmp_path / "img", {TEST_ACTIONS: (
        "pre-trigger run /bin/sh -c 'echo PARENT-COMM $(cat /proc/$PPID/comm); (sleep 3001 &); exit 0'\n")})
    code, out = run(image, root, child=True)
    assert code == 0, out
    assert re.search(r"pyinit: child mode: pyinit is pid (\d+), a child subreaper", out), out
    assert "PARENT-COMM pyinit" in out, out  # named with python-prctl, which the builder packed
    assert "python-prctl is not available" not in out, out
    # The orphan came back to pyinit (subreaper), which stopped it before the exec (its name
    # is "sleep", or still the subshell's if it had not exec'd yet).
    assert re.search(r"stopping processes left by the initramfs before the real init runs: \d+ \(\w+\)\n", out), out
    procs = re.findall(r"CINIT-PROC: \d+ (.*)", out)
    assert procs and not any("3001" in p for p in procs), procs
    assert "pyinit: no root=, and /sysroot is already mounted: using it" in out, out
    pid = int(re.search(r"CINIT: pid (\d+)", out).group(1))
    assert pid != 1
    assert_clean_exec(out, pid=None)
    rep = boot_json(out)
    assert rep["mode"] == "child" and rep["result"] == "ok"
    assert len(rep["processes"]["stopped"]) == 1, rep["processes"]
    # the directory itself was never written to (an overlay of its own)
    assert not (root / "run" / "pyinit").exists()


@pytest.mark.parametrize("stage", ["cmdline", "pre-udev", "pre-trigger", "initqueue", "pre-mount", "mount",
                                   "pre-pivot", "cleanup", "switch"])
def test_exception_at_each_stage_ends_the_container_cleanly(stage, images, root_disk, tmp_path):
    image = with_files(images["plain"], tmp_path / "img", {TEST_ACTIONS: f"{stage} fail\n"})
    code, out = run(image, root_disk.path, "rd.shell=0")
    assert "TEST-ONLY: /etc/pyinit/test-actions is present" in out, out  # the fault was there
    where = "cleanup" if stage == "switch" else stage
    assert f"pyinit: boot failed at stage {where}: InjectedFault: TEST-ONLY fault injected at stage {stage}" \
        in out, out
    assert "<3>pyinit: next step:" in out and "<3>pyinit: asked for: root=/dev/loop" in out, out
    assert "emergency action from the default in container mode: poweroff" in out, out
    assert code == POWEROFF, out
    assert "Traceback" not in out and "CINIT" not in out, out


def test_a_failing_emergency_handler_still_ends_cleanly(images, root_disk, tmp_path):
    image = with_files(images["plain"], tmp_path / "img", {TEST_ACTIONS: "mount fail\nrescue fail\n"})
    code, out = run(image, root_disk.path, "rd.shell=0", "rd.emergency=reboot")
    assert "the emergency handler itself failed (InjectedFault: TEST-ONLY fault injected at stage rescue " \
        "(/etc/pyinit/test-actions)) while handling BootError: InjectedFault" in out, out
    assert "emergency handler failed; emergency action from rd.emergency=reboot: reboot" in out, out
    assert code == 128 + 1, out  # reboot(2) in a pid namespace: ended by SIGHUP


def test_no_usable_init_names_each_path(images, tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").mkdir()
    code, out = run(images["plain"], root, "init=/etc", "rd.shell=0")
    assert "init=/etc cannot be used: /etc is a directory" in out, out
    assert "boot failed at stage pre-pivot: no usable init in the new root: /etc is a directory; " \
           "/sbin/init does not exist" in out, out
    assert code == POWEROFF, out


def test_signals_in_a_container(images, root_disk, tmp_path):
    image = with_files(images["busybox"], tmp_path / "img", {TEST_ACTIONS: (
        "initqueue run /bin/sh -c 'kill -USR1 1; kill -HUP 1; sleep 1; kill -TERM 1; sleep 30'\n")})
    code, out = run(image, root_disk.path)
    assert "pyinit: status (SIGUSR1): container mode" in out, out
    assert "pyinit: SIGHUP received: ignored in the initramfs" in out, out
    assert "pyinit: SIGTERM received: poweroff" in out, out
    assert code == POWEROFF, out
    assert "CINIT" not in out


def pty_session(argv: list[str], answers: list[tuple[str, str]], timeout: float = 120) -> tuple[int, str]:
    """Run argv on a pseudo-terminal; answer each prompt in turn; return (status, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "dumb"})
    os.close(slave)
    out, pos, todo = b"", 0, list(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the slave has gone
                break
            if not chunk:
                break
            out += chunk
        if todo:
            i = out.find(todo[0][0].encode(), pos)
            if i >= 0:
                pos = i + len(todo[0][0])
                os.write(master, todo.pop(0)[1].encode())
        if proc.poll() is not None and not ready:
            break
    proc.kill() if proc.poll() is None else None
    code = proc.wait()
    os.close(master)
    return code, out.decode(errors="replace").replace("\r\n", "\n")


def test_rescue_console_on_a_terminal_resumes_the_boot(images, root_disk, tmp_path):
    image = with_files(images["plain"], tmp_path / "img", {TEST_ACTIONS: "pre-mount fail once\n"})
    argv = [sys.executable, "-m", "mkinitramfs", "run", str(image), "--root", str(root_disk.path),
            "--timeout", "100"]
    code, out = pty_session(argv, [("pyinit rescue> ", "blkid\n"), ("pyinit rescue> ", "lsmod\n"),
                                   ("pyinit rescue> ", "cat /proc/cmdline\n"), ("pyinit rescue> ", "continue\n")])
    assert "pyinit: boot failed at stage pre-mount" in out, out
    assert "rescue console (no /bin/sh in this image)" in out, out
    assert re.search(r"/dev/loop\d+ \(7:\d+\) TYPE=\"ext4\"", out), out  # blkid
    assert "root=/dev/loop" in out.split("cat /proc/cmdline", 1)[1], out
    assert "leaving the rescue session: resuming the boot at stage pre-mount" in out, out
    assert "CINIT: pid 1" in out, out
    rep = boot_json(out)
    assert rep["result"] == "ok" and [f["stage"] for f in rep["failures"]] == ["pre-mount"]
    assert rep["rescues"][0]["kind"] == "console"
    assert [s["ok"] for s in rep["stages"] if s["name"] == "pre-mount"] == [False, True]
    assert code == 0, out


def test_rescue_shell_on_a_terminal_resumes_the_boot(images, root_disk, tmp_path):
    image = with_files(images["busybox"], tmp_path / "img", {TEST_ACTIONS: "mount fail once\n"})
    argv = [sys.executable, "-m", "mkinitramfs", "run", str(image), "--root", str(root_disk.path),
            "--timeout", "100"]
    code, out = pty_session(argv, [("pyinit rescue# ", "echo SHELL-$((6*7)) $NEWROOT; exit\n")])
    assert "SHELL-42 /sysroot" in out, out
    assert "rescue shell ended: exit status 0" in out, out
    assert "CINIT: pid 1" in out, out
    assert boot_json(out)["rescues"][0]["kind"] == "shell"
    assert code == 0, out


def test_rescue_console_mount_and_switch_root_by_hand(images, root_disk, tmp_path):
    """The mount stage always fails; the user mounts the root by UUID and switches to it."""
    image = with_files(images["plain"], tmp_path / "img", {TEST_ACTIONS: "mount fail\n"})
    argv = [sys.executable, "-m", "mkinitramfs", "run", str(image), "--root", str(root_disk.path),
            "--timeout", "100"]
    code, out = pty_session(argv, [(PROMPT_CONSOLE, "switch-root\n"),
                                   (PROMPT_CONSOLE, f"mount -o ro UUID={root_disk.uuid} /sysroot\n"),
                                   (PROMPT_CONSOLE, "switch-root /sbin/init\n")])
    assert "switch-root: nothing is mounted on /sysroot; mount the root there first" in out, out
    assert re.search(r"mounted /dev/loop\d+ on /sysroot \(ext4\)", out), out
    assert "switch-root: switching to /sysroot, then exec /sbin/init" in out, out
    assert "CINIT: pid 1" in out, out
    rep = boot_json(out)
    assert rep["result"] == "ok" and rep["init"] == "/sbin/init"
    assert [s["name"] for s in rep["stages"]][-1] == "cleanup"
    assert code == 0, out
