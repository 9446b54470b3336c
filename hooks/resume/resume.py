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
import time

from pyinit import rootspec
from pyinit.hooks import HookFailed

RESUME_WAIT = 15.0


def swap_info(node):
    """{"TYPE": "swap", "UUID", "LABEL", "IMAGE": bool} of a swap area (IMAGE: it holds a
    hibernation image), or None: pyinit's own swap probe (pyinit/blkid.py), bounded."""
    from pyinit import probe
    return _swap(probe.probe_inline(node, "partition").info)


def _swap(info):
    kind = (info or {}).get("TYPE")
    if kind not in ("swap", "swsuspend"):
        return None
    out = {"TYPE": "swap", **{k: info[k] for k in ("UUID", "LABEL") if info.get(k)}}
    out["IMAGE"] = kind == "swsuspend"
    return out


def find(context, spec):
    """The BlockDevice resume= names, from pyinit's devices (each probed once per uevent:
    a swap area and a hibernation image keep their UUID and LABEL)."""
    return context.devices.find(spec)


def parse(cmdline):
    """-> (RootSpec or None, offset or None). ValueError for a malformed word."""
    if cmdline.has("noresume") or not cmdline.get("resume"):
        return None, None
    spec = rootspec.parse_root(cmdline.get("resume"))
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
        if find(context, spec) is not None:
            return True
        if time.monotonic() - start < RESUME_WAIT:
            return False
        if not state.get("warned"):
            state["warned"] = True
            context.log.warning(f"resume: {spec.text} did not appear within {RESUME_WAIT:g} s; "
                                "booting without resuming")
        return True
    dev = find(context, spec)
    if dev is None:
        context.log.warning(f"resume: {spec.text} not found; booting without resuming")
        return
    image = (dev.info or {}).get("TYPE") == "swsuspend"
    found = "it holds a hibernation image: resuming" if image else "no hibernation image signature on it"
    context.log.notice(f"resume: {spec.text} is {dev.node} ({dev.devnum[0]}:{dev.devnum[1]}); {found}")
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
