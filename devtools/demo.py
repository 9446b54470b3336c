"""`make demo`: build an image for Debian's 6.1 kernel, make a small ext4 root disk, boot
both under QEMU and show the hand-off from pyinit to the real init."""
from __future__ import annotations

import sys
from pathlib import Path

from devtools.kernels import ensure_kernels
from devtools.qemu import boot
from devtools.rootdisk import make_root_disk

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".cache" / "demo"


def main() -> int:
    from mkinitramfs import build, sizes

    OUT.mkdir(parents=True, exist_ok=True)
    kernel = ensure_kernels()["6.1"]
    image = OUT / f"pyinit-{kernel.kver}.img"
    print(f"== building {image.name} for Debian's kernel {kernel.kver}")
    result = build.build(build.BuildOptions(output=str(image), kver=kernel.kver, moddir=str(kernel.moddir),
                                            modules=["virtio_pci,virtio_blk,ext4"]))
    print(sizes.size_table(result))
    disk = make_root_disk(OUT / "root.img", label="demo-root")
    append = f"root=UUID={disk.uuid} rootfstype=ext4"
    print(f"\n== booting under QEMU (TCG, no KVM): {append}")
    r = boot(kernel, image, append, disks=[disk.path], log=OUT / "console.log", timeout=240)
    # The console as it scrolled by (the real init's report repeats pyinit's kmsg lines
    # as REALINIT-KMSG: leave those out).
    shown = [line for line in r.lines if not line.startswith("REALINIT-")
             and ("pyinit:" in line or line.startswith("REALINIT:") or "Run /init" in line
                  or "Kernel panic" in line)]
    print("\n".join(shown))
    print()
    if not (r.report and r.report.done) or r.panicked:
        print(f"demo FAILED: the real init did not report. Full console: {OUT / 'console.log'}")
        print(r.tail(40))
        return 1
    switch = next((line for line in shown if "switched root with" in line), "")
    path = "pivot_root" if "pivot_root" in switch else "MS_MOVE" if "MS_MOVE" in switch else "?"
    mount = r.report.mount_at("/")
    if mount is None:
        print(f"demo FAILED: the real init reported no filesystem mounted at /. Full console: {OUT / 'console.log'}")
        return 1
    print(f"hand-off: the real init runs as PID {r.report.pid} on {mount.source} ({mount.fstype}, "
          f"{'ro' if mount.readonly else 'rw'}); switch path: {path}")
    if r.init_to_real_init is not None:
        print(f"time from 'Run /init' to the real init: {r.init_to_real_init:.2f} s (guest clock); "
              f"kernel start to real init: {r.report.uptime:.2f} s")
    print(f"full console log: {OUT / 'console.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
