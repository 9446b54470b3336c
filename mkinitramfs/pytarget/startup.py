"""Print, as JSON, the modules the interpreter had loaded when it started running this
program: what CPython imports by itself before its first line.

Run as `python -I -S -c "$(cat startup.py)"`: the flags of /init's #! line, and -c, which
loads the most (CPython 3.13 imports linecache for it, not for a script such as /init), so
that the image also runs `python3 -c`. Nothing may be imported before the list is taken
(not even `from __future__`, which imports a module): json comes after it. Standard
library only (see pytarget/__init__.py).
"""
import sys

STARTED = sorted(sys.modules)

import json  # noqa: E402 - after the list, which must not contain it

print(json.dumps(STARTED))
