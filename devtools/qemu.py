"""Boot a kernel and an initramfs under QEMU (TCG) and capture the serial console.

    result = boot(kernel, initrd, "root=/dev/vda", disks=[disk.path], log=artifacts / "x.log")
    assert result.report and result.report.done, result

The guest's serial port is QEMU's stdio, a pipe read here, so ``console_input`` can answer
prompts: ``[("Password:", "secret\\n")]`` waits for each text in turn (after the previous
match) and then sends the answer.

``panic=-1`` is appended to the kernel command line unless the caller passed a ``panic=``
of its own: with QEMU's ``-no-reboot`` a panic then ends the VM at once instead of
waiting for the timeout. ``result.panicked`` tells such an end from a clean power-off.

Disks are virtio-blk by default, in the order given (vda, vdb, ...); ``DiskSpec`` chooses
the interface, a serial number, a WWN, read-only. The interfaces are the disk
controllers of real machines: ``virtio`` (virtio-blk-pci), ``scsi`` (virtio-scsi-pci),
``ide`` (the PC's PIIX), ``nvme``, ``ahci`` (a SATA controller, ICH9's AHCI), ``usb-storage``
(USB mass storage, bulk-only) and ``uas`` (USB Attached SCSI), the last two on a qemu-xhci
USB 3 controller. A controller is added once, before its first disk, in the order of the
disks, so PCI slots (and /dev/disk/by-path names) follow the list, unless ``slot`` pins the
PCI slot (of the disk's controller, or of the disk itself for virtio and nvme) and
``usb_port`` the port on the USB controller: then a machine with one of the disks names it
as a machine with all of them does. There is no network (``-nic none``) unless
``extra_args`` adds one; QEMU's other default devices (floppy, IDE cdrom, VGA) are left out
(``-nodefaults``). With ``qmp=True`` a QMP socket is opened and ``on_start`` is
called (in a thread, while the console is read) with a ``Machine`` that can ``execute``
QMP commands and ``wait_for`` console text, e.g. to hot-plug a disk once the init waits.

Needs the Debian package ``qemu-system-x86``.
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.kernels import Kernel
from devtools.qmp import QMP
from devtools.rootdisk import Report, find_report

QEMU = "qemu-system-x86_64"
PANIC_TEXTS = ("Kernel panic", "Attempted to kill init")
_RUN_INIT = re.compile(r"\[\s*(\d+\.\d+)\] Run \S+ as init process")
INTERFACES = ("virtio", "scsi", "ide", "nvme", "ahci", "usb-storage", "uas")


@dataclass(frozen=True)
class DiskSpec:
    path: Path
    interface: str = "virtio"  # one of INTERFACES
    format: str = "raw"
    serial: str | None = None  # shows as /dev/disk/by-id/*<serial>; nvme needs one
    readonly: bool = False
    cache: str | None = None  # QEMU's cache= (writeback when None)
    wwn: int | None = None  # ahci, ide, scsi, uas: a World Wide Name (by-id/wwn-0x...)
    slot: int | None = None  # PCI slot of the controller (virtio, nvme: of the disk itself)
    usb_port: int | None = None  # usb-storage, uas: the port on the xHCI controller


def find_qemu() -> str:
    exe = shutil.which(QEMU)
    if not exe:
        raise FileNotFoundError(f"{QEMU} not found: install the Debian package qemu-system-x86")
    return exe


def kernel_cmdline(append: str, console: str | None = "ttyS0") -> str:
    """``console=ttyS0`` + the caller's text + ``no_timer_check`` + ``panic=-1`` when no
    panic= was given. ``console=None`` leaves console= to the caller (``console=null`` tests:
    the serial port then shows nothing at all).

    no_timer_check: the kernel checks that the IO-APIC timer ticks within a few of its own
    delay loops; under TCG on a loaded host it sometimes does not, and the boot ends in
    "Kernel panic - not syncing: IO-APIC + timer doesn't work!" before any init runs (seen in
    a make test run at load 6). Clouds' VM images boot with it for the same reason. The
    kernel consumes the word: the init never sees it."""
    args = append.split()
    line = " ".join(([f"console={console}"] if console else []) + args
                    + ([] if "no_timer_check" in args else ["no_timer_check"]))
    if not any(a.startswith("panic=") for a in args):
        line += " panic=-1"
    return line


def _qemu_path(p: Path | str) -> str:
    return str(p).replace(",", ",,")  # a comma inside an option value is doubled


def disk_args(disks: Sequence[Path | str | DiskSpec]) -> list[str]:
    argv: list[str] = []
    controllers: set[str] = set()

    def controller(name: str, device: str, spec: DiskSpec) -> None:
        if name not in controllers:
            argv.extend(["-device", device + _addr(spec)])
            controllers.add(name)

    uas = 0
    for i, d in enumerate(disks):
        spec = d if isinstance(d, DiskSpec) else DiskSpec(Path(d))
        if spec.interface not in INTERFACES:
            raise ValueError(f"disk interface {spec.interface!r}: one of {INTERFACES}")
        drive = f"file={_qemu_path(spec.path)},if=none,id=disk{i},format={spec.format}"
        if spec.readonly:
            drive += ",readonly=on"
        if spec.cache:
            drive += f",cache={spec.cache}"
        argv += ["-drive", drive]
        serial = f",serial={spec.serial}" if spec.serial else ""
        wwn = f",wwn={spec.wwn:#x}" if spec.wwn else ""
        port = f",port={spec.usb_port}" if spec.usb_port else ""
        if spec.interface == "virtio":
            argv += ["-device", f"virtio-blk-pci,drive=disk{i}{serial}{_addr(spec)}"]
        elif spec.interface == "scsi":
            controller("scsi", "virtio-scsi-pci,id=scsi0", spec)
            argv += ["-device", f"scsi-hd,drive=disk{i},bus=scsi0.0{serial}{wwn}"]
        elif spec.interface == "ide":
            argv += ["-device", f"ide-hd,drive=disk{i}{serial}{wwn}"]
        elif spec.interface == "nvme":
            argv += ["-device", f"nvme,drive=disk{i},serial={spec.serial or f'nvme{i}'}{_addr(spec)}"]
        elif spec.interface == "ahci":
            # one AHCI controller; each disk on its own port (ahci0.0 is port 1 for Linux)
            controller("ahci", "ahci,id=ahci0", spec)
            n = sum(1 for e in disks[:i] if isinstance(e, DiskSpec) and e.interface == "ahci")
            argv += ["-device", f"ide-hd,drive=disk{i},bus=ahci0.{n}{serial}{wwn}"]
        elif spec.interface == "usb-storage":
            controller("xhci", "qemu-xhci,id=xhci0", spec)
            argv += ["-device", f"usb-storage,bus=xhci0.0,drive=disk{i}{serial}{port}"]
        elif spec.interface == "uas":
            controller("xhci", "qemu-xhci,id=xhci0", spec)
            argv += ["-device", f"usb-uas,id=uas{uas},bus=xhci0.0{port}",
                     "-device", f"scsi-hd,drive=disk{i},bus=uas{uas}.0,scsi-id=0,lun=0{serial}{wwn}"]
            uas += 1
    return argv


def _addr(spec: DiskSpec) -> str:
    return f",addr={spec.slot:#x}" if spec.slot is not None else ""


def qemu_argv(kernel: Kernel | Path | None, initrd: Path | None, append: str, *,
              disks: Sequence[Path | str | DiskSpec] = (), memory_mb: int = 512,
              smp: int = 1, extra_args: Sequence[str] = (),
              qmp_socket: Path | None = None, console: str | None = "ttyS0") -> list[str]:
    argv = [QEMU, "-accel", "tcg", "-m", str(memory_mb), "-smp", str(smp),
            # -nodefaults: no floppy, cdrom, SD slot, VGA or NIC to confuse device probing
            "-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio"]
    if kernel is not None:  # None: the firmware boots from a disk (devtools/uefi.py)
        vmlinuz = kernel.vmlinuz if isinstance(kernel, Kernel) else Path(kernel)
        argv += ["-kernel", str(vmlinuz), "-append", kernel_cmdline(append, console)]
        if initrd is not None:
            argv += ["-initrd", str(initrd)]
    if qmp_socket is not None:
        argv += ["-monitor", "none", "-qmp", f"unix:{_qemu_path(qmp_socket)},server=on,wait=off"]
    else:
        argv += ["-monitor", "none"]
    argv += disk_args(disks)
    argv += ["-nic", "none"] if not any(a in ("-nic", "-netdev", "-net") for a in extra_args) else []
    argv += list(extra_args)
    return argv


@dataclass
class BootResult:
    console: str
    returncode: int | None
    timed_out: bool
    seconds: float  # wall time from starting QEMU until it ended
    report: Report | None
    panicked: bool
    marker_seconds: float | None = None  # wall time until `marker` showed on the console
    marker: str = "REALINIT:"
    stderr: str = ""
    argv: list[str] = field(default_factory=list)
    log: Path | None = None

    @property
    def run_init_uptime(self) -> float | None:
        """Kernel timestamp of "Run /init as init process" (absent with ``quiet``)."""
        m = _RUN_INIT.search(self.console)
        return float(m.group(1)) if m else None

    @property
    def init_to_real_init(self) -> float | None:
        """Guest seconds from "Run /init" to the real init's first uptime reading."""
        if self.report is None or self.report.uptime is None or self.run_init_uptime is None:
            return None
        return self.report.uptime - self.run_init_uptime

    @property
    def lines(self) -> list[str]:
        return self.console.split("\n")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    def summary(self) -> str:
        up = self.report.uptime if self.report else None
        head = (f"BootResult(rc={self.returncode}, timed_out={self.timed_out}, "
                f"panicked={self.panicked}, wall {self.seconds:.1f} s, "
                f"{self.marker!r} at {_s(self.marker_seconds)}, guest uptime {_s(up)} "
                f"({_s(self.init_to_real_init)} after Run /init), "
                f"report={'done' if self.report and self.report.done else 'partial' if self.report else 'none'})")
        parts = [head, "command: " + " ".join(self.argv)]
        if self.log:
            parts.append(f"console log: {self.log}")
        if self.stderr.strip():
            parts.append("--- qemu stderr ---\n" + self.stderr.strip())
        parts.append("--- last 60 console lines ---\n" + self.tail(60))
        return "\n".join(parts)

    __repr__ = summary
    __str__ = summary


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


class Machine:
    """What ``on_start`` gets: the running VM's QMP client and its console."""

    def __init__(self, console: _Console, qmp: QMP | None):
        self.console = console
        self.qmp = qmp

    @property
    def pid(self) -> int:
        """QEMU's process id (devtools/bootprofile.py reads its CPU time from /proc)."""
        return self.console.pid

    def execute(self, command: str, **arguments):
        if self.qmp is None:
            raise RuntimeError("boot(..., qmp=True) is needed for QMP commands")
        return self.qmp.execute(command, **arguments)

    def wait_for(self, text: str, timeout: float = 60.0, start: int = 0) -> int | None:
        """Wait until ``text`` is on the console; return the offset after it, or None."""
        return self.console.wait_for(text, timeout, start)

    def send(self, text: str) -> None:
        self.console.send(text)

    def text(self) -> str:
        return self.console.text()


class _Console:
    """Collects the serial output (normalised to \\n), in a reader thread."""

    def __init__(self, proc: subprocess.Popen[bytes], marker: str, t0: float):
        # QEMU runs with its stdin and stdout on pipes: the serial port's two ends
        assert proc.stdin is not None and proc.stdout is not None
        self._in, self._out = proc.stdin, proc.stdout
        self.pid = proc.pid  # QEMU's, for its CPU time in /proc (devtools/bootprofile.py)
        self._parts: list[str] = []
        self._len = 0
        self._cond = threading.Condition()
        self._eof = False
        self._marker = marker
        self._t0 = t0
        self.marker_seconds: float | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self._out.fileno()
        pending_cr = ""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            text = decoder.decode(chunk, final=not chunk)
            text = pending_cr + text
            pending_cr = ""
            if chunk and text.endswith("\r"):  # its "\n" may come in the next chunk
                text, pending_cr = text[:-1], "\r"
            text = text.replace("\r\n", "\n").replace("\r", "")
            with self._cond:
                if text:
                    before = self._len
                    self._parts.append(text)
                    self._len += len(text)
                    if self.marker_seconds is None and self._marker:
                        start = max(0, before - len(self._marker))
                        if self._text().find(self._marker, start) >= 0:
                            self.marker_seconds = time.monotonic() - self._t0
                if not chunk:
                    self._eof = True
                self._cond.notify_all()
            if not chunk:
                return

    def _text(self) -> str:  # with the lock held
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def text(self) -> str:
        with self._cond:
            return self._text()

    def wait_for(self, needle: str, timeout: float, start: int = 0) -> int | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                i = self._text().find(needle, start)
                if i >= 0:
                    return i + len(needle)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    return None
                self._cond.wait(left)

    def send(self, text: str) -> None:
        self._in.write(text.encode())
        self._in.flush()

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)


def boot(kernel: Kernel | Path | None, initrd: Path | None, append: str = "", *,
         disks: Sequence[Path | str | DiskSpec] = (), memory_mb: int = 512, smp: int = 1,
         timeout: float = 180, extra_args: Sequence[str] = (),
         console_input: Sequence[tuple[str, str]] = (), qmp: bool = False,
         on_start: Callable[[Machine], None] | None = None, log: Path | None = None,
         marker: str = "REALINIT:", console: str | None = "ttyS0",
         tpm_state: Path | None = None) -> BootResult:
    """Boot and wait until QEMU exits (power-off, or panic with -no-reboot) or ``timeout``.
    ``kernel=None``: no -kernel, the firmware boots from the disks (devtools/uefi.py).

    ``tpm_state``: a swtpm state folder (devtools.swtpm); the guest gets a TPM 2.0 as a
    tpm-tis device, with swtpm running for this boot only (it writes into the folder: boot
    a copy).

    Never raises for what the guest does; raises FileNotFoundError when QEMU is missing,
    and re-raises an exception from ``on_start`` after the VM has been stopped.
    """
    if tpm_state is not None:
        from devtools.swtpm import Swtpm
        with Swtpm(Path(tpm_state)) as tpm:
            return boot(kernel, initrd, append, disks=disks, memory_mb=memory_mb, smp=smp, timeout=timeout,
                        extra_args=[*extra_args, *tpm.qemu_args()], console_input=console_input, qmp=qmp,
                        on_start=on_start, log=log, marker=marker, console=console)
    find_qemu()
    with tempfile.TemporaryDirectory(prefix="pyinit-qemu.") as tmp:
        qmp_socket = Path(tmp) / "qmp.sock" if qmp else None
        argv = qemu_argv(kernel, initrd, append, disks=disks, memory_mb=memory_mb, smp=smp,
                         extra_args=extra_args, qmp_socket=qmp_socket, console=console)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        serial = _Console(proc, marker, t0)  # the parameter `console` names the guest's device
        assert proc.stdin is not None and proc.stderr is not None  # pipes, as asked
        qemu_stdin, qemu_stderr = proc.stdin, proc.stderr
        stderr_parts: list[bytes] = []
        err_thread = threading.Thread(target=lambda: stderr_parts.append(qemu_stderr.read()),
                                      daemon=True)
        err_thread.start()
        failure: list[BaseException] = []
        client: QMP | None = None
        helper: threading.Thread | None = None
        timed_out = False
        try:
            if qmp_socket is not None:
                try:
                    client = QMP.connect(qmp_socket, timeout=30)
                except OSError as e:
                    failure.append(e)
            if console_input:
                threading.Thread(target=_feed, args=(serial, console_input, timeout),
                                 daemon=True).start()
            if on_start is not None and not failure:
                machine = Machine(serial, client)

                def run_on_start() -> None:
                    try:
                        on_start(machine)
                    except BaseException as e:  # reported after the VM is stopped
                        failure.append(e)
                        proc.kill()

                helper = threading.Thread(target=run_on_start, daemon=True)
                helper.start()
            if failure:
                proc.kill()
            try:
                proc.wait(timeout=max(0.0, timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.kill()
                proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            seconds = time.monotonic() - t0
            serial.join()
            err_thread.join(10)
            if helper is not None:  # its QMP calls fail fast now that QEMU is gone
                helper.join(10)
            if client is not None:
                client.close()
            try:
                qemu_stdin.close()
            except OSError:
                pass
    text = serial.text()
    result = BootResult(
        console=text, returncode=proc.returncode, timed_out=timed_out, seconds=seconds,
        report=find_report(text), panicked=any(p in text for p in PANIC_TEXTS),
        marker_seconds=serial.marker_seconds, marker=marker,
        stderr=b"".join(stderr_parts).decode(errors="replace"), argv=argv,
        log=Path(log) if log else None)
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(text)
    if failure:
        raise failure[0]
    return result


def _feed(console: _Console, pairs: Sequence[tuple[str, str]], timeout: float) -> None:
    pos = 0
    for wait_text, answer in pairs:
        end = console.wait_for(wait_text, timeout, pos)
        if end is None:
            return
        pos = end
        try:
            console.send(answer)
        except (BrokenPipeError, ValueError, OSError):
            return
