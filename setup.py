# The cffi bindings of pyinit are generated when the package is built (out-of-line ABI mode):
# the result is a plain Python module, pyinit/_libc.py, that needs only _cffi_backend at boot,
# neither a compiler nor pycparser. setuptools only takes cffi_modules through setup().
#
# The shipped folders (hooks/, kernel/, dracut/, initramfs-tools/) stay at the top of the
# repository, where users and the docs know them; a wheel carries them as package data in
# mkinitramfs/_shipped/. setuptools can only take package data from inside a package folder
# (a package_dir mapping would need them to be importable packages, and "initramfs-tools" is
# no package name), so build_py copies them, with their modes: the kernel hooks and the
# executables of hooks stay executable. The names come from mkinitramfs/shipped.py, the one
# module that also finds them again at run time.
import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py


def _shipped():
    spec = importlib.util.spec_from_file_location(
        "_pyinit_shipped", os.path.join(os.path.dirname(os.path.abspath(__file__)), "mkinitramfs", "shipped.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shipped_files(shipped):
    """(source, path inside the package) of every shipped file; no bytecode a test run left."""
    for folder in shipped.FOLDERS:
        if not os.path.isdir(folder):
            raise SystemExit(f"setup.py: the shipped folder {folder}/ is missing from the source tree "
                             "(an sdist made without MANIFEST.in?)")
        for dirpath, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if not name.endswith(".pyc"):
                    src = os.path.join(dirpath, name)
                    yield src, os.path.join("mkinitramfs", shipped.INSTALLED_DIR, src)


class build_py_with_shipped(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install finds them in the checkout (mkinitramfs.shipped)
        for src, dest in _shipped_files(_shipped()):
            target = os.path.join(self.build_lib, dest)
            self.mkpath(os.path.dirname(target))
            self.copy_file(src, target, preserve_mode=True)

    def get_outputs(self, include_bytecode=1):
        # Listed as outputs, so that the install records (and an uninstall removes) them.
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs += [os.path.join(self.build_lib, dest) for _src, dest in _shipped_files(_shipped())]
        return outputs


setup(cffi_modules=["pyinit/_libc_build.py:ffibuilder"], cmdclass={"build_py": build_py_with_shipped})
