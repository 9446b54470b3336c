"""mkinitramfs.python, pyinterp, pyimports and the pytarget programs without privileges:
interpreter description, module closure, bytecode."""
from __future__ import annotations

import ast
import marshal
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from mkinitramfs import elf, pyinterp
from mkinitramfs import python as P
from mkinitramfs.image import Image

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
PYTHON = VENV_PYTHON if os.path.exists(VENV_PYTHON) else sys.executable


@pytest.fixture(scope="module")
def interp():
    return pyinterp.describe_interpreter(PYTHON)


def make_package(root, name="pyinit", body="import os, json, signal\n", files=None):
    d = os.path.join(str(root), name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "__init__.py"), "w") as f:
        f.write(body)
    for rel, text in (files or {}).items():
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    return d


def test_describe_interpreter(interp):
    assert interp.version[:2] >= (3, 8)
    assert os.path.isabs(interp.executable) and interp.executable == os.path.realpath(interp.executable)
    elf.read_elf(interp.executable)  # the real ELF interpreter, not a venv symlink
    assert os.path.isfile(os.path.join(interp.stdlib_dir, "os.py"))
    assert os.path.isdir(interp.dynload_dir)
    assert interp.image_executable == f"/usr/bin/python{interp.xy}"
    assert interp.image_stdlib == f"/usr/{interp.platlibdir}/python{interp.xy}"
    assert interp.image_dynload.endswith("/lib-dynload")
    assert "sys" in interp.builtin_modules
    assert "encodings" in interp.startup_modules
    if interp.version[:2] >= (3, 11):
        assert "os" in interp.frozen_modules
    if interp.executable == "/usr/bin/python3.11":
        assert not interp.shared_libpython  # Debian links libpython into the binary
    if PYTHON == VENV_PYTHON:
        assert interp.prefix != interp.base_prefix
        assert any(d.startswith(os.path.join(REPO, ".venv")) for d in interp.site_dirs)


def test_describe_missing_interpreter(tmp_path):
    with pytest.raises(pyinterp.PythonError, match="does not exist"):
        pyinterp.describe_interpreter(str(tmp_path / "python9"))


def test_layout_and_parts(tmp_path, interp):
    pkg = make_package(tmp_path, body=textwrap.dedent('''\
        """doc"""
        import os, json, signal
        def later():
            import prctl
        '''), files={"sub/__init__.py": "from .. import later\n", "mod.py": "import base64\n",
                     "_libc_build.py": "import cffi\n"})
    image = Image()
    layout = P.add_python(image, PYTHON, package_dirs={"pyinit": pkg}, interp=interp)
    s = interp.image_stdlib
    assert layout.executable == interp.image_executable
    assert image.get(layout.executable).part == "interpreter"
    link = image.get(f"/usr/bin/python{interp.version[0]}")
    assert link.kind == "symlink" and link.target == os.path.basename(layout.executable)
    # Landmarks, encodings, sourceless pycs at module paths (no __pycache__).
    assert image.get(f"{s}/os.pyc").kind == "file"
    assert image.get(interp.image_dynload).kind == "dir"
    # Frozen modules are never read from files: only the landmark os.pyc is packed.
    assert "codecs" in interp.frozen_modules and image.get(f"{s}/codecs.pyc") is None
    assert "codecs" in layout.builtin
    for name in ("encodings/__init__.pyc", "encodings/aliases.pyc", "encodings/utf_8.pyc", "json/__init__.pyc"):
        assert image.get(f"{s}/{name}").part == "stdlib", name
    assert not any("__pycache__" in p or p.endswith(".py") for p in image.entries)
    # The package, whole, minus its build-time module; its submodules and their imports.
    assert layout.modules_in("pyinit") == ["pyinit", "pyinit.mod", "pyinit.sub"]
    assert image.get(f"{s}/pyinit/sub/__init__.pyc").part == "pyinit"
    assert "base64" in layout.stdlib_modules
    assert "cffi" not in layout.modules
    # Test suites and friends stay out.
    assert not [n for n in layout.modules if n.split(".")[0] in ("test", "tkinter", "idlelib", "lib2to3")]
    # Every packed extension's libraries are in the image.
    for name in layout.closure.libraries:
        assert image.get(f"/usr/lib/{name}") is not None
    if "prctl" in layout.modules:  # the venv has python-prctl: lazily imported, still packed
        assert layout.modules["prctl"].part == "site-packages"
        assert layout.modules["_prctl"].path.startswith(interp.image_dynload + "/")
        assert "libcap.so.2" in layout.closure.libraries


def test_pyc_files_are_reproducible_and_name_image_paths(tmp_path, interp):
    pkg = make_package(tmp_path, body="import json\nS = {'a', 'b', 'c', 'd'}\ndef f():\n    return 1\n")
    a, b = Image(), Image()
    P.add_python(a, PYTHON, package_dirs={"pyinit": pkg}, interp=interp)
    P.add_python(b, PYTHON, package_dirs={"pyinit": pkg}, interp=interp)
    assert sorted(a.entries) == sorted(b.entries)
    for path, e in a.entries.items():
        assert (e.kind, e.mode, e.content()) == (b.entries[path].kind, b.entries[path].mode,
                                                  b.entries[path].content()), path
    s = interp.image_stdlib
    data = a.get(f"{s}/pyinit/__init__.pyc").content()
    assert data[:4] == bytes.fromhex(interp.magic)
    assert int.from_bytes(data[4:8], "little") == 0b01  # hash-based, unchecked
    if sys.version_info[:2] == interp.version[:2]:
        code = marshal.loads(data[16:])
        assert code.co_filename == f"{s}/pyinit/__init__.py"
        json_code = marshal.loads(a.get(f"{s}/json/decoder.pyc").content()[16:])
        assert json_code.co_filename == f"{s}/json/decoder.py"


def test_sourceless_pyc_loads_whatever_its_optimization(tmp_path, interp):
    src = tmp_path / "src"
    src.mkdir()
    (src / "m.py").write_text('"""module doc"""\ndef f():\n    assert False, "kept"\n    return 1\n')
    out = tmp_path / "out"
    P.compile_modules(interp, [(str(src / "m.py"), str(out / "m.pyc"), "/usr/lib/m.py")], optimize=2)
    proc = subprocess.run([PYTHON, "-I", "-S", "-c",
                           f"import sys; sys.path.insert(0, {str(out)!r}); import m; "
                           "print(m.__doc__, m.f(), sys.flags.optimize, m.__file__)"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["None", "1", "0", str(out / "m.pyc")]


def test_missing_entry_module_and_package(tmp_path, interp):
    pkg = make_package(tmp_path)
    with pytest.raises(P.PythonError, match=r"module 'no_such_module_xyz' not found by "):
        P.add_python(Image(), PYTHON, package_dirs={"pyinit": pkg},
                     extra_modules=["no_such_module_xyz"], interp=interp)
    with pytest.raises(P.PythonError, match=r"package 'no_such_pkg_xyz' not found .*package_dirs="):
        P.add_python(Image(), PYTHON, packages=["no_such_pkg_xyz"], interp=interp)
    with pytest.raises(P.PythonError, match="not a package directory"):
        P.add_python(Image(), PYTHON, package_dirs={"pyinit": str(tmp_path)}, interp=interp)


def test_extra_modules_and_excludes(tmp_path, interp):
    pkg = make_package(tmp_path, body="import os\n")
    layout = P.add_python(Image(), PYTHON, package_dirs={"pyinit": pkg}, interp=interp,
                          extra_modules=["encodings.idna", "test.support"],
                          follow_function_imports=False)
    assert "encodings.idna" in layout.modules
    assert "test.support" in layout.modules and "test" in layout.modules  # asked: packed


def test_follow_function_imports_off_is_smaller(tmp_path, interp):
    pkg = make_package(tmp_path, body="import os, json, signal\ndef lazy():\n    import base64\n")
    full = P.add_python(Image(), PYTHON, package_dirs={"pyinit": pkg}, interp=interp)
    lean = P.add_python(Image(), PYTHON, package_dirs={"pyinit": pkg}, interp=interp,
                        follow_function_imports=False)
    assert set(lean.modules) < set(full.modules)
    assert "base64" in lean.modules  # function-level imports of the package itself still count
    assert "subprocess" in full.modules and "subprocess" not in lean.modules  # os.popen's


def test_type_checking_blocks_are_not_followed(tmp_path, interp):
    # `if TYPE_CHECKING:` is false at run time: its imports are for the type checker only.
    body = ("TYPE_CHECKING = False\nif TYPE_CHECKING:\n    import decimal\nelse:\n    import base64\n"
            "def f():\n    import typing\n    if typing.TYPE_CHECKING:\n        import fractions\n")
    pkg = make_package(tmp_path, body=body)
    layout = P.add_python(Image(), PYTHON, package_dirs={"pyinit": pkg}, interp=interp,
                          follow_function_imports=False)
    assert "base64" in layout.modules and "typing" in layout.modules  # the else branch, the function
    assert "decimal" not in layout.modules and "fractions" not in layout.modules


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_extension_with_missing_library(tmp_path, interp):
    pkg = make_package(tmp_path / "p", body="from . import _needsgone\n")
    build = tmp_path / "build"
    build.mkdir()
    (build / "gone.c").write_text("int gone(void){return 1;}\n")
    (build / "ext.c").write_text("int gone(void); int PyInit__needsgone(void){return gone();}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", "libgone.so.1", "gone.c", "-Wl,-soname,libgone.so.1"],
                   cwd=build, check=True)
    ext = os.path.join(pkg, "_needsgone" + interp.ext_suffix)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", ext, "ext.c", "-L.", "-l:libgone.so.1"],
                   cwd=build, check=True)
    os.unlink(build / "libgone.so.1")
    with pytest.raises(elf.ElfError) as ei:
        P.add_python(Image(), PYTHON, package_dirs={"pyinit": pkg}, interp=interp,
                     follow_function_imports=False)
    assert str(ei.value).startswith(f"libgone.so.1 (needed by {ext}) not found in: ")


def test_missing_import_in_packed_package(tmp_path, interp):
    pkg = make_package(tmp_path, body="import os\ndef later():\n    import no_such_dep_xyz\n")
    with pytest.raises(P.PythonError,
                       match=r"module 'no_such_dep_xyz' \(imported by pyinit\) not found by .*allow_missing"):
        P.add_python(Image(), PYTHON, package_dirs={"pyinit": pkg}, interp=interp)
    layout = P.add_python(Image(), PYTHON, package_dirs={"pyinit": pkg}, interp=interp,
                          allow_missing=["no_such_dep_xyz"], follow_function_imports=False)
    assert layout.missing["no_such_dep_xyz"] == ["pyinit"]
    # The stdlib's imports of other platforms' modules are not errors.
    assert "nt" in layout.missing or "winreg" in layout.missing or "_winapi" in layout.missing


def test_package_from_the_builders_own_path(tmp_path, interp, monkeypatch):
    make_package(tmp_path, name="fakepkg_builder_xyz", body="import json\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    layout = P.add_python(Image(), PYTHON, packages=["fakepkg_builder_xyz"], interp=interp,
                          follow_function_imports=False)
    pm = layout.modules["fakepkg_builder_xyz"]
    assert pm.source == str(tmp_path / "fakepkg_builder_xyz" / "__init__.py")
    assert pm.part == "fakepkg_builder_xyz"


# ---------------------------------------------------------------- the programs the target runs

PYTARGET = os.path.join(REPO, "mkinitramfs", "pytarget")
HELPERS = sorted(f for f in os.listdir(PYTARGET) if f.endswith(".py") and f != "__init__.py")


def test_the_helpers_the_builder_runs_are_the_files_there():
    assert HELPERS == ["compile_modules.py", "describe.py", "find_modules.py", "startup.py"]
    for name in HELPERS:
        assert os.path.isfile(os.path.join(pyinterp.HELPERS_DIR, name))


@pytest.mark.parametrize("name", HELPERS)
def test_a_helper_imports_only_the_standard_library(name):
    # The target interpreter has none of pyinit, mkinitramfs or the builder's venv.
    with open(os.path.join(PYTARGET, name)) as f:
        tree = ast.parse(f.read(), name)
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import"
            imported.append(node.module)
    assert imported
    foreign = [m for m in imported if m.split(".")[0] not in sys.stdlib_module_names]
    assert not foreign, f"{name} imports {foreign}"


def test_startup_lists_modules_before_importing_any():
    # `from __future__` and json would be in the list if they came first.
    out = pyinterp.run_helper(PYTHON, ["-I", "-S"], "startup", as_command=True)
    assert "sys" in out and "encodings" in out
    assert "json" not in out and "__future__" not in out


def test_a_helper_that_fails_is_named_with_its_stderr(tmp_path, interp):
    # The traceback names the helper's own file and line: it is a real file, not a string.
    with pytest.raises(pyinterp.PythonError, match=r"(?s)failed while compiling modules \(exit 1\):\n"
                                                   r".*pytarget/compile_modules.py.*FileNotFoundError"):
        P.compile_modules(interp,
                          [(str(tmp_path / "missing.py"), str(tmp_path / "m.pyc"), "/m.py")], optimize=0)


def test_exclusion_rules_the_most_specific_wins():
    from mkinitramfs.pytarget.find_modules import Rules
    rules = Rules(excludes=("test", "pyinit._libc_build", "tkinter"), requested=("pyinit", "test.support"),
                  test_components=frozenset({"test", "tests"}))
    assert rules.excluded("pyinit._libc_build")  # excluded deeper than the package asked for
    assert not rules.excluded("pyinit.boot")
    assert not rules.excluded("test.support") and not rules.excluded("test.support.os_helper")
    assert not rules.excluded("test")  # the parent of what was asked for
    assert rules.excluded("test.test_os")
    assert rules.excluded("tkinter.ttk")
    assert rules.excluded("ctypes.test") and rules.excluded("email.tests.data")  # a test component
    assert not rules.excluded("pyinit.testing")  # a component that only starts with "test"


def test_the_command_line_names_an_unusable_interpreter(tmp_path, capsys):
    # PythonError is a MkinitramfsError: the command line's one catch prints it, no traceback.
    from mkinitramfs.cli import main
    moddir = tmp_path / "6.1.0-test"
    moddir.mkdir()
    (moddir / "modules.dep").write_text("kernel/drivers/block/virtio_blk.ko:\n")
    rc = main(["build", "-o", str(tmp_path / "x.img"), "--kver", "6.1.0-test", "--moddir", str(tmp_path),
               "--modules", "virtio_blk", "--config", "none", "--python", str(tmp_path / "python9")])
    assert rc == 1
    assert capsys.readouterr().err == (f"pyinit-mkinitramfs: error: python interpreter {tmp_path}/python9 "
                                       "does not exist\n")
