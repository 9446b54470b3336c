"""mkinitramfs.strip: ELF files packed without symbol tables and debug sections (binutils'
strip), only when there is something to remove, never kernel modules; failures keep the
original with a warning. Files are made with gcc -g in tmp."""
from __future__ import annotations

import io
import os
import subprocess

import pytest

from mkinitramfs import build, config, elf, sizes, strip
from mkinitramfs.cli import parsers
from mkinitramfs.image import Image

pytestmark = pytest.mark.unit


def _cc(args: list[str], cwd) -> None:
    proc = subprocess.run(["gcc", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def sections(data: bytes) -> set[str]:
    from elftools.elf.elffile import ELFFile
    return {s.name for s in ELFFile(io.BytesIO(data)).iter_sections()}


@pytest.fixture
def objs(tmp_path):
    """lib/libfoo.so.1 (gcc -g), bin/prog linked against it (gcc -g), and a stripped copy of
    libfoo (what Debian ships: no .symtab, no .debug_*, a .gnu_debuglink)."""
    d = tmp_path
    (d / "lib").mkdir()
    (d / "bin").mkdir()
    (d / "foo.c").write_text("int foo_counter; int foo(int x){ foo_counter += x; return foo_counter * 2; }\n")
    (d / "main.c").write_text("int foo(int); int main(void){ return foo(21) == 42 ? 0 : 1; }\n")
    _cc(["-g", "-shared", "-fPIC", "-o", "lib/libfoo.so.1", "foo.c", "-Wl,-soname,libfoo.so.1"], d)
    _cc(["-g", "-o", "bin/prog", "main.c", "-Llib", "-l:libfoo.so.1", "-Wl,-rpath,$ORIGIN/../lib"], d)
    subprocess.run(["strip", "--strip-unneeded", "-o", str(d / "libfoo-stripped.so.1"), str(d / "lib/libfoo.so.1")],
                   check=True)
    subprocess.run(["objcopy", f"--add-gnu-debuglink={d / 'lib/libfoo.so.1'}", str(d / "libfoo-stripped.so.1")],
                   check=True, cwd=d)
    return d


def fake_strip(tmp_path, body: str) -> str:
    """A stand-in for binutils' strip that logs each call to calls.log, then runs `body`."""
    exe = tmp_path / "fake-strip"
    exe.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls.log\n{body}\n')
    exe.chmod(0o755)
    return str(exe)


def test_what_strip_would_remove_is_read_from_the_section_headers(objs):
    lib = (objs / "lib/libfoo.so.1").read_bytes()
    stripped = (objs / "libfoo-stripped.so.1").read_bytes()
    assert {".symtab", ".debug_info"} <= sections(lib)
    assert ".symtab" not in sections(stripped) and ".gnu_debuglink" in sections(stripped)
    assert strip.has_symbols_or_debug(io.BytesIO(lib))
    assert not strip.has_symbols_or_debug(io.BytesIO(stripped))  # Debian's files are like this
    assert not strip.has_symbols_or_debug(io.BytesIO(b"#!/bin/sh\n"))
    assert not strip.has_symbols_or_debug(io.BytesIO(b"\x7fELF garbage"))


def test_marked_files_are_stripped_and_still_link(objs):
    """Symbol tables and DWARF go, the dynamic symbols stay: the program still links against
    the stripped library (as extension modules link against a stripped libpython)."""
    image = Image()
    elf.add_elf_file(image, "/usr/bin/prog", str(objs / "bin/prog"), part="hooks", mode=0o755)
    elf.add_closure(image, [str(objs / "bin/prog")], part="libraries")
    lib_entry = image.get("/usr/lib/libfoo.so.1")
    assert lib_entry.strippable and image.get("/usr/bin/prog").strippable
    before = {p: image.get(p).size() for p in ("/usr/bin/prog", "/usr/lib/libfoo.so.1")}
    report = strip.strip_image(image)
    assert sorted(report.stripped) == ["/usr/bin/prog", "/usr/lib/libfoo.so.1"]
    assert report.warnings == [] and image.warnings == []
    for path, part in (("/usr/bin/prog", "hooks"), ("/usr/lib/libfoo.so.1", "libraries")):
        e = image.get(path)
        assert e.source is None and e.mode == 0o755
        assert report.removed[part] == before[path] - len(e.data) > 0
        assert not ({".symtab", ".debug_info", ".debug_line"} & sections(e.data))
        assert ".dynsym" in sections(e.data)
    assert report.total == sum(report.removed.values())
    # the host files are untouched
    assert ".symtab" in sections((objs / "lib/libfoo.so.1").read_bytes())
    run = objs / "run"
    (run / "lib").mkdir(parents=True)
    (run / "bin").mkdir()
    (run / "lib/libfoo.so.1").write_bytes(lib_entry.data)
    (run / "bin/prog").write_bytes(image.get("/usr/bin/prog").data)
    (run / "bin/prog").chmod(0o755)
    assert subprocess.run([str(run / "bin/prog")]).returncode == 0
    # the same input gives the same bytes (reproducible images)
    again = Image()
    elf.add_closure(again, [str(objs / "bin/prog")], part="libraries")
    strip.strip_image(again)
    assert again.get("/usr/lib/libfoo.so.1").data == lib_entry.data
    # a second pass finds nothing more to do
    assert strip.strip_image(image).stripped == []


def test_kernel_modules_and_unmarked_files_are_never_stripped(objs, tmp_path):
    """A module is never stripped (its signature covers the exact bytes), even if marked by
    mistake; nor is what --include or a hook's files put in (not marked)."""
    image = Image()
    lib = str(objs / "lib/libfoo.so.1")
    for path in ("/usr/lib/modules/6.1.0-test/kernel/fs/ext4/ext4.ko", "/usr/lib/modules/6.1.0-test/x.ko.xz",
                 "/opt/thing.ko"):
        image.add_file(path, source=lib, part="modules").strippable = True
    image.add_file("/etc/keys/blob", source=lib, part="include")
    report = strip.strip_image(image, exe=fake_strip(tmp_path, "exit 1"))
    assert report.checked == 0 and report.stripped == [] and report.warnings == []
    assert not (tmp_path / "calls.log").exists()
    assert all(e.source == lib for e in image if e.kind == "file")


def test_already_stripped_files_cost_no_subprocess(objs, tmp_path):
    image = Image()
    elf.add_elf_file(image, "/usr/lib/libfoo.so.1", str(objs / "libfoo-stripped.so.1"), part="libraries")
    report = strip.strip_image(image, exe=fake_strip(tmp_path, "exit 1"))
    assert report.checked == 1 and report.stripped == [] and report.warnings == []
    assert not (tmp_path / "calls.log").exists()
    assert image.get("/usr/lib/libfoo.so.1").source == str(objs / "libfoo-stripped.so.1")


def test_a_failing_strip_keeps_the_original_with_one_warning(objs, tmp_path):
    image = Image()
    elf.add_closure(image, [str(objs / "bin/prog")], part="libraries")
    report = strip.strip_image(image, exe=fake_strip(tmp_path, 'echo "strip: unknown format" >&2; exit 1'))
    e = image.get("/usr/lib/libfoo.so.1")
    assert e.source == str(objs / "lib/libfoo.so.1") and e.data is None
    assert report.stripped == [] and report.removed == {}
    assert len(report.warnings) == 1 and image.warnings == report.warnings
    w = report.warnings[0]
    assert "/usr/lib/libfoo.so.1" in w and str(objs / "lib/libfoo.so.1") in w
    assert "unknown format" in w and "packed as is" in w
    assert (tmp_path / "calls.log").read_text().startswith("--strip-unneeded -o ")


def test_a_strip_giving_garbage_keeps_the_original(objs, tmp_path):
    # The output is written where -o says ($3), but it is not an ELF file.
    image = Image()
    elf.add_closure(image, [str(objs / "bin/prog")], part="libraries")
    report = strip.strip_image(image, exe=fake_strip(tmp_path, 'echo junk > "$3"'))
    assert image.get("/usr/lib/libfoo.so.1").data is None
    assert "not an ELF file" in report.warnings[0]


def test_missing_strip_warns_once_naming_the_files(objs, tmp_path):
    image = Image()
    elf.add_elf_file(image, "/usr/bin/prog", str(objs / "bin/prog"), part="hooks")
    elf.add_closure(image, [str(objs / "bin/prog")], part="libraries")
    report = strip.strip_image(image, exe=str(tmp_path / "no-such-strip"))
    assert len(report.warnings) == 1
    assert "/usr/bin/prog" in report.warnings[0] and "/usr/lib/libfoo.so.1" in report.warnings[0]
    assert "--no-strip" in report.warnings[0]
    assert image.get("/usr/lib/libfoo.so.1").data is None


def test_size_table_shows_what_strip_removed(objs):
    image = Image()
    elf.add_closure(image, [str(objs / "bin/prog")], part="libraries")
    report = strip.strip_image(image)
    result = build.BuildResult(image, 1000, 500, 0.1, None, stripped=report)
    table = sizes.size_table(result)
    header = table.splitlines()[0].split()
    assert header == ["part", "entries", "bytes", "stripped"]
    libraries = next(line for line in table.splitlines() if line.startswith("libraries"))
    assert libraries.split()[-2:] == sizes.human(report.removed["libraries"]).split()
    assert f"strip: 1 of {report.checked} ELF files had symbol tables or debug sections" in table
    unstripped = sizes.size_table(build.BuildResult(Image(), 1000, 500, 0.1, None))
    assert unstripped.splitlines()[0].split() == ["part", "entries", "bytes"]
    assert "--no-strip" in unstripped


def test_no_strip_is_an_option_and_a_setting(tmp_path):
    p = parsers()
    args = config.parse_build_args(p.top, p.build, ["build", "-o", "x", "--kver", "k"], None)
    assert args.no_strip is False
    (tmp_path / "c.toml").write_text("no-strip = true\n")
    args = config.parse_build_args(p.top, p.build, ["build", "-o", "x", "--kver", "k"], str(tmp_path / "c.toml"))
    assert args.no_strip is True
    assert build.BuildOptions(output="x", kver="k").strip is True


def test_strip_bytes_is_the_same_strip_as_the_image_gets(objs, tmp_path):
    data, why = strip.strip_bytes(strip.find_strip(), str(objs / "lib/libfoo.so.1"), str(tmp_path))
    assert data is not None and why == ""
    image = Image()
    elf.add_closure(image, [str(objs / "bin/prog")])
    strip.strip_image(image)
    assert image.get("/usr/lib/libfoo.so.1").data == data
    assert os.path.getsize(objs / "lib/libfoo.so.1") > len(data)
