"""`python -m devtools.bench --profile`: where the milliseconds of a pyinit boot go, measured in
the guest under QEMU/TCG, with the same kernel and root disk as `make bench`.

Each variant is the image under test plus a small test-only cpio appended to it (the kernel
unpacks concatenated archives in order, as devtools/testimage.py does). Nothing here ever
goes into a real image. The variants, booted `--rounds` times each in alternating order:

  plain       the image as built: the reference times.
  sampled     /init is replaced by the same three lines behind a sampling profiler: a 1 ms
              SIGALRM timer records the Python stack, each sample weighted by the wall
              time since the previous one (so a long system call, a module's init in the
              kernel or a wait for a child is charged to the line that made it), and an
              audit hook counts files opened (by directory), directories listed, imports
              and processes started. Dumped on a second serial port (/dev/ttyS1, a file on
              the host) when pyinit resets its signals just before exec'ing the real init.
  importtime  /init with `-X importtime` (CPython's own start-up imports and pyinit's).
  bare        `rdinit=python3.X -- -IS /profile-bare.py`: CPython's own start, nothing of
              pyinit (the script prints the clock and exits; PID 1 exits, the kernel panics
              with panic=-1 and QEMU stops).
  strace      `rdinit=/usr/bin/strace -- -D -f -o /dev/ttyS1 /init`: every system call of
              pyinit and its children (-D keeps pyinit PID 1; strace and its libraries come
              from this host, packed by mkinitramfs.elf). Counts only: strace slows every
              call down.

From every console: the kernel's "Trying to unpack rootfs image" and "Freeing initrd memory"
timestamps (the unpack, which runs while other initcalls do), "Run /init", pyinit's stage
lines and the real init's uptime. The report (markdown, plus raw.json) gives medians.
Times are the guest's clock: compare variants of one run, not runs on a loaded machine.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkinitramfs import archive, cpio, elf
from mkinitramfs.image import Image

VARIANTS = ("plain", "sampled", "importtime", "bare", "bare-pyc", "strace")
TTYS1 = ("/dev/ttyS1", 4, 65)  # the second 8250 UART: QEMU's second -serial
BARE_SCRIPT = "/profile-bare.py"
# 5 ms: each sample interrupts whatever PID 1 waits in (a child, a module's init) and runs a
# Python handler, ~0.1-0.3 ms under TCG; at 1 ms the profiler doubled the time of fsck.
SAMPLE_INTERVAL = 0.005

# The guest side of "sampled". Kept to builtin modules (_signal, time, sys, os), which the
# image has anyway, so the profiler itself imports nothing from the image.
SAMPLED_INIT = r'''#!{python} -IS
# TEST-ONLY (devtools/bootprofile.py): pyinit's /init behind a sampling profiler.
import time
_T0 = time.clock_gettime(time.CLOCK_BOOTTIME)
import _signal, os, sys
_stacks = {{}}
_counts = {{}}
_state = {{"last": _T0, "main": None, "on": True, "idle0": None}}


def _idle():
    # (uptime, seconds the CPUs were idle or waiting for I/O) from /proc/stat, once pyinit
    # has mounted /proc: the time a boot could still use for overlapping work.
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        return time.clock_gettime(time.CLOCK_BOOTTIME), (int(fields[4]) + int(fields[5])) / 100.0
    except (OSError, IndexError, ValueError):
        return None


def _sample(signum, frame):
    # Cheap on purpose (it runs every few ms under TCG): code objects now, names at the dump.
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    weight = now - _state["last"]
    _state["last"] = now
    codes = []
    f = frame
    while f is not None:
        codes.append(f.f_code)
        f = f.f_back
    key = (tuple(codes), (frame.f_lineno or 0) if frame is not None else 0)
    _stacks[key] = _stacks.get(key, 0.0) + weight
    if _state["idle0"] is None:
        _state["idle0"] = _idle()


def _count(key):
    _counts[key] = _counts.get(key, 0) + 1


def _audit(event, args):
    if event == "open":
        path = args[0]
        if isinstance(path, str):
            _count("open " + path.rsplit("/", 1)[0] if path.startswith("/") else "open (relative)")
    elif event in ("os.listdir", "os.scandir"):
        _count(event)
    elif event == "import":
        _count("import")
    elif event in ("os.posix_spawn", "subprocess.Popen", "os.fork", "os.exec"):
        _count(event)


def _dump(why):
    # Never raises: it runs inside pyinit's reset of the signals, just before the exec.
    if not _state["on"]:
        return
    _state["on"] = False
    _setitimer(_signal.ITIMER_REAL, 0)
    try:
        _write_dump(why)
    except BaseException as e:
        try:
            os.write(2, ("profile dump failed: %r\n" % (e,)).encode())
        except BaseException:
            pass


def _write_dump(why):
    end = time.clock_gettime(time.CLOCK_BOOTTIME)
    lines = ["PROFILE-START %.6f" % _T0, "PROFILE-MAIN %.6f" % (_state["main"] or 0),
             "PROFILE-END %.6f %s" % (end, why)]
    idle1 = _idle()
    if _state["idle0"] and idle1:
        lines.append("PROFILE-IDLE %.3f %.3f" % (idle1[0] - _state["idle0"][0], idle1[1] - _state["idle0"][1]))
    lines += ["PROFILE-COUNT %d %s" % (n, k) for k, n in sorted(_counts.items())]
    for (codes, line), w in _stacks.items():
        names = [c.co_filename.rsplit("/", 1)[-1] + ":" + c.co_name for c in reversed(codes)]
        lines.append("PROFILE-STACK %.6f %s;line %s" % (w, ";".join(names), line))
    try:
        fd = os.open("/dev/ttyS1", os.O_WRONLY | os.O_NOCTTY)
        try:
            os.write(fd, ("\n".join(lines) + "\nPROFILE-DONE\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass


_real_signal = _signal.signal
_setitimer = _signal.setitimer


def _signal_wrapper(signum, handler):
    # pyinit resets every signal to SIG_DFL just before exec'ing the real init (and a hook
    # with a timeout takes SIGALRM): the timer must stop before its handler is gone.
    if signum == _signal.SIGALRM and handler is not _sample:
        _dump("SIGALRM taken over (exec of the real init, or a hook's timeout)")
    return _real_signal(signum, handler)


sys.addaudithook(_audit)
_real_signal(_signal.SIGALRM, _sample)
_signal.siginterrupt(_signal.SIGALRM, False)  # SA_RESTART: pyinit's cffi calls never see EINTR
_signal.signal = _signal_wrapper
_setitimer(_signal.ITIMER_REAL, {interval}, {interval})
{body_imports}
_state["main"] = time.clock_gettime(time.CLOCK_BOOTTIME)
{body_call}
'''

BARE_PY = '''import time
t = time.clock_gettime(time.CLOCK_BOOTTIME)
import os
os.write(1, b"PROFILE-BARE %.6f\\n" % t)
'''

_TS = r"\[\s*(\d+\.\d+)\]"
_PATTERNS = {
    "unpack_start": re.compile(_TS + r" Trying to unpack rootfs image as initramfs"),
    "unpack_end": re.compile(_TS + r" Freeing initrd memory"),
    "run_init": re.compile(_TS + r" Run \S+ as init process"),
    "modules_loaded": re.compile(_TS + r" pyinit: loaded \d+ of \d+ modules"),
    "root_found": re.compile(_TS + r" pyinit: found root device"),
    "mounted": re.compile(_TS + r" pyinit: mounted \S+ on "),
    "switching": re.compile(_TS + r" pyinit: switching root to"),
    "panic": re.compile(_TS + r" Kernel panic"),
}
_STARTED = re.compile(r"pyinit: pyinit started at (\d+\.\d+) s")
_REALINIT = re.compile(r"REALINIT: uptime (\d+\.\d+)")
_IMPORT = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
_BARE = re.compile(r"PROFILE-BARE (\d+\.\d+)")


# ---------------------------------------------------------------------------------- images

def _init_script(image_bytes: bytes) -> tuple[str, str]:
    """(interpreter path, body) of the image's /init (`#!/usr/bin/python3.X -IS` + Python)."""
    for m in archive.members(image_bytes):
        if m.name == "init":
            text = m.data.decode()
            first, _, body = text.partition("\n")
            return first[2:].split()[0], body
    raise ValueError("the image has no /init")


def _append(image_bytes: bytes, extra: Image) -> bytes:
    pad = b"\0" * ((-len(image_bytes)) % 512)
    return image_bytes + pad + cpio.write(extra)


def _tty_image() -> Image:
    img = Image()
    path, major, minor = TTYS1
    img.add_node(path, "chardev", major, minor, 0o600)
    return img


def variant_image(image_bytes: bytes, variant: str) -> tuple[bytes, str]:
    """(image bytes, extra kernel command line) for one variant."""
    python, body = _init_script(image_bytes)
    if variant == "plain":
        return image_bytes, ""
    if variant == "importtime":
        extra = Image()
        extra.add_file("/init", data=f"#!{python} -ISXimporttime\n{body}".encode(), mode=0o755)
        return _append(image_bytes, extra), ""
    if variant == "sampled":
        lines = [ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        imports = "\n".join(ln for ln in lines if ln.startswith(("import ", "from ")))
        calls = "\n".join(ln for ln in lines if not ln.startswith(("import ", "from ")))
        extra = _tty_image()
        script = SAMPLED_INIT.format(python=python, body_imports=imports, body_call=calls, interval=SAMPLE_INTERVAL)
        extra.add_file("/init", data=script.encode(), mode=0o755)
        return _append(image_bytes, extra), ""
    if variant in ("bare", "bare-pyc"):
        extra = Image()
        script = BARE_SCRIPT
        if variant == "bare":
            extra.add_file(script, data=BARE_PY.encode(), mode=0o644)
        else:  # the same script compiled by the host's copy of the interpreter: no compiler at boot
            script += "c"
            extra.add_file(script, data=_compile(python, BARE_PY, script), mode=0o644)
        # panic=-1 before "--": everything after it goes to init, not to the kernel.
        return _append(image_bytes, extra), f"panic=-1 rdinit={python} -- -IS {script}"
    if variant == "strace":
        extra = _tty_image()
        strace = shutil.which("strace")
        if strace is None:
            raise FileNotFoundError("strace is not installed (apt-get install strace)")
        strace = os.path.realpath(strace)
        elf.add_closure(extra, [strace], part="strace")
        elf.add_elf_file(extra, strace, strace, part="strace", mode=0o755)
        return _append(image_bytes, extra), f"panic=-1 rdinit={strace} -- -D -f -o /dev/ttyS1 /init"
    raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")


def _compile(python: str, source: str, dfile: str) -> bytes:
    import subprocess
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "x.py", Path(tmp) / "x.pyc"
        src.write_text(source)
        subprocess.run([python, "-I", "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], sys.argv[2], "
                        "sys.argv[3], doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)",
                        str(src), str(out), dfile], check=True)
        return out.read_bytes()


# ---------------------------------------------------------------------------------- parsing

def parse_console(text: str) -> dict:
    out: dict = {}
    for key, rx in _PATTERNS.items():
        m = rx.search(text)
        out[key] = float(m.group(1)) if m else None
    m = _STARTED.search(text)
    out["pyinit_started"] = float(m.group(1)) if m else None
    m = _REALINIT.search(text)
    out["real_init"] = float(m.group(1)) if m else None
    m = _BARE.search(text)
    out["bare_first_line"] = float(m.group(1)) if m else None
    imports = []
    for line in text.splitlines():
        mi = _IMPORT.search(line)
        if mi:
            imports.append({"module": mi.group(4), "self_us": int(mi.group(1)), "cumulative_us": int(mi.group(2)),
                            "depth": len(mi.group(3)) // 2})
    out["imports"] = imports
    return out


def parse_sampled(text: str) -> dict:
    counts: dict[str, int] = {}
    stacks: dict[str, float] = {}
    out: dict[str, Any] = {"start": None, "main": None, "end": None, "counts": counts, "stacks": stacks}
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "PROFILE-START":
            out["start"] = float(rest)
        elif word == "PROFILE-MAIN":
            out["main"] = float(rest) or None
        elif word == "PROFILE-END":
            out["end"] = float(rest.split()[0])
        elif word == "PROFILE-IDLE":
            span, idle = rest.split()
            out["idle"] = {"span": float(span), "idle": float(idle)}
        elif word == "PROFILE-COUNT":
            n, _, key = rest.partition(" ")
            counts[key] = int(n)
        elif word == "PROFILE-STACK":
            w, _, key = rest.partition(" ")
            stacks[key] = stacks.get(key, 0.0) + float(w)
    return out


_SYSCALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?([a-z_0-9]+)\((.*)$")


def parse_strace(text: str) -> dict:
    """Counts by system call, opens by directory and result, from `strace -f -o` output."""
    calls: collections.Counter = collections.Counter()
    opens: collections.Counter = collections.Counter()
    failed: collections.Counter = collections.Counter()
    for line in text.splitlines():
        m = _SYSCALL.match(line.strip())
        if not m:
            continue
        name, rest = m.groups()
        calls[name] += 1
        if name in ("openat", "open", "stat", "newfstatat", "statx", "access", "readlink", "lstat"):
            pm = re.search(r'"([^"]*)"', rest)
            if pm:
                path = pm.group(1)
                where = path.rsplit("/", 1)[0] if "/" in path else "."
                if " = -1 " in rest:
                    failed[f"{name} {where}"] += 1
                elif name in ("openat", "open"):
                    opens[where] += 1
    return {"calls": dict(calls), "opens": dict(opens), "failed": dict(failed), "total": sum(calls.values())}


# ---------------------------------------------------------------------------------- running

def qemu_cpu_seconds(pid: int) -> float | None:
    """CPU time QEMU's threads have used so far (/proc/PID/task/*/schedstat, ns on a CPU).
    Unlike the guest's clock it does not grow while other processes hold the host's cores,
    so it compares images booted on a loaded machine."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


CPU_MARKS = (("run_init", "as init process"), ("real_init", "REALINIT: uptime"))


def cpu_marks(found: dict, marks=CPU_MARKS, timeout: float = 600):
    """An on_start callback for devtools.qemu.boot: QEMU's CPU seconds when each console text
    of `marks` shows up, into found[name]. The reader sees a line a few ms after the guest
    wrote it: good to some 10 ms."""
    def on_start(machine) -> None:
        pos = 0
        for name, text in marks:
            end = machine.wait_for(text, timeout, pos)
            if end is None:
                return
            found[name] = qemu_cpu_seconds(machine.pid)
            pos = end
    return on_start


@dataclass
class Boot:
    variant: str
    console: dict
    extra: dict = field(default_factory=dict)
    wall: float = 0.0
    cpu: dict = field(default_factory=dict)  # QEMU's CPU seconds at run_init, real_init


def run(image: Path, kernel, disk: Path, variants: list[str], rounds: int, out: Path, log=print) -> list[Boot]:
    from devtools.qemu import boot
    raw = image.read_bytes()
    images = {}
    for v in variants:
        data, append = variant_image(raw, v)
        path = out / f"profile-{v}.img"
        path.write_bytes(data)
        images[v] = (path, append)
    boots: list[Boot] = []
    for n in range(rounds):
        order = variants if n % 2 == 0 else list(reversed(variants))
        for v in order:
            path, append = images[v]
            side = out / f"ttyS1-{v}-{n}.txt"
            extra_args = ["-serial", f"file:{side}"] if v in ("sampled", "strace") else []
            cpu: dict = {}
            marks = CPU_MARKS if not v.startswith("bare") else (CPU_MARKS[0], ("real_init", "PROFILE-BARE"))
            r = boot(kernel, path, f"root=/dev/vda {append}".strip(), disks=[disk], timeout=600,
                     extra_args=extra_args, log=out / f"console-{v}-{n}.log", on_start=cpu_marks(cpu, marks))
            b = Boot(v, parse_console(r.console), wall=r.seconds, cpu=cpu)
            if v == "sampled" and side.exists():
                b.extra = parse_sampled(side.read_text(errors="replace"))
            elif v == "strace" and side.exists():
                b.extra = parse_strace(side.read_text(errors="replace"))
            boots.append(b)
            c = b.console
            log(f"profile: round {n + 1}/{rounds} {v}: Run /init {_f(c['run_init'])}, "
                f"real init {_f(c['real_init'])}, QEMU CPU Run /init to real init {_cpu(b)}, wall {r.seconds:.1f} s")
    return boots


def _cpu(b: Boot) -> str:
    d = _cpu_delta(b)
    return "-" if d is None else f"{d:.3f} s"


def _cpu_delta(b: Boot) -> float | None:
    a, z = b.cpu.get("run_init"), b.cpu.get("real_init")
    return None if a is None or z is None else z - a


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _med(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


# ---------------------------------------------------------------------------------- report

def _delta(b: Boot, a: str, z: str, src: dict | None = None):
    src = src if src is not None else b.console
    if src.get(a) is None or src.get(z) is None:
        return None
    return src[z] - src[a]


def summarize(boots: list[Boot], image: Path) -> str:
    by = collections.defaultdict(list)
    for b in boots:
        by[b.variant].append(b)
    lines = [f"# Boot profile of {image.name} ({image.stat().st_size / 2**20:.2f} MiB compressed, "
             f"{_unpacked(image) / 2**20:.2f} MiB unpacked)", ""]
    lines += ["## Milestones (medians; guest clock)", "",
              "| variant | boots | unpack (kernel) | kernel start to Run /init | Run /init to first Python line "
              "| first line to main() | main() to real init | Run /init to real init | same, QEMU CPU time |",
              "|---|---|---|---|---|---|---|---|---|"]
    for v in VARIANTS:
        bs = by.get(v)
        if not bs:
            continue
        unpack = _med(_delta(b, "unpack_start", "unpack_end") for b in bs)
        run_init = _med(b.console["run_init"] for b in bs)
        first = main = to_real = None
        if v == "sampled":
            first = _med(b.extra.get("start") - b.console["run_init"] for b in bs
                         if b.extra.get("start") and b.console["run_init"])
            main = _med(b.extra["main"] - b.extra["start"] for b in bs if b.extra.get("main") and b.extra.get("start"))
            to_real = _med(b.console["real_init"] - b.extra["main"] for b in bs
                           if b.extra.get("main") and b.console["real_init"])
        if v.startswith("bare"):
            first = _med(_delta(b, "run_init", "bare_first_line") for b in bs)
        total = _med(_delta(b, "run_init", "real_init") for b in bs)
        lines.append(f"| {v} | {len(bs)} | {_ms(unpack)} | {_f(run_init)} s | {_ms(first)} | {_ms(main)} | "
                     f"{_ms(to_real)} | {_ms(total)} | {_ms(_med(_cpu_delta(b) for b in bs))} |")
    lines.append("")
    plain = by.get("plain", [])
    if plain:
        lines += ["## pyinit's log, plain boots (medians, from Run /init)", ""]
        for key, label in (("pyinit_started", "pyinit.boot.Context created"),
                           ("modules_loaded", "modules.load done"), ("root_found", "root device found"),
                           ("mounted", "root mounted"), ("switching", "switching root"),
                           ("real_init", "real init's first line")):
            lines.append(f"- {label}: {_ms(_med(_delta(b, 'run_init', key) for b in plain))}")
        lines.append("")
    imp = by.get("importtime", [])
    if imp:
        lines += ["## -X importtime (median self time per module over the boots; depth 0 = imported by the "
                  "start-up or by /init)", "", "| module | self | cumulative |", "|---|---|---|"]
        table: dict[str, tuple[list[float], list[float]]] = collections.defaultdict(lambda: ([], []))
        order = []
        for b in imp:
            for i in b.console["imports"]:
                if i["module"] not in table:
                    order.append(i["module"])
                table[i["module"]][0].append(i["self_us"])
                table[i["module"]][1].append(i["cumulative_us"])
        total = 0.0
        for mod in order:
            s, c = table[mod]
            total += statistics.median(s)
            lines.append(f"| {mod} | {statistics.median(s) / 1000:.1f} ms | {statistics.median(c) / 1000:.1f} ms |")
        lines += ["", f"Sum of self times: {total / 1000:.0f} ms over {len(order)} modules.", ""]
    sampled = [b for b in by.get("sampled", []) if b.extra.get("stacks")]
    if sampled:
        lines += _sampled_report(sampled)
    st = [b for b in by.get("strace", []) if b.extra.get("calls")]
    if st:
        b = st[0]
        lines += ["## System calls (strace -f, one boot: pyinit, its children, until it stops strace)", "",
                  f"{b.extra['total']} calls. By name: "
                  + ", ".join(f"{k} {n}" for k, n in sorted(b.extra["calls"].items(), key=lambda kv: -kv[1])[:25]), "",
                  "Successful opens by directory: "
                  + ", ".join(f"{k} {n}" for k, n in sorted(b.extra["opens"].items(), key=lambda kv: -kv[1])[:20]), "",
                  "Failed lookups: "
                  + ", ".join(f"{k} {n}" for k, n in sorted(b.extra["failed"].items(), key=lambda kv: -kv[1])[:20]), ""]
    return "\n".join(lines) + "\n"


def _sampled_report(boots: list[Boot]) -> list[str]:
    """Per-boot tallies, then the median of each over the boots (one stalled boot on a loaded
    host would dominate a mean)."""
    n = len(boots)
    per_boot: list[dict[str, Any]] = []
    for b in boots:
        cumulative: collections.Counter[str] = collections.Counter()
        stages: collections.Counter[str] = collections.Counter()
        leaves: collections.Counter[str] = collections.Counter()
        total = 0.0
        for key, w in b.extra["stacks"].items():
            frames = key.split(";")
            total += w
            for fr in set(frames[:-1]):
                cumulative[fr] += w
            stage = next((fr.split(":", 1)[1] for fr in frames if fr.startswith("boot.py:stage_")), None)
            if stage is None:
                stage = "imports (before main)" if not any("__main__.py:main" in fr for fr in frames) else \
                    next((fr for fr in reversed(frames[:-1]) if fr.startswith("__main__.py:_")), "__main__")
            stages[stage] += w
            leaves[frames[-2] + " " + frames[-1] if len(frames) >= 2 else frames[-1]] += w
        per_boot.append({"total": total, "cumulative": cumulative, "stages": stages, "leaves": leaves,
                         "counts": collections.Counter(b.extra["counts"])})

    def medians(kind: str) -> list[tuple[str, float]]:
        keys: set[str] = set().union(*(pb[kind] for pb in per_boot))
        return sorted(((k, statistics.median(pb[kind].get(k, 0) for pb in per_boot)) for k in keys),
                      key=lambda kv: -kv[1])

    total = statistics.median(pb["total"] for pb in per_boot)
    lines = ["## Sampling profile (wall time, SIGALRM every 5 ms, each sample weighted by the time since the "
             f"previous one; medians over {n} boots; {total * 1000:.0f} ms sampled per boot)", "",
             "By stage (the pyinit.boot stage function on the stack, else the __main__ function):", ""]
    lines += [f"- {k}: {w * 1000:.0f} ms" for k, w in medians("stages") if w >= 0.0005]
    lines += ["", "Functions, cumulative (top 30):", ""]
    lines += [f"- {k}: {w * 1000:.0f} ms" for k, w in medians("cumulative")[:30]]
    lines += ["", "Lines, self (top 25):", ""]
    lines += [f"- {k}: {w * 1000:.0f} ms" for k, w in medians("leaves")[:25]]
    idle = [b.extra["idle"] for b in boots if b.extra.get("idle")]
    if idle:
        lines += ["", f"CPU idle or waiting for I/O while pyinit ran (from /proc/stat, from the mount of /proc to "
                      f"the exec): {statistics.median(i['idle'] for i in idle) * 1000:.0f} ms of "
                      f"{statistics.median(i['span'] for i in idle) * 1000:.0f} ms"]
    lines += ["", "Audit events (per boot): " + ", ".join(f"{k}: {c:g}" for k, c in medians("counts")
                                                        if not k.startswith("open /sys/")),
              "Files opened under /sys (per boot): "
              + f"{sum(c for k, c in medians('counts') if k.startswith('open /sys/')):g}", ""]
    return lines


def compare(images: list[Path], kernel, disk: Path, rounds: int, out: Path, log=print,
            append: str = "root=/dev/vda") -> str:
    """Boot each image `rounds` times, alternating the order; a table of medians: the guest's
    times and QEMU's CPU time (which a loaded host does not inflate)."""
    from devtools.qemu import boot
    rows: dict[Path, list[Boot]] = {i: [] for i in images}
    for n in range(rounds):
        for img in (images if n % 2 == 0 else list(reversed(images))):
            cpu: dict = {}
            r = boot(kernel, img, append, disks=[disk], timeout=600, on_start=cpu_marks(cpu),
                     log=out / f"console-{img.stem}-{n}.log")
            b = Boot("plain", parse_console(r.console), wall=r.seconds, cpu=cpu)
            rows[img].append(b)
            log(f"compare: round {n + 1}/{rounds} {img.name}: real init {_f(b.console['real_init'])}, "
                f"Run /init to real init {_f(_delta(b, 'run_init', 'real_init'))}, QEMU CPU {_cpu(b)}")
    base = images[0]
    lines = ["| image | compressed | unpacked | boots ok | unpack | kernel start to real init | Run /init to real "
             "init | QEMU CPU to Run /init | QEMU CPU, Run /init to real init | ratio (guest / CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ref: dict[str, float | None] = {}
    for img in images:
        bs = rows[img]
        ok = [b for b in bs if b.console["real_init"] is not None]
        k = _med(b.console["real_init"] for b in ok)
        g = _med(_delta(b, "run_init", "real_init") for b in ok)
        c = _med(_cpu_delta(b) for b in ok)
        if img == base:
            ref = {"g": g, "c": c}
        g_ref, c_ref = ref.get("g"), ref.get("c")
        ratio = f"{g / g_ref:.2f}x / {c / c_ref:.2f}x" if g and c and g_ref and c_ref else "-"
        lines.append(f"| {img.name} | {img.stat().st_size / 2**20:.2f} MiB | {_unpacked(img) / 2**20:.2f} MiB | "
                     f"{len(ok)}/{len(bs)} | {_ms(_med(_delta(b, 'unpack_start', 'unpack_end') for b in ok))} | "
                     f"{_f(k)} s | {_ms(g)} | {_ms(_med(b.cpu.get('run_init') for b in ok))} | {_ms(c)} | {ratio} |")
    return "\n".join(lines) + "\n"


def _unpacked(image: Path) -> int:
    return sum(len(m.data) for seg in archive.read_image(image.read_bytes()) for m in seg.members)


def main(argv: list[str] | None = None) -> int:
    from devtools.bench import REPO, pyinit_builder
    from devtools.kernels import ensure_kernels
    from devtools.rootdisk import make_root_disk
    p = argparse.ArgumentParser(prog="python -m devtools.bench --profile")
    p.add_argument("--image", type=Path, help="profile this image (default: build the default host-only one)")
    p.add_argument("--kernel", default="6.1")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--build-arg", action="append", default=[], help="extra pyinit-mkinitramfs build argument")
    p.add_argument("--compare", type=Path, nargs="+", metavar="IMAGE",
                   help="only boot these images (the first is the reference) and compare their times")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r}; one of {', '.join(VARIANTS)}")
    kernel = ensure_kernels()[args.kernel]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = REPO / "results" / f"profile-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    image = args.image
    if image is None:
        image = out / "pyinit-hostonly.img"
        pyinit_builder(kernel, image, *(args.build_arg or ["--host-only", "--config", "none"]))()
    disk = make_root_disk(out / "root.img", label="bench-root",
                          extra_files={"etc/os-release": 'NAME="pyinit bench root"\nID=pyinit-bench\n'})
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    if args.compare:
        text = compare(args.compare, kernel, disk.path, args.rounds, out)
        with open("/proc/loadavg") as f:
            load_after = f.read().split()[0]
            text += (f"\nKernel {kernel.kver}, {args.rounds} rounds; "
                     f"host load {' '.join(load_before)} -> {load_after}.\n")
        (out / "compare.md").write_text(text)
        print(text)
        return 0
    boots = run(image, kernel, disk.path, variants, args.rounds, out)
    with open("/proc/loadavg") as f:
        load_end = f.read().split()[:3]
    text = summarize(boots, image) + (f"\nKernel {kernel.kver}; host load average before {' '.join(load_before)}, "
                                      f"after {' '.join(load_end)}.\n")
    (out / "profile.md").write_text(text)
    (out / "raw.json").write_text(json.dumps([{"variant": b.variant, "console": b.console, "extra": b.extra,
                                               "wall": b.wall, "cpu": b.cpu} for b in boots], indent=1) + "\n")
    print(text)
    print(f"written: {out}/profile.md, raw.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
