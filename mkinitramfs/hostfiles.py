"""The machine's own files a host-only image takes along besides its drivers (hostonly.py
finds those): its modprobe.d (options, blacklists) and, with the luks hook, the
/etc/crypttab entries of the root's dm-crypt devices, with the key files and detached
headers they name, so the hook unlocks them with the machine's names and options."""
from __future__ import annotations

import os
from collections.abc import Callable

from mkinitramfs import include, parts, paths
from mkinitramfs.errors import BuildError
from mkinitramfs.hostonly import CryptDevice
from mkinitramfs.image import Image
from pyinit import crypttab

HOST_MODPROBE_DIRS = ("/etc/modprobe.d", "/usr/lib/modprobe.d")
CRYPTTAB_MAX = 1 << 20  # bytes of /etc/crypttab read: a table is a few lines


def add_modprobe_conf(image: Image) -> None:
    """This machine's modprobe.d/*.conf, at the same paths."""
    for d in HOST_MODPROBE_DIRS:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            src = os.path.join(d, n)
            if n.endswith(".conf") and os.path.isfile(src) and f"{d}/{n}" not in image:
                image.add_file(f"{d}/{n}", source=src, mode=0o644, part=parts.CONFIG)


def add_crypttab(image: Image, table: str, crypt: list[CryptDevice]) -> list[str]:
    """The entries of the crypttab file `table` for the root's dm-crypt devices `crypt`, as
    /etc/crypttab in the image, with the key files and detached headers they name (a key
    file on another device, or a device node, stays where it is). Returns notes for the
    build output; nothing is packed when the machine has no crypttab or no entry matches."""
    try:
        with open(table, encoding="utf-8", errors="replace") as f:
            text = f.read(CRYPTTAB_MAX)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise BuildError(f"{table}: {e.strerror}") from None
    entries, problems = crypttab.parse(text)
    notes = [f"crypttab: {table} {p}: ignored" for p in problems]
    chosen = crypttab_for_root(entries, crypt, resolve_device)
    if not chosen:
        return notes
    image.add_file(paths.CRYPTTAB, data=crypttab.format_entries(chosen).encode(), part=parts.HOOKS)
    for entry in chosen:
        notes.append(f"crypttab: {entry.name} ({entry.device}) packed, for the root's /dev/mapper/{entry.name}")
        files = [entry.options.header] if entry.options.header else []
        if entry.keyfile_path and not entry.keyfile_device and not entry.keyfile_path.startswith("/dev/"):
            files.append(entry.keyfile_path)
        for path in files:
            if path in image:
                continue
            try:
                include.add_include(image, path, path, part=parts.INCLUDE)
            except include.IncludeError as err:
                raise BuildError(f"crypttab entry {entry.name} (line {entry.line}) names {path}: {err}") from None
            notes.append(f"crypttab: {path} packed for {entry.name} (the luks hook unlinks a key file "
                         "once its device is open)")
    return notes


def crypttab_for_root(entries: list[crypttab.Entry], crypt: list[CryptDevice],
                      resolve: Callable[[str], str | None]) -> list[crypttab.Entry]:
    """The crypttab entries of the root's dm-crypt devices, in the table's order: same volume
    name, same LUKS UUID, or a DEVICE that `resolve(device)` (a /dev path or None) finds to
    be the device it is opened on. Pure but for `resolve`."""
    out = []
    for e in entries:
        for c in crypt:
            if e.name == c.name or (c.uuid and e.uuid == c.uuid):
                out.append(e)
                break
            node = resolve(e.device)
            if node is not None and node in c.slaves:
                out.append(e)
                break
    return out


def resolve_device(spec: str, dev_root: str = "/dev") -> str | None:
    """A crypttab DEVICE (path, UUID=, LABEL=, PARTUUID=, PARTLABEL=) -> the /dev node it
    names on this machine, through udev's /dev/disk links; None when nothing matches."""
    links = {"UUID": "by-uuid", "LABEL": "by-label", "PARTUUID": "by-partuuid", "PARTLABEL": "by-partlabel"}
    tag, sep, value = spec.partition("=")
    if sep and tag.upper() in links:
        path = f"{dev_root}/disk/{links[tag.upper()]}/{value.strip().strip(chr(34))}"
    elif spec.startswith("/"):
        path = spec
    else:
        return None
    if not os.path.exists(path):
        return None
    real = os.path.realpath(path)
    return "/dev/" + os.path.basename(real) if real.startswith(dev_root + "/") else real
