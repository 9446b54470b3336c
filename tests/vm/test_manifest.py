"""The kernel unpacks exactly what the builder wrote: a sha256 manifest taken inside the
guest, before pyinit runs, equals the builder's own manifest (`build --manifest`) for a
concatenated early-microcode + compressed main image, plus the test-only shim segment
(devtools/guest_manifest.py). Then pyinit boots the same image to the real root."""
from __future__ import annotations

import difflib

import pytest

from devtools.firmware import firmware_dir
from devtools.guest_manifest import RDINIT, TTY, append_manifest_shim, parse_guest
from devtools.kernels import KernelFetchError
from devtools.qemu import boot
from devtools.rootdisk import make_root_disk
from mkinitramfs import archive, cli_inspect, manifest
from tests.support.boots import assert_handed_over
from tests.support.builder import run_builder

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

MTIME = 1_700_000_000
# The kernel's own built-in initramfs (usr/default_cpio_list), unpacked before ours: /dev,
# /dev/console (which ours then chmods and re-times) and /root.
KERNEL_BUILTIN = {"/root"}


@pytest.mark.parametrize("series", ["6.12"])
def test_guest_manifest_equals_builders_for_microcode_plus_main(series, kernels, busybox_bin, tmp_path, console_log):
    kernel = kernels[series]
    try:
        fw = firmware_dir()
    except KernelFetchError as e:
        pytest.fail(f"cannot get Debian's microcode packages (python -m devtools.firmware): {e}", pytrace=False)
    image = tmp_path / "pyinit.img"
    built_manifest = tmp_path / "pyinit.manifest"
    r = run_builder("build", "-o", str(image), "--kver", kernel.kver, "--moddir", str(kernel.moddir),
                    "--modules", "virtio_blk,ext4", "--microcode", "amd", "--microcode-dir", str(fw),
                    "--manifest", str(built_manifest), "--config", "none", env={"SOURCE_DATE_EPOCH": str(MTIME)})
    assert r.returncode == 0, r.stderr
    segments = archive.read_image(image.read_bytes())
    assert [cli_inspect.segment_label(s) for s in segments] == ["early microcode, uncompressed", "zstd"]
    builder = built_manifest.read_text()
    # the reader's model of the kernel agrees with the builder before anything boots
    assert manifest.render(manifest.from_tree(archive.unpack_model(image.read_bytes())).values()) == builder

    shimmed = tmp_path / "shimmed.img"
    shim_records = append_manifest_shim(image, shimmed, busybox_bin, mtime=MTIME)
    disk = make_root_disk(tmp_path / "root.img")
    serial2 = tmp_path / "ttyS1.txt"
    res = boot(kernel, shimmed, f"rdinit={RDINIT} root=UUID={disk.uuid}", disks=[disk.path],
               extra_args=["-serial", f"file:{serial2}"], log=console_log, timeout=600)
    assert "MANIFEST-SHIM: manifest written to ttyS1" in res.console, res
    guest = parse_guest(serial2.read_text(errors="surrogateescape"))
    # what the guest saw beyond the builder's image: the kernel's built-in /root and the shim
    assert guest["/root"].kind == "dir" and guest["/root"].mode == 0o700
    for path in KERNEL_BUILTIN:
        guest.pop(path)
    # writing to a tty updates its times: the one name the shim itself touched
    guest[TTY].mtime = shim_records[TTY].mtime = None
    expected = manifest.render(manifest.merge(
        manifest.from_tree(archive.unpack_model(image.read_bytes())), shim_records).values())
    got = manifest.render(guest.values())
    assert got == expected, "\n".join(difflib.unified_diff(expected.splitlines(), got.splitlines(),
                                                           "builder", "guest", lineterm="", n=0))
    # the parts that matter, named: the early microcode and a hard link made by our writer
    amd = guest["/kernel/x86/microcode/AuthenticAMD.bin"]
    assert amd.size > 10_000 and amd.sha256 in builder
    assert guest["/manifest-shim/links/a"].inode == guest["/manifest-shim/links/b"].inode is not None
    assert len(guest) > 100  # the whole image, not a few names
    # and pyinit, started by the shim, boots the same image into the real root
    assert_handed_over(res)
