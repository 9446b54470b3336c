"""Assemble md arrays as their members appear (initqueue/settled: mdadm --incremental, which
starts an array once all its members are there), and start the incomplete ones degraded
when the wait has lasted rd.retry= seconds (initqueue/timeout: mdadm --incremental --run
--scan, as dracut's mdraid module does).

    rd.md=0              do nothing
    rd.md.uuid=UUID      only members of these arrays (mdadm's UUID, any of : - separators)
"""
import os

from pyinit import devices
from pyinit.hooks import HookFailed

SYS_BLOCK = "/sys/class/block"
MD_MAGIC = 0xA92B4EFC


def norm_uuid(text):
    return "".join(ch for ch in text.lower() if ch in "0123456789abcdef")


def parse_options(cmdline):
    return cmdline.flag("rd.md", True), [norm_uuid(u) for u in cmdline.rd_list("rd.md.uuid")]


def md_uuid(node, size_bytes):
    """The array UUID of an md member (metadata 1.0, 1.1, 1.2 or 0.90), as 32 hex digits."""
    try:
        f = open(node, "rb", buffering=0)
    except OSError:
        return None
    with f:
        def at(offset, n):
            if offset < 0:
                return b""
            f.seek(offset)
            return f.read(n)
        # 1.1 at 0, 1.2 at 4 KiB, 1.0 at 8 KiB before the end (4 KiB aligned)
        for offset in (0, 4096, ((size_bytes - 8192) & ~4095)):
            sb = at(offset, 32)
            if len(sb) == 32 and int.from_bytes(sb[:4], "little") == MD_MAGIC and \
                    int.from_bytes(sb[4:8], "little") == 1:
                return sb[16:32].hex()
        sb = at((size_bytes & ~65535) - 65536, 64)  # 0.90: 64 KiB before the end, aligned
        if len(sb) == 64 and int.from_bytes(sb[:4], "little") == MD_MAGIC:
            words = [int.from_bytes(sb[i:i + 4], "little") for i in (20, 52, 56, 60)]
            return "".join(f"{w:08x}" for w in words)
    return None


def members():
    """(name, node, uuid) of md members nothing holds yet."""
    out = []
    for name, node in devices.unheld_block_devices(SYS_BLOCK):
        if name.startswith("md"):
            continue
        try:
            with open(os.path.join(SYS_BLOCK, name, "size")) as f:
                size = int(f.read()) * 512
        except (OSError, ValueError):
            continue
        if size == 0:
            continue
        uuid = md_uuid(node, size)
        if uuid:
            out.append((name, node, uuid))
    return out


def run(context):
    enabled, uuids = parse_options(context.cmdline)
    if not enabled:
        return
    os.makedirs("/run/mdadm", exist_ok=True)
    if context.stage == "initqueue/timeout":
        rc, out = context.run(["mdadm", "--incremental", "--run", "--scan"], check=False)
        context.log.notice("mdraid: waited long enough; starting incomplete arrays degraded: "
                           + (" ".join(out.split()) or f"exit {rc}"))
        return
    seen = context.boot.__dict__.setdefault("mdraid_seen", set())
    for name, node, uuid in members():
        if name in seen or (uuids and uuid not in uuids):
            continue
        seen.add(name)
        rc, out = context.run(["mdadm", "--incremental", node], check=False)
        if rc != 0:
            raise HookFailed(f"mdadm --incremental {node} exited with {rc}: {out.strip()}")
        context.log.info(f"mdraid: {node} (array {uuid}): {' '.join(out.split())}")
