"""Reading block devices without letting one of them stop the boot.

Every byte PID 1 reads from a disk to identify it (partition table, superblock) is read
here, in `read_device`, and in PID 1 that function runs in a child process, the *probe
worker*, with a deadline:

- a disk is input: whatever a probe raises while reading ONE device (a damaged table, a
  superblock that asks for too much, a bug in a probe) leaves that device unknown, and the
  caller logs one line naming it; nothing reaches the boot;
- a disk that never answers a read (a dying drive retrying forever, an iSCSI or NBD
  server gone after the kernel's partition scan) leaves the read blocked in the kernel.
  That read happens in the worker: at the deadline PID 1 gives up on the device (unknown,
  one log line), kills the worker and starts a new one for the next device. The boot goes
  on and the root timeout still fires.

Why a child process and not a thread: a thread blocked in a read of a dead device is
still part of PID 1. execve() of the real init must first kill every other thread of the
process (the kernel's de_thread) and waits until they are gone; a read sleeping in
TASK_UNINTERRUPTIBLE never goes, and the exec would hang with it. That is what a buffered
read of a block device that stopped answering does: in tests/vm/test_hostile_disks.py the
SIGKILLed worker is still in state D when the real init runs. A child process blocked the
same way only lingers beside the real init (the real init inherits one sleeping process,
which dies if the read ever ends); PID 1 itself never waits for it (Reaper.abandon). One
worker serves every device in turn, so a boot pays for one
fork (a few ms under TCG), not one per device; requests and answers are marshal'd over
two pipes.
"""
from __future__ import annotations

import marshal
import os
import select
import struct
import time

from pyinit import blkid, partitions

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    # A partition table as the worker sends it: (pttype, ptuuid, [(number, start, size, uuid,
    # name, type, attrs)]): plain data, for marshal.
    TableData = tuple[str, str, list[tuple[int, int, int, str, str, str, int]]]
    Request = tuple[str, str, int]  # (node, devtype, sector size)
    Answer = tuple[str, dict[str, str] | str, TableData | None]  # ("ok", info, table) or ("error", why, None)

PROBE_DEADLINE = 10.0  # seconds for one device's probe (a 68 KiB read and a few more)
_LEN = struct.Struct("<I")


class Result:
    """What a probe found: `info` (blkid's keys), `table` (a disk's partitions.Table or
    None); or `error` (why the device is unknown: a timeout or an exception)."""

    __slots__ = ("error", "info", "table", "timed_out")

    def __init__(self, info: dict[str, str] | None = None, table: partitions.Table | None = None,
                 error: str | None = None, timed_out: bool = False) -> None:
        self.info, self.table, self.error, self.timed_out = info or {}, table, error, timed_out


# --------------------------------------------------------------------------- the reading

def read_device(node: str, devtype: str, sector_size: int = 512) -> tuple[dict[str, str], TableData | None]:
    """Read `node` once: a disk's partition table (and, without one, its superblock); a
    partition's superblock. -> (info, table as plain data or None). Raises on anything
    wrong; every read is bounded by blkid.Source."""
    # O_NONBLOCK so that opening never waits (a FIFO, a tape), then blocking reads: the
    # deadline, not the flag, is what bounds a read.
    fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    with open(fd, "rb", buffering=0) as f:
        os.set_blocking(fd, True)
        src = blkid.Source(f)
        info: dict[str, str] = {}
        if devtype == "disk":
            table = partitions.read_table(src, sector_size) if src.size else None
            if table is not None:
                info["PTTYPE"], info["PTUUID"] = table.pttype, table.ptuuid
                return info, table_data(table)  # its filesystems are on the partitions
        found = blkid.probe(src)
    if found:
        info.update(found)
    return info, None


def table_data(table: partitions.Table) -> TableData:
    return (table.pttype, table.ptuuid,
            [(e.number, e.start, e.size, e.uuid, e.name, e.type, e.attrs) for e in table.entries])


def table_from_data(data: TableData | None) -> partitions.Table | None:
    if data is None:
        return None
    pttype, ptuuid, entries = data
    return partitions.Table(pttype, ptuuid, [partitions.Entry(*e) for e in entries])


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def probe_inline(node: str, devtype: str, sector_size: int = 512) -> Result:
    """read_device in this process; any exception -> an unknown device."""
    try:
        info, table = read_device(node, devtype, sector_size)
    except Exception as e:
        return Result(error=_describe(e))
    return Result(info, table_from_data(table))


# --------------------------------------------------------------------------- the worker

class Prober:
    """Probes devices in a child process with a deadline (see the module doc). Started at
    the first probe; `close()` ends it."""

    def __init__(self, deadline: float = PROBE_DEADLINE) -> None:
        self.deadline = deadline
        self.pid: int | None = None
        self._to: int | None = None  # the request pipe's write end
        self._from: int | None = None  # the answer pipe's read end
        self.abandoned: list[int] = []  # workers given up on (SIGKILLed, maybe still in a read)

    def probe(self, node: str, devtype: str, sector_size: int = 512, deadline: float | None = None) -> Result:
        deadline = self.deadline if deadline is None else deadline
        if (self.pid is None and not self._start()) or self._to is None or self._from is None:
            return probe_inline(node, devtype, sector_size)  # no fork (out of memory): read here
        try:
            _write_msg(self._to, (node, devtype, sector_size))
            answer = _read_msg(self._from, time.monotonic() + deadline)
        except TimeoutError:
            self._abandon()
            return Result(error=f"no answer to a read within {deadline:g} s", timed_out=True)
        except (OSError, EOFError, ValueError) as e:  # the worker died (OOM killer, a bug)
            self._abandon()
            return Result(error=f"the probe worker failed: {_describe(e)}")
        if not isinstance(answer, tuple) or len(answer) != 3:
            self._abandon()
            return Result(error=f"the probe worker answered {type(answer).__name__}")
        kind, a, b = answer
        if kind == "ok":
            return Result(a, table_from_data(b))
        return Result(error=str(a))

    def _start(self) -> bool:
        from pyinit.reaper import REAPER
        req_r, req_w = os.pipe2(os.O_CLOEXEC)
        ans_r, ans_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError:
            for fd in (req_r, req_w, ans_r, ans_w):
                os.close(fd)
            return False
        if pid == 0:  # the worker: never return into PID 1's code
            try:
                os.close(req_w)
                os.close(ans_r)
                _serve(req_r, ans_w)
            finally:
                os._exit(0)
        REAPER.protect(pid)  # its status is ours to collect, not the reaper's
        os.close(req_r)
        os.close(ans_w)
        self.pid, self._to, self._from = pid, req_w, ans_r
        return True

    def _close_pipes(self) -> None:
        for fd in (self._to, self._from):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._to = self._from = None

    def _kill(self) -> int | None:
        """Take the worker from this Prober, close its pipes and SIGKILL it; its pid, or
        None when there was no worker."""
        pid, self.pid = self.pid, None
        self._close_pipes()
        if pid is not None:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        return pid

    def _abandon(self) -> None:
        """Kill the worker without waiting for it: it may sleep in a read that never ends.
        The reaper collects it whenever it dies."""
        from pyinit.reaper import REAPER
        pid = self._kill()
        if pid is None:
            return
        REAPER.abandon(pid, "SIGKILLed after a read that never returned; it dies when the read does")
        self.abandoned.append(pid)
        try:
            os.waitpid(pid, os.WNOHANG)  # already dead if its read was interruptible after all
        except ChildProcessError:
            pass

    def close(self) -> None:
        """End the worker. It is idle (a worker whose read never returned was abandoned), in
        an interruptible read of its request pipe: SIGKILL ends it at once, and it is reaped
        here, before the real init could inherit it."""
        from pyinit.reaper import REAPER
        pid = self._kill()
        if pid is None:
            return
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        REAPER.unprotect(pid)


def _serve(req: int, ans: int) -> None:
    """The worker's loop: PID 1's signal handlers are not its own (a SIGTERM must end it,
    not shut the machine down), and the end of the request pipe ends it."""
    import _signal

    from pyinit.reaper import PID1_SIGNALS
    try:
        with open("/proc/self/comm", "w") as f:
            f.write("pyinit-probe")  # what ps and the leftover list show, not a second "init"
    except OSError:
        pass
    for name in PID1_SIGNALS:
        try:
            _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
        except (AttributeError, OSError, ValueError):
            pass
    while True:
        try:
            request = _read_msg(req, None)
        except (EOFError, OSError, ValueError):
            return
        if not isinstance(request, tuple) or len(request) != 3:
            return
        node, devtype, sector_size = request
        answer: Answer
        try:
            info, table = read_device(str(node), str(devtype), int(sector_size))
            answer = ("ok", info, table)
        except Exception as e:
            answer = ("error", _describe(e), None)
        try:
            _write_msg(ans, answer)
        except OSError:
            return


def _write_msg(fd: int, obj: Request | Answer) -> None:
    data = marshal.dumps(obj)
    data = _LEN.pack(len(data)) + data
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_exact(fd: int, n: int, until: float | None) -> bytes:
    out = b""
    while len(out) < n:
        if until is not None:
            left = until - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError()
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError()
        out += chunk
    return out


def _read_msg(fd: int, until: float | None) -> object:
    size, = _LEN.unpack(_read_exact(fd, _LEN.size, until))
    if size > 16 << 20:
        raise ValueError(f"a probe answer of {size} bytes")
    return marshal.loads(_read_exact(fd, size, until))
