"""Unlock LUKS devices as they appear (an initqueue/settled hook, run again and again; the same
file is the initqueue/finished hook, which says whether every named device is open).

    rd.luks=0                       do nothing
    rd.luks.uuid=UUID               unlock only these (repeatable, "luks-" prefix accepted);
                                    without any, every LUKS device found is unlocked
    rd.luks.name=UUID=NAME          the mapping's name (default luks-UUID): /dev/mapper/NAME
    rd.luks.key=PATH[:DEVICE]       a keyfile, in the image, or on DEVICE (UUID=, LABEL=,
                                    /dev/...) mounted read-only; tried before any prompt

A device whose keyfiles do not open it gets a passphrase prompt on the console, TRIES times.
Stateless between runs: a device is done when /dev/mapper/NAME exists or something holds it.
"""
import os

from pyinit import devices
from pyinit.hooks import HookFailed

TRIES = 3
KEYDEV_WAIT = 10.0  # seconds to wait for a key device before falling back to the prompt


class Options:
    def __init__(self, enabled, uuids, names, keys):
        self.enabled, self.uuids, self.names, self.keys = enabled, uuids, names, keys

    def wanted(self, uuid):
        return not self.uuids or uuid in self.uuids

    def name_for(self, uuid):
        return self.names.get(uuid) or f"luks-{uuid}"


def _uuid(text):
    text = text.strip().lower()
    return text[5:] if text.startswith("luks-") else text


def parse_options(cmdline):
    """The rd.luks.* words -> Options. Pure; raises ValueError naming a malformed word."""
    names = {}
    for value in cmdline.get_all("rd.luks.name"):
        uuid, sep, name = (value or "").partition("=")
        if not sep or not uuid or not name:
            raise ValueError(f"rd.luks.name={value}: expected rd.luks.name=UUID=NAME")
        names[_uuid(uuid)] = name
    uuids = [_uuid(u) for u in cmdline.rd_list("rd.luks.uuid")]
    uuids += [u for u in names if u not in uuids]
    keys = []
    for value in cmdline.get_all("rd.luks.key"):
        if not value:
            raise ValueError("rd.luks.key= needs PATH[:DEVICE]")
        path, _, device = value.partition(":")
        keys.append((path, device or None))
    return Options(cmdline.flag("rd.luks", True), uuids, names, keys)


def candidates(devs):
    """(node, uuid) of LUKS devices nothing holds yet, from pyinit's own probe of each
    device (read once per uevent, in a child process with a deadline, bounded: pyinit/probe.py)."""
    return [(dev.node, dev.info["UUID"].lower()) for dev in devs.unheld_of_type("crypto_LUKS")
            if dev.info.get("UUID")]


def find_device(context, spec_text):
    return context.devices.find(devices.parse_root(spec_text))


def key_file(context, path, device, state):
    """The host path of a keyfile, mounting its device when needed; None when not there (yet)."""
    if device is None:
        return path if os.path.isfile(path) else None
    mounts = state.setdefault("keydev_mounts", {})
    if device not in mounts:
        dev = find_device(context, device)
        if dev is None:
            return None
        target = f"/run/pyinit/keydev-{len(mounts)}"
        os.makedirs(target, exist_ok=True)
        from pyinit import syscalls as sc
        fstypes = [dev.info["TYPE"]] if dev.info.get("TYPE") else ["ext4", "vfat", "xfs", "btrfs", "iso9660"]
        for fstype in fstypes:
            try:
                sc.mount(dev.node, target, fstype, sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
                break
            except OSError:
                continue
        else:
            context.log.warning(f"luks: cannot mount key device {device} ({dev.node})")
            return None
        mounts[device] = target
    full = os.path.join(mounts[device], path.lstrip("/"))
    return full if os.path.isfile(full) else None


def cryptsetup_open(context, node, name, *, key_file=None, passphrase=None):
    argv = ["cryptsetup", "open", "--type", "luks", node, name]
    if key_file is not None:
        argv[2:2] = ["--key-file", key_file]
    return context.run(argv, input=None if passphrase is None else passphrase + "\n", check=False)


def release_key_devices(state):
    """Key devices are mounted only while cryptsetup reads the key: nothing of them is left
    mounted (under /run, which moves to the real root) once a device is open."""
    from pyinit import syscalls as sc
    for target in state.pop("keydev_mounts", {}).values():
        try:
            sc.umount2(target, sc.MNT_DETACH)
        except OSError:
            pass


def unlock(context, node, uuid, name, opts, state):
    try:
        return _unlock(context, node, uuid, name, opts, state)
    finally:
        release_key_devices(state)


def _unlock(context, node, uuid, name, opts, state):
    import time
    start = state.setdefault("start", time.monotonic())
    waiting = False
    for path, device in opts.keys:
        key = key_file(context, path, device, state)
        if key is None:
            if device is not None and time.monotonic() - start < KEYDEV_WAIT:
                waiting = True
            continue
        rc, out = cryptsetup_open(context, node, name, key_file=key)
        if rc == 0:
            context.log.notice(f"luks: unlocked {node} as /dev/mapper/{name} with the keyfile {path}"
                               + (f" on {device}" if device else ""))
            return True
        context.log.warning(f"luks: the keyfile {path} does not open {node}: {out.strip()}")
    if waiting:
        return False  # a key device may still come: look again on the next run
    for attempt in range(1, TRIES + 1):
        passphrase = context.prompt_secret(f"Enter passphrase for {node} ({name}): ")
        if passphrase is None:
            break
        rc, out = cryptsetup_open(context, node, name, passphrase=passphrase)
        if rc == 0:
            context.log.notice(f"luks: unlocked {node} as /dev/mapper/{name} with a passphrase")
            return True
        context.log.warning(f"luks: wrong passphrase for {node} (try {attempt} of {TRIES}): {out.strip()}")
    raise HookFailed(f"could not unlock {node} (LUKS UUID {uuid}) after {TRIES} passphrase tries")


def run(context):
    try:
        opts = parse_options(context.cmdline)
    except ValueError as e:
        raise HookFailed(str(e)) from None
    if context.stage == "initqueue/finished":
        return not opts.enabled or all(os.path.exists(f"/dev/mapper/{opts.name_for(u)}") for u in opts.uuids)
    if not opts.enabled:
        return
    os.makedirs("/run/cryptsetup", exist_ok=True)
    state = context.boot.__dict__.setdefault("luks_state", {})
    for node, uuid in candidates(context.devices):
        if not opts.wanted(uuid):
            continue
        name = opts.name_for(uuid)
        if os.path.exists(f"/dev/mapper/{name}"):
            continue
        unlock(context, node, uuid, name, opts, state)
