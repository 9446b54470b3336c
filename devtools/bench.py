"""`make bench`: pyinit's images against the anchors, booted in the same run.

For Debian's 6.1 kernel (as in ../shared/design/BENCHMARKS.md) and one 64 MiB ext4 root
disk whose /sbin/init reports its uptime and powers off, build every image that can be
built here, boot each BENCH_ROUNDS times (default 5) under QEMU/TCG, alternating the order
every round, and report per image: compressed and unpacked size, warm build time, kernel
start to real init and "Run /init" to real init (guest clock, medians), pyinit's peak
memory, and each time as a ratio to the busybox anchor of the same kernel. Then the same
for the newest 7.x (the initramfs on a tmpfs over nullfs, pyinit's pivot_root path) with
fewer rows: the busybox anchor, pyinit --modules, the default host-only build and
--generic. Writes results/bench-<stamp>/{results.md, chart.svg, raw.json}.

BENCH_KERNELS=7.x (a comma-separated list of series; default "6.1,7.x") and BENCH_ROUNDS=1
give a short run. Anchors that cannot be built here (a tool not installed) are listed with
the reason.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devtools.anchor import build_busybox_anchor
from devtools.kernels import Kernel, ensure_kernels
from devtools.qemu import boot
from devtools.rootdisk import make_root_disk

REPO = Path(__file__).resolve().parent.parent
MODULES_61 = "virtio_pci,virtio_blk,ext4"
# series -> the --modules an ext4 root on virtio-blk needs (virtio_pci is built in from 6.12 on)
MODULES = {"6.1": MODULES_61, "6.12": "virtio_blk,ext4", "7.x": "virtio_blk,ext4"}
# the series whose every row is measured; the others get the rows of `plan(..., full=False)`
FULL_SERIES = "6.1"
BUSYBOX = "busybox sh script (anchor)"
_PEAK = re.compile(r"peak memory (\d+) kB")


class NotAvailable(Exception):
    pass


Build = Callable[[], object]  # builds one image; raises NotAvailable when it cannot here


@dataclass
class Candidate:
    name: str
    image: Path | None = None
    build_seconds: float | None = None
    memory_mb: int = 512
    note: str = ""
    boots: list[dict] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        values = [b[key] for b in self.boots if b.get(key) is not None]
        return statistics.median(values) if values else None


def _timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def pyinit_builder(kernel: Kernel, out: Path, *extra: str):
    def build():
        r = subprocess.run([sys.executable, "-m", "mkinitramfs", "build", "-q", "-o", str(out), "--kver", kernel.kver,
                            "--moddir", str(kernel.moddir), *extra],
                           capture_output=True, text=True, cwd=REPO, check=False)
        if r.returncode != 0:
            raise NotAvailable(f"pyinit-mkinitramfs failed: {r.stderr.strip()[-300:]}")
    return build


def debian13_builder(kernel: Kernel, out: Path):
    """Debian 13's python3.13 running this checkout's builder in a trixie tree
    (devtools/debian13.py). Not host-only there (the chroot has no view of this machine's
    root): the same modules and checker that the host-only build picks here, named."""
    def build():
        from devtools import debian13
        try:
            tree = debian13.ensure_tree(log=lambda m: print(m, flush=True))
        except debian13.TreeError as e:
            raise NotAvailable(str(e)) from None
        r = subprocess.run(debian13.build_argv(tree, kernel, out, "--modules", MODULES_61, "--fsck", "ext4",
                                               "--config", "none"),
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise NotAvailable(f"the Debian 13 build failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return build


def smallpython_builder(kernel: Kernel, out: Path, *extra: str):
    """The builder packing a CPython built by devtools/smallpython.py (made once, minutes)."""
    def build():
        from devtools import smallpython
        try:
            python = smallpython.ensure(log=lambda m: print(m, flush=True))
        except (smallpython.SmallPythonError, OSError) as e:
            raise NotAvailable(f"the smaller CPython could not be built: {e}") from None
        pyinit_builder(kernel, out, *extra, "--python", str(python))()
    return build


def builder_supports(option: str) -> bool:
    r = subprocess.run([sys.executable, "-m", "mkinitramfs", "build", "--help"],
                       capture_output=True, text=True, cwd=REPO, check=False)
    return option in r.stdout


def _private_modules_ns_script(kernel: Kernel, command: str) -> list[str]:
    """Run `command` in a private mount namespace where /usr/lib/modules/<kver> is the
    cached kernel's tree (an overlay over /usr/lib, so the host gains nothing) and /boot
    holds its config: initramfs-tools and dracut look there."""
    kdir = kernel.moddir / kernel.kver
    config = kernel.config
    script = f"""set -e
work=$(mktemp -d)
mkdir -p $work/upper $work/work $work/boot
mount -t overlay overlay -o lowerdir=/usr/lib,upperdir=$work/upper,workdir=$work/work /usr/lib
mkdir -p /usr/lib/modules/{kernel.kver}
mount --bind {kdir} /usr/lib/modules/{kernel.kver}
cp {config} $work/boot/
if [ -d /boot ]; then mount --bind $work/boot /boot; fi
{command}
"""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def initramfs_tools_builder(kernel: Kernel, out: Path, modules: str):
    exe = shutil.which("mkinitramfs") or "/usr/sbin/mkinitramfs"
    if not os.path.exists(exe) or not os.path.exists("/etc/initramfs-tools/initramfs.conf"):
        raise NotAvailable("initramfs-tools is not installed (apt-get install initramfs-tools)")
    conf = Path(tempfile.mkdtemp(prefix="itools-conf."))
    shutil.copytree("/etc/initramfs-tools", conf, dirs_exist_ok=True)
    text = (conf / "initramfs.conf").read_text()
    text = re.sub(r"(?m)^MODULES=.*$", f"MODULES={modules}", text)
    text = re.sub(r"(?m)^COMPRESS=.*$", "COMPRESS=zstd", text)
    (conf / "initramfs.conf").write_text(text)

    def build():
        r = subprocess.run(_private_modules_ns_script(kernel, f"{exe} -d {conf} -o {out} {kernel.kver}"),
                           capture_output=True, text=True, check=False)
        if r.returncode != 0 or not out.exists():
            raise NotAvailable(f"mkinitramfs failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return build


def dracut_builder(kernel: Kernel, out: Path, hostonly: bool):
    exe = shutil.which("dracut")
    if not exe:
        raise NotAvailable("dracut is not installed (apt-get install dracut-core)")
    # Host-only dracut inspects *this* machine, whose kernel has virtio built in: name the test
    # disk's drivers, as pyinit's host-only image does with --modules.
    mode = f'--hostonly --add-drivers "{MODULES_61.replace(",", " ")}"' if hostonly else "--no-hostonly"

    def build():
        cmd = (f"{exe} -q -f --kver {kernel.kver} --kmoddir /usr/lib/modules/{kernel.kver} {mode} "
               f"--no-early-microcode --zstd {out}")
        r = subprocess.run(_private_modules_ns_script(kernel, cmd), capture_output=True, text=True, check=False)
        if r.returncode != 0 or not out.exists():
            raise NotAvailable(f"dracut failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return build


def unpacked_size(image: Path) -> int | None:
    """Bytes of file content the kernel unpacks (every segment, any compression)."""
    from mkinitramfs import archive
    try:
        return sum(len(m.data) for seg in archive.read_image(image.read_bytes()) for m in seg.members)
    except Exception:
        return None


def plan(kernel: Kernel, out: Path, full: bool = True) -> list[tuple[Candidate, Build | None]]:
    """The images to build and boot for `kernel`. `full=False`: the anchor, pyinit --modules
    (zstd), the default host-only build and --generic; no compression variants, no
    initramfs-tools or dracut."""
    modules = MODULES.get(kernel.series, MODULES_61)
    items: list[tuple[Candidate, Build | None]] = []
    bb_image = out / "busybox.img"
    items.append((Candidate(BUSYBOX, bb_image), lambda: build_busybox_anchor(kernel, bb_image)))
    for comp in ("zstd", "xz", "gzip", "none") if full else ("zstd",):
        image = out / f"pyinit-modules-{comp}.img"
        items.append((Candidate(f"pyinit --modules {modules} ({comp})", image),
                      pyinit_builder(kernel, image, "--modules", modules, "--compress", comp)))
    if builder_supports("--generic"):
        # host-only is the default build: this machine's root drivers, mapped into the kernel's tree
        image = out / "pyinit-hostonly.img"
        items.append((Candidate("pyinit host-only, the default (zstd)", image),
                      pyinit_builder(kernel, image, "--host-only", "--config", "none")))
        if full:
            image = out / "pyinit-debian13.img"
            items.append((Candidate("pyinit, the host-only set built by Debian 13's python3.13 (zstd)", image),
                          debian13_builder(kernel, image)))
            image = out / "pyinit-smallpython.img"
            items.append((Candidate("pyinit host-only, a smaller CPython 3.11 (-Os, core modules built in) (zstd)",
                                    image),
                          smallpython_builder(kernel, image, "--host-only", "--config", "none")))
        image = out / "pyinit-generic.img"
        items.append((Candidate("pyinit generic (zstd)", image),
                      pyinit_builder(kernel, image, "--generic", "--config", "none")))
        if full:
            image = out / "pyinit-generic-koxz.img"
            items.append((Candidate("pyinit generic, .ko.xz kept (zstd)", image),
                          pyinit_builder(kernel, image, "--generic", "--keep-module-compression", "--config", "none")))
    else:
        items.append((Candidate("pyinit generic", note="this builder has no --generic yet"), None))
    if not full:
        return items
    for mods in ("dep", "most"):
        image = out / f"itools-{mods}.img"
        c = Candidate(f"initramfs-tools MODULES={mods}", image)
        try:
            items.append((c, initramfs_tools_builder(kernel, image, mods)))
        except NotAvailable as e:
            c.note = str(e)
            items.append((c, None))
    for hostonly in (True, False):
        image = out / f"dracut-{'h' if hostonly else 'g'}.img"
        c = Candidate(f"dracut {'host-only' if hostonly else 'generic'}", image, memory_mb=1024)
        try:
            items.append((c, dracut_builder(kernel, image, hostonly)))
        except NotAvailable as e:
            c.note = str(e)
            items.append((c, None))
    return items


def run(rounds: int, out: Path, series: str = FULL_SERIES) -> dict:
    """Build and boot one kernel's images; the results of that kernel."""
    kernel = ensure_kernels()[series]
    out = out / series
    out.mkdir(parents=True, exist_ok=True)
    # os-release: systemd in dracut's initrd refuses to switch to a root without one.
    disk = make_root_disk(out / "root.img", label="bench-root",
                          extra_files={"etc/os-release": 'NAME="pyinit bench root"\nID=pyinit-bench\n'})
    load_before = _loadavg()
    candidates: list[Candidate] = []
    for cand, build in plan(kernel, out, full=series == FULL_SERIES):
        candidates.append(cand)
        if build is None or cand.image is None:
            print(f"bench: skip {cand.name}: {cand.note}", flush=True)
            continue
        try:
            build()  # cold: fills caches
            cand.build_seconds = _timed(build)  # warm
        except NotAvailable as e:
            cand.note = str(e)
            cand.image = None
            print(f"bench: {cand.name}: not built: {e}", flush=True)
            continue
        print(f"bench: built {cand.name}: {cand.image.stat().st_size} bytes in {cand.build_seconds:.2f} s", flush=True)
    bootable = [c for c in candidates if c.image is not None and c.image.exists()]
    for n in range(rounds):
        order = bootable if n % 2 == 0 else list(reversed(bootable))
        for c in order:
            r = boot(kernel, c.image, "root=/dev/vda", disks=[disk.path], memory_mb=c.memory_mb, timeout=300,
                     log=out / f"console-{re.sub(r'[^a-z0-9]+', '-', c.name.lower())}-{n}.log")
            done = r.report if r.report and r.report.done and not r.panicked else None
            peak = _PEAK.search(r.console)
            c.boots.append({"ok": done is not None, "kernel_to_real_init": done.uptime if done else None,
                            "run_init_to_real_init": r.init_to_real_init if done else None,
                            "peak_kb": int(peak.group(1)) if peak else None, "wall": round(r.seconds, 2)})
            print(f"bench: {series} round {n + 1}/{rounds} {c.name}: "
                  + (f"real init at {done.uptime:.2f} s" if done else "FAILED"), flush=True)
    small = {}
    hostonly = next((c for c in candidates if c.name == f"pyinit --modules {MODULES_61} (zstd)" and c.image), None)
    if hostonly and series == FULL_SERIES:
        r = boot(kernel, hostonly.image, "root=/dev/vda", disks=[disk.path], memory_mb=128, timeout=300,
                 log=out / "console-pyinit-128mib.log")
        small = {"memory_mb": 128, "ok": bool(r.report and r.report.done and not r.panicked),
                 "kernel_to_real_init": r.report.uptime if r.report else None}
    return {"kernel": kernel.kver, "series": series, "rounds": rounds, "date": time.strftime("%Y-%m-%d %H:%M"),
            "load": f"{load_before} before, {_loadavg()} after",
            "candidates": [dict(asdict(c), image=str(c.image) if c.image else None,
                                compressed=c.image.stat().st_size if c.image and c.image.exists() else None,
                                unpacked=unpacked_size(c.image) if c.image and c.image.exists() else None)
                           for c in candidates],
            "boot_128mib": small}


def _loadavg() -> str:
    """The host's 1/5/15-minute load: the guest's clock runs on while QEMU waits for a core."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _s(x) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _ratio(x, base) -> str:
    return "-" if x is None or not base else f"{x / base:.2f}x"


def table(results: dict) -> str:
    cands = results["candidates"]
    med = {c["name"]: {k: _median(c, k) for k in ("kernel_to_real_init", "run_init_to_real_init", "peak_kb")}
           for c in cands}
    base = med.get(BUSYBOX, {})
    switch = " pyinit switches root with pivot_root (the initramfs is a tmpfs over nullfs)." \
        if not results["kernel"].startswith("6.") else ""
    lines = [f"Kernel {results['kernel']}, {results['rounds']} boots per image (medians), QEMU TCG, "
             f"root=/dev/vda (64 MiB ext4), {results['date']}"
             + (f"; host load average {results['load']}" if results.get("load") else "") + f".{switch}", "",
             "| image | compressed | unpacked | build (warm) | Run /init to real init | kernel start to real init "
             "| ratio to busybox (kernel start / Run /init) | peak memory |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cands:
        m = med[c["name"]]
        if not c["boots"]:
            lines.append(f"| {c['name']} | not built: {c['note'] or 'unknown'} |||||||")
            continue
        ok = sum(1 for b in c["boots"] if b["ok"])
        peak = f"{m['peak_kb'] / 1024:.1f} MiB" if m["peak_kb"] else "-"
        n = len(c["boots"])
        status = "" if ok == n else f" ({ok}/{n} boots ok)"
        lines.append(f"| {c['name']}{status} "
                     f"| {_mb(c['compressed'])} | {_mb(c['unpacked'])} | {_s(c['build_seconds'])} "
                     f"| {_s(m['run_init_to_real_init'])} | {_s(m['kernel_to_real_init'])} "
                     f"| {_ratio(m['kernel_to_real_init'], base.get('kernel_to_real_init'))} / "
                     f"{_ratio(m['run_init_to_real_init'], base.get('run_init_to_real_init'))} | {peak} |")
    small = results.get("boot_128mib") or {}
    if small:
        lines += ["", f"pyinit --modules {MODULES_61} (zstd) with 128 MiB of guest memory: "
                      f"{'booted, real init at ' + _s(small['kernel_to_real_init']) if small['ok'] else 'FAILED'}."]
    return "\n".join(lines) + "\n"


def _median(c: dict, key: str):
    values = [b[key] for b in c["boots"] if b.get(key) is not None]
    return statistics.median(values) if values else None


# Chart geometry. Labels wrap inside LABEL_W pixels; CHAR_W is a generous average advance of
# 12 px sans-serif (DejaVu Sans, what rsvg-convert and browsers fall back to, averages ~6.6).
CHART_W, LABEL_W, CHAR_W, LINE_H, BAR_H, ROW_GAP = 980, 330, 7.0, 14, 16, 12


def wrap_label(text: str, width_px: float = LABEL_W - 16, char_w: float = CHAR_W) -> list[str]:
    """Greedy word wrap for an SVG label; a word too long for a line breaks after a comma."""
    limit = max(8, int(width_px // char_w))
    pieces: list[tuple[str, bool]] = []  # (text, glued to the previous piece: no space)
    for word in text.split():
        w, glued = word, False
        while len(w) > limit:
            cut = w.rfind(",", 0, limit) + 1 or limit
            pieces.append((w[:cut], glued))
            w, glued = w[cut:], True
        pieces.append((w, glued))
    lines: list[str] = []
    for w, glued in pieces:
        sep = "" if glued else " "
        if lines and len(lines[-1]) + len(sep) + len(w) <= limit:
            lines[-1] += sep + w
        else:
            lines.append(w)
    return lines or [""]


def chart(runs: list[dict]) -> str:
    """A horizontal bar chart: kernel start to real init (blue) and compressed size (grey) per
    image and kernel, labels wrapped beside the bars, a legend, and each kernel's busybox
    anchor time marked (a dashed line over that kernel's rows)."""
    rows = [dict(c, name=f"{_short(r['kernel'])}: {c['name']}", kernel=r["kernel"])
            for r in runs for c in r["candidates"] if c["boots"]]
    span = CHART_W - LABEL_W - 90
    tmax = max((_median(c, "kernel_to_real_init") or 0) for c in rows) or 1
    smax = max((c["compressed"] or 0) for c in rows) or 1
    layout = []
    for c in rows:
        lines = wrap_label(c["name"])
        layout.append((c, lines, max(2 * BAR_H, len(lines) * LINE_H) + ROW_GAP))
    top = 64
    height = top + sum(h for *_, h in layout) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{height}" '
           f'font-family="DejaVu Sans, sans-serif" font-size="12">',
           f'<rect width="{CHART_W}" height="{height}" fill="white"/>',
           f'<text x="10" y="22" font-size="15">make bench: kernels {_xml(", ".join(str(r["kernel"]) for r in runs))}, '
           f'medians of {runs[0]["rounds"]} boots under QEMU/TCG</text>',
           '<rect x="10" y="34" width="12" height="12" fill="#3b6fb6"/>'
           '<text x="28" y="45">kernel start to real init (seconds)</text>',
           '<rect x="280" y="34" width="12" height="12" fill="#aaaaaa"/>'
           '<text x="298" y="45">compressed image (MB)</text>',
           '<line x1="480" y1="40" x2="504" y2="40" stroke="#3b6fb6" stroke-dasharray="3,3"/>'
           '<text x="510" y="45">the busybox anchor\'s time</text>']
    # drawn first, under the bars and their numbers: one line per kernel, over its own rows
    y = top
    for r in runs:
        group = [(c, h) for c, _, h in layout if c["kernel"] == r["kernel"]]
        base = next((c for c, _ in group if c["name"].endswith(BUSYBOX)), None)
        t_base = _median(base, "kernel_to_real_init") if base is not None else None
        height_group = sum(h for _, h in group)
        if t_base:
            x = LABEL_W + span * t_base / tmax
            out.append(f'<line x1="{x:.1f}" y1="{y - 6}" x2="{x:.1f}" y2="{y + height_group - ROW_GAP + 4}" '
                       f'stroke="#3b6fb6" stroke-dasharray="3,3"/>')
        y += height_group
    y = top
    for c, lines, h in layout:
        t = _median(c, "kernel_to_real_init") or 0
        s = c["compressed"] or 0
        block = len(lines) * LINE_H
        ty = y + (2 * BAR_H - block) / 2 + LINE_H - 3 if block < 2 * BAR_H else y + LINE_H - 3
        out.append(f'<text x="10" y="{ty:.1f}">' + "".join(
            f'<tspan x="10" dy="{0 if i == 0 else LINE_H}">{_xml(line)}</tspan>' for i, line in enumerate(lines))
            + "</text>")
        out.append(f'<rect x="{LABEL_W}" y="{y}" width="{span * t / tmax:.1f}" height="{BAR_H}" fill="#3b6fb6"/>')
        out.append(f'<text x="{LABEL_W + span * t / tmax + 4:.1f}" y="{y + BAR_H - 4}">{t:.2f} s</text>')
        out.append(f'<rect x="{LABEL_W}" y="{y + BAR_H}" width="{span * s / smax:.1f}" height="{BAR_H}" '
                   f'fill="#aaaaaa"/>')
        out.append(f'<text x="{LABEL_W + span * s / smax + 4:.1f}" y="{y + 2 * BAR_H - 4}">{s / 1e6:.1f} MB</text>')
        y += h
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _short(kver: str) -> str:
    """6.1.0-50-amd64 -> 6.1.0, 7.3.4+deb13-amd64 -> 7.3.4: the row's kernel in a label."""
    return kver.split("-", maxsplit=1)[0].split("+", maxsplit=1)[0]


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profile"]:
        # Where a boot's milliseconds go, in the guest (devtools/bootprofile.py).
        from devtools import bootprofile
        return bootprofile.main(argv[1:])
    rounds = int(os.environ.get("BENCH_ROUNDS", "5"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = REPO / "results" / f"bench-{stamp}"
    work = REPO / ".cache" / "bench"
    series = [s.strip() for s in os.environ.get("BENCH_KERNELS", f"{FULL_SERIES},7.x").split(",") if s.strip()]
    runs = [run(rounds, work, s) for s in series]
    out.mkdir(parents=True, exist_ok=True)
    (out / "raw.json").write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    text = "\n".join(table(r) for r in runs)
    (out / "results.md").write_text(text)
    (out / "chart.svg").write_text(chart(runs))
    latest = REPO / "results" / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(out.name)
    print()
    print(text)
    print(f"written: {out}/results.md, chart.svg, raw.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
