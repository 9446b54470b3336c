"""What the kernel really unpacked: a manifest taken inside the guest, before pyinit runs.

`append_manifest_shim(image, out, busybox)` appends a test-only cpio (written by our own
writer, after 512-byte padding: the kernel wants an uncompressed archive at a 4-aligned
offset) holding a static busybox, a script and a /dev/ttyS1 node for the second serial
port. Booted with `rdinit=/manifest-shim/init` and QEMU's `-serial file:PATH` as the second
port, the script stats and hashes every name of the rootfs (nothing is mounted yet, and it
creates nothing: the tree is exactly what the kernel unpacked), writes the lines to ttyS1
(the first port carries the kernel's own messages, which would interleave) and execs
/init, so pyinit then boots as usual.

`parse_guest(text)` turns those lines into manifest Records. The shim also carries a
hard-linked pair written by our writer (data on the last name), so the guest shows the
kernel's handling of links; `shim_records()` is the shim's own manifest.
"""
from __future__ import annotations

from pathlib import Path

from mkinitramfs import cpio, manifest
from mkinitramfs.image import Image

RDINIT = "/manifest-shim/init"
TTY = "/manifest-shim/ttyS1"
SHIM = f"""#!/manifest-shim/busybox sh
B=/manifest-shim/busybox
{{
  echo MANIFEST-BEGIN
  $B find / -xdev -exec $B stat -c 'S|%f|%u|%g|%Y|%h|%i|%t|%T|%s|%n' {{}} +
  $B find / -xdev -type f -exec $B sha256sum {{}} +
  $B find / -xdev -type l | while read -r l; do echo "L|$l|$($B readlink "$l")"; done
  echo MANIFEST-END
}} > {TTY}
echo "MANIFEST-SHIM: manifest written to ttyS1; exec /init"
exec /init "$@"
"""


def shim_image(busybox: Path) -> Image:
    img = Image()
    img.add_file("/manifest-shim/busybox", source=str(busybox), mode=0o755)
    img.add_file(RDINIT, data=SHIM.encode(), mode=0o755)
    img.add_node(TTY, "chardev", 4, 65, 0o600)
    img.add_file("/manifest-shim/links/a", data=b"bytes shared by two names\n", mode=0o640)
    img.add_hardlink("/manifest-shim/links/b", "/manifest-shim/links/a")
    return img


def append_manifest_shim(image: Path, out: Path, busybox: Path, mtime: int = 0) -> dict[str, manifest.Record]:
    """Write image + shim to `out`; return the shim's manifest records."""
    raw = image.read_bytes()
    shim = shim_image(busybox)
    pad = b"\0" * ((-len(raw)) % 512)
    out.write_bytes(raw + pad + cpio.write(shim, mtime=mtime))
    return manifest.from_image(shim, mtime)


def parse_guest(text: str) -> dict[str, manifest.Record]:
    """The shim's lines -> {path: Record} (the root "/" left out)."""
    begin = text.find("MANIFEST-BEGIN\n")
    end = text.find("MANIFEST-END")
    if begin < 0 or end < 0:
        raise ValueError("no complete manifest (MANIFEST-BEGIN ... MANIFEST-END) in the guest's output")
    records: dict[str, manifest.Record] = {}
    hashes: dict[str, str] = {}
    targets: dict[str, str] = {}
    for line in text[begin + len("MANIFEST-BEGIN\n"):end].splitlines():
        if line.startswith("S|"):
            _, mode, uid, gid, mtime, nlink, ino, major, minor, size, name = line.split("|", 10)
            m = int(mode, 16)
            kind = manifest.KIND_OF_BITS.get(m & 0o170000, "unknown")
            inode = int(ino) if int(nlink) > 1 and kind != "dir" else None
            rdev = (int(major, 16), int(minor, 16)) if kind in ("chardev", "blockdev") else (0, 0)
            records[name] = manifest.Record(name, kind, m & 0o7777, int(uid), int(gid), int(mtime),
                                            size=int(size) if kind == "file" else 0, rdev=rdev, inode=inode)
        elif line.startswith("L|"):
            _, name, target = line.split("|", 2)
            targets[name] = target
        elif line.strip():
            digest, name = line.split(None, 1)
            hashes[name.strip()] = digest
    for name, r in records.items():
        if r.kind == "file":
            r.sha256 = hashes.get(name, "missing")
        elif r.kind == "symlink":
            r.target = targets.get(name, "missing")
    records.pop("/", None)
    return records
