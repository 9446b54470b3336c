"""pyinit-analyze: print and draw /run/pyinit/boot.json, like systemd-analyze for the initrd.

    pyinit-analyze [time] [FILE]          the summary and a table of the stages
    pyinit-analyze plot [FILE] [-o SVG]   an SVG timeline (to stdout without -o)

FILE defaults to /run/pyinit/boot.json. Runs on the full system, never in the initramfs (the
image builder leaves this module out).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from xml.sax.saxutils import escape

from pyinit.errors import PyinitError
from pyinit.names import BOOT_REPORT as PATH

# A boot report as json.load gives it: the JSON is input (checked where it is read), so its
# values are Any, json's own type.
Report = dict[str, Any]


class ReportError(PyinitError):
    pass


def load(path: str) -> Report:
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ReportError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict) or "stages" not in data or "started" not in data:
        raise ReportError(f"{path} is not a pyinit boot report (no 'stages' or 'started')")
    return data


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.3f}s"


def summary(report: Report) -> str:
    started, finished = report["started"], report["finished"]
    line = (f"Startup in the initramfs: {_ms(started)} (kernel) + {_ms(finished - started)} (pyinit) "
            f"= {_ms(finished)}; result: {report.get('result')}")
    return line


def table(report: Report) -> str:
    rows = [("stage", "start", "end", "duration", "status")]
    for s in report["stages"]:
        rows.append((s["name"], f"{s['start']:.3f}", f"{s['end']:.3f}", _ms(s["end"] - s["start"]),
                     "ok" if s.get("ok") else "FAILED"))
    for r in report.get("rescues", []):
        rows.append((f"rescue ({r.get('kind')})", f"{r['start']:.3f}", f"{r['end']:.3f}",
                     _ms(r["end"] - r["start"]), r.get("why", "")[:40]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    out = []
    for n, r in enumerate(rows):
        out.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  "
                   f"{r[3]:>{widths[3]}}  {r[4]}".rstrip())
        if n == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def details(report: Report) -> str:
    out = []
    root = report.get("root") or {}
    auto = report.get("gpt_auto") or {}
    if root.get("device"):
        spec = root.get("spec") or ("gpt-auto" if auto else None)
        out.append(f"root: {spec} -> {root.get('device')} ({root.get('fstype')}), "
                   f"switch by {report.get('switch')}, init {report.get('init')}")
    if auto.get("partition"):
        flags = " ".join(auto.get("flags") or []) or "none"
        out.append(f"gpt-auto: partition {auto['partition']} (flags: {flags}), boot loader's ESP "
                   f"{auto.get('loader_partuuid') or 'not known'}")
    for f in report.get("failures", []):
        out.append(f"failure at {f.get('at')}: stage {f.get('stage')}: {f.get('message')}")
    procs = report.get("processes") or {}
    if procs.get("reaped") or procs.get("stopped"):
        stopped = ", ".join(f"{p} ({c})" for p, c in procs.get("stopped", [])) or "none"
        out.append(f"processes: {procs.get('reaped', 0)} reaped; stopped before the switch: {stopped}")
    for prio, at, text in report.get("messages", []):
        out.append(f"{'error' if prio <= 3 else 'warning'} at {at}: {text}")
    return "\n".join(out)


# ---------------------------------------------------------------------------- SVG

COLORS = {"ok": "#6fa8dc", "failed": "#e06666", "rescue": "#f6b26b", "kernel": "#cccccc"}


def svg(report: Report, scale: float | None = None) -> str:
    """An SVG timeline: the kernel's part, then one bar per stage attempt and rescue."""
    bars = [("kernel", 0.0, report["started"], "kernel")]
    for s in report["stages"]:
        bars.append((s["name"], s["start"], s["end"], "ok" if s.get("ok") else "failed"))
    for r in report.get("rescues", []):
        bars.append((f"rescue ({r.get('kind')})", r["start"], r["end"], "rescue"))
    end = max([report.get("finished") or 0.0] + [b[2] for b in bars]) or 1.0
    label_w, row_h, top, width = 170, 22, 50, 900
    scale = scale or (width - label_w - 20) / end
    height = top + row_h * len(bars) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="10" y="20" font-size="14">{escape(summary(report))}</text>',
             f'<text x="10" y="38" fill="#555">{escape(report.get("kernel", ""))}: '
             f'{escape(report.get("cmdline") or "")[:120]}</text>']
    step = _tick_step(end)
    t = 0.0
    while t <= end + 1e-9:
        x = label_w + t * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 30}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 15}" text-anchor="middle" fill="#555">{t:g}s</text>')
        t = round(t + step, 6)
    for i, (name, start, stop, kind) in enumerate(bars):
        y = top + i * row_h
        x = label_w + start * scale
        w = max((stop - start) * scale, 1.0)
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(name)}</text>')
        parts.append(f'<rect class="{kind}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                     f'fill="{COLORS[kind]}"><title>{escape(name)}: {_ms(stop - start)}</title></rect>')
        parts.append(f'<text x="{x + w + 4:.1f}" y="{y + 15}" fill="#333">{_ms(stop - start)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _tick_step(end: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600):
        if end / step <= 12:
            return step
    return 1200


# ---------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pyinit-analyze", description="Show pyinit's boot report "
                                f"({PATH}) as a table or an SVG timeline.",
                                usage="pyinit-analyze [time|plot] [FILE] [-o SVG]")
    p.add_argument("words", nargs="*", metavar="[time|plot] [FILE]",
                   help=f"time: summary and table (default); plot: SVG timeline. FILE: default {PATH}")
    p.add_argument("-o", "--output", help="plot: write the SVG here instead of stdout")
    args = p.parse_args(argv)
    words = list(args.words)
    args.verb = words.pop(0) if words and words[0] in ("time", "plot") else "time"
    if len(words) > 1:
        p.error(f"too many arguments: {' '.join(words)}")
    args.file = words[0] if words else PATH
    try:
        report = load(args.file)
    except ReportError as e:
        print(f"pyinit-analyze: {e}", file=sys.stderr)
        return 1
    if args.verb == "plot":
        text = svg(report)
        if args.output:
            with open(args.output, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return 0
    print(summary(report))
    print()
    print(table(report))
    more = details(report)
    if more:
        print()
        print(more)
    return 0


if __name__ == "__main__":
    sys.exit(main())
