"""The nfs hook's root= / nfsroot= parser and its mount attempts (pure)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
HOOK = Path(__file__).resolve().parents[2] / "hooks" / "nfs" / "nfs.py"


@pytest.fixture(scope="module")
def nfs():
    spec = importlib.util.spec_from_file_location("nfs_hook", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
