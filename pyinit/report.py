"""The boot report, /run/pyinit/boot.json: what pyinit did and how long each stage took.

/run is moved under the new root at the switch, so the real system finds the report where
pyinit left it; `pyinit-analyze` prints and draws it. It is written right before the real
init is exec'd (result "ok"), and also whenever the boot fails ("failed at stage X"), so a
rescue session can read it.

All times are seconds of CLOCK_BOOTTIME (the kernel log's clock), 0 = kernel start.

    {"format": 1, "kernel": "6.12.0-...", "cmdline": "...", "mode": "machine",
     "started": 1.02,                       pyinit's first line of Python
     "finished": 1.61,                      just before exec of the real init
     "result": "ok",
     "stages": [{"name": "cmdline", "start": 1.02, "end": 1.05, "ok": true}, ...],
     "failures": [{"stage": "mount", "message": "...", "at": 1.3}],
     "rescues": [{"why": "...", "kind": "console", "start": 1.3, "end": 9.8}],
     "root": {"spec": "UUID=...", "device": "/dev/vda", "fstype": "ext4"},
     "gpt_auto": null,                      or, without root=: {"loader_partuuid": ...,
                                            "partition": "/dev/vda2", "partuuid": ..., "flags":
                                            ["read-only"], "skipped": [[node, why]], "problem": null}
     "switch": "MS_MOVE", "init": "/sbin/init",
     "processes": {"reaped": 2, "stopped": [[123, "sleep"]]},
     "messages": [[4, 1.2, "a warning"]]}

The JSON text is produced by a small writer here: the json package would cost PID 1 the
import of `re` and json's own modules for one write per boot.
"""
from __future__ import annotations

import os

from pyinit import log
from pyinit.names import BOOT_REPORT

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from pyinit.context import Context
    from pyinit.gptauto import Finder

FORMAT = 1


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def dumps(obj: object, indent: int = 0) -> str:
    """JSON text for dicts, lists, tuples, str, int, float, bool and None."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return "null"
        return repr(round(obj, 6))
    if isinstance(obj, str):
        return _string(obj)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{_string(str(k))}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        if all(not isinstance(x, (dict, list, tuple)) for x in obj):
            return "[" + ", ".join(dumps(x) for x in obj) + "]"
        return "[\n" + ",\n".join(inner + dumps(x, indent + 1) for x in obj) + "\n" + pad + "]"
    return _string(str(obj))


def stage_entries(timings: list[tuple[str, float, float]], completed: list[str]) -> list[dict[str, object]]:
    """ctx.timings [(name, start, end)] -> entries; an attempt is ok when its stage completed
    and no later attempt of it exists (completed stages never run again)."""
    last: dict[str, int] = {}
    for i, (name, _, _) in enumerate(timings):
        last[name] = i
    out = []
    for i, (name, start, end) in enumerate(timings):
        out.append({"name": name, "start": round(start, 6), "end": round(end, 6),
                    "ok": name in completed and last[name] == i})
    return out


def build(ctx: Context, result: str) -> dict[str, object]:
    from pyinit import process
    from pyinit.reaper import REAPER
    c = ctx.cmdline or ctx.early_cmdline
    dev = ctx.root_device
    return {
        "format": FORMAT,
        "kernel": os.uname().release,
        "cmdline": c.raw.strip() if c is not None else None,
        "mode": process.mode(),
        "started": round(ctx.start, 6),
        "finished": round(log.uptime(), 6),
        "result": result,
        "stages": stage_entries(ctx.timings, ctx.completed),
        "failures": list(ctx.failures),
        "rescues": list(ctx.rescues),
        "root": {"spec": c.root if c is not None else None,
                 "device": dev.node if dev is not None else None,
                 "fstype": ctx.root_fstype},
        "gpt_auto": _gpt_auto(ctx.gpt_auto),
        "switch": ctx.switch_path,
        "init": ctx.init_path,
        "processes": {"reaped": REAPER.reaped, "stopped": [list(t) for t in REAPER.stopped]},
        "messages": [list(m) for m in log.notable],
    }


def _gpt_auto(finder: Finder | None) -> dict[str, object] | None:
    """The root found without root= (pyinit/gptauto.py), or None."""
    if finder is None:
        return None
    from pyinit import gptauto
    d = finder.decision
    part = d.part
    return {"loader_partuuid": finder.loader,
            "partition": part.node if part is not None else None,
            "partuuid": part.uuid if part is not None else None,
            "flags": gptauto.flag_names(part.attrs) if part is not None else [],
            "skipped": [[p.node, why] for p, _, why in d.skipped],
            "problem": d.problem or None}


def write(ctx: Context, result: str, path: str = BOOT_REPORT) -> str:
    """Write the report atomically (temporary file, rename); returns the path."""
    text = dumps(build(ctx, result)) + "\n"
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path
