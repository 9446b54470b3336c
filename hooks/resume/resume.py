"""Resume from hibernation, before anything is mounted from the disks.

    resume=UUID=... | LABEL=... | PARTUUID=... | /dev/... | MAJ:MIN    the swap device
    resume_offset=N          the image's offset in pages (a swap file), written first
    noresume                 do nothing

initqueue/finished: the wait for the root device also waits for the resume device, up to
RESUME_WAIT seconds (then the boot goes on without resuming, as a machine whose swap disk is
gone must still boot). pre-mount: write resume_offset, then MAJ:MIN to /sys/power/resume; if
the device holds a hibernation image the kernel restores it and this never returns.
Swap areas are recognised here (UUID and LABEL of the swap header), and so is the
signature a hibernation image leaves in it.
"""
import os
import time

from pyinit import devices
from pyinit.hooks import HookFailed

RESUME_WAIT = 15.0
SYS_BLOCK = "/sys/class/block"
SWAP_MAGICS = (b"SWAPSPACE2", b"SWAP-SPACE")
HIBERNATION_MAGICS = (b"S1SUSPEND", b"LINHIB0001", b"ULSUSPEND")
PAGE = 4096


def swap_info(node):
    """{"TYPE": "swap", "UUID", "LABEL", "IMAGE": bool} from a swap header, or None."""
    try:
        with open(node, "rb", buffering=0) as f:
            head = f.read(PAGE)
    except OSError:
        return None
    if len(head) < PAGE:
        return None
    sig = head[PAGE - 10:]
    image = any(sig.startswith(m) for m in HIBERNATION_MAGICS)
    if not image and sig not in SWAP_MAGICS:
        return None
    raw = head[1024 + 12:1024 + 28]
    h = raw.hex()
    info = {"TYPE": "swap", "UUID": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}", "IMAGE": image}
    label = head[1024 + 28:1024 + 44].split(b"\0", 1)[0].decode("utf-8", "replace")
    if label:
        info["LABEL"] = label
    return info


def find(spec):
    """The BlockDevice resume= names: pyinit's own probes, then the swap probe."""
    dev = devices.find(spec, devices.Scanner())
    if dev is not None:
        return dev
    if spec.kind not in ("UUID", "LABEL"):
        return None
    try:
        names = sorted(os.listdir(SYS_BLOCK))
    except OSError:
        return None
    for name in names:
        node = "/dev/" + name.replace("!", "/")
        info = swap_info(node)
        if info and (info.get(spec.kind) or "").lower() == spec.value.lower():
            devnum = devices.read_devnum(os.path.join(SYS_BLOCK, name))
            if devnum:
                return devices.BlockDevice(name, devnum, node, info)
    return None


def parse(cmdline):
    """-> (RootSpec or None, offset or None). ValueError for a malformed word."""
    if cmdline.has("noresume") or not cmdline.get("resume"):
        return None, None
    spec = devices.parse_root(cmdline.get("resume"))
    offset = cmdline.get("resume_offset")
    if offset is not None and not offset.isdigit():
        raise ValueError(f"resume_offset={offset} is not a number of pages")
    return spec, offset


def run(context):
    try:
        spec, offset = parse(context.cmdline)
    except ValueError as e:
        raise HookFailed(f"resume: {e}") from None
    if spec is None:
        return True
    state = context.boot.__dict__.setdefault("resume_state", {})
    if context.stage == "initqueue/finished":
        start = state.setdefault("start", time.monotonic())
        if find(spec) is not None:
            return True
        if time.monotonic() - start < RESUME_WAIT:
            return False
        if not state.get("warned"):
            state["warned"] = True
            context.log.warning(f"resume: {spec.text} did not appear within {RESUME_WAIT:g} s; booting without resuming")
        return True
    dev = find(spec)
    if dev is None:
        context.log.warning(f"resume: {spec.text} not found; booting without resuming")
        return
    image = (dev.info or {}).get("IMAGE")
    context.log.notice(f"resume: {spec.text} is {dev.node} ({dev.devnum[0]}:{dev.devnum[1]}); "
                       + ("it holds a hibernation image: resuming" if image else "no hibernation image signature on it"))
    try:
        if offset is not None:
            with open("/sys/power/resume_offset", "w") as f:
                f.write(offset)
        with open("/sys/power/resume", "w") as f:
            # The kernel restores the image here, if there is one, and never comes back.
            f.write(f"{dev.devnum[0]}:{dev.devnum[1]}")
    except OSError as e:
        context.log.warning(f"resume: writing /sys/power/resume failed: {e}")
    context.log.notice(f"resume: nothing resumed from {dev.node}; booting normally")
