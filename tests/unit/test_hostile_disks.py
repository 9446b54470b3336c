"""Disks are input (issue 12, items 1-3): bounded probes, one unknown device with one log
line instead of a stopped boot, md superblocks believed only with their checksum, a
device that never answers a read given up on at a deadline, and the storage hooks finding
their devices in pyinit's table (read once per uevent) instead of reading every disk at
every turn of the initqueue."""
import os
import struct
import threading

import pytest

from pyinit import blkid, devices, partitions, rootspec
from tests.support.disks import gpt_disk, md12_member
from tests.support.fakesys import FakeMachine
from tests.support.hooks import load_hook

pytestmark = pytest.mark.unit


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(("warning", text))

    def info(self, text):
        self.lines.append(("info", text))

    notice = error = info

    def debug(self, text):
        pass


class CountingFile:
    """A file object that counts the bytes read from it (what PID 1 would allocate)."""

    def __init__(self, f, size):
        self.f = f
        self.read_bytes = 0
        self.size = size

    def seek(self, *a):
        return self.f.seek(*a)

    def read(self, n):
        self.read_bytes += n
        return self.f.read(n)


def test_gpt_header_cannot_make_pid1_read_256_mib(tmp_path):
    """count 4096 x entry size 65536 = 256 MiB, on a 300 MiB (sparse) disk: CRC-valid, not believed."""
    path = tmp_path / "disk"
    size = 300 << 20
    path.write_bytes(gpt_disk(size, count=4096, entry_size=65536))
    os.truncate(path, size)
    with open(path, "rb", buffering=0) as raw:
        f = CountingFile(raw, size)
        table = partitions.read_table(blkid.Source(f))
    assert f.read_bytes <= blkid.READ_BUDGET + blkid.HEAD, f.read_bytes
    assert table is None or table.pttype != "gpt"


@pytest.mark.parametrize("entries_lba", [1 << 62, (1 << 64) - 1, 1 << 40])
def test_gpt_entry_lba_past_the_disk_or_overflowing_leaves_the_device_known(tmp_path, entries_lba):
    """An entry LBA that overflows a file offset used to raise OverflowError out of the
    device tracker, which stopped the boot."""
    m = FakeMachine(tmp_path)
    env = m.add("vda", (254, 0), bytes(gpt_disk(8 << 20, entries_lba=entries_lba)))
    log = Log()
    devs = devices.Devices(str(m.sys), str(m.dev), links=False, log=log)
    devs.handle(m.event(env))
    assert "vda" in devs.blocks
    assert devs.blocks["vda"].info.get("PTTYPE") != "gpt"


def test_gpt_entry_with_last_before_first_is_skipped(tmp_path):
    entry = bytearray(128)
    entry[:16] = b"\x01" * 16
    entry[16:32] = b"\x02" * 16
    struct.pack_into("<QQ", entry, 32, 100, 50)
    good = bytearray(128)
    good[:16] = b"\x03" * 16
    good[16:32] = b"\x04" * 16
    struct.pack_into("<QQ", good, 32, 2048, 4095)
    path = tmp_path / "d"
    path.write_bytes(gpt_disk(8 << 20, count=128, entries=bytes(entry + good)))
    with open(path, "rb") as f:
        table = partitions.read_table(blkid.Source(f))
    assert table.pttype == "gpt" and [e.number for e in table.entries] == [2]


def test_source_bounds_every_read(tmp_path):
    path = tmp_path / "d"
    path.write_bytes(b"x" * (4 << 20))
    with open(path, "rb") as f:
        src = blkid.Source(f)
        assert src.read(-5, 10) == b"" and src.read(10 << 20, 10) == b""
        assert len(src.read((4 << 20) - 3, 100)) == 3  # clamped at the device's end
        with pytest.raises(blkid.ProbeLimit):
            src.read(1 << 20, blkid.MAX_READ + 1)


def test_an_exception_inside_a_probe_leaves_that_device_unknown_with_one_line(tmp_path, monkeypatch):
    """A bug (or anything unforeseen) while probing one device: that device is unknown, one
    log line names it, the next device is probed as usual."""
    m = FakeMachine(tmp_path)
    bad = m.add("vda", (254, 0), b"BAD!" + b"\0" * ((1 << 20) - 4))
    good = m.add("vdb", (254, 16), b"\0" * (1 << 20))

    def boom(src):
        if src.head.startswith(b"BAD!"):
            raise ZeroDivisionError("a probe's bug")
        return None
    monkeypatch.setattr(blkid, "PROBES", [boom, *blkid.PROBES])
    log = Log()
    devs = devices.Devices(str(m.sys), str(m.dev), links=False, log=log)
    devs.prober = InlineProber()  # the monkeypatch lives in this process only
    for env in (bad, good, bad):  # a second event for vda: no second line for the same reason
        devs.handle(m.event(env))
    assert devs.blocks["vda"].info == {} and "vdb" in devs.blocks
    lines = [t for lvl, t in log.lines if "vda" in t]
    assert len(lines) == 1 and "ZeroDivisionError: a probe's bug" in lines[0] and "/dev/vda" in lines[0], log.lines
    assert devs.blocks["vda"].describe().endswith("no filesystem found")


class InlineProber:
    """probe.Prober's interface, reading in this process; counts the reads."""
    deadline = 5.0

    def __init__(self):
        self.reads = []

    def probe(self, node, devtype, sector_size=512, deadline=None):
        from pyinit import probe
        self.reads.append(node)
        return probe.probe_inline(node, devtype, sector_size)

    def close(self):
        pass


def test_a_device_that_never_answers_is_given_up_at_the_deadline(tmp_path):
    """The node of vda is a FIFO with a writer that never writes: a read of it blocks, as a
    read of a dead disk does. The worker is given up on at the deadline, vda stays unknown
    with one line saying so, and vdb (probed by a new worker) is found."""
    m = FakeMachine(tmp_path)
    stalled = m.add("vda", (254, 0), b"\0" * 4096)
    os.unlink(m.dev / "vda")
    os.mkfifo(m.dev / "vda")
    writer = []
    t = threading.Thread(target=lambda: writer.append(os.open(m.dev / "vda", os.O_WRONLY)), daemon=True)
    t.start()
    ext4 = tmp_path / "fs"
    with open(ext4, "wb") as f:
        f.truncate(8 << 20)
    import subprocess
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "alive", str(ext4)], check=True)
    good = m.add("vdb", (254, 16), ext4.read_bytes())
    log = Log()
    devs = devices.Devices(str(m.sys), str(m.dev), links=False, log=log)
    devs.prober.deadline = 1.0  # the FIFO never answers: this always runs out
    try:
        devs.handle(m.event(stalled))
        devs.prober.deadline = 60.0  # and a loaded machine must not make vdb look dead
        devs.handle(m.event(good))
        assert devs.blocks["vda"].info == {}
        assert devs.find(rootspec.parse_root("LABEL=alive")) is devs.blocks["vdb"]
        gave_up = [t for _, t in log.lines if t.startswith("gave up on")]
        assert gave_up == [f"gave up on {m.dev}/vda: no answer to a read within 1 s; it is left unknown "
                           "and the boot goes on"], log.lines
        assert len(devs.prober.abandoned) == 1
        devs.rescan()  # a given-up device is not read again until its next event
        assert len(devs.prober.abandoned) == 1
    finally:
        devs.close()
        t.join(5)
        for fd in writer:
            os.close(fd)


# --------------------------------------------------------------------------- md superblocks

def test_md_superblock_is_believed_only_with_its_checksum(tmp_path):
    good, stale = tmp_path / "good", tmp_path / "stale"
    good.write_bytes(md12_member())
    stale.write_bytes(md12_member(corrupt=True))
    found = blkid.probe_path(str(good))
    assert found["TYPE"] == "linux_raid_member" and found["UUID"] == "5e1f0000-0000-4000-8000-00000000ab00"
    assert (blkid.probe_path(str(stale)) or {}).get("TYPE") != "linux_raid_member"


def test_md090_checksum():
    sb = bytearray(4096)
    struct.pack_into("<II", sb, 0, 0xA92B4EFC, 0)
    struct.pack_into("<I", sb, 20, 0x12345678)
    words = struct.unpack_from("<1024I", sb)
    struct.pack_into("<I", sb, 152, sum(words) & 0xFFFFFFFF)
    assert blkid.md090_checksum_ok(bytes(sb), "<")
    sb[20] ^= 1
    assert not blkid.md090_checksum_ok(bytes(sb), "<")


# --------------------------------------------------------------------------- the storage hooks

class FakeCmdline:
    def __init__(self, **flags):
        self.flags = flags

    def flag(self, name, default=False):
        return self.flags.get(name, default)

    def rd_list(self, name):
        return []

    def get_all(self, name):
        return []


class FakeContext:
    def __init__(self, devs, stage="initqueue/settled", answers=None):
        import types
        self.devices = devs
        self.stage = stage
        self.cmdline = FakeCmdline()
        self.boot = types.SimpleNamespace()
        self.env = {}
        self.log = Log()
        self.ran = []
        self.answers = answers or {}

    def run(self, argv, **kw):
        self.ran.append(argv)
        return self.answers.get(argv[0], (0, ""))


def _members_machine(tmp_path):
    m = FakeMachine(tmp_path)
    envs = [m.add("vda", (254, 0), md12_member()), m.add("vdb", (254, 16), md12_member(corrupt=True))]
    devs = devices.Devices(str(m.sys), str(m.dev), links=False)
    devs.prober = InlineProber()
    for env in envs:
        devs.handle(m.event(env))
    return m, devs


def test_mdraid_takes_members_from_pyinits_probe_and_a_failing_mdadm_is_harmless(tmp_path, monkeypatch):
    """mdadm exits 1 on a member (a stale array whose other disks are long gone): a warning,
    not a stopped boot. The stale superblock (bad checksum) is not handed to mdadm at all.
    Running the settled hook again reads no device."""
    monkeypatch.setattr(os, "makedirs", lambda *a, **k: None)
    mdraid = load_hook("mdraid")
    _, devs = _members_machine(tmp_path)
    reads = len(devs.prober.reads)
    ctx = FakeContext(devs, answers={"mdadm": (1, "mdadm: /dev/vda is not part of an array that can be started")})
    for _ in range(5):
        mdraid.run(ctx)  # used to raise HookFailed: the boot went to rescue
    assert ctx.ran == [["mdadm", "--incremental", devs.blocks["vda"].node]]
    assert any("exited with 1" in t and "going on without it" in t for _, t in ctx.log.lines), ctx.log.lines
    assert len(devs.prober.reads) == reads


def test_lvm_and_luks_find_their_devices_in_pyinits_table(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "makedirs", lambda *a, **k: None)
    m = FakeMachine(tmp_path)
    pv = bytearray(1 << 20)
    pv[512:520] = b"LABELONE"
    struct.pack_into("<QII", pv, 512 + 8, 1, 0, 32)
    pv[512 + 24:512 + 32] = b"LVM2 001"
    pv[512 + 32:512 + 64] = b"A" * 32
    luks = bytearray(1 << 20)
    luks[:8] = b"LUKS\xba\xbe\x00\x02"
    luks[168:168 + 36] = b"5e1f0000-0000-4000-8000-0000000000aa"
    envs = [m.add("vda", (254, 0), bytes(pv)), m.add("vdb", (254, 16), bytes(luks))]
    devs = devices.Devices(str(m.sys), str(m.dev), links=False)
    devs.prober = InlineProber()
    for env in envs:
        devs.handle(m.event(env))
    reads = len(devs.prober.reads)
    lvm, luks_hook = load_hook("lvm"), load_hook("luks")
    assert lvm.physical_volumes(devs) == ["vda"]
    assert luks_hook.candidates(devs) == [(devs.blocks["vdb"].node, "5e1f0000-0000-4000-8000-0000000000aa")]
    ctx = FakeContext(devs)
    ctx.cmdline.rd_list = lambda name: []
    for _ in range(5):
        lvm.run(ctx)
    assert [a[:2] for a in ctx.ran] == [["lvm", "vgchange"]]  # once: vda was new only the first time
    assert len(devs.prober.reads) == reads


def test_resume_finds_a_hibernated_swap_by_uuid_in_pyinits_table(tmp_path):
    import subprocess
    swap = tmp_path / "swap"
    swap.write_bytes(b"\0" * (1 << 20))
    subprocess.run(["mkswap", "-L", "sw", "-U", "5e1f0000-0000-4000-8000-0000000000cc", str(swap)],
                   check=True, capture_output=True)
    data = bytearray(swap.read_bytes())
    data[4086:4096] = b"S1SUSPEND\0"
    m = FakeMachine(tmp_path / "m")
    env = m.add("vdc", (254, 32), bytes(data))
    devs = devices.Devices(str(m.sys), str(m.dev), links=False)
    devs.prober = InlineProber()
    devs.handle(m.event(env))
    resume = load_hook("resume")
    dev = resume.find(FakeContext(devs), rootspec.parse_root("UUID=5e1f0000-0000-4000-8000-0000000000cc"))
    assert dev is devs.blocks["vdc"] and dev.info["TYPE"] == "swsuspend" and dev.info["LABEL"] == "sw"


# --------------------------------------------------------------------------- fuzz regressions

FUZZ_REGRESSIONS = os.path.join(os.path.dirname(__file__), "fuzz-regressions")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(FUZZ_REGRESSIONS) if n.startswith("disk-")))
def test_hostile_disks_of_the_fuzz_corpus(name, tmp_path):
    """Each hostile disk (devtools/fuzz.py's `disk` target seeds) as a disk and as a
    partition: the device is known afterwards, nothing escaped, no read past the limits."""
    with open(os.path.join(FUZZ_REGRESSIONS, name), "rb") as f:
        data = f.read()
    m = FakeMachine(tmp_path)
    envs = [m.add("vda", (254, 0), data), m.add("vda1", (254, 1), data, parent="vda", partn=1)]
    devs = devices.Devices(str(m.sys), str(m.dev), links=False, log=Log())
    devs.prober = InlineProber()
    for env in envs:
        devs.handle(m.event(env))
    assert set(devs.blocks) == {"vda", "vda1"}
    assert devs.blocks["vda1"].info.get("TYPE") != "linux_raid_member"
