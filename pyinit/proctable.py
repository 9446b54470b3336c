"""The process table as /proc shows it: who is alive below PID 1, and in what state.
Reading only; nothing here signals or reaps (pyinit/reaper.py does)."""
from __future__ import annotations

import os

# pid -> (comm, state, ppid)
TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    Table = dict[int, tuple[str, str, int]]


def parse_stat(text: str) -> tuple[int, str, str, int]:
    """A /proc/<pid>/stat line -> (pid, comm, state, ppid). comm may hold spaces and ')'."""
    left, _, right = text.rpartition(")")
    pid_s, _, comm = left.partition(" (")
    fields = right.split()
    return int(pid_s), comm, fields[0], int(fields[1])


def processes(proc: str = "/proc") -> Table:
    """pid -> (comm, state, ppid) for every process visible in /proc."""
    out: Table = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat") as f:
                pid, comm, state, ppid = parse_stat(f.read())
        except (OSError, ValueError, IndexError):
            continue
        out[pid] = (comm, state, ppid)
    return out


def descendants_of(root: int, table: Table) -> list[int]:
    """Every pid below `root` in the parent tree of `table`, parents before children."""
    kids: dict[int, list[int]] = {}
    for pid, (_, _, ppid) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = sorted(kids.get(root, []))
    while todo:
        pid = todo.pop(0)
        if pid == root or pid in out:
            continue
        out.append(pid)
        todo.extend(sorted(kids.get(pid, [])))
    return out


def children() -> list[int]:
    """Our direct children (/proc/self/task/*/children, else a scan of /proc)."""
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
        for tid in tasks:
            with open(f"/proc/self/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        return out
    except (OSError, ValueError):
        me = os.getpid()
        return [pid for pid, (_, _, ppid) in processes().items() if ppid == me]


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def argv0(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0]
    except OSError:
        return b""


def describe_status(status: int) -> str:
    """A wait status for a person: "exit status 3", "killed by signal 9"."""
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"wait status {status}"
