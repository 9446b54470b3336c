"""mkinitramfs.elf: shared-library closure, checked against ldd (the real ld.so) as oracle."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

from mkinitramfs import elf, ldso, strip
from mkinitramfs.image import Image

pytestmark = pytest.mark.unit

DEBIAN_PYTHON = "/usr/bin/python3.11"
PYENV = "/root/.pyenv/versions"
HAVE_GCC = shutil.which("gcc") is not None
needs_gcc = pytest.mark.skipif(not HAVE_GCC, reason="gcc not installed")


def ldd(path: str) -> tuple[dict[str, str | None], str | None]:
    """name -> realpath (None: not found), and the loader, as ld.so itself resolves them."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    libs: dict[str, str | None] = {}
    interp = None
    for raw in out.splitlines():
        line = raw.strip()
        m = re.match(r"(\S+) => not found", line)
        if m:
            libs[m.group(1)] = None
            continue
        m = re.match(r"(\S+) => (\S+) \(0x", line)
        if m:
            libs[m.group(1)] = os.path.realpath(m.group(2))
            continue
        m = re.match(r"(/\S+) \(0x", line)
        if m:
            interp = m.group(1)
    return libs, interp


def closure_as_ldd(c: elf.ElfClosure) -> dict[str, str]:
    return dict(c.libraries)


def assert_matches_ldd(path: str, closure: elf.ElfClosure) -> None:
    expected, interp = ldd(path)
    # ldd lists the loader under its soname too when something NEEDs it by name.
    if closure.interpreter:
        expected.pop(os.path.basename(closure.interpreter), None)
    assert None not in expected.values(), f"ldd itself finds missing libraries: {expected}"
    assert closure_as_ldd(closure) == expected
    if interp is not None:
        assert closure.interpreter == interp


# ---------------------------------------------------------------------------------------
# Real interpreters


@pytest.mark.skipif(not os.path.exists(DEBIAN_PYTHON), reason="no Debian python3.11")
def test_debian_python_matches_ldd():
    c = elf.resolve([DEBIAN_PYTHON])
    assert c.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert os.path.isfile(c.interpreter_source)
    assert {"libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1"} <= set(c.libraries)
    assert all(p == os.path.realpath(p) for p in c.libraries.values())
    assert c.needed_by["libc.so.6"] == DEBIAN_PYTHON
    assert_matches_ldd(DEBIAN_PYTHON, c)


def _pyenv_pythons() -> list[str]:
    out = []
    for d in sorted(glob.glob(f"{PYENV}/3.1[1-9]*")):
        exe = os.path.join(d, "bin", "python3")
        if os.path.exists(exe):
            out.append(os.path.realpath(exe))
    return out


@pytest.mark.parametrize("python", _pyenv_pythons() or [pytest.param(None, marks=pytest.mark.skip("no pyenv python"))])
def test_pyenv_python_finds_libpython_through_its_runpath(python):
    c = elf.resolve([python])
    obj = elf.read_elf(python)
    assert obj.runpath or obj.rpath, "pyenv builds carry a RUNPATH to their lib/"
    libpython = [n for n in c.libraries if n.startswith("libpython")]
    assert len(libpython) == 1
    assert os.path.dirname(c.libraries[libpython[0]]) == os.path.realpath(
        os.path.join(os.path.dirname(python), "..", "lib"))
    # libpython NEEDs ld-linux-x86-64.so.2 by name: that is the loader, not a second copy.
    assert "ld-linux-x86-64.so.2" not in c.libraries
    assert_matches_ldd(python, c)


@pytest.mark.skipif(not glob.glob(f"{PYENV}/3.12*/lib/python3.12/lib-dynload"), reason="no pyenv 3.12")
def test_pyenv_extension_modules_match_ldd():
    dynload = sorted(glob.glob(f"{PYENV}/3.12*/lib/python3.12/lib-dynload"))[0]
    for name in ("_ssl", "_ctypes", "readline", "_lzma", "zlib", "_sqlite3"):
        found = glob.glob(f"{dynload}/{name}.cpython-312-*.so")
        if not found:
            continue
        c = elf.resolve(found)
        expected, _ = ldd(found[0])
        expected.pop("ld-linux-x86-64.so.2", None)
        # A lone extension module has no PT_INTERP, so the loader that libc NEEDs by name
        # is an ordinary library here; ldd lists it apart.
        assert c.interpreter is None
        ours = closure_as_ldd(c)
        ours.pop("ld-linux-x86-64.so.2", None)
        assert ours == expected, name


# ---------------------------------------------------------------------------------------
# Crafted programs (gcc)


def _cc(args: list[str], cwd: str) -> None:
    proc = subprocess.run(["gcc", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def tree(tmp_path):
    """bin/prog -> libfoo.so.1 (lib/) -> libbar.so.1 (lib/sub/)."""
    d = str(tmp_path)
    os.makedirs(f"{d}/bin")
    os.makedirs(f"{d}/lib/sub")
    with open(f"{d}/bar.c", "w") as f:
        f.write("int bar(void){return 41;}\n")
    with open(f"{d}/foo.c", "w") as f:
        f.write("int bar(void); int foo(void){return bar()+1;}\n")
    with open(f"{d}/main.c", "w") as f:
        f.write("int foo(void); int main(void){return foo()==42?0:1;}\n")
    with open(f"{d}/mainbar.c", "w") as f:
        f.write("int bar(void); int main(void){return bar()==41?0:1;}\n")
    _cc(["-shared", "-fPIC", "-o", "lib/sub/libbar.so.1", "bar.c", "-Wl,-soname,libbar.so.1"], d)
    return d


@needs_gcc
def test_origin_runpath_and_inherited_rpath_absent(tree):
    d = tree
    # libfoo finds libbar by its own RUNPATH $ORIGIN/sub; prog finds libfoo by $ORIGIN/../lib.
    _cc(["-shared", "-fPIC", "-o", "lib/libfoo.so.1", "foo.c", "-Wl,-soname,libfoo.so.1",
         "-Llib/sub", "-l:libbar.so.1", "-Wl,-rpath,$ORIGIN/sub"], d)
    _cc(["-o", "bin/prog", "main.c", "-Llib", "-l:libfoo.so.1", "-Wl,-rpath,${ORIGIN}/../lib"], d)
    assert subprocess.run([f"{d}/bin/prog"]).returncode == 0
    c = elf.resolve([f"{d}/bin/prog"])
    assert c.libraries["libfoo.so.1"] == f"{d}/lib/libfoo.so.1"
    assert c.libraries["libbar.so.1"] == f"{d}/lib/sub/libbar.so.1"
    assert c.needed_by["libbar.so.1"] == f"{d}/bin/../lib/libfoo.so.1"
    assert_matches_ldd(f"{d}/bin/prog", c)


@needs_gcc
def test_origin_of_a_program_is_its_realpath(tree, tmp_path):
    d = tree
    _cc(["-shared", "-fPIC", "-o", "lib/libfoo.so.1", "foo.c", "-Wl,-soname,libfoo.so.1",
         "-Llib/sub", "-l:libbar.so.1", "-Wl,-rpath,$ORIGIN/sub"], d)
    _cc(["-o", "bin/prog", "main.c", "-Llib", "-l:libfoo.so.1", "-Wl,-rpath,$ORIGIN/../lib"], d)
    os.makedirs(f"{d}/elsewhere/deeper")
    os.symlink(f"{d}/bin/prog", f"{d}/elsewhere/deeper/prog")
    assert subprocess.run([f"{d}/elsewhere/deeper/prog"]).returncode == 0
    c = elf.resolve([f"{d}/elsewhere/deeper/prog"])
    assert c.libraries["libfoo.so.1"] == f"{d}/lib/libfoo.so.1"


@needs_gcc
def test_rpath_is_inherited_but_runpath_is_not(tree):
    d = tree
    # libfoo has no search path of its own: libbar must come from the program's path list.
    _cc(["-shared", "-fPIC", "-o", "lib/libfoo.so.1", "foo.c", "-Wl,-soname,libfoo.so.1",
         "-Llib/sub", "-l:libbar.so.1"], d)
    _cc(["-o", "bin/rpath", "main.c", "-Llib", "-l:libfoo.so.1", "-Wl,--disable-new-dtags",
         f"-Wl,-rpath,{d}/lib:{d}/lib/sub"], d)
    _cc(["-o", "bin/runpath", "main.c", "-Llib", "-l:libfoo.so.1", "-Wl,--enable-new-dtags",
         f"-Wl,-rpath,{d}/lib:{d}/lib/sub"], d)
    assert elf.read_elf(f"{d}/bin/rpath").rpath and not elf.read_elf(f"{d}/bin/rpath").runpath
    assert elf.read_elf(f"{d}/bin/runpath").runpath

    c = elf.resolve([f"{d}/bin/rpath"])
    assert c.libraries["libbar.so.1"] == f"{d}/lib/sub/libbar.so.1"
    assert_matches_ldd(f"{d}/bin/rpath", c)

    expected, _ = ldd(f"{d}/bin/runpath")
    assert expected["libbar.so.1"] is None  # the oracle agrees: RUNPATH is not inherited
    with pytest.raises(elf.ElfError) as ei:
        elf.resolve([f"{d}/bin/runpath"])
    msg = str(ei.value)
    assert msg.startswith(f"libbar.so.1 (needed by {d}/lib/libfoo.so.1) not found in: ")
    assert "/usr/lib" in msg


@needs_gcc
def test_missing_library_names_it_and_its_user(tree):
    d = tree
    _cc(["-shared", "-fPIC", "-o", "lib/libfoo.so.1", "foo.c", "-Wl,-soname,libfoo.so.1",
         "-Llib/sub", "-l:libbar.so.1", "-Wl,-rpath,$ORIGIN/sub"], d)
    _cc(["-o", "bin/prog", "main.c", "-Llib", "-l:libfoo.so.1", "-Wl,-rpath,$ORIGIN/../lib"], d)
    os.unlink(f"{d}/lib/sub/libbar.so.1")
    with pytest.raises(elf.ElfError) as ei:
        elf.resolve([f"{d}/bin/prog"])
    msg = str(ei.value)
    assert "libbar.so.1 (needed by " in msg and "lib/libfoo.so.1) not found in: " in msg
    assert f"{d}/bin/../lib/sub" in msg  # the expanded $ORIGIN directory was searched
    os.unlink(f"{d}/lib/libfoo.so.1")
    with pytest.raises(elf.ElfError, match=rf"^libfoo\.so\.1 \(needed by {re.escape(d)}/bin/prog\) "
                                           rf"not found in: {re.escape(d)}/bin/\.\./lib, "):
        elf.resolve([f"{d}/bin/prog"])


@needs_gcc
def test_wrong_machine_candidate_is_skipped(tree):
    d = tree
    os.makedirs(f"{d}/first")
    _cc(["-o", "bin/prog", "mainbar.c", "-Llib/sub", "-l:libbar.so.1", f"-Wl,-rpath,{d}/first:{d}/lib/sub"], d)
    # Same file, e_machine patched to EM_AARCH64 (183): ld.so skips it and keeps searching.
    with open(f"{d}/lib/sub/libbar.so.1", "rb") as f:
        data = bytearray(f.read())
    data[18:20] = (183).to_bytes(2, "little")
    with open(f"{d}/first/libbar.so.1", "wb") as f:
        f.write(data)
    c = elf.resolve([f"{d}/bin/prog"])
    assert c.libraries["libbar.so.1"] == f"{d}/lib/sub/libbar.so.1"
    assert_matches_ldd(f"{d}/bin/prog", c)


X86_64 = (64, True, "EM_X86_64")
LOADER = "/lib64/ld-linux-x86-64.so.2"


@needs_gcc
def test_lib_token_is_what_the_loader_substitutes(tree):
    """$LIB comes from the target's loader (its dl_dst_lib), not from the host's folders; the
    real ld.so (ldd) agrees on the library it finds through $ORIGIN/../$LIB."""
    d = tree
    lib = elf.loader_facts(LOADER, X86_64).dst_lib
    os.makedirs(f"{d}/{lib}", exist_ok=True)
    shutil.copy(f"{d}/lib/sub/libbar.so.1", f"{d}/{lib}/libbar.so.1")
    _cc(["-o", "bin/lib", "mainbar.c", "-Llib/sub", "-l:libbar.so.1", "-Wl,-rpath,$ORIGIN/../$LIB"], d)
    c = elf.resolve([f"{d}/bin/lib"])
    assert c.libraries["libbar.so.1"] == os.path.realpath(f"{d}/{lib}/libbar.so.1")
    assert c.warnings == []
    assert_matches_ldd(f"{d}/bin/lib", c)


def test_loader_facts_come_from_the_loader_and_the_fallbacks_agree():
    facts = elf.loader_facts(LOADER, X86_64)
    assert facts.source == "list-diagnostics"  # glibc >= 2.33 (Debian 12: 2.36)
    assert facts.dst_lib and facts.system_dirs
    # The fallbacks, for loaders without --list-diagnostics or that cannot run here, give
    # the same answers for this loader: its --help, and the strings inside the file.
    help_dirs = ldso.parse_help_dirs(ldso.run_loader(LOADER, "--help"))
    assert tuple(help_dirs) == facts.system_dirs
    assert ldso.dst_lib_from_dirs(help_dirs, X86_64) == facts.dst_lib
    file_dirs = ldso.loader_file_dirs(LOADER, X86_64)
    assert tuple(file_dirs) == facts.system_dirs
    assert ldso.dst_lib_from_dirs(file_dirs, X86_64) == facts.dst_lib
    # Whatever this machine's CPU is, the loader's $PLATFORM here is one of the candidates.
    assert facts.platform in ldso.platform_candidates(X86_64)


def test_dst_lib_rules_for_other_distributions():
    debian = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"]
    assert ldso.dst_lib_from_dirs(debian, X86_64) == "lib/x86_64-linux-gnu"
    assert ldso.dst_lib_from_dirs(["/lib64", "/usr/lib64"], X86_64) == "lib64"  # Fedora
    assert ldso.dst_lib_from_dirs(["/usr/lib"], X86_64) == "lib"  # Arch: notdir(slibdir)
    assert ldso.dst_lib_from_dirs(["/lib/i386-linux-gnu", "/usr/lib/i386-linux-gnu", "/lib"],
                                  (32, True, "EM_386")) == "lib/i386-linux-gnu"


@needs_gcc
@pytest.mark.parametrize("strings, machine, dirs, lib", [
    ("/lib/aarch64-linux-gnu/\\0/usr/lib/aarch64-linux-gnu/\\0/lib/\\0/usr/lib/", 183,
     ("/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib", "/usr/lib"), "lib/aarch64-linux-gnu"),
    ("/lib64/\\0/usr/lib64/", 183, ("/lib64", "/usr/lib64"), "lib64"),
])
def test_a_loader_that_cannot_run_here_is_read_as_a_file(tmp_path, strings, machine, dirs, lib):
    """An aarch64 loader on this x86-64 host: its compiled-in directories are found in its
    bytes, never in the host's folders."""
    src = tmp_path / "ld.c"
    src.write_text(f'const char system_dirs[] = "{strings}";\n')
    _cc(["-shared", "-fPIC", "-o", "ld.so", "ld.c"], str(tmp_path))
    data = bytearray((tmp_path / "ld.so").read_bytes())
    data[18:20] = machine.to_bytes(2, "little")
    (tmp_path / "ld.so").write_bytes(bytes(data))
    abi = (64, True, "EM_AARCH64")
    assert elf.read_elf(str(tmp_path / "ld.so")).abi() == abi
    facts = elf.loader_facts(str(tmp_path / "ld.so"), abi)
    assert (facts.source, facts.system_dirs, facts.dst_lib, facts.platform) == ("loader file", dirs, lib, None)


def test_platform_candidates_are_every_name_glibc_can_give():
    # sysdeps/x86/cpu-features.c: "xeon_phi", "haswell" on Intel, else the kernel's name.
    assert ldso.platform_candidates(X86_64) == ("x86_64", "haswell", "xeon_phi")
    assert ldso.platform_candidates((32, True, "EM_X86_64")) == ("x86_64", "haswell", "xeon_phi")  # x32
    assert ldso.platform_candidates((32, True, "EM_386")) == ("i386", "i486", "i586", "i686")
    assert ldso.platform_candidates((64, True, "EM_AARCH64")) == ("aarch64",)
    assert ldso.platform_candidates((64, True, "EM_UNKNOWN")) == ()


@pytest.fixture
def platform_tree(tree):
    """bin/plat and bin/byname NEED libbar.so.1 through RUNPATH $ORIGIN/../p/$PLATFORM and
    then $ORIGIN/../plain; `put(dir, n)` writes there a libbar.so.1 whose bar() returns n."""
    d = tree
    with open(f"{d}/show.c", "w") as f:
        f.write('#include <stdio.h>\nint bar(void); int main(void){printf("%d\\n", bar()); return 0;}\n')
    _cc(["-o", "bin/plat", "show.c", "-Llib/sub", "-l:libbar.so.1",
         "-Wl,-rpath,$ORIGIN/../p/$PLATFORM:$ORIGIN/../plain"], d)

    def put(sub: str, n: int) -> str:
        os.makedirs(f"{d}/{sub}", exist_ok=True)
        with open(f"{d}/bar{n}.c", "w") as f:
            f.write(f"int bar(void){{return {n};}}\n")
        _cc(["-shared", "-fPIC", "-o", f"{sub}/libbar.so.1", f"bar{n}.c", "-Wl,-soname,libbar.so.1"], d)
        return f"{d}/{sub}/libbar.so.1"
    return d, put


@needs_gcc
def test_platform_directory_of_the_baseline_is_packed(platform_tree):
    """A library in every $PLATFORM directory: the baseline's is packed, whatever this CPU is."""
    d, put = platform_tree
    paths = {name: put(f"p/{name}", n) for n, name in enumerate(ldso.platform_candidates(X86_64))}
    c = elf.resolve([f"{d}/bin/plat"])
    assert c.libraries["libbar.so.1"] == paths["x86_64"]
    assert c.warnings == []


@needs_gcc
def test_baseline_directories_come_before_cpu_specific_ones(platform_tree):
    """haswell/ has it, and so has a later directory every CPU's loader searches: the latter
    is what a baseline CPU loads, so that is packed, without a warning."""
    d, put = platform_tree
    put("p/haswell", 1)
    plain = put("plain", 2)
    c = elf.resolve([f"{d}/bin/plat"])
    assert c.libraries["libbar.so.1"] == plain
    assert c.warnings == []


@needs_gcc
def test_library_only_for_some_cpus_is_packed_with_a_warning(platform_tree):
    d, put = platform_tree
    haswell = put("p/haswell", 1)
    put("p/xeon_phi", 2)
    c = elf.resolve([f"{d}/bin/plat"])
    assert c.libraries["libbar.so.1"] == haswell
    assert len(c.warnings) == 1
    w = c.warnings[0]
    assert w.startswith(f"libbar.so.1 (needed by {d}/bin/plat) was found only in {d}/bin/../p/haswell")
    assert "'haswell'" in w and "may not run on other CPUs" in w
    image = Image()
    elf.add_closure(image, [f"{d}/bin/plat"])
    assert image.warnings == [w]
    assert image.get("/usr/lib/libbar.so.1").source == haswell
    # Nowhere at all: the error lists every directory tried, the CPU-specific ones last.
    for sub in ("p/haswell", "p/xeon_phi"):
        shutil.rmtree(f"{d}/{sub}")
    with pytest.raises(elf.ElfError) as ei:
        elf.resolve([f"{d}/bin/plat"])
    msg = str(ei.value)
    assert msg.index("/p/x86_64") < msg.index("/plain") < msg.index("/p/haswell") < msg.index("/p/xeon_phi")


@needs_gcc
def test_needed_path_with_platform_token(tree):
    """A NEEDED entry that is a path with $PLATFORM (a soname set so): baseline first too."""
    d = tree
    soname = "$ORIGIN/../p/$PLATFORM/libbaz.so"
    for n, name in enumerate(ldso.platform_candidates(X86_64)):
        os.makedirs(f"{d}/p/{name}")
        with open(f"{d}/baz{n}.c", "w") as f:
            f.write(f"int bar(void){{return {n};}}\n")
        _cc(["-shared", "-fPIC", "-o", f"p/{name}/libbaz.so", f"baz{n}.c", f"-Wl,-soname,{soname}"], d)
    _cc(["-o", "bin/baz", "mainbar.c", "p/x86_64/libbaz.so"], d)
    assert elf.read_elf(f"{d}/bin/baz").needed[0] == soname
    c = elf.resolve([f"{d}/bin/baz"])
    assert c.libraries[soname] == f"{d}/p/x86_64/libbaz.so"
    assert c.warnings == []


@needs_gcc
def test_real_loader_takes_one_of_the_candidates(platform_tree):
    """The oracle: this machine's ld.so, whatever CPU it runs on, takes one of the resolver's
    candidate names for $PLATFORM (LD_DEBUG=libs shows the directory it tries, the program
    prints which library it got), and the resolver's choice does not depend on which."""
    d, put = platform_tree
    candidates = ldso.platform_candidates(X86_64)
    for n, name in enumerate(candidates):
        put(f"p/{name}", n)
    proc = subprocess.run([f"{d}/bin/plat"], capture_output=True, text=True, env={"LD_DEBUG": "libs"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    tried = re.findall(rf"trying file={re.escape(d)}/bin/\.\./p/([^/]+)/libbar\.so\.1", proc.stderr)
    assert tried, proc.stderr[-2000:]
    assert tried[0] in candidates, f"ld.so expanded $PLATFORM to {tried[0]!r}, not one of {candidates}"
    assert candidates[int(proc.stdout)] == tried[0]
    assert tried[0] == elf.loader_facts(LOADER, X86_64).platform
    c = elf.resolve([f"{d}/bin/plat"])
    assert c.libraries["libbar.so.1"] == f"{d}/p/x86_64/libbar.so.1"


@needs_gcc
def test_needed_path_with_slash_and_nodeflib(tree):
    d = tree
    # A library without SONAME linked by path is recorded in NEEDED by that path.
    _cc(["-shared", "-fPIC", "-o", "lib/libnoso.so", "bar.c"], d)
    _cc(["-o", "bin/bypath", "mainbar.c", f"{d}/lib/libnoso.so"], d)
    assert f"{d}/lib/libnoso.so" in elf.read_elf(f"{d}/bin/bypath").needed
    c = elf.resolve([f"{d}/bin/bypath"])
    assert c.libraries[f"{d}/lib/libnoso.so"] == f"{d}/lib/libnoso.so"
    image = Image()
    elf.add_closure(image, [f"{d}/bin/bypath"])
    assert image.get(f"{d}/lib/libnoso.so").kind == "file"

    # -z nodefaultlib: no ld.so.cache, no system dirs: libc is not found (ld.so agrees).
    _cc(["-o", "bin/nodef", "main.c", "-Wl,-z,nodefaultlib", "-Wl,--unresolved-symbols=ignore-all"], d)
    assert elf.read_elf(f"{d}/bin/nodef").nodeflib
    with pytest.raises(elf.ElfError, match=r"^libc\.so\.6 \(needed by .*/bin/nodef\) not found in: \(no directories\)"):
        elf.resolve([f"{d}/bin/nodef"])


def test_not_an_elf_file(tmp_path):
    p = tmp_path / "script"
    p.write_text("#!/bin/sh\n")
    with pytest.raises(elf.ElfError, match="not an ELF file"):
        elf.resolve([str(p)])
    with pytest.raises(elf.ElfError, match="cannot read"):
        elf.resolve([str(tmp_path / "absent")])


# ---------------------------------------------------------------------------------------
# Helpers


def test_ld_so_conf_includes(tmp_path):
    conf = tmp_path / "ld.so.conf"
    (tmp_path / "conf.d").mkdir()
    conf.write_text("# comment\n/opt/first\ninclude conf.d/*.conf\n/opt/last  # trailing\nhwcap 0 nosegneg\n")
    (tmp_path / "conf.d" / "b.conf").write_text("/opt/b1 /opt/b2\n")
    (tmp_path / "conf.d" / "a.conf").write_text("/opt/a\ninclude " + str(conf) + "\n")  # a loop
    (tmp_path / "conf.d" / "c.txt").write_text("/opt/ignored\n")
    assert ldso.ld_so_conf_dirs(str(conf)) == ["/opt/first", "/opt/a", "/opt/b1", "/opt/b2", "/opt/last"]
    assert ldso.ld_so_conf_dirs(str(tmp_path / "missing")) == []


def test_token_expansion():
    t = ldso.Tokens("lib/x86_64-linux-gnu", ("x86_64", "haswell", "xeon_phi"))
    assert ldso.expand("$ORIGIN/../lib", "/x/bin", t) == [("/x/bin/../lib", None)]
    assert ldso.expand("${ORIGIN}/lib", "/x/bin", t) == [("/x/bin/lib", None)]
    assert ldso.expand("/opt/$LIB", "/x/bin", t) == [("/opt/lib/x86_64-linux-gnu", None)]
    assert ldso.expand("/a/$PLATFORM/${LIB}", "/x", t) == [
        ("/a/x86_64/lib/x86_64-linux-gnu", None),
        ("/a/haswell/lib/x86_64-linux-gnu", "haswell"),
        ("/a/xeon_phi/lib/x86_64-linux-gnu", "xeon_phi")]
    i386 = ldso.Tokens("lib/i386-linux-gnu", ldso.platform_candidates((32, True, "EM_386")))
    assert [p for p, _ in ldso.expand("$ORIGIN/${PLATFORM}", "/o", i386)] == \
        ["/o/i386", "/o/i486", "/o/i586", "/o/i686"]
    assert ldso.expand("/a/$PLATFORM", "/x", ldso.Tokens("lib", ())) == []  # no value: dropped
    assert ldso.expand("/a/$ORIGINAL", "/x/bin", t) == []  # not a token: ld.so drops it
    assert ldso.expand("/a/$UNKNOWN", "/x/bin", t) == []
    assert ldso.expand("/plain", "/x/bin", t) == [("/plain", None)]


def test_system_search_path_from_loader():
    interp = "/lib64/ld-linux-x86-64.so.2"
    if not os.path.exists(interp):
        pytest.skip("no x86_64 loader")
    dirs = elf.system_search_path(interp, elf.read_elf(interp).abi())
    assert "/usr/lib" in dirs or "/usr/lib64" in dirs
    assert elf.default_libdir(interp) in dirs


@pytest.mark.skipif(not os.path.exists(DEBIAN_PYTHON), reason="no Debian python3.11")
def test_add_closure_layout_and_loader_soname():
    try:
        import _cffi_backend
        cffi = [_cffi_backend.__file__]
    except ImportError:
        cffi = []
    roots = [DEBIAN_PYTHON, *cffi]
    image = Image()
    c = elf.add_closure(image, roots, part="libraries")
    loader = image.get("/lib64/ld-linux-x86-64.so.2")
    assert loader is not None and loader.kind == "file" and loader.mode & 0o111
    assert loader.part == "libraries"
    for name in c.libraries:
        e = image.get(f"/usr/lib/{name}")
        assert e is not None and e.kind == "file" and e.source == c.libraries[name]
    # cffi's wheel NEEDs ld-linux-x86-64.so.2 by name: matched to the loader, no copy.
    assert image.get("/usr/lib/ld-linux-x86-64.so.2") is None
    # Adding the same closure again is a no-op; a different file at the same path is refused.
    elf.add_closure(image, roots)
    image.add_file("/usr/lib/libm.so.6", data=b"not libm", part="x")
    with pytest.raises(elf.ElfError, match="already holds a different file"):
        elf.add_closure(image, roots)


@needs_gcc
@pytest.mark.skipif(shutil.which("strip") is None, reason="binutils strip missing")
def test_strip_is_deterministic_and_smaller(tree, tmp_path):
    d = tree
    _cc(["-g", "-shared", "-fPIC", "-o", "lib/libfoo.so.1", "foo.c", "-Wl,-soname,libfoo.so.1",
         "-Llib/sub", "-l:libbar.so.1", "-Wl,-rpath,$ORIGIN/sub"], d)
    _cc(["-g", "-o", "bin/prog", "main.c", "-Llib", "-l:libfoo.so.1", "-Wl,-rpath,$ORIGIN/../lib"], d)
    exe = strip.find_strip()
    a, _ = strip.strip_bytes(exe, f"{d}/lib/libfoo.so.1", str(tmp_path))
    b, _ = strip.strip_bytes(exe, f"{d}/lib/libfoo.so.1", str(tmp_path))
    assert a is not None and a == b and len(a) < os.path.getsize(f"{d}/lib/libfoo.so.1")
    image = Image()
    elf.add_closure(image, [f"{d}/bin/prog"])
    strip.strip_image(image)
    e = image.get("/usr/lib/libfoo.so.1")
    assert e.data == a and e.source is None


def test_resolve_in_image_follows_symlinked_parents():
    image = Image()
    image.add_dir("/usr/lib64")
    image.add_symlink("/lib64", "usr/lib64")
    assert elf._resolve_in_image(image, "/lib64/ld-linux-x86-64.so.2") == "/usr/lib64/ld-linux-x86-64.so.2"
    assert elf._resolve_in_image(image, "/usr/lib/x") == "/usr/lib/x"
