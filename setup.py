# The cffi bindings of pyinit are generated when the package is built (out-of-line ABI mode):
# the result is a plain Python module, pyinit/_libc.py, that needs only _cffi_backend at boot,
# neither a compiler nor pycparser. setuptools only takes cffi_modules through setup().
from setuptools import setup

setup(cffi_modules=["pyinit/_libc_build.py:ffibuilder"])
