"""Hooks at every boot stage: they run in order with their documented environment; a
failing or hanging hook stops the boot with its name in the rescue message; an optional
one only warns. One image (tests/vm/hooks/stagefail: executables at half the stages,
Python modules at the other half), the stage to fail chosen on the command line."""
from __future__ import annotations

import re

import pytest

from devtools.qemu import boot
from devtools.rootdisk import make_root_disk
from tests.support.builder import REPO

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

STAGES = ["cmdline", "pre-udev", "pre-trigger", "initqueue", "pre-mount", "mount", "pre-pivot", "cleanup"]
EXECUTABLE = {"cmdline", "pre-trigger", "pre-mount", "pre-pivot"}
HOOK = str(REPO / "tests" / "vm" / "hooks" / "stagefail")


@pytest.fixture(scope="module")
def hook_image(pyinit_image):
    return pyinit_image("6.1", extra=("--hook", HOOK))


@pytest.fixture(scope="module")
def root_disk(tmp_path_factory):
    return make_root_disk(tmp_path_factory.mktemp("hooks") / "root.img")


def ran(console: str) -> list[tuple[str, str]]:
    return re.findall(r"^STAGEHOOK: (exe|py) (\S+) [nN][eE][wW][rR][oO][oO][tT]=", console, re.M)


def test_hooks_run_at_every_stage_in_order_with_their_environment(kernel_61, hook_image, root_disk, console_log):
    r = boot(kernel_61, hook_image, f"root=UUID={root_disk.uuid} rd.emergency=poweroff rd.shell=0",
             disks=[root_disk.path], log=console_log, timeout=300)
    assert r.report is not None and r.report.done and r.report.pid == 1, r
    assert ran(r.console) == [("exe" if s in EXECUTABLE else "py", s) for s in STAGES], r
    lines = {m.group(2): m.group(0) for m in re.finditer(r"^STAGEHOOK: (exe|py) (\S+) .*$", r.console, re.M)}
    # executables: NEWROOT, root= and (once found) the root device in their environment,
    # in a process of their own; Python hooks run inside PID 1
    assert f"NEWROOT=/sysroot root=UUID={root_disk.uuid} device=- " in lines["cmdline"]
    assert "device=/dev/vda" in lines["pre-mount"] and "pid=1" not in lines["pre-mount"]
    assert lines["mount"].endswith("device=/dev/vda pid=1")
    # the optional hook failed and the boot went on
    assert "STAGEHOOK: optional hook fails" in r.console
    assert re.search(r"pyinit: hook stagefail \(pre-mount/60-stagefail\) failed at stage pre-mount: "
                     r"exit status 1 \(optional: the boot goes on\)", r.console), r


@pytest.mark.parametrize("stage", STAGES)
def test_a_failing_hook_stops_the_boot_naming_it(stage, kernel_61, hook_image, root_disk, console_log):
    r = boot(kernel_61, hook_image,
             f"root=UUID={root_disk.uuid} rd.emergency=poweroff rd.shell=0 pyinit.test.fail={stage}",
             disks=[root_disk.path], log=console_log, timeout=300)
    kind = "exe" if stage in EXECUTABLE else "py"
    # the fault was really there: the hook said it was failing (executable) or ran (Python)
    assert f"STAGEHOOK: {kind} {stage} " in r.console, r
    reason = "exit status 3" if kind == "exe" else f"RuntimeError: asked to fail at {stage}"
    name = f"{stage}/50-stagefail" + (".py" if kind == "py" else "")
    assert f"pyinit: boot failed at stage {stage}: hook stagefail ({name}) failed at stage {stage}: {reason}" \
        in r.console, r
    assert r.report is None and not r.panicked, r  # rescue, never the real init, never a panic
    later = STAGES[STAGES.index(stage) + 1:]
    assert not any(s in later for _, s in ran(r.console)), r


@pytest.mark.parametrize("stage", ["pre-trigger", "mount"])
def test_a_hanging_hook_is_stopped_by_its_timeout(stage, kernel_61, hook_image, root_disk, console_log):
    r = boot(kernel_61, hook_image,
             f"root=UUID={root_disk.uuid} rd.emergency=poweroff rd.shell=0 pyinit.test.hang={stage}",
             disks=[root_disk.path], log=console_log, timeout=300)
    kind = "exe" if stage in EXECUTABLE else "py"
    assert f"STAGEHOOK: {kind} {stage} hangs" in r.console, r
    reason = "timed out after 10 s" + (" (killed)" if kind == "exe" else "")
    assert re.search(rf"pyinit: boot failed at stage {stage}: hook stagefail \({stage}/50-stagefail(\.py)?\) "
                     rf"failed at stage {stage}: {re.escape(reason)}", r.console), r
    assert r.report is None and not r.panicked, r
