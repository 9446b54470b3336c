"""A tiny QMP (QEMU Machine Protocol) client over a unix socket.

    qmp = QMP.connect(sock_path)
    qmp.execute("blockdev-add", **{"node-name": "d1", "driver": "raw",
                                    "file": {"driver": "file", "filename": "/tmp/x.img"}})
    qmp.execute("device_add", driver="virtio-blk-pci", drive="d1", id="vd1")

Arguments with dashes in their names go through ``**{...}``. Asynchronous events that
arrive while waiting for a reply are kept in ``qmp.events``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path


class QMPError(RuntimeError):
    def __init__(self, command: str, error: dict):
        self.command = command
        self.error = error
        super().__init__(f"QMP {command}: {error.get('class')}: {error.get('desc')}")


class QMP:
    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._file = sock.makefile("rb")
        self._lock = threading.Lock()
        self.events: list[dict] = []
        self.greeting = self._read()
        if "QMP" not in self.greeting:
            raise ConnectionError(f"not a QMP greeting: {self.greeting!r}")
        self.execute("qmp_capabilities")

    @classmethod
    def connect(cls, path: Path | str, timeout: float = 10.0) -> QMP:
        """Connect, retrying while QEMU has not created the socket yet."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                sock.settimeout(60)
                return cls(sock)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _read(self) -> dict:
        line = self._file.readline()
        if not line:
            raise ConnectionError("QMP connection closed")
        return json.loads(line)

    def execute(self, command: str, **arguments):
        """Run a command and return its "return" value; raise QMPError on "error"."""
        msg: dict = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        with self._lock:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
            while True:
                reply = self._read()
                if "event" in reply:
                    self.events.append(reply)
                    continue
                if "error" in reply:
                    raise QMPError(command, reply["error"])
                return reply.get("return")

    def close(self) -> None:
        try:
            self._file.close()
            self._sock.close()
        except OSError:
            pass
