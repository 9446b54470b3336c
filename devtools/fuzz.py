"""Coverage-guided fuzzing with atheris (optional: `pip install atheris`), for long runs
beyond the bounded property tests of `make test`.

    python -m devtools.fuzz image   -- -runs=200000      # the image reader
    python -m devtools.fuzz cmdline -- -max_total_time=300
    python -m devtools.fuzz unpack  -- -runs=50000       # unpack into a temporary folder
    python -m devtools.fuzz disk    -- -max_total_time=300   # pyinit's partition and superblock probes

Targets:
  image    bytes -> archive.read_image, the kernel-unpacker model, manifests, verify and
           ls/diff helpers: only CpioError / CompressError / ElfError may come out
  cmdline  bytes -> pyinit.cmdline.tokenize/parse: never raises, and agrees with the
           independent model of the kernel's next_arg() in tests/support/kernel_cmdline_model.py
  unpack   bytes -> unpack() into a fresh folder: only the reader's errors or UnpackError,
           and nothing is ever written outside that folder
  disk     bytes -> pyinit.probe.read_device() of them as a disk and as a partition:
           only an info dict or blkid.ProbeLimit / OSError, never more than the probe's
           read budget
The seed corpus (valid archives: plain, every compression, microcode + main, hard links)
is made here, so a run needs no files; the hostile images and disks of
tests/unit/fuzz-regressions (a 256 MiB zstd bomb, GPT headers asking for 256 MiB or an
overflowing LBA, a stale md superblock) join it. The image and unpack targets run with a
64 MiB --max-size, so a bomb the fuzzer grows ends at the limit, as the commands do.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["mkinitramfs", "pyinit"]):
    from mkinitramfs import archive, cli_inspect, compress, cpio, manifest, verify
    from mkinitramfs.elf import ElfError
    from mkinitramfs.image import Image
    from mkinitramfs.unpack import UnpackError, unpack
    from pyinit import blkid, cmdline, probe

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.support.kernel_cmdline_model import model_tokenize

READER_ERRORS = (cpio.CpioError, compress.CompressError, ElfError)
MAX_SIZE = 64 << 20
REGRESSIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "unit",
                           "fuzz-regressions")


def regressions(prefix: str) -> list[bytes]:
    out = []
    for name in sorted(os.listdir(REGRESSIONS)):
        if name.startswith("disk-") == (prefix == "disk-"):
            with open(os.path.join(REGRESSIONS, name), "rb") as f:
                out.append(f.read())
    return out


def seeds() -> list[bytes]:
    img = Image()
    img.add_file("/init", data=b"#!/usr/bin/python3.11 -IS\n", mode=0o755)
    img.add_file("/usr/lib/a", data=b"a" * 100)
    img.add_hardlink("/usr/lib/b", "/usr/lib/a")
    img.add_symlink("/lib", "usr/lib")
    img.add_node("/dev/console", "chardev", 5, 1)
    img.add_file("/etc/pyinit/modules.load", data=b"x /usr/lib/a required\n")
    raw = cpio.write(img, mtime=1)
    early = Image()
    early.add_file("/kernel/x86/microcode/AuthenticAMD.bin", data=b"\0" * 64)
    out = [raw] + [compress.compress(raw, m) for m in ("gzip", "xz", "zstd")]
    out.append(cpio.write(early) + compress.compress(raw, "zstd"))
    # an ELF program (its first 3 KiB: headers, PT_INTERP, PT_DYNAMIC) for verify's parser
    true = shutil.which("true")
    if true is None:
        raise SystemExit("fuzz: no `true` program on PATH to take an ELF file from (coreutils)")
    with open(os.path.realpath(true), "rb") as f:
        elf_head = f.read(3072)
    img.add_file("/usr/bin/prog", data=elf_head, mode=0o755)
    img.add_file("/init", data=b"#!/usr/bin/prog\n", mode=0o755)
    out.append(cpio.write(img, mtime=1))
    return out + regressions("")


def image_target(data: bytes) -> None:
    try:
        archive.read_image(data, MAX_SIZE)
        tree = archive.unpack_model(data, MAX_SIZE)
        manifest.render(manifest.from_tree(tree).values())
        verify.verify(data, MAX_SIZE)
        cli_inspect.diff_images(data, data, MAX_SIZE)
    except READER_ERRORS:
        pass


def cmdline_target(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    c = cmdline.parse(text)
    params, init_args = model_tokenize(data)
    dec = lambda b: None if b is None else b.decode("utf-8", "surrogateescape")  # noqa: E731
    want = ([(dec(p), dec(v)) for p, v in params], [dec(a) for a in init_args])
    got = cmdline.tokenize(text)
    if got != want:
        raise AssertionError(f"tokenize({data!r}) = {got!r}, the kernel model says {want!r}")
    c.get("root"), c.rd_list("rd.x")


def unpack_target(data: bytes) -> None:
    base = tempfile.mkdtemp(prefix="pyinit-fuzz-")
    try:
        dest = os.path.join(base, "dest")
        try:
            unpack(data, dest, warn=lambda m: None, max_size=MAX_SIZE)
        except (*READER_ERRORS, UnpackError):
            pass
        outside = set(os.listdir(base)) - {"dest"}
        if outside:
            raise AssertionError(f"unpack wrote outside its folder: {outside}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def disk_target(data: bytes) -> None:
    fd, path = tempfile.mkstemp(prefix="pyinit-fuzz-disk-")
    try:
        os.write(fd, data)
        for devtype in ("disk", "partition"):
            try:
                probe.read_device(path, devtype)
            except (blkid.ProbeLimit, OSError):
                pass
    finally:
        os.close(fd)
        os.unlink(path)


TARGETS = {"image": image_target, "cmdline": cmdline_target, "unpack": unpack_target, "disk": disk_target}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m devtools.fuzz {{{','.join(TARGETS)}}} [-- libFuzzer options] [CORPUS_DIR]")
    name = sys.argv[1]
    args = [sys.argv[0]] + [a for a in sys.argv[2:] if a != "--"]
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if not corpus:  # a fresh corpus folder with the seeds
        folder = tempfile.mkdtemp(prefix=f"pyinit-fuzz-{name}-")
        corpus_seeds = {"cmdline": [b"root=UUID=x ro quiet", b'a="b c" -- init arg', b"\xa0x=\xc2\xa0y"],
                        "disk": regressions("disk-")}.get(name) or seeds()
        for i, s in enumerate(corpus_seeds):
            with open(os.path.join(folder, f"seed{i}"), "wb") as f:
                f.write(s)
        args.append(folder)
    atheris.Setup(args, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
