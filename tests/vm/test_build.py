"""The builder against a real Debian kernel's module tree: reproducibility, the size table,
listing, and errors that name what is missing. No boot here; boots are in test_boot.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.builder import REPO, run_builder

pytestmark = pytest.mark.vm


def make_include_tree(root: Path, order: list[str]) -> None:
    """The same folder tree, its names created in `order`; modes set explicitly so the
    umask of the moment does not matter."""
    root.mkdir()
    for rel in order:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.parent.chmod(0o755)
        p.write_text(f"content of {rel}\n")
        p.chmod(0o644)
    root.chmod(0o755)


def listing_order(root: Path) -> list[str]:
    return [str(Path(d, n).relative_to(root)) for d, ds, fs in os.walk(root) for n in ds + fs]


def test_two_builds_are_byte_identical(kernel_61, tmp_path):
    """Same inputs, different times, umasks and directory orders: the same bytes
    (SOURCE_DATE_EPOCH honoured), early microcode included."""
    from devtools.firmware import firmware_dir
    names = [f"d{i}/f{j}" for i in range(4) for j in range(6)] + [f"top{j}" for j in range(8)]
    # tmpfs lists a folder in creation order (ext4 in hash order, the same for both):
    # /dev/shm, so the two include trees really are read in different orders
    shm = Path(tempfile.mkdtemp(prefix="pyinit-order-", dir="/dev/shm"))
    try:
        make_include_tree(shm / "one", names)
        make_include_tree(shm / "two", list(reversed(names)))
        assert listing_order(shm / "one") != listing_order(shm / "two")  # the premise of the test
        common = ["--kver", kernel_61.kver, "--moddir", str(kernel_61.moddir), "--modules", "virtio_pci,virtio_blk",
                  "--modules", "ext4", "--microcode", "amd", "--microcode-dir", str(firmware_dir()),
                  "--config", "none"]
        a, b = tmp_path / "a.img", tmp_path / "b.img"
        r1 = run_builder("build", "-o", str(a), *common, "--include", f"{shm / 'one'}:/etc/extra")
        time.sleep(1.1)
        r2 = subprocess.run(["sh", "-c", 'umask 077; exec "$0" -m mkinitramfs build "$@"', sys.executable,
                             "-o", str(b), *common, "--include", f"{shm / 'two'}:/etc/extra"],
                            capture_output=True, text=True, cwd=REPO)
    finally:
        shutil.rmtree(shm)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    assert a.read_bytes() == b.read_bytes()
    assert "/etc/extra/d3/f5" in run_builder("ls", str(a)).stdout.replace(" etc/", " /etc/")
    c = tmp_path / "c.img"
    r3 = run_builder("build", "-o", str(c), *common,
                     env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert r3.returncode == 0, r3.stderr
    listing = run_builder("ls", str(c)).stdout
    assert a.read_bytes() != c.read_bytes()
    assert "usr/lib/modules" in listing


def test_size_table_and_listing(kernel_612, tmp_path):
    out = tmp_path / "x.img"
    r = run_builder("build", "-o", str(out), "--kver", kernel_612.kver, "--moddir", str(kernel_612.moddir),
                    "--modules", "virtio_blk,ext4", "--compress", "xz")
    assert r.returncode == 0, r.stderr
    for part in ("interpreter", "libraries", "stdlib", "pyinit", "modules", "compressed"):
        assert part in r.stdout, r.stdout
    assert "built into the kernel (nothing to pack): virtio_pci" not in r.stdout  # not asked for
    listing = run_builder("ls", str(out)).stdout
    assert "xz" in listing.splitlines()[0]
    assert f"usr/lib/modules/{kernel_612.kver}/kernel/fs/ext4/ext4.ko" in listing  # decompressed
    assert "crw-------    0    0        5,1 dev/console" in listing
    assert "init" in listing and "-> usr/bin" in listing
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_missing_module_fails_naming_it(kernel_61, tmp_path):
    out = tmp_path / "x.img"
    r = run_builder("build", "-o", str(out), "--kver", kernel_61.kver, "--moddir", str(kernel_61.moddir),
                    "--modules", "virtio_blk,no_such_module")
    assert r.returncode == 1
    assert "no_such_module" in r.stderr and "not found" in r.stderr, r.stderr
    assert not out.exists()


def test_missing_library_fails_naming_it(tmp_path):
    """An interpreter whose shared library is gone: the build stops and names it."""
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    src = tmp_path / "m.c"
    src.write_text("int helper(void) { return 0; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib_dir / "libpyinithelper.so"), str(src)], check=True)
    main = tmp_path / "main.c"
    main.write_text("int helper(void); int main(void) { return helper(); }\n")
    subprocess.run(["gcc", "-o", str(fake), str(main), f"-L{lib_dir}", "-lpyinithelper",
                    f"-Wl,-rpath,{lib_dir}"], check=True)
    shutil.rmtree(lib_dir)
    r = run_builder("build", "-o", str(tmp_path / "x.img"), "--kver", "6.1.0-test", "--python", str(fake))
    assert r.returncode == 1
    assert "libpyinithelper.so" in r.stderr, r.stderr


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("pyinit-mkinitramfs")
    r = subprocess.run([str(exe), "build", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--moddir" in r.stdout and "--modules" in r.stdout


def test_debian_microcode_packages_walk_like_the_kernels_loaders():
    """The real intel-microcode and amd64-microcode files, concatenated as --microcode all
    does: the Intel blob is a chain of updates and the AMD blob a chain of containers to
    the last byte, as the early loaders walk them."""
    from devtools.firmware import firmware_dir
    from mkinitramfs import microcode
    fw = firmware_dir()
    img = microcode.early_image(microcode.select("all", str(fw)))
    intel = img.get("/kernel/x86/microcode/GenuineIntel.bin").data
    amd = img.get("/kernel/x86/microcode/AuthenticAMD.bin").data
    assert microcode.check_blob("intel", intel) >= len(microcode.vendor_files(str(fw), "intel")) > 50
    assert microcode.check_blob("amd", amd) == len(microcode.vendor_files(str(fw), "amd")) >= 4
