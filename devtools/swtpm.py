"""A software TPM 2.0 (Debian's swtpm) for the VM tier: QEMU's tpm-tis device at boot, and
the same TPM on the host while the disk builder enrols a LUKS2 token into it.

    with Swtpm(state_dir) as tpm:               # for QEMU: tpm.qemu_args()
        boot(..., extra_args=tpm.qemu_args())
    with Swtpm(state_dir, host=True) as tpm:    # for the host's tools:
        subprocess.run(["systemd-cryptenroll", f"--tpm2-device={tpm.tcti}", ...])

The state folder holds the TPM's seeds: a token sealed against it unseals only with the
same state (a copy made for each boot: swtpm writes into it). PCRs start from zero at each
TPM2_Startup. SeaBIOS, with a TPM present, measures its boot into PCRs 0-7; PCR 7 gets only
its separator event (the four bytes ff ff ff ff), so `seabios_pcr7()` replays that on the
host before enrolling and the policy matches what the guest's PCR 7 holds at boot (checked
against a real boot: sha256 bank, PCR 7 = e21b703e...).

Needs the Debian packages swtpm, swtpm-tools (swtpm_ioctl), tpm2-tools (tpm2_pcrextend)
and libtss2-tcti-swtpm0 (the host tools' TCTI for swtpm).
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SEABIOS_SEPARATOR = b"\xff\xff\xff\xff"


class SwtpmError(RuntimeError):
    pass


def find(tool: str, package: str) -> str:
    exe = shutil.which(tool)
    if not exe:
        raise SwtpmError(f"{tool} not found: install the Debian package {package}")
    return exe


class Swtpm:
    """swtpm on unix sockets in a private temporary folder, stopped (its state saved) on exit."""

    def __init__(self, state: Path, *, host: bool = False):
        self.state = Path(state)
        self.host = host
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Swtpm:
        exe = find("swtpm", "swtpm")
        self.state.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="pyinit-swtpm.")
        sock = Path(self._tmp.name) / "tpm.sock"
        self.server = sock
        self.ctrl = Path(str(sock) + ".ctrl")  # where the swtpm TCTI looks for the control channel
        argv = [exe, "socket", "--tpm2", "--tpmstate", f"dir={self.state}",
                "--ctrl", f"type=unixio,path={self.ctrl}"]
        if self.host:
            # the host's tools speak to the server socket; nobody sends CMD_INIT/Startup for them
            argv += ["--server", f"type=unixio,path={sock}", "--flags", "not-need-init,startup-clear"]
        else:
            argv += ["--terminate"]  # QEMU initialises it; it ends when QEMU disconnects
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None  # a pipe, as asked
        output = self.proc.stdout
        wait_for = [self.ctrl] + ([sock] if self.host else [])
        deadline = time.monotonic() + 20
        while not all(p.exists() for p in wait_for):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = output.read().decode(errors="replace") if self.proc.poll() is not None else ""
                self.stop()
                raise SwtpmError(f"swtpm did not start: {' '.join(argv)}\n{out}")
            time.sleep(0.02)
        return self

    @property
    def tcti(self) -> str:
        """The TCTI for tss2's tools and systemd's --tpm2-device= (host mode)."""
        return f"swtpm:path={self.server}"

    def qemu_args(self) -> list[str]:
        return ["-chardev", f"socket,id=chrtpm,path={self.ctrl}",
                "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"]

    def seabios_pcr7(self) -> None:
        """Extend PCR 7 (sha256) as SeaBIOS does at boot (host mode)."""
        digest = hashlib.sha256(SEABIOS_SEPARATOR).hexdigest()
        subprocess.run([find("tpm2_pcrextend", "tpm2-tools"), "-T", self.tcti, f"7:sha256={digest}"],
                       check=True, capture_output=True)

    def extend_pcr7(self, data: bytes) -> None:
        """One more measurement into PCR 7 (host mode)."""
        subprocess.run([find("tpm2_pcrextend", "tpm2-tools"), "-T", self.tcti,
                        f"7:sha256={hashlib.sha256(data).hexdigest()}"], check=True, capture_output=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.host and shutil.which("swtpm_ioctl"):
                # a clean stop writes the volatile state too; when it fails, the wait and kill below stop it
                subprocess.run(["swtpm_ioctl", "--unix", str(self.ctrl), "-s"], capture_output=True, timeout=20,
                               check=False)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __exit__(self, *exc) -> None:
        self.stop()


def expected_pcr7() -> str:
    """PCR 7 (sha256, hex) after SeaBIOS's boot measurements."""
    return hashlib.sha256(bytes(32) + hashlib.sha256(SEABIOS_SEPARATOR).digest()).hexdigest()
