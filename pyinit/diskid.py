"""The names udev gives disks in /dev/disk/by-id and /dev/disk/by-path, from sysfs alone.

udev (systemd 252, Debian 12's, the version these names were checked against in a VM)
makes them with 60-persistent-storage.rules and its helpers: the path_id and usb_id
builtins, and ata_id and scsi_id, which send ATA IDENTIFY and SCSI INQUIRY commands to the
disk. PID 1 sends no commands to disks: what those commands answer, the kernel already
asked at probe time and shows in sysfs (a SCSI disk's VPD pages 0x80 and 0x83 in vpd_pg80
and vpd_pg83; libata's ATA Information page 0x89 in vpd_pg89, which holds the IDENTIFY
data). So each name is a pure function of attributes (`disk_names(node)`), and a thin
reader (`read_chain`) gives it the device and its parents as udev's sd_device walk would.

What is named, as udev names it (partitions add "-part<N>" to each name of their disk):
  by-id    virtio-<serial>                              virtio-blk with a serial
           nvme-<wwid>, nvme-<model>_<serial>[_<nsid>]  NVMe namespaces
           ata-<model>_<serial>                         ATA disks (libata: AHCI, PIIX...)
           scsi-<id>                                    SCSI disks: the best VPD 0x83 designator
                                                        (NAA, EUI-64, T10, vendor specific) or
                                                        0x80's serial, with scsi_id's prefixes
           usb-<vendor>_<model>_<serial>-<target>:<lun> usb-storage and UAS disks
           wwn-0x<wwn>                                  ATA and SCSI disks with a World Wide Name
  by-path  pci-0000:00:04.0 (+ virtio-pci-... for virtio-blk), ...-nvme-<nsid>,
           ...-scsi-<h>:<c>:<t>:<l>, ...-ata-<port>.<n> and ...-ata-<port>,
           ...-usb-0:<port>:<config>.<interface>-scsi-<h>:<c>:<t>:<l>
Not named: what only a command could learn (a USB-SATA bridge's ATA pass-through, where
udev's ata_id gives the bridge's disk an ata- name; the kernel reads no VPD pages from
usb-storage devices), pre-SPC-3 page 0x83 replies (EMC Symmetrix), Fibre Channel, SAS,
iSCSI and Hyper-V paths, and names holding a '/' (udev would make a subfolder of them).
Not made yet: the by-id names of MMC/SD, pmem, memstick and FireWire disks.

Everything read is input: each attribute is read with a size limit, the walk up the parents
is bounded, and a device whose attributes make no sense gets no name rather than a wrong one.
"""
from __future__ import annotations

import itertools  # built into the interpreter: no file to import
import os

from pyinit import blkid

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import TypedDict

    # A sysfs attribute's value: text (str) or binary (bytes: the VPD pages); None: absent.
    Attr = str | bytes | None
    Env = dict[str, str]  # udev's ID_* properties

    class Extra(TypedDict, total=False):
        """What udev reads elsewhere than a device's own attributes (see Node)."""
        host_numbers: list[int]  # a scsi_host's sibling host numbers
        port_no: str | None  # an ATA port's port number
        nvme_ctrl: Node | None  # an NVMe namespace's real controller

MAX_ATTR = 4096  # bytes read from one sysfs attribute (VPD pages are a few hundred)
MAX_DEPTH = 32  # parents walked up from a block device

# The block devices 60-persistent-storage.rules looks at at all (its KERNEL!= line), minus
# optical drives: nothing boots from an sr* here.
_KERNEL_PREFIXES = ("loop", "mmcblk", "msblk", "mspblk", "nvme", "sd", "vd", "xvd", "bcache", "cciss",
                    "dasd", "ubd", "ubi", "scm", "pmem", "nbd", "zd")
_WHITESPACE = b" \t\n\r"  # systemd's WHITESPACE: what it strips from the ends of a value
_ISSPACE = b" \t\n\v\f\r"  # C's isspace(): what udev_replace_whitespace() joins inside one
# udev_replace_chars(): what a substituted $attr{} keeps (UDEV_ALLOWED_CHARS_INPUT)
_ATTR_ALLOWED = b"/ $%?,"


# --------------------------------------------------------------------------- udev's string rules

def _bytes(value: str | bytes | bytearray) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def replace_whitespace(value: str | bytes, limit: int = 1 << 16) -> str:
    """udev_replace_whitespace(): leading and trailing whitespace dropped, each run inside
    made one '_'. Reads at most `limit` bytes of `value` (stopping at a NUL, as C does) and
    writes at most `limit`."""
    raw = _bytes(value).split(b"\0", 1)[0][:limit]
    out = bytearray()
    i = 0
    while i < len(raw) and raw[i] in _WHITESPACE:
        i += 1
    pending = False
    while i < len(raw) and len(out) < limit:
        b = raw[i]
        i += 1
        if b in _ISSPACE:
            pending = True
            continue
        if pending:
            if len(out) + 1 >= limit:
                break
            out.append(0x5F)
            pending = False
        out.append(b)
    return out.decode("utf-8", "surrogateescape")


def replace_chars(value: str | bytes, allow: bytes = b"") -> str:
    r"""udev_replace_chars(): ASCII letters, digits and #+-.:=@_ stay, as do the bytes of
    `allow`, "\x" (udev's own escapes), and valid UTF-8 multi-byte characters; whitespace
    becomes ' ' when `allow` holds a space; everything else becomes '_'."""
    raw = bytearray(_bytes(value))
    i = 0
    while i < len(raw):
        b = raw[i]
        if b in blkid._SAFE or b in allow:  # one home for udev's devnode-safe bytes
            i += 1
        elif b == 0x5C and i + 1 < len(raw) and raw[i + 1] == 0x78:  # "\x"
            i += 2
        elif b >= 0x80 and (n := blkid._utf8_len(bytes(raw[i:i + 4]), 0)) > 1:
            i += n
        else:
            raw[i] = 0x20 if b in _ISSPACE and 0x20 in allow else 0x5F
            i += 1
    return raw.decode("utf-8", "surrogateescape")


def attr_value(raw: str | bytes) -> str:
    """What udev substitutes for $attr{...}: trailing whitespace dropped, then only the
    bytes udev lets through its rules (UDEV_ALLOWED_CHARS_INPUT) kept, others made '_'."""
    return replace_chars(_bytes(raw).rstrip(_WHITESPACE), _ATTR_ALLOWED)


def _link_text(text: str, allow: bytes = b"/ ") -> str:
    """A SYMLINK+= value: each substitution had its whitespace replaced, then the result
    goes through udev_replace_chars (with '/' and ' ' allowed, or '/' with string_escape)."""
    return replace_chars(text, allow)


# --------------------------------------------------------------------------- the device tree

class Node:
    """One device of sysfs, a block device or one of its parents, as udev's sd_device sees
    it: `attrs` holds text attributes (str, without the trailing newline sysfs adds) and
    binary ones (bytes: vpd_pg*); a missing key is asked from `loader` (the sysfs reader)
    once, and None means "no such attribute". `extra` carries what udev reads elsewhere:
    the scsi_host's sibling host numbers, an ATA port's port_no, NVMe's real controller."""

    __slots__ = ("_loader", "attrs", "devtype", "extra", "parent", "subsystem", "sysname", "syspath")

    def __init__(self, syspath: str, subsystem: str | None = None, devtype: str | None = None,
                 attrs: dict[str, Attr] | None = None, parent: Node | None = None, extra: Extra | None = None,
                 loader: Callable[[str, str], Attr] | None = None) -> None:
        self.syspath = syspath
        self.sysname = syspath.rstrip("/").rsplit("/", 1)[-1]
        self.subsystem, self.devtype = subsystem, devtype
        self.attrs = dict(attrs or {})
        self.parent: Node | None = parent
        self.extra: Extra = extra.copy() if extra else {}
        self._loader = loader

    def attr(self, name: str) -> Attr:
        if name not in self.attrs:
            self.attrs[name] = self._loader(self.syspath, name) if self._loader else None
        return self.attrs[name]

    def text(self, name: str) -> str | None:
        value = self.attr(name)
        if value is None:
            return None
        return value if isinstance(value, str) else _bytes(value).decode("utf-8", "surrogateescape")

    def ancestors(self) -> Iterator[Node]:
        node: Node | None = self
        n = 0
        while node is not None and n < MAX_DEPTH:
            yield node
            node, n = node.parent, n + 1

    def __repr__(self) -> str:
        return f"Node({self.syspath!r}, {self.subsystem!r}, {self.devtype!r})"


def _present(value: Attr) -> bool:
    """ATTRS{x}=="?*": udev drops trailing whitespace before matching a pattern that has none."""
    return value is not None and bool(_bytes(value).rstrip(_WHITESPACE))


def _first_attr(node: Node, name: str) -> tuple[Node | None, Attr]:
    """ATTRS{name}=="?*": the device itself or the nearest parent where it is non-empty."""
    for n in node.ancestors():
        value = n.attr(name)
        if _present(value):
            return n, value
    return None, None


def _parent_with(node: Node, subsystem: str, devtype: str | None = None) -> Node | None:
    """sd_device_get_parent_with_subsystem_devtype(): a parent, never the device itself."""
    for n in node.ancestors():
        if n is not node and n.subsystem == subsystem and (devtype is None or n.devtype == devtype):
            return n
    return None


def _hctl(name: str) -> tuple[int, int, int, int] | None:
    parts = name.split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    host, bus, target, lun = (int(p) for p in parts)
    return host, bus, target, lun


# --------------------------------------------------------------------------- ata_id, scsi_id, usb_id

def ata_identity(vpd_pg89: Attr) -> Env:
    """ata_id's ID_SERIAL and ID_WWN from the IDENTIFY DEVICE data that libata's ATA
    Information VPD page (0x89) carries at byte 60. {} when the page is not one."""
    page = _bytes(vpd_pg89 or b"")
    if len(page) < 60 + 512 or page[1] != 0x89:
        return {}
    ident = page[60:60 + 512]

    def string(word: int, nbytes: int) -> bytes:
        raw = ident[word * 2:word * 2 + nbytes]
        # ATA strings keep the first character of each pair in the word's high byte
        return bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))

    def word(n: int) -> int:
        return ident[n * 2] | ident[n * 2 + 1] << 8

    model = replace_chars(replace_whitespace(string(27, 40), 40))
    serial = replace_chars(replace_whitespace(string(10, 20), 20))
    out = {"ID_BUS": "ata", "ID_SERIAL": f"{model}_{serial}" if serial else model}
    if word(108) & 0xF000 == 0x5000:
        wwn = word(108) << 48 | word(109) << 32 | word(110) << 16 | word(111)
        out["ID_WWN"] = out["ID_WWN_WITH_EXTENSION"] = f"0x{wwn:x}"
    return out


def ata_identity_from_pg83(vpd_pg83: Attr) -> Env:
    """The same names from libata's VPD page 0x83, for kernels that show no page 0x89: its
    T10 designator is "ATA     " + the 40-byte model + the 20-byte serial of IDENTIFY, its
    NAA designator the WWN of IDENTIFY words 108-111."""
    page = _bytes(vpd_pg83 or b"")
    if len(page) < 8 or page[1] != 0x83:
        return {}
    out: Env = {}
    for code_set, assoc, dtype, ident in _designators(page):
        if assoc != 0:
            continue
        if dtype == _T10 and code_set == 2 and len(ident) >= 68 and ident[:8] == b"ATA     " and not out:
            model = replace_chars(replace_whitespace(ident[8:48], 40))
            serial = replace_chars(replace_whitespace(ident[48:68], 20))
            out = {"ID_BUS": "ata", "ID_SERIAL": f"{model}_{serial}" if serial else model}
    if out:
        for code_set, assoc, dtype, ident in _designators(page):
            if assoc == 0 and dtype == _NAA and code_set == 1 and len(ident) == 8 and ident[0] >> 4 == 5:
                out["ID_WWN"] = out["ID_WWN_WITH_EXTENSION"] = f"0x{int.from_bytes(ident, 'big'):x}"
                break
    return out


# scsi_id's order of preference among the designators of VPD page 0x83:
# (designator type, NAA type or None for any, code set 1 binary / 2 ASCII)
_TGTGROUP, _NAA, _EUI64, _T10, _VENDOR = 5, 3, 2, 1, 0
_SEARCH = [(_NAA, 6, 1), (_NAA, 6, 2), (_NAA, 5, 1), (_NAA, 5, 2), (_NAA, None, 1), (_NAA, None, 2),
           (_EUI64, None, 1), (_EUI64, None, 2), (_T10, None, 1), (_T10, None, 2),
           (_VENDOR, None, 1), (_VENDOR, None, 2)]
_MAX_SERIAL = 256  # scsi_id's MAX_SERIAL_LEN


def _designators(page: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(code set, association, type, identifier bytes) of each designator of page 0x83."""
    end = min(len(page), 4 + (page[2] << 8 | page[3]))
    i = 4
    while i + 4 <= end:
        length = page[i + 3]
        if i + 4 + length > end:
            return
        yield page[i] & 0x0F, (page[i + 1] >> 4) & 0x3, page[i + 1] & 0x0F, page[i + 4:i + 4 + length]
        i += 4 + length


def scsi_identity(vendor: str | None, model: str | None, vpd_pg83: Attr = None, vpd_pg80: Attr = None) -> Env:
    """scsi_id's ID_SERIAL (and ID_WWN) from the INQUIRY vendor and model and the VPD pages
    0x83 (preferred) and 0x80, as sysfs shows them. {} when neither page gives an id."""
    vm = None
    if vendor is not None and model is not None:
        v, m = _bytes(vendor), _bytes(model)
        if len(v) == 8 and len(m) == 16 and b"\0" not in v + m:
            vm = v + m  # scsi_id prepends the raw 8 + 16 bytes, padding and all
    found: tuple[bytes, bytes, int | None] | None = None  # (serial, short serial, designator type)
    page = _bytes(vpd_pg83 or b"")
    # page[6] != 0: a pre-SPC-3 reply (EMC Symmetrix), which scsi_id reads another way
    if len(page) >= 8 and page[1] == 0x83 and page[6] == 0:
        designators = list(_designators(page))
        for kind, naa, code_set in _SEARCH:
            for cs, assoc, dtype, ident in designators:
                if assoc != 0 or dtype != kind or cs != code_set or not ident:
                    continue
                if naa is not None and ident[0] >> 4 != naa:
                    continue
                size = (len(ident) if cs == 2 else 2 * len(ident)) + 2 + (24 if kind == _VENDOR else 0)
                if size > _MAX_SERIAL or (kind == _VENDOR and vm is None):
                    continue
                short = ident if cs == 2 else ident.hex().encode()
                found = (b"0123456789abcdef"[kind:kind + 1] + ((vm or b"") if kind == _VENDOR else b"") + short,
                         short, kind)
                break
            if found:
                break
    if found is None:
        page = _bytes(vpd_pg80 or b"")
        if len(page) >= 4 and page[1] == 0x80 and vm is not None:
            short = page[4:4 + page[3]]
            if 1 + 24 + len(short) <= _MAX_SERIAL:
                found = (b"S" + vm + short, short, None)
    if found is None:
        return {}
    serial, short, found_kind = found
    out = {"ID_BUS": "scsi", "ID_SERIAL": replace_chars(replace_whitespace(serial, _MAX_SERIAL - 1))}
    if not out["ID_SERIAL"]:
        return {}
    if found_kind == _NAA:
        text = short.split(b"\0", 1)[0].decode("ascii", "replace")
        wwn, ext = text[:16], text[16:32]
        if wwn.isprintable():  # scsi_id's scsi_string_is_valid()
            out["ID_WWN"] = f"0x{wwn}"
            out["ID_WWN_WITH_EXTENSION"] = f"0x{wwn}{ext}" if ext.isprintable() else f"0x{wwn}"
    return out


def usb_identity(dev: Node) -> Env:
    """usb_id's ID_USB_SERIAL: vendor_model_serial, with the SCSI vendor and model for
    mass storage of the SCSI or ATAPI subclass, and -target:lun for those."""
    iface = _parent_with(dev, "usb", "usb_interface")
    if iface is None:
        return {}
    usb = _parent_with(iface, "usb", "usb_device")
    if usb is None:
        return {}
    vendor = model = instance = ""
    try:
        if_class = int((iface.text("bInterfaceClass") or "").strip(), 16)
    except ValueError:
        return {}
    subclass = -1
    if if_class == 8:
        try:
            subclass = int((iface.text("bInterfaceSubClass") or "").strip())
        except ValueError:
            subclass = 0
    if subclass in (2, 6):
        scsi = _parent_with(dev, "scsi", "scsi_device")
        hctl = _hctl(scsi.sysname) if scsi is not None else None
        svendor, smodel = (scsi.attr("vendor"), scsi.attr("model")) if scsi is not None else (None, None)
        if hctl and scsi is not None and svendor is not None and smodel is not None and scsi.attr("type") is not None:
            vendor = replace_chars(replace_whitespace(svendor, 63))
            model = replace_chars(replace_whitespace(smodel, 63))
            instance = f"{hctl[2]}:{hctl[3]}"
    vendor_id, product_id = usb.text("idVendor"), usb.text("idProduct")
    if vendor_id is None or product_id is None:
        return {}
    if not vendor:
        vendor = replace_chars(replace_whitespace(usb.attr("manufacturer") or vendor_id, 63))
    if not model:
        model = replace_chars(replace_whitespace(usb.attr("product") or product_id, 63))
    serial = ""
    raw = usb.attr("serial")
    if raw is not None and all(0x20 <= b <= 0x7F and b != 0x2C for b in _bytes(raw)):
        serial = replace_chars(replace_whitespace(raw, 255))
    name = f"{vendor}_{model}" + (f"_{serial}" if serial else "") + (f"-{instance}" if instance else "")
    return {"ID_BUS": "usb", "ID_SERIAL": name, "ID_USB_SERIAL": name}


# --------------------------------------------------------------------------- path_id

def path_id(dev: Node) -> tuple[str | None, str | None]:
    """path_id's ID_PATH and ID_PATH_ATA_COMPAT for a disk, walking its parents."""
    path: list[str] = []  # components, innermost last
    compat: list[str] | None = None
    transport = parent_ok = False
    node: Node | None = dev
    steps = 0
    while node is not None and steps < MAX_DEPTH:
        steps += 1
        sub = node.subsystem
        if sub == "scsi":
            transport = True
            if node.devtype == "scsi_device":
                result = _scsi_path(node, path)
                if result is None:
                    break
                node, ata_port, parent_known = result
                parent_ok = parent_ok or parent_known
                if ata_port is not None:
                    compat = [f"ata-{ata_port}"]
        elif sub == "usb":
            transport = True
            if node.devtype in ("usb_interface", "usb_device") and "-" in node.sysname:
                path.insert(0, "usb-0:" + node.sysname.split("-", 1)[1])
                node = _skip(node, "usb")
        elif sub in ("pci", "platform", "acpi", "xen", "scm", "ccw", "ccwgroup", "iucv"):
            path.insert(0, f"{sub}-{node.sysname}")
            if compat is not None:
                compat.insert(0, f"{sub}-{node.sysname}")
            node = _skip(node, sub)
            parent_ok = True
            transport = transport or (sub != "pci" and sub != "acpi" and sub != "xen")
        elif sub == "virtio":
            node = _skip(node, "virtio")
            transport = True
        elif sub in ("nvme", "nvme-subsystem"):
            nsid = dev.text("nsid")
            if nsid is not None:
                nsid = nsid.strip()
                path.insert(0, f"nvme-{nsid}")
                if compat is not None:
                    compat.insert(0, f"nvme-{nsid}")
                if sub == "nvme-subsystem":
                    node = dev.extra.get("nvme_ctrl")  # the controller's own branch of the tree
                    if node is None:
                        return None, None
                node = _skip(node, "nvme")
                parent_ok = transport = True
        node = node.parent if node is not None else None
    if not path or not parent_ok or not transport:
        return None, None
    return "-".join(path), ("-".join(compat) if compat else None)


def _skip(node: Node, subsystem: str) -> Node:
    """The last of the consecutive parents (from `node` up) that belong to `subsystem`."""
    while node.parent is not None and node.parent.subsystem == subsystem:
        node = node.parent
    return node


def _scsi_path(sdev: Node, path: list[str]) -> tuple[Node, str | None, bool] | None:
    """path_id's handle_scsi(): -> (node to continue from, ATA port for the compat name,
    whether this transport names its own parent), or None to stop the walk."""
    syspath = sdev.syspath
    if any(t in syspath for t in ("/rport-", "/end_device-", "/session", "/vmbus_", "/VMBUS")) or \
            sdev.attr("ieee1394_id") is not None:
        return None  # Fibre Channel, SAS, iSCSI, Hyper-V, FireWire: not named here
    hctl = _hctl(sdev.sysname)
    if hctl is None:
        return None
    host, bus, target, lun = hctl
    shost = _parent_with(sdev, "scsi", "scsi_host")
    if "/ata" in syspath:
        port_dev = shost.parent if shost is not None else None
        port_no = (port_dev.extra.get("port_no") or "").strip() if port_dev is not None else ""
        if not port_no:
            return None
        path.insert(0, f"ata-{port_no}.{bus}.0" if bus != 0 else f"ata-{port_no}.{target}")
        return sdev, port_no, False
    if shost is None:
        return None
    numbers = shost.extra.get("host_numbers") or []
    if not numbers:
        return shost, None, False  # path_id names nothing when it cannot rebase the host
    path.insert(0, f"scsi-{host - min(numbers)}:{bus}:{target}:{lun}")
    return shost, None, False


# --------------------------------------------------------------------------- the names

def kernel_named(name: str) -> bool:
    return name.startswith(_KERNEL_PREFIXES)


def disk_names(dev: Node) -> tuple[list[str], list[str]]:
    """(by-id names, by-path names) of a whole disk, as 60-persistent-storage.rules makes
    them. `dev` is the disk's Node with its parents linked."""
    name = dev.sysname
    by_id: list[str] = []
    by_path: list[str] = []
    if not kernel_named(name) or name.startswith("sr"):
        return by_id, by_path
    env: Env = {}
    if name.startswith("nvme"):
        wwid = dev.attr("wwid")
        if wwid is not None and _present(wwid):
            by_id.append("nvme-" + _link_text(replace_whitespace(attr_value(wwid))))
        _, serial = _first_attr(dev, "serial")
        _, model = _first_attr(dev, "model")
        _, nsid = _first_attr(dev, "nsid")
        if serial is not None and model is not None:
            # ENV{ID_SERIAL}="$env{ID_MODEL}_$env{ID_SERIAL_SHORT}" with string_escape=replace
            base = replace_chars(f"{attr_value(model)}_{attr_value(serial)}")
            by_id.append("nvme-" + _link_text(base, b"/"))
            if nsid is not None:
                by_id.append("nvme-" + _link_text(replace_chars(f"{base}_{attr_value(nsid)}"), b"/"))
    elif name.startswith("vd"):
        _, serial = _first_attr(dev, "serial")
        if serial is not None:
            by_id.append("virtio-" + _link_text(replace_whitespace(attr_value(serial))))
    elif name.startswith("sd"):
        env = _sd_identity(dev)
        if env.get("ID_SERIAL"):
            by_id.append(_link_text(f"{env['ID_BUS']}-{replace_whitespace(env['ID_SERIAL'])}"))
        if env.get("ID_USB_SERIAL"):
            by_id.append(_link_text(f"usb-{replace_whitespace(env['ID_USB_SERIAL'])}"))
    if env.get("ID_WWN_WITH_EXTENSION"):
        by_id.append(_link_text("wwn-" + replace_whitespace(env["ID_WWN_WITH_EXTENSION"])))
    nvme_subsystem = any(n.subsystem == "nvme-subsystem" for n in dev.ancestors())
    if "/virtual/" not in dev.syspath or nvme_subsystem:
        id_path, compat = path_id(dev)
        if id_path:
            by_path.append(_link_text(id_path))
            if compat:
                by_path.append(_link_text(compat))
            if name.startswith("vd") and id_path.startswith("pci-"):
                by_path.append(_link_text("virtio-" + id_path))  # udev's legacy virtio-pci name
    return _clean(by_id), _clean(by_path)


def _sd_identity(dev: Node) -> Env:
    """The ID_* of an sd disk, as ata_id, usb_id and scsi_id (in udev's order) give them."""
    env: Env = {}
    sdev = _parent_with(dev, "scsi", "scsi_device")
    on_usb = _parent_with(dev, "usb") is not None
    vendor = sdev.attr("vendor") if sdev is not None else None
    is_ata = vendor is not None and _bytes(vendor).rstrip(_WHITESPACE) == b"ATA"
    if sdev is not None and is_ata:
        # ata_id: from page 0x89's IDENTIFY data, else libata's page 0x83. Never scsi_id's
        # names for an ATA disk: udev's ata_id answers for it, so a missing page means
        # "unknown", not "ask the next helper".
        env.update(ata_identity(sdev.attr("vpd_pg89")) or ata_identity_from_pg83(sdev.attr("vpd_pg83")))
    elif sdev is not None and on_usb and (dev.text("removable") or "").strip() == "0":
        env.update(ata_identity(sdev.attr("vpd_pg89")))  # a SAT bridge that shows page 0x89
    if on_usb:
        usb = usb_identity(dev)
        if "ID_BUS" in env:
            usb = {"ID_USB_SERIAL": usb["ID_USB_SERIAL"]} if usb else {}
        env.update(usb)
    if "ID_SERIAL" not in env and sdev is not None and not is_ata:
        env.update(scsi_identity(sdev.text("vendor"), sdev.text("model"), sdev.attr("vpd_pg83"),
                                 sdev.attr("vpd_pg80")))
    return env


def partition_names(names: list[str], partn: int) -> list[str]:
    """A partition's names: each of its disk's with -part<N> (udev imports the disk's ID_*)."""
    return [f"{n}-part{partn}" for n in names]


def _clean(names: list[str]) -> list[str]:
    """Unique, in order; no empty names and none udev would make a folder of (a '/' inside)."""
    out = []
    for n in names:
        if n and "/" not in n and n not in (".", "..") and len(n) <= 255 and n not in out:
            out.append(n)
    return out


# --------------------------------------------------------------------------- the sysfs reader

def _read_attr(syspath: str, name: str) -> Attr:
    """A sysfs attribute: bytes for VPD pages, else text without its trailing newline (as
    sd_device reads it); None when absent or unreadable. At most MAX_ATTR bytes."""
    try:
        fd = os.open(f"{syspath}/{name}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        data = os.read(fd, MAX_ATTR)
    except OSError:
        return None
    finally:
        os.close(fd)
    if name.startswith("vpd_pg"):
        return data
    return data.rstrip(b"\n").decode("utf-8", "surrogateescape")


def _node(syspath: str, sys_root: str) -> Node:
    sub = None
    try:
        sub = os.path.basename(os.readlink(f"{syspath}/subsystem"))
    except OSError:
        pass
    devtype = None
    uevent = _read_attr(syspath, "uevent")
    for line in (uevent if isinstance(uevent, str) else "").splitlines()[:64]:
        if line.startswith("DEVTYPE="):
            devtype = line[8:]
    node = Node(syspath, sub, devtype, loader=_read_attr)
    if sub == "scsi" and devtype == "scsi_host":
        # path_id rebases the host number on the lowest host* beside this one
        try:
            entries = os.listdir(os.path.dirname(syspath))[:1024]
        except OSError:
            entries = []
        node.extra["host_numbers"] = [int(e[4:]) for e in entries if e.startswith("host") and e[4:].isdigit()]
    if sub is None and node.sysname.startswith("ata") and node.sysname[3:].isdigit():
        port_no = _read_attr(f"{sys_root}/class/ata_port/{node.sysname}", "port_no")
        node.extra["port_no"] = port_no if isinstance(port_no, str) else None
    return node


def read_chain(syspath: str, sys_root: str = "/sys") -> Node | None:
    """The device at `syspath` (a /sys/devices/... folder) with its parents linked: every
    folder above it that has a uevent file, up to /sys/devices, as udev's sd_device walks."""
    top = f"{sys_root}/devices"
    syspath = os.path.realpath(syspath)
    if not syspath.startswith(top + "/"):
        return None
    dirs: list[str] = []
    d = syspath
    while d.startswith(top + "/") and len(dirs) < MAX_DEPTH:
        if os.path.exists(f"{d}/uevent"):
            dirs.append(d)
        d = os.path.dirname(d)
    nodes = [_node(d, sys_root) for d in dirs]
    for child, parent in itertools.pairwise(nodes):
        child.parent = parent
    if nodes and any(n.subsystem == "nvme-subsystem" for n in nodes):
        # NVMe multipath: the namespace sits under the subsystem; path_id follows the
        # controller it is named after (nvme0 of nvme0n1) to reach the PCI device
        name = nodes[0].sysname
        ctrl = "nvme" + "".join(c for c in name[4:].split("n", 1)[0] if c.isdigit())
        nodes[0].extra["nvme_ctrl"] = read_chain(f"{sys_root}/class/nvme/{ctrl}", sys_root)
    return nodes[0] if nodes else None


def names_for(sysdir: str, devtype: str, partn: int | None, sys_root: str = "/sys") -> list[str]:
    """The /dev/disk names ("by-id/...", "by-path/...") of the block device at `sysdir`:
    a disk's own, or a partition's from its disk. Never raises: a device whose attributes
    cannot be read or make no sense gets no names."""
    try:
        if devtype == "partition":
            if not partn:
                return []
            disk = read_chain(os.path.dirname(sysdir), sys_root)
            if disk is None:
                return []
            by_id, by_path = disk_names(disk)
            by_id, by_path = partition_names(by_id, partn), partition_names(by_path, partn)
        else:
            disk = read_chain(sysdir, sys_root)
            if disk is None:
                return []
            by_id, by_path = disk_names(disk)
    except Exception:  # one odd device must not stop the boot: it gets no names
        return []
    return [f"by-id/{n}" for n in by_id] + [f"by-path/{n}" for n in by_path]
