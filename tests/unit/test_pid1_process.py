"""Reaping and fds 0-2 with real processes, each scenario in its own Python subprocess (so
that pytest's own signal handlers and fds are never touched). No privileges needed."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def run_py(code: str, **kw) -> dict:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       cwd=REPO, timeout=60, **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


REAPING = """
import json, os, time
from pyinit import process, proctable
from pyinit.reaper import REAPER
process.install(None, "child")   # SIGCHLD handler; no CAD call outside machine mode
out = {}

def zombies():
    t = proctable.processes()
    return [p for p in proctable.descendants_of(os.getpid(), t) if t[p][1] == "Z"]

def child(code):
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    return pid

def until(cond, limit=20.0):
    # polled, not a fixed sleep: a loaded host may take long to run the child or the handler
    deadline = time.monotonic() + limit
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()

def gone(pid):
    return pid not in proctable.processes()

# not held: SIGCHLD reaps at once
pid = child(0)
until(lambda: gone(pid))
out["free"] = zombies()

# held: the zombie waits for the boundary, then goes
with REAPER.holding():
    pid = child(0)
    until(lambda: zombies() == [pid])
    time.sleep(0.2)  # SIGCHLD's handler has had its chance to (wrongly) reap it
    out["held"] = zombies() == [pid]
    process.stage_started("next")        # a stage boundary while still held
    out["after_boundary"] = zombies()

# protected: never reaped by SIGCHLD; its waiter gets the real status
with REAPER.holding():
    pid = child(7)
    REAPER.protect(pid)
until(lambda: zombies() == [pid])
time.sleep(0.2)  # SIGCHLD's handler has had its chance to (wrongly) reap it
out["protected_still_there"] = zombies() == [pid]
out["status"] = os.waitstatus_to_exitcode(REAPER.wait_child(pid))
out["reaped"] = REAPER.reaped
print(json.dumps(out))
"""


def test_sigchld_reaping_hold_and_protect():
    out = run_py(REAPING)
    assert out["free"] == []
    assert out["held"] is True and out["after_boundary"] == []
    assert out["protected_still_there"] is True and out["status"] == 7
    assert out["reaped"] == 2


STOP = """
import json, os, subprocess, time
from pyinit import process, proctable
from pyinit.reaper import REAPER
process.install(None, "child")
import prctl; prctl.set_child_subreaper(1)   # as pyinit does in child mode
# a double fork: the grandchild is orphaned and comes back to us (subreaper)
with REAPER.holding():   # our own child: its waiter must get it, not SIGCHLD
    subprocess.run(["bash", "-c", "(sleep 3001 &); (exec -a @survivor sleep 3002 &); exit 0"])
deadline = time.monotonic() + 20  # both orphans re-parented to us and exec'd, on a loaded host too
while time.monotonic() < deadline and sorted(proctable.processes()[p][0] for p in
        proctable.descendants_of(os.getpid(), proctable.processes())) != ["sleep", "sleep"]:
    time.sleep(0.02)
before = {p: proctable.processes()[p] for p in proctable.descendants_of(os.getpid(), proctable.processes())}
stopped = REAPER.stop_leftovers(grace=2.0)
after = proctable.descendants_of(os.getpid(), proctable.processes())
for p in after:
    os.kill(p, 9)
print(json.dumps({"before": len(before), "stopped": stopped, "after": len(after)}))
"""


def test_stop_leftovers_spares_only_at_sign_processes():
    out = run_py(STOP)
    assert out["before"] == 2
    assert [c for _, c in out["stopped"]] == ["sleep"]
    assert out["after"] == 1  # the '@' one, killed by the test itself afterwards


STDIO = """
import json, os
from pyinit import console
missing = console.ensure_stdio()
fd = os.open("/dev/null", os.O_RDONLY)   # a later open must not become fd 0, 1 or 2
print(json.dumps({"missing": missing, "next_fd": fd,
                  "targets": [os.readlink(f"/proc/self/fd/{n}") for n in (0, 1, 2)]}), file=open("{out}", "w"))
"""


def test_ensure_stdio_fills_closed_fds(tmp_path):
    out = tmp_path / "out.json"
    code = STDIO.replace("{out}", str(out))
    # fds 0, 1 and 2 closed, as when the kernel could not open a console
    r = subprocess.run(["sh", "-c", 'exec "$0" -c "$1" <&- >&- 2>&-', sys.executable, code], cwd=REPO,
                       timeout=60, env={"PYTHONPATH": str(REPO)})
    assert r.returncode == 0
    data = json.loads(out.read_text())
    assert data["missing"] == [0, 1, 2]
    assert data["next_fd"] > 2
    assert all(t in ("/dev/console", "/dev/null", "/") for t in data["targets"]), data
