"""The network hook's ip= parser (pure), and that pyroute2 stays out of module level."""
from __future__ import annotations

import ast

import pytest

from pyinit import cmdline
from tests.support.hooks import HOOKS, load_hook

pytestmark = pytest.mark.unit
HOOK = HOOKS / "network" / "network.py"


@pytest.fixture(scope="module")
def net():
    return load_hook("network")


@pytest.mark.parametrize("value, expect", [
    ("dhcp", {"method": "dhcp"}),
    ("on", {"method": "dhcp"}),
    ("eth1:dhcp", {"method": "dhcp", "iface": "eth1"}),
    ("eth1:dhcp:1400", {"method": "dhcp", "iface": "eth1", "mtu": 1400}),
    ("10.0.2.20::10.0.2.2:255.255.255.0:host:eth0:none:10.0.2.3",
     {"method": "static", "iface": "eth0", "address": "10.0.2.20", "prefixlen": 24, "gateway": "10.0.2.2",
      "hostname": "host", "dns": ["10.0.2.3"]}),
    ("192.168.1.5::192.168.1.1:16::eth0:off:1.1.1.1:8.8.8.8",
     {"method": "static", "iface": "eth0", "address": "192.168.1.5", "prefixlen": 16, "gateway": "192.168.1.1",
      "dns": ["1.1.1.1", "8.8.8.8"]}),
    ("10.1.1.1:::255.255.255.128:::none", {"method": "static", "address": "10.1.1.1", "prefixlen": 25}),
    ("10.1.1.1::::::none:9000", {"method": "static", "address": "10.1.1.1", "prefixlen": 24, "mtu": 9000}),
    (":::::eth0:dhcp", {"method": "dhcp", "iface": "eth0"}),
])
def test_parse_ip(net, value, expect):
    cfg = net.parse_ip(value)
    want = net.IpConfig(**expect)
    assert cfg == want, (cfg, want)


@pytest.mark.parametrize("value, words", [
    ("", "empty"), ("eth0", "expected dhcp"), ("10.0.0.300::::::none", "not an IPv4 address"),
    ("10.0.0.1:::255.0.255.0:::none", "not contiguous"), ("10.0.0.1:::33:::none", "more than 32"),
    ("10.0.0.1::::::ibft", "unknown method"), (":::::eth0:none", "needs an address"),
])
def test_parse_ip_errors(net, value, words):
    with pytest.raises(ValueError, match=words):
        net.parse_ip(value)


def test_cmdline_defaults_to_dhcp_only_when_another_hook_needs_the_network(net):
    assert net.parse_cmdline(cmdline.parse("root=/dev/vda"), False) == ([], [])
    configs, dns = net.parse_cmdline(cmdline.parse("root=/dev/vda nameserver=9.9.9.9"), True)
    assert configs == [net.IpConfig("dhcp")] and dns == ["9.9.9.9"]
    assert net.parse_cmdline(cmdline.parse("ip=off"), True) == ([], [])
    assert net.parse_cmdline(cmdline.parse("rd.neednet=1"), False) == ([net.IpConfig("dhcp")], [])
    assert net.parse_cmdline(cmdline.parse("rd.neednet=0"), False) == ([], [])


def test_pyroute2_is_imported_only_inside_functions():
    tree = ast.parse(HOOK.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not any("pyroute2" in name for name in names), names
