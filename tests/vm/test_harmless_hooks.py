"""An NFS server that never answers (issue 12, item 3), under a real kernel: one boot.

A TCP listener on this host (reached through QEMU's user network at 10.0.2.2) completes
the handshake and never reads or answers: the kernel's NFS client sends its first RPC and
waits, in mount(2), where no signal of PID 1's own reaches it. The nfs hook ends at
rd.nfs.timeout=, names the server, and the boot goes to its emergency action instead of
hanging.
"""
from __future__ import annotations

import re
import select
import socket

import pytest

from devtools.qemu import boot

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]
NIC = ["-nic", "user,model=virtio-net-pci"]


def test_an_nfs_server_that_never_answers_ends_at_the_timeout(kernel_61, pyinit_image, console_log):
    image = pyinit_image("6.1", modules="virtio_pci,virtio_net", extra=("--hook", "nfs"))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # never accepted, never answered
        port = silent.getsockname()[1]
        r = boot(kernel_61, image, f"root=nfs4:10.0.2.2:/export:port={port} rd.nfs.timeout=5 "
                 "rd.emergency=poweroff rd.shell=0", extra_args=NIC, log=console_log, timeout=400)
        # the guest's NFS client really connected (slirp forwards 10.0.2.2 to this host)
        connected = bool(select.select([silent], [], [], 0)[0])
    c = r.console
    assert not r.timed_out and not r.panicked, r
    assert connected, "no connection reached the silent server"
    assert "pyinit: network: eth0: 10.0.2.15/24" in c, r
    assert re.search(r"cannot mount 10.0.2.2:/export: the server did not answer within 5 s \(rd.nfs.timeout=\); "
                     rf"tried: nfs4 port={port},vers=4.2", c), r
    assert "pyinit: boot failed at stage mount: hook nfs" in c, r
    assert "emergency action from rd.emergency=poweroff: poweroff" in c and "reboot: Power down" in c, r
