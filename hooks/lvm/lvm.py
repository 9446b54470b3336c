"""Activate LVM logical volumes when physical volumes appear (initqueue/settled), and say
whether the ones named on the command line are there (initqueue/finished).

    rd.lvm=0              do nothing
    rd.lvm.vg=VG          activate these volume groups (repeatable)
    rd.lvm.lv=VG/LV       activate these logical volumes (repeatable)
    neither               activate everything found

There is no udev in pyinit: lvm is told to make its device nodes itself (/dev/mapper/VG-LV
and the /dev/VG/LV links) and not to wait for udev.
"""
import os

from pyinit.hooks import HookFailed

CONFIG = ("devices { obtain_device_list_from_udev = 0 } "
          "activation { udev_sync = 0 udev_rules = 0 monitoring = 0 } "
          "global { event_activation = 0 }")


def parse_options(cmdline):
    """-> (enabled, [vg], [(vg, lv)]). Pure; ValueError for a malformed rd.lvm.lv."""
    lvs = []
    for value in cmdline.rd_list("rd.lvm.lv"):
        vg, sep, lv = value.strip("/").removeprefix("dev/").partition("/")
        if not sep or not vg or not lv:
            raise ValueError(f"rd.lvm.lv={value}: expected VG/LV")
        lvs.append((vg, lv))
    return cmdline.flag("rd.lvm", True), cmdline.rd_list("rd.lvm.vg"), lvs


def mapper_name(vg, lv):
    """device-mapper's name for VG/LV: dashes doubled, joined by one dash."""
    return vg.replace("-", "--") + "-" + lv.replace("-", "--")


def physical_volumes(devs):
    """Names of the LVM physical volumes pyinit's probe found (an LVM2 label in one of the
    first four sectors), read once per uevent: nothing is read here."""
    return [dev.name for dev in devs.of_type("LVM2_member")]


def lvm(context, *args):
    return context.run(["lvm", *args, "--config", CONFIG], check=False)


def run(context):
    try:
        enabled, vgs, lvs = parse_options(context.cmdline)
    except ValueError as e:
        raise HookFailed(str(e)) from None
    if context.stage == "initqueue/finished":
        if not enabled:
            return True
        return all(os.path.exists(f"/dev/mapper/{mapper_name(vg, lv)}") for vg, lv in lvs) and \
            all(os.path.isdir(f"/dev/{vg}") for vg in vgs)
    if not enabled:
        return
    seen = context.boot.__dict__.setdefault("lvm_seen_pvs", set())
    new = [pv for pv in physical_volumes(context.devices) if pv not in seen]
    if not new:
        return
    seen.update(new)
    os.makedirs("/run/lvm", exist_ok=True)
    os.makedirs("/run/lock/lvm", exist_ok=True)
    context.env["LVM_SUPPRESS_FD_WARNINGS"] = "1"
    # A volume group spread over several disks activates once its last one has appeared;
    # until then lvm fails, and the next new physical volume tries again.
    if lvs:
        rc, out = lvm(context, "lvchange", "--activate", "y", "--sysinit", *(f"{vg}/{lv}" for vg, lv in lvs))
    else:
        rc, out = lvm(context, "vgchange", "--activate", "y", "--sysinit", *vgs)
    level = context.log.info if rc == 0 else context.log.warning
    level(f"lvm: physical volumes {', '.join(new)} appeared; activation "
          + ("done" if rc == 0 else f"failed for now (exit {rc})") + f": {' '.join(out.split())}")
