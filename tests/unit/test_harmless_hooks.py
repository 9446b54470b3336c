"""Hooks that fail harmlessly stay harmless (issue 12, item 3): a hook's `except Exception`
cannot swallow its deadline, a DHCP offer or lease without option 1 or 54 is refused and
the next one tried, an NFS mount that never answers ends at its timeout. (mdadm failing on
a stale member: tests/unit/test_hostile_disks.py.)"""
import asyncio
import time
import types

import pytest

from pyinit import cmdline, hooks
from pyinit.errors import BootError
from tests.support.hooks import load_hook, runner, write

pytestmark = pytest.mark.unit


@pytest.fixture
def tree(tmp_path):
    return tmp_path / "hooks"


def test_a_python_hook_cannot_swallow_its_timeout(tree, tmp_path):
    """The hook catches Exception (and even everything, once) around a long wait: its
    deadline still ends it."""
    write(tree / "pre-mount" / "10-greedy.py", """
        import time
        def run(context):
            for _ in range(40):
                try:
                    time.sleep(0.1)
                except Exception:
                    pass
            try:
                time.sleep(3)
            except BaseException:
                pass
            time.sleep(3)
        """)
    r = runner(tree, tmp_path, "pre-mount/10-greedy.py timeout=0.3\n")
    t0 = time.monotonic()
    with pytest.raises(BootError, match=r"10-greedy.py\) failed at stage pre-mount: timed out after 0.3 s"):
        r.run_stage("pre-mount", boot_stage="pre-mount")
    assert time.monotonic() - t0 < 9.0  # the hook, left alone, runs 10 s
    assert issubclass(hooks.HookTimeout, BaseException) and not issubclass(hooks.HookTimeout, Exception)


@pytest.mark.parametrize("options, problem", [
    ({"subnet_mask": "255.255.255.0", "server_id": "10.0.2.2"}, None),
    ({"server_id": "10.0.2.2"}, "no subnet mask (option 1)"),
    ({"subnet_mask": "255.0.255.0", "server_id": "10.0.2.2"}, "not one (option 1)"),
    ({"subnet_mask": "255.255.255.0"}, "no server identifier (option 54)"),
])
def test_lease_problem(options, problem):
    net = load_hook("network")
    got = net.lease_problem(options)
    assert got == problem if problem is None else problem in got


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)


def test_an_offer_without_option_1_is_refused_and_the_client_waits_for_the_next():
    from pyroute2.dhcp.client import ClientConfig
    from pyroute2.dhcp.fsm import State
    net = load_hook("network")
    log = Log()
    sent = []

    async def transition(to, send=None):
        sent.append(to)

    async def make():
        client = net.checking_client("eth0", log)(ClientConfig(interface="eth0"))
        client.transition = transition
        client._state = State.SELECTING
        return client
    client = asyncio.run(make())
    bad = types.SimpleNamespace(dhcp={"yiaddr": "10.0.2.15", "options": {"server_id": "10.0.2.2"}},
                                eth_src="52:55:0a:00:02:02")
    asyncio.run(client.offer_received(bad))
    assert sent == [] and log.lines == ["network: eth0: refusing the DHCP offer of 10.0.2.15 from 52:55:0a:00:02:02: "
                                        "no subnet mask (option 1); waiting for another offer"]
    good = types.SimpleNamespace(dhcp={"yiaddr": "10.0.2.16", "options": {"server_id": "10.0.2.2",
                                                                          "subnet_mask": "255.255.255.0",
                                                                          "message_type": 2}},
                                 eth_src="52:55:0a:00:02:02", xid=None)
    try:
        asyncio.run(client.offer_received(good))
    except Exception:
        pass  # building the REQUEST from a fake offer may fail; the transition is what counts
    assert len(log.lines) == 1


def test_an_nfs_mount_that_never_answers_ends_at_its_timeout(monkeypatch, tmp_path):
    """mount(2) sleeps in the kernel (here: a mount that takes 20 s); the hook ends at
    rd.nfs.timeout= with a message naming the server, PID 1 never waited for it."""
    from pyinit import syscalls as sc
    nfs = load_hook("nfs")

    def slow_mount(*a, **k):
        time.sleep(20)
        raise OSError(110, "timed out")
    monkeypatch.setattr(sc, "mount", slow_mount)
    ctx = types.SimpleNamespace(cmdline=cmdline.parse("root=nfs:10.0.2.4:/srv ro rd.nfs.timeout=1"),
                                newroot=str(tmp_path / "sysroot"), log=None)
    t0 = time.monotonic()
    with pytest.raises(hooks.HookFailed, match=r"cannot mount 10.0.2.4:/srv: the server did not answer within 1 s"):
        nfs.mount(ctx, nfs.parse_root(ctx.cmdline.root))
    assert time.monotonic() - t0 < 15  # the mount, left alone, takes 20 s per version
