"""Bring the network up from ip= (and nameserver=), with pyroute2: netlink for links,
addresses and routes, its DHCP client for ip=dhcp. pyroute2 is imported here, inside run(),
and only when the command line asks for a network: never on the plain boot path.

    ip=dhcp | ip=on | ip=any            DHCP on every interface, until one gets a lease
    ip=IFACE:dhcp|on|any                DHCP on IFACE
    ip=ADDR:[PEER]:GW:NETMASK:HOSTNAME:IFACE:none|off[:DNS1[:DNS2]]
                                        static (NETMASK dotted or a prefix length; IFACE
                                        may be empty: the first interface)
    ip=ADDR:[PEER]:GW:NETMASK:HOSTNAME:IFACE:dhcp   DHCP, with these as hints only
    nameserver=ADDR                     more DNS servers (repeatable)
    rd.neednet=1                        bring the network up (DHCP) even without ip=
    rd.net.timeout.dhcp=SECONDS         how long DHCP may take (default 60)
    rd.net.timeout.iflink=SECONDS       how long to wait for interfaces to appear (default 30)

A DHCP offer or lease without a subnet mask (option 1) or a server identifier (option 54)
is refused with a log line: the client waits for the next offer, and when the lease itself
lacks them the next interface is tried (`lease_problem`).

Another hook may ask for the network without ip= (nfs does) by setting
context.boot.need_network = True in a cmdline hook: then ip=dhcp is assumed.
/etc/resolv.conf in the initramfs gets the DNS servers.
"""
import time

from pyinit.hooks import HookFailed

DHCP_TIMEOUT = 60.0
IFLINK_TIMEOUT = 30.0
DHCP_WORDS = ("dhcp", "on", "any")


class IpConfig:
    __slots__ = ("address", "dns", "gateway", "hostname", "iface", "method", "mtu", "prefixlen")

    def __init__(self, method, iface=None, address=None, prefixlen=None, gateway=None, hostname=None,
                 dns=(), mtu=None):
        self.method, self.iface, self.address, self.prefixlen = method, iface, address, prefixlen
        self.gateway, self.hostname, self.dns, self.mtu = gateway, hostname, list(dns), mtu

    def __eq__(self, other):
        if not isinstance(other, IpConfig):
            return NotImplemented  # not an AttributeError when compared with None or a string
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    # compared by value and mutable: unhashable, the data model's way (typeshed marks list's
    # __hash__ the same, with the same ignore: mypy wants a callable there)
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self):
        return "IpConfig(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def _fields(value):
    """Split on ':' except inside [IPv6 brackets]."""
    out, cur, depth = [], "", 0
    for ch in value:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == ":" and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [f[1:-1] if f.startswith("[") and f.endswith("]") else f for f in out]


def _ipv4(text, what, value):
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"ip={value}: {what} {text!r} is not an IPv4 address")
    return text


def _prefixlen(mask, value):
    if mask.isdigit():
        n = int(mask)
        if n > 32:
            raise ValueError(f"ip={value}: prefix length {n} is more than 32")
        return n
    bits = "".join(f"{int(p):08b}" for p in _ipv4(mask, "netmask", value).split("."))
    if "01" in bits:
        raise ValueError(f"ip={value}: netmask {mask} is not contiguous")
    return bits.count("1")


def parse_ip(value):
    """One ip= value -> IpConfig. Pure; ValueError naming the value."""
    if not value:
        raise ValueError("ip= is empty")
    if value in DHCP_WORDS:
        return IpConfig("dhcp")
    if value in ("off", "none"):
        return IpConfig("off")
    f = _fields(value)
    if len(f) >= 2 and len(f) <= 4 and f[1] in (*DHCP_WORDS, "off", "none"):
        mtu = int(f[2]) if len(f) > 2 and f[2].isdigit() else None
        return IpConfig("dhcp" if f[1] in DHCP_WORDS else "off", iface=f[0] or None, mtu=mtu)
    if len(f) < 7:
        raise ValueError(f"ip={value}: expected dhcp, IFACE:dhcp or "
                         "ADDR:PEER:GATEWAY:NETMASK:HOSTNAME:IFACE:none[:DNS1[:DNS2]]")
    addr, _peer, gw, mask, hostname, iface, method = f[:7]
    rest = f[7:]
    method = method or "none"
    if method in DHCP_WORDS:
        return IpConfig("dhcp", iface=iface or None, hostname=hostname or None)
    if method not in ("none", "off", "static"):
        raise ValueError(f"ip={value}: unknown method {method!r} (none, off, dhcp, on, any)")
    if not addr:
        raise ValueError(f"ip={value}: a static configuration needs an address")
    _ipv4(addr, "address", value)
    prefixlen = _prefixlen(mask, value) if mask else 24
    if gw:
        _ipv4(gw, "gateway", value)
    dns, mtu = [], None
    if len(rest) == 1 and rest[0].isdigit():
        mtu = int(rest[0])
    elif len(rest) == 2 and rest[0].isdigit() and ":" not in rest[1] and "." not in rest[1]:
        mtu = int(rest[0])  # [:MTU[:MACADDR]] is not supported beyond the MTU
    else:
        dns = [_ipv4(d, "DNS server", value) for d in rest if d]
    return IpConfig("static", iface=iface or None, address=addr, prefixlen=prefixlen, gateway=gw or None,
                    hostname=hostname or None, dns=dns, mtu=mtu)


def parse_cmdline(cmdline, need_network=False):
    """-> ([IpConfig], [extra DNS servers]); ValueError for a malformed word."""
    configs = [parse_ip(v) for v in cmdline.get_all("ip") if v is not None]
    if not configs and (need_network or cmdline.flag("rd.neednet")):
        configs = [IpConfig("dhcp")]
    configs = [c for c in configs if c.method != "off"]  # ip=off: no network, even for nfs
    dns = [_ipv4(v, "nameserver", v) for v in cmdline.get_all("nameserver") if v]
    return configs, dns


def _seconds(cmdline, name, default):
    try:
        return float(cmdline.get(name) or default)
    except ValueError:
        return default


def wait_for_interfaces(ipr, name, timeout):
    """Index list: of `name`, or of every non-loopback interface (in index order)."""
    deadline = time.monotonic() + timeout
    while True:
        if name:
            found = ipr.link_lookup(ifname=name)
        else:
            found = [link["index"] for link in ipr.get_links()
                     if link.get("ifname") != "lo" and link.get("IFLA_LINKINFO") is None]
        if found:
            return sorted(found)
        if time.monotonic() >= deadline:
            have = ", ".join(link.get("ifname") for link in ipr.get_links())
            raise HookFailed(f"network interface {name or '(any)'} did not appear within {timeout:g} s "
                             f"(interfaces: {have or 'none'}); is its driver in the image (--modules)?")
        time.sleep(0.2)


def ifname(ipr, index):
    return ipr.get_links(index)[0].get("ifname")


class LeaseRefused(Exception):
    pass


def lease_problem(options):
    """Why a DHCP offer or lease (its decoded options, pyroute2's names) cannot configure an
    interface, or None. Pure. Without option 1 there is no prefix length to give the
    address; without option 54 the lease cannot be told apart from another server's."""
    mask = options.get("subnet_mask")
    if not mask:
        return "no subnet mask (option 1)"
    try:
        _prefixlen(str(mask), "(DHCP)")
    except ValueError:
        return f"a subnet mask {mask!r} that is not one (option 1)"
    if not options.get("server_id"):
        return "no server identifier (option 54)"
    return None


def checking_client(iface, log=None):
    """pyroute2's AsyncDHCPClient requests the first offer it gets, whatever it holds: this
    subclass skips an offer lease_problem() refuses (one log line) and waits for the next."""
    from pyroute2.dhcp.client import AsyncDHCPClient

    class CheckingClient(AsyncDHCPClient):
        async def offer_received(self, msg):
            problem = lease_problem(msg.dhcp.get("options", {}))
            if problem is None:
                return await super().offer_received(msg)
            if log is not None:
                log.warning(f"network: {iface}: refusing the DHCP offer of {msg.dhcp.get('yiaddr')} from "
                            f"{msg.eth_src}: {problem}; waiting for another offer")

    return CheckingClient


def dhcp_lease(iface, timeout, hostname=None, log=None):
    """Run pyroute2's DHCP client on `iface` until it is bound; the lease (nothing configured).
    Offers that lease_problem() refuses are skipped (one log line each); a bound lease it
    refuses raises LeaseRefused."""
    import asyncio

    from pyroute2.dhcp.client import ClientConfig
    from pyroute2.dhcp.fsm import State
    from pyroute2.dhcp.leases import Lease

    CheckingClient = checking_client(iface, log)

    class MemoryLease(Lease):
        """Kept in memory only: the initramfs has nowhere worth writing a lease file."""

        def dump(self):
            pass

        @classmethod
        def load(cls, interface):
            return None

    async def get():
        cfg = ClientConfig(interface=iface, lease_type=MemoryLease, hooks=(), release=False,
                           handle_signals=False, write_pidfile=False, host_name=hostname or "pyinit")
        async with CheckingClient(cfg) as client:
            await client.bootstrap()
            await client.wait_for_state(State.BOUND, timeout=timeout)
            return client.lease

    lease = asyncio.run(get())
    problem = lease_problem(lease.ack.get("options", {}))
    if problem is not None:
        raise LeaseRefused(f"the DHCP lease of {lease.ack.get('yiaddr')} has {problem}")
    return lease


def configure_static(ipr, index, cfg, log):
    ipr.addr("replace", index=index, address=cfg.address, prefixlen=cfg.prefixlen)
    if cfg.gateway:
        ipr.route("replace", dst="0.0.0.0/0", gateway=cfg.gateway, oif=index)
    log.notice(f"network: {ifname(ipr, index)}: {cfg.address}/{cfg.prefixlen}"
               + (f" via {cfg.gateway}" if cfg.gateway else "") + " (static)")


def configure_lease(ipr, index, lease, log):
    ipr.addr("replace", index=index, address=lease.ip, prefixlen=lease.prefixlen)
    gateway = None
    try:
        gateway = lease.default_gateway
    except (LookupError, IndexError):
        pass
    if gateway:
        ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index)
    try:
        dns = list(lease.name_servers)
    except LookupError:
        dns = []
    log.notice(f"network: {ifname(ipr, index)}: {lease.ip}/{lease.prefixlen}"
               + (f" via {gateway}" if gateway else "") + f" (DHCP from {lease.server_id})"
               + (f", DNS {' '.join(dns)}" if dns else ""))
    return dns


def write_resolv_conf(servers, path="/etc/resolv.conf"):
    servers = list(dict.fromkeys(servers))
    if not servers:
        return
    with open(path, "w") as f:
        f.write("".join(f"nameserver {s}\n" for s in servers))


def run(context):
    c = context.cmdline
    need = bool(getattr(context.boot, "need_network", False))
    try:
        configs, extra_dns = parse_cmdline(c, need)
    except ValueError as e:
        raise HookFailed(str(e)) from None
    if not configs:
        return
    from pyroute2 import IPRoute  # here, not at the top: only a boot that asks pays for it
    dhcp_timeout = _seconds(c, "rd.net.timeout.dhcp", DHCP_TIMEOUT)
    link_timeout = _seconds(c, "rd.net.timeout.iflink", IFLINK_TIMEOUT)
    dns = []
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")
        if lo:
            ipr.link("set", index=lo[0], state="up")
        for cfg in configs:
            indexes = wait_for_interfaces(ipr, cfg.iface, link_timeout)
            if cfg.method == "static":
                indexes = indexes[:1]
            errors = []
            for index in indexes:
                ipr.link("set", index=index, state="up", **({"mtu": cfg.mtu} if cfg.mtu else {}))
                if cfg.method == "static":
                    configure_static(ipr, index, cfg, context.log)
                    dns += cfg.dns
                    break
                name = ifname(ipr, index)
                try:
                    lease = dhcp_lease(name, dhcp_timeout, cfg.hostname, context.log)
                except LeaseRefused as e:
                    context.log.warning(f"network: {name}: refusing it: {e}; trying the next interface")
                    errors.append(f"{name}: {e}")
                    continue
                except Exception as e:  # a timeout, a socket error: try the next interface
                    errors.append(f"{name}: {type(e).__name__}: {e}")
                    continue
                dns += configure_lease(ipr, index, lease, context.log)
                break
            else:
                raise HookFailed("DHCP failed on every interface: " + "; ".join(errors))
    write_resolv_conf(dns + extra_dns)
    context.boot.network_up = True
