"""Print, as JSON, the modules the interpreter had loaded when it started running this
script: what CPython imports by itself before /init (a script) runs.

Run as `python -I -S startup.py`, the flags of /init's #! line. Nothing may be imported
before the list is taken (not even `from __future__`, which imports a module): json comes
after it. Standard library only (see pytarget/__init__.py).
"""
import sys

STARTED = sorted(sys.modules)

import json  # noqa: E402 - after the list, which must not contain it

print(json.dumps(STARTED))
