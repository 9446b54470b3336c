"""A user-space NFS server (nfs-ganesha, its VFS backend) for NFS-root VM tests.

This machine's kernel has no nfsd, but QEMU's user-mode network forwards the guest's
connections to 10.0.2.2 to the host's loopback, where ganesha listens (NFSv4 only, on an
unprivileged port of its own, no rpcbind):

    with NfsServer(tree) as server:
        boot(..., f"root=nfs4:10.0.2.2:{server.pseudo}:port={server.port}", extra_args=NIC)

Needs the Debian packages nfs-ganesha and nfs-ganesha-vfs.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CONFIG = """
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {port};
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFSV4 {{
    Graceless = true;   # no grace period: the guest may open files at once
}}
EXPORT {{
    Export_Id = 1;
    Path = {path};
    Pseudo = {pseudo};
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


def find_ganesha() -> str:
    exe = shutil.which("ganesha.nfsd") or shutil.which("ganesha.nfsd", path="/usr/bin:/usr/sbin")
    if not exe:
        raise FileNotFoundError("ganesha.nfsd not found: install the Debian packages nfs-ganesha and nfs-ganesha-vfs")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NfsServer:
    def __init__(self, path: Path, pseudo: str = "/root", port: int | None = None):
        self.path, self.pseudo, self.port = Path(path), pseudo, port or free_port()
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.log: Path | None = None

    def __enter__(self) -> NfsServer:
        exe = find_ganesha()
        self._tmp = tempfile.TemporaryDirectory(prefix="pyinit-ganesha.")
        tmp = Path(self._tmp.name)
        conf = tmp / "ganesha.conf"
        conf.write_text(CONFIG.format(port=self.port, path=self.path, pseudo=self.pseudo))
        self.log = tmp / "ganesha.log"
        self.proc = subprocess.Popen([exe, "-F", "-f", str(conf), "-L", str(self.log), "-p", str(tmp / "pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ganesha.nfsd exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"ganesha.nfsd does not listen on 127.0.0.1:{self.port}:\n{self.log_text()}")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:] if self.log else ""
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
