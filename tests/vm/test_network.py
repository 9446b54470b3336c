"""The network hook against QEMU's user-mode network (slirp: DHCP server and gateway at
10.0.2.2, DNS at 10.0.2.3): ip=dhcp through pyroute2's DHCP client, and a static ip=. The
real init's report shows the address and the default route the initramfs configured."""
from __future__ import annotations

import pytest

from devtools.qemu import boot
from devtools.rootdisk import make_root_disk

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

NIC = ["-nic", "user,model=virtio-net-pci"]
MODULES = {"6.1": "virtio_pci,virtio_blk,virtio_net,ext4", "6.12": "virtio_blk,virtio_net,ext4"}


@pytest.fixture(scope="module")
def net_image(pyinit_image):
    return lambda series: pyinit_image(series, modules=MODULES[series], extra=("--hook", "network"))


@pytest.fixture(scope="module")
def root_disk(tmp_path_factory):
    return make_root_disk(tmp_path_factory.mktemp("net") / "root.img")


def handed_over(r):
    assert not r.timed_out and not r.panicked, r
    assert r.report is not None and r.report.done and r.report.pid == 1, r
    return r.report


def test_ip_dhcp_against_qemu_user_network(kernel_612, net_image, root_disk, console_log):
    r = boot(kernel_612, net_image("6.12"), f"root=UUID={root_disk.uuid} ip=dhcp rd.emergency=poweroff rd.shell=0",
             disks=[root_disk.path], extra_args=NIC, log=console_log, timeout=300)
    assert "pyinit: network: eth0: 10.0.2.15/24 via 10.0.2.2 (DHCP from 10.0.2.2), DNS 10.0.2.3" in r.console, r
    rep = handed_over(r)
    assert rep.ipv4().get("eth0") == ["10.0.2.15/24"], rep.addresses
    assert any(route.startswith("default via 10.0.2.2 dev eth0") for route in rep.routes), rep.routes


def test_static_ip(kernel_61, net_image, root_disk, console_log):
    r = boot(kernel_61, net_image("6.1"),
             f"root=UUID={root_disk.uuid} ip=10.0.2.20::10.0.2.2:255.255.255.0:pyinit-static:eth0:none:10.0.2.3 "
             "rd.emergency=poweroff rd.shell=0", disks=[root_disk.path], extra_args=NIC, log=console_log, timeout=300)
    assert "pyinit: network: eth0: 10.0.2.20/24 via 10.0.2.2 (static)" in r.console, r
    assert "DHCP" not in r.console
    rep = handed_over(r)
    assert rep.ipv4().get("eth0") == ["10.0.2.20/24"], rep.addresses
    assert any(route.startswith("default via 10.0.2.2 dev eth0") for route in rep.routes), rep.routes


def test_no_ip_means_no_network_and_no_pyroute2(kernel_61, net_image, root_disk, console_log):
    """The hook is in the image but the command line asks for nothing: no interface is
    configured (and pyroute2 is never imported: the hook returns before its import)."""
    r = boot(kernel_61, net_image("6.1"), f"root=UUID={root_disk.uuid} rd.emergency=poweroff rd.shell=0 rd.debug",
             disks=[root_disk.path], extra_args=NIC, log=console_log, timeout=300)
    rep = handed_over(r)
    assert "pyinit: hook initqueue/10-network.py: ok" in r.console, r  # it ran (rd.debug says so)
    assert "pyinit: network:" not in r.console
    assert "eth0" not in rep.ipv4(), rep.addresses


def test_nfs_root_from_a_user_space_server(kernel_61, pyinit_image, tmp_path, console_log):
    """root=nfs4: through QEMU's user network to nfs-ganesha on this host's loopback (the
    host kernel has no nfsd). The real init runs from the export and writes its report
    there, read back from the host."""
    from devtools.nfsserver import NfsServer
    from devtools.rootdisk import stage_root
    tree = tmp_path / "export"
    tree.mkdir()
    stage_root(tree)
    image = pyinit_image("6.1", modules="virtio_pci,virtio_net", extra=("--hook", "nfs"))  # requires network
    with NfsServer(tree) as server:
        r = boot(kernel_61, image,
                 f"root=nfs4:10.0.2.2:{server.pseudo}:port={server.port} rw rd.emergency=poweroff rd.shell=0",
                 extra_args=NIC, log=console_log, timeout=300)
    assert "is handled by the nfs hook" in r.console, r
    assert "pyinit: network: eth0: 10.0.2.15/24" in r.console, r  # no ip=: nfs asked for DHCP
    rep = handed_over(r)
    root = rep.mount_at("/")
    assert root.fstype == "nfs4" and root.source == "10.0.2.2:/root" and not root.readonly, rep.mounts
    assert f"port={server.port}" in root.super_options
    report = tree / "realinit.report"
    assert report.exists() and "REALINIT-DONE" in report.read_text()  # written over NFS
