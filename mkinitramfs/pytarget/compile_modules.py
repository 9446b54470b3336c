"""Compile the sources named on stdin to sourceless .pyc files with this interpreter's
py_compile, so that the bytecode's magic number is the target's own.

Request (JSON on stdin): {"items": [{"source", "cfile", "dfile"}...], "optimize": 0|1|2}.
Reproducible: UNCHECKED_HASH (no source mtime in the header; the source is never consulted),
dfile (the in-image path) as co_filename, and the caller's PYTHONHASHSEED=0, which decides the
order marshal writes set and frozenset constants in: so no -E or -I on this command line.
Standard library only (see pytarget/__init__.py).
"""
from __future__ import annotations

import json
import os
import py_compile
import sys


def main() -> None:
    req = json.load(sys.stdin)
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    for item in req["items"]:
        os.makedirs(os.path.dirname(item["cfile"]), exist_ok=True)
        py_compile.compile(item["source"], cfile=item["cfile"], dfile=item["dfile"], doraise=True,
                           optimize=req["optimize"], invalidation_mode=mode)
    print(json.dumps({"compiled": len(req["items"])}))


if __name__ == "__main__":
    main()
