"""Assemble md arrays as their members appear (initqueue/settled: mdadm --incremental, which
starts an array once all its members are there), and start the incomplete ones degraded
when the wait has lasted rd.retry= seconds (initqueue/timeout: mdadm --incremental --run
--scan, as dracut's mdraid module does).

    rd.md=0              do nothing
    rd.md.uuid=UUID      only members of these arrays (mdadm's UUID, any of : - separators)
"""
import os


def norm_uuid(text):
    return "".join(ch for ch in text.lower() if ch in "0123456789abcdef")


def parse_options(cmdline):
    return cmdline.flag("rd.md", True), [norm_uuid(u) for u in cmdline.rd_list("rd.md.uuid")]


def members(devs):
    """(name, node, uuid) of md members nothing holds yet, from pyinit's own probe of each
    device (once per uevent, bounded, and only a superblock whose checksum matches:
    pyinit/blkid.py), never read here."""
    return [(dev.name, dev.node, norm_uuid(dev.info.get("UUID", "")))
            for dev in devs.unheld_of_type("linux_raid_member")
            if not dev.name.startswith("md")]


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
    for name, node, uuid in members(context.devices):
        if name in seen or (uuids and uuid not in uuids):
            continue
        seen.add(name)
        rc, out = context.run(["mdadm", "--incremental", node], check=False)
        if rc != 0:
            # A stale or half-wiped member (a disk reused, an array long gone) is no reason to
            # stop the boot: if the root needs this array, the wait for the root says so, and
            # names what was found; if the root is elsewhere, the boot goes on.
            context.log.warning(f"mdraid: mdadm --incremental {node} (array {uuid}) exited with {rc}: "
                                f"{' '.join(out.split())}; going on without it")
            continue
        context.log.info(f"mdraid: {node} (array {uuid}): {' '.join(out.split())}")
