"""Programs the *target* interpreter runs, never imported by the builder.

The interpreter packed into an image may be another CPython than the one running the builder
(3.11 to 3.13, a venv, a pyenv build), so what is learned about it is learned by running it
(mkinitramfs.pyinterp.run_helper runs `TARGET-PYTHON FLAGS pytarget/NAME.py`, or its text
with -c, a JSON request on stdin, a JSON answer as the last line of stdout):

    describe.py         what the interpreter is: version, paths, builtin and frozen modules
    startup.py          the modules it has loaded when a command starts (`-I -S -c`)
    find_modules.py     the import closure of the image's entry points, with modulefinder
    compile_modules.py  sources compiled to reproducible sourceless .pyc by py_compile

Each file runs alone in that interpreter: the standard library only (none of pyinit or
mkinitramfs, nothing from the builder's venv), nothing newer than CPython 3.11.
"""
