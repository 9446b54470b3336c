"""Build encrypted, LVM and RAID test disks inside a QEMU guest, as dracut's test suite does.

This machine's own kernel has no device-mapper and cannot load modules, so LUKS, LVM and md
disks are made by a "disk builder" boot: Debian's kernel, a small initramfs holding a
static busybox, cryptsetup, lvm and mdadm (with their shared libraries) and the modules they
need, and a shell recipe that formats the blank raw disks attached first (vda, vdb, ...),
copies a root filesystem in from the last disk (an ext4 image made on the host by
devtools.rootdisk) with dd, and powers off.

    disks = build_disks(kernel, recipe, [("crypt.img", 96)], root_image, name="luks")

Results are cached on disk under <cache>/disks/<hash of recipe, sizes, kernel, files>/:
a later session gets the same disks back without a boot. Tests must boot *copies*
(`copy_disks`): the real init writes its report onto the root.

The recipe runs under `set -e` with `$BB` (busybox), the blank disks as /dev/vda..., the
root image as $ROOTIMG, and files given in `files` under /files/. Its last line of output
must not matter: the builder prints DISKBUILDER-OK itself when the recipe succeeded.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from devtools.kernels import Kernel, default_cache
from devtools.qemu import boot
from devtools.rootdisk import find_static_busybox

TOOLS = ("/usr/sbin/cryptsetup", "/usr/sbin/lvm", "/usr/sbin/mdadm")
MODULES = ("virtio_pci", "virtio_blk", "dm_mod", "dm_crypt", "xts", "af_alg", "algif_skcipher",
           "algif_hash", "md_mod", "raid1", "ext4")
# No udev in the builder: lvm must make its device nodes itself.
LVM_CONFIG = ("devices{obtain_device_list_from_udev=0} "
              "activation{udev_sync=0 udev_rules=0 monitoring=0}")

INIT = r"""#!/bin/busybox sh
BB=/bin/busybox
$BB mount -t proc proc /proc
$BB mount -t sysfs sysfs /sys
$BB mount -t devtmpfs devtmpfs /dev
$BB mkdir -p /run /tmp /run/lock /run/cryptsetup /run/lvm /run/mdadm /etc/lvm
$BB mount -t tmpfs tmpfs /run
$BB mkdir -p /run/lock/lvm /run/cryptsetup /run/lvm /run/mdadm
while read -r name path kind; do
  case "$name" in ''|'#'*) continue ;; esac
  $BB insmod "$path" 2>/dev/null || [ "$kind" = optional ] || echo "DISKBUILDER: insmod $name failed"
done < /etc/pyinit/modules.load
export PATH=/usr/bin:/bin LVM_CONFIG="__LVM_CONFIG__" ROOTIMG=__ROOTIMG__
echo "DISKBUILDER: running the recipe"
if $BB sh -e /recipe; then
  $BB sync
  echo "DISKBUILDER-OK"
else
  echo "DISKBUILDER-FAILED: recipe exited with $?"
fi
$BB sync
$BB poweroff -f
"""


class DiskBuildError(RuntimeError):
    pass


def _hash(kernel: Kernel, recipe: str, sizes, files: dict[str, bytes], root_key: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"kver": kernel.kver, "recipe": recipe, "sizes": list(sizes), "root": root_key,
                         "init": INIT, "files": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())}},
                        sort_keys=True).encode())
    return h.hexdigest()[:20]


def builder_image(kernel: Kernel, recipe: str, files: dict[str, bytes], out: Path, rootdev: str) -> Path:
    """The disk builder's initramfs (gzip, no Python in it)."""
    from mkinitramfs import compress, cpio, elf, kmod
    from mkinitramfs.image import Image

    image = Image()
    for d in ("/proc", "/sys", "/dev", "/run", "/tmp", "/usr/bin", "/etc/pyinit"):
        image.add_dir(d)
    image.add_symlink("/bin", "usr/bin")
    image.add_symlink("/sbin", "usr/bin")
    image.add_symlink("/lib", "usr/lib")
    image.add_node("/dev/console", "chardev", 5, 1, 0o600)
    image.add_file("/usr/bin/busybox", source=str(find_static_busybox()), mode=0o755)
    for applet in ("sh", "dd", "sync", "mkdir", "cat", "echo", "sleep", "ls"):
        image.add_symlink(f"/usr/bin/{applet}", "busybox")
    missing = [t for t in TOOLS if not os.path.exists(t)]
    if missing:
        raise DiskBuildError(f"{', '.join(missing)} missing: install the Debian packages cryptsetup-bin, lvm2, mdadm")
    for tool in TOOLS:
        elf.add_elf_file(image, f"/usr/bin/{os.path.basename(tool)}", os.path.realpath(tool), part="tools", mode=0o755)
    elf.add_closure(image, [os.path.realpath(t) for t in TOOLS])
    idx = kmod.ModuleIndex.load(str(kernel.moddir), kernel.kver)
    load = kmod.add_modules(image, idx, kmod.select(idx, list(MODULES)))
    image.add_file("/etc/pyinit/modules.load", data=load.encode())
    image.add_file("/init", data=INIT.replace("__LVM_CONFIG__", LVM_CONFIG).replace("__ROOTIMG__", rootdev).encode(),
                   mode=0o755)
    image.add_file("/recipe", data=recipe.encode(), mode=0o755)
    for name, data in files.items():
        image.add_file(f"/files/{name}", data=data, mode=0o600)
    out.write_bytes(compress.compress(cpio.write(image), "gzip"))
    return out


def build_disks(kernel: Kernel, recipe: str, disks: list[tuple[str, int]], root_image: Path, *,
                files: dict[str, bytes] | None = None, root_key: str = "", cache: Path | None = None,
                log: Path | None = None) -> list[Path]:
    """Make (or take from the cache) the blank disks `disks` [(file name, MiB)], formatted by
    `recipe` with `root_image` attached last. `root_key` names what the root image holds
    (it is part of the cache key; the image's bytes are not, mkfs makes them differ each time).
    """
    files = files or {}
    cache = cache or default_cache()
    key = _hash(kernel, recipe, [s for _, s in disks], files, root_key)
    folder = cache / "disks" / key
    done = folder / "DONE"
    paths = [folder / name for name, _ in disks]
    if done.exists() and all(p.exists() for p in paths):
        return paths
    # pytest-xdist workers ask for the same disks at once: one builds, the others wait and
    # take its result. Without the lock a second builder replaced the folder while the
    # first one's tests were reading the disks in it.
    (cache / "disks").mkdir(parents=True, exist_ok=True)
    with open(cache / "disks" / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (done.exists() and all(p.exists() for p in paths)):
            _build_into(folder, kernel, recipe, disks, root_image, files, log)
    return paths


def _build_into(folder: Path, kernel: Kernel, recipe: str, disks: list[tuple[str, int]], root_image: Path,
                files: dict[str, bytes], log: Path | None) -> None:
    key = folder.name
    tmp = folder.parent / f".{key}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, size in disks:
            with open(tmp / name, "wb") as f:
                f.truncate(size * 1024 * 1024)
        # the root image is the disk after the blank ones: vda, vdb... then it
        rootdev = "/dev/vd" + "abcdefghij"[len(disks)]
        image = builder_image(kernel, recipe, files, tmp / "builder.img", rootdev)
        r = boot(kernel, image, "quiet", disks=[tmp / n for n, _ in disks] + [root_image],
                 memory_mb=512, timeout=600, marker="DISKBUILDER-OK", log=log)
        if "DISKBUILDER-OK" not in r.console:
            raise DiskBuildError(f"the disk builder did not finish its recipe:\n{r}")
        (tmp / "builder.img").unlink()
        (tmp / "console.log").write_text(r.console)
        (tmp / "recipe.sh").write_text(recipe)
        (tmp / "DONE").write_text("ok\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_disks(paths: list[Path], dest: Path) -> list[Path]:
    """Copies to boot (sparse where the file system allows)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        target = dest / p.name
        with open(p, "rb") as src, open(target, "wb") as dst:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                if chunk.count(0) == len(chunk):
                    dst.seek(len(chunk), os.SEEK_CUR)
                else:
                    dst.write(chunk)
            dst.truncate()
        out.append(target)
    return out


def build_on_host(what: dict, names: list[str], make, *, cache: Path | None = None) -> list[Path]:
    """Disks (or other files: a swtpm state folder) made on the host by `make(folder)`,
    cached under <cache>/disks/host-<hash of `what`>/ like the guest-built ones, with the
    same lock: several test processes may ask at once, one builds. `what` must name
    everything the result depends on (the recipe's text, sizes, keys...)."""
    cache = cache or default_cache()
    key = "host-" + hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]
    folder = cache / "disks" / key
    done = folder / "DONE"
    paths = [folder / n for n in names]
    if done.exists() and all(p.exists() for p in paths):
        return paths
    (cache / "disks").mkdir(parents=True, exist_ok=True)
    with open(cache / "disks" / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (done.exists() and all(p.exists() for p in paths)):
            tmp = folder.parent / f".{key}.{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                make(tmp)
                (tmp / "recipe.json").write_text(json.dumps(what, sort_keys=True, indent=1, default=str))
                (tmp / "DONE").write_text("ok\n")
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return paths
