"""The nfs hook's root= / nfsroot= parser and its mount attempts (pure)."""
from __future__ import annotations

import pytest

from tests.support.hooks import load_hook

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def nfs():
    return load_hook("nfs")


@pytest.mark.parametrize("root, nfsroot, expect", [
    ("nfs:10.0.2.2:/srv/root", None, ("nfs", "10.0.2.2", "/srv/root", [])),
    ("nfs4:server.lan:/r:port=2050,timeo=20", None, ("nfs4", "server.lan", "/r", ["port=2050", "timeo=20"])),
    ("nfs:[fd00::1]:/r:vers=4.1", None, ("nfs", "fd00::1", "/r", ["vers=4.1"])),
    ("/dev/nfs", "10.0.0.1:/export,vers=3,tcp", ("nfs", "10.0.0.1", "/export", ["vers=3", "tcp"])),
    ("nfs", "10.0.0.1:/export", ("nfs", "10.0.0.1", "/export", [])),
])
def test_parse_root(nfs, root, nfsroot, expect):
    assert nfs.parse_root(root, nfsroot) == nfs.NfsRoot(*expect)


@pytest.mark.parametrize("root", ["/dev/vda", "UUID=abc", "LABEL=x:y", None])
def test_other_roots_are_not_ours(nfs, root):
    assert nfs.parse_root(root) is None


@pytest.mark.parametrize("root, nfsroot, words", [
    ("/dev/nfs", None, "needs nfsroot="), ("/dev/nfs", "/export", "no server"),
    ("nfs:server", None, "expected SERVER:/PATH"), ("nfs::/x", None, "empty server"),
    ("nfs4:s:relative", None, "must be absolute"), ("nfs:[fd00::1:/x", None, "unclosed"),
])
def test_parse_errors(nfs, root, nfsroot, words):
    with pytest.raises(ValueError, match=words):
        nfs.parse_root(root, nfsroot)


def test_attempts_negotiate_versions_and_v3_gets_nolock(nfs):
    r = nfs.NfsRoot("nfs", "s", "/r", ["port=2050", "ro"])
    assert nfs.attempts(r, True) == [("nfs4", "port=2050,vers=4.2"), ("nfs4", "port=2050,vers=4.1"),
                                     ("nfs4", "port=2050,vers=4.0"), ("nfs", "port=2050,vers=3,nolock")]
    assert nfs.attempts(nfs.NfsRoot("nfs4", "s", "/r", []), True)[-1] == ("nfs4", "vers=4.0")
    assert nfs.attempts(nfs.NfsRoot("nfs", "s", "/r", ["nfsvers=3", "lock"]), True) == [("nfs", "lock,vers=3")]


def test_resume_swap_probe_and_words(tmp_path):
    import subprocess

    from pyinit import cmdline
    resume = load_hook("resume")
    swap = tmp_path / "swap"
    swap.write_bytes(b"\0" * (1 << 20))
    subprocess.run(["mkswap", "-L", "sw", "-U", "5e1f0000-0000-4000-8000-0000000000cc", str(swap)],
                   check=True, capture_output=True)
    assert resume.swap_info(str(swap)) == {"TYPE": "swap", "UUID": "5e1f0000-0000-4000-8000-0000000000cc",
                                           "LABEL": "sw", "IMAGE": False}
    data = bytearray(swap.read_bytes())
    data[4086:4096] = b"S1SUSPEND\0"  # what the kernel leaves when it hibernates there
    swap.write_bytes(bytes(data))
    assert resume.swap_info(str(swap))["IMAGE"] is True
    assert resume.swap_info(str(tmp_path)) is None
    s, offset = resume.parse(cmdline.parse("resume=UUID=ABC resume_offset=42"))
    assert (s.kind, s.value, offset) == ("UUID", "abc", "42")
    assert resume.parse(cmdline.parse("resume=/dev/vdb noresume")) == (None, None)
    with pytest.raises(ValueError, match="resume_offset"):
        resume.parse(cmdline.parse("resume=/dev/vdb resume_offset=x"))
