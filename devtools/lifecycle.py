"""Debian systems that install pyinit's package, for the lifecycle tests
(tests/vm/test_lifecycle.py): Debian 12 with its 6.1 kernel, Debian 13 with the newest kernel
of trixie-backports (7.x).

Two stages, each cached under <cache>/lifecycle/<distro>/ and file-locked:

1. The base tree, made by mmdebstrap: systemd, udev, dbus, e2fsprogs, apt, and the
   dependencies and recommendations of the package (read from debian/control), plus the
   kernel's packages downloaded into /var/cache/apt/archives but not installed (a kernel
   package needs an initramfs generator). Keyed by its package lists and sources; made once.
2. The root disk, keyed by the base and the .deb's hash (and the guest scripts): a copy of
   the base where `apt-get install --no-install-recommends ./pyinit_VERSION_all.deb
   linux-image-amd64` runs inside a chroot (private mount namespace, /proc, /sys and /dev
   mounted as mmdebstrap mounts them). The kernel's postinst runs pyinit's
   /etc/kernel/postinst.d hook there, which builds /boot/initrd.img-KVER: generic, by the
   chroot rule. Then /etc/fstab (root=UUID), a machine id, and the test driver: a systemd
   unit that runs /usr/local/sbin/lifecycle-phase after multi-user.target, which prints
   LIFECYCLE-* lines on the second serial port, ttyS1 (the first is the system's console,
   with a serial getty), appends them to /var/log/lifecycle.log, acts for its phase and
   powers off. mkfs.ext4 -d writes the tree into a raw disk image;
   the kernel and the chroot's initrd are kept beside it for QEMU's -kernel/-initrd.

Phases of the guest (the phase number is in /var/lib/lifecycle/phase):
  1  check the boot (systemctl is-system-running, --failed, multi-user.target's time),
     `dpkg-reconfigure linux-image-$(uname -r)`: the image is rebuilt host-only
  2  check the boot again (the host boots the rebuilt image), an update-initramfs trigger
     activated as lvm2's postinst does and processed by dpkg, then `apt-get remove` of the
     kernel package: its image must go

Needs root (chroot, mounts) and the Debian packages mmdebstrap and e2fsprogs.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from devtools.kernels import default_cache
from devtools.sourcetree import REPO

MIRROR = "http://deb.debian.org/debian"
RECIPE = 1  # bump when the way trees are made changes


@dataclass(frozen=True)
class Distro:
    name: str
    suite: str
    sources: tuple[str, ...]
    kernel_from: str | None  # apt's -t for the kernel (None: the suite's own)
    python: str  # the python3 minor version the distribution ships


DISTROS = {
    "debian12": Distro("debian12", "bookworm", (f"deb {MIRROR} bookworm main",), None, "3.11"),
    "debian13": Distro("debian13", "trixie", (f"deb {MIRROR} trixie main", f"deb {MIRROR} trixie-backports main"),
                       "trixie-backports", "3.13"),
}
# What every root has besides pyinit's own relations: an init, udev, D-Bus (systemd-logind
# needs it), the root filesystem's tools, apt for the guest's own package operations.
SYSTEM_PACKAGES = ("systemd-sysv", "udev", "dbus", "e2fsprogs", "kmod", "apt")
KERNEL_PACKAGE = "linux-image-amd64"
DISK_MB = 3072


class LifecycleError(RuntimeError):
    pass


def control_relations(field: str, control: Path = REPO / "debian" / "control") -> list[str]:
    """Package names of a relation field of the binary package (substitution variables and
    version constraints left out; the first of alternatives)."""
    text = control.read_text()
    binary = text.split("\n\n", 1)[1]
    m = re.search(rf"^{field}:(.*(?:\n[ \t].*)*)", binary, re.M)
    if not m:
        return []
    out = []
    for item in m.group(1).replace("\n", " ").split(","):
        name = item.split("|")[0].strip().split(" ")[0].split("(")[0].strip()
        if name and not name.startswith("${"):
            out.append(name)
    return out


def base_packages() -> list[str]:
    return sorted({*SYSTEM_PACKAGES, *control_relations("Depends"), *control_relations("Recommends")})


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() + b"\0")
    return h.hexdigest()[:16]


def _mmdebstrap_version() -> str:
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise LifecycleError("mmdebstrap not found: install the Debian package mmdebstrap (devtools/setup.sh)")
    return subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def mmdebstrap_argv(distro: Distro, target: Path) -> list[str]:
    target_opt = f"-t {distro.kernel_from} " if distro.kernel_from else ""
    return ["mmdebstrap", "--variant=apt", "--components=main", f"--include={','.join(base_packages())}",
            # keep the lists and the downloaded kernel: stage 2 installs from them
            "--skip=cleanup/apt/lists,cleanup/apt/cache",
            f"--customize-hook=chroot \"$1\" apt-get install --download-only -y {target_opt}{KERNEL_PACKAGE}",
            distro.suite, str(target), *distro.sources]


def base_key(distro: Distro) -> str:
    return _sha(str(RECIPE), json.dumps(mmdebstrap_argv(distro, Path("T"))), _mmdebstrap_version())


class _Locked:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ".lock"

    def __enter__(self):
        self.f = open(self.path, "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.f.close()


def _run(argv: list[str], *, log: Path | None = None, env: dict | None = None, cwd: Path | None = None,
         what: str = "") -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    out = proc.stdout + proc.stderr
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(argv)}\n{out}\n")
    if proc.returncode != 0:
        raise LifecycleError(f"{what or argv[0]} failed ({proc.returncode}):\n{out[-5000:]}")
    return out


def ensure_base(distro: Distro, cache: Path, log=None) -> Path:
    say = log or (lambda m: None)
    folder = cache / "lifecycle" / distro.name
    base = folder / f"base-{base_key(distro)}"
    done = base / ".pyinit-base-complete"
    if done.exists():
        return base
    with _Locked(folder):
        if done.exists():
            return base
        if base.exists():
            shutil.rmtree(base)
        tmp = folder / f".base.{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        say(f"mmdebstrap {distro.suite} into {base}")
        t0 = time.monotonic()
        try:
            _run(mmdebstrap_argv(distro, tmp), what=f"mmdebstrap {distro.suite}", env=_clean_env())
            tmp.rename(base)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        done.write_text(f"{time.monotonic() - t0:.0f} s\n")
        _prune(folder, "base-", base, keep=1)
    return base


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL="C.UTF-8")
    return env


def _prune(folder: Path, prefix: str, current: Path, keep: int) -> None:
    """Remove older entries (never the current one), newest `keep` others kept."""
    others = sorted((p for p in folder.iterdir() if p.name.startswith(prefix) and p != current),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[keep:]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------- the guest

UNIT = """[Unit]
Description=pyinit lifecycle test: the phase after multi-user.target
After=multi-user.target

[Service]
# exec, not oneshot: the script waits for the boot to finish (is-system-running --wait),
# which it would never do while its own start job is still running
Type=exec
ExecStart=/usr/local/sbin/lifecycle-phase
# The second serial port: the first is the system's console, where serial-getty's vhangup
# would cut the lines short. The host gives it to a file (devtools.lifecycle.REPORT_PORT).
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS1

[Install]
WantedBy=multi-user.target
"""

PHASE_SCRIPT = r"""#!/bin/sh
# pyinit lifecycle test, inside the guest: report the boot, act for the phase, power off.
# Every line the host reads starts with LIFECYCLE; they go to the second serial port (the
# unit's tty) and to /var/log/lifecycle.log.
STATE=/var/lib/lifecycle/phase
LOG=/var/log/lifecycle.log

report_boot() {
    state=$(systemctl is-system-running --wait)
    echo "LIFECYCLE-STATE: $state"
    systemctl --failed --plain --no-legend --no-pager | sed 's/^/LIFECYCLE-FAILED-UNIT: /'
    echo "LIFECYCLE-FAILED: $(systemctl --failed --plain --no-legend --no-pager | wc -l)"
    echo "LIFECYCLE-MULTIUSER-US: $(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target)"
    systemd-analyze time 2>&1 | sed 's/^/LIFECYCLE-ANALYZE: /'
    echo "LIFECYCLE-KERNEL: $(uname -r)"
    echo "LIFECYCLE-CMDLINE: $(cat /proc/cmdline)"
    echo "LIFECYCLE-PYTHON: $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ -f /run/pyinit/boot.json ]; then
        cp /run/pyinit/boot.json "/var/log/lifecycle-boot$1.json"
        python3 -c 'import json; d = json.load(open("/run/pyinit/boot.json")); r = d["root"]
print("LIFECYCLE-PYINIT: result=%s root=%s device=%s fstype=%s handover=%.2f"
      % (d["result"], r["spec"], r["device"], r["fstype"], d["finished"]))'
    else
        echo "LIFECYCLE-PYINIT: no /run/pyinit/boot.json"
    fi
    findmnt -n -o SOURCE,FSTYPE,OPTIONS / | sed 's/^/LIFECYCLE-ROOT: /'
}

initrd_size() { stat -c %s "/boot/initrd.img-$1" 2>/dev/null || echo none; }

phase1() {
    K=$(uname -r)
    echo "LIFECYCLE-INITRD-BEFORE: $(initrd_size "$K")"
    DEBIAN_FRONTEND=noninteractive dpkg-reconfigure "linux-image-$K" > /tmp/reconf.log 2>&1
    rc=$?
    sed 's/^/LIFECYCLE-RECONF: /' /tmp/reconf.log
    echo "LIFECYCLE-RECONF-STATUS: $rc"
    echo "LIFECYCLE-INITRD-AFTER: $(initrd_size "$K")"
}

phase2() {
    K=$(uname -r)
    before=$(stat -c %Y "/boot/initrd.img-$K")
    # lvm2's postinst: `update-initramfs -u` inside a maintainer script only activates the
    # trigger; dpkg then runs pyinit's postinst "triggered", which updates the image.
    DPKG_MAINTSCRIPT_PACKAGE=e2fsprogs update-initramfs -u 2>&1 | sed 's/^/LIFECYCLE-TRIGGER: /'
    echo "LIFECYCLE-TRIGGER-PENDING: $(dpkg-query -W -f='${db:Status-Abbrev} ${Triggers-Pending}' pyinit)"
    sleep 1   # a new image must get another mtime
    dpkg --triggers-only --pending > /tmp/trig.log 2>&1
    echo "LIFECYCLE-TRIGGER-STATUS: $?"
    sed 's/^/LIFECYCLE-TRIGGER: /' /tmp/trig.log
    after=$(stat -c %Y "/boot/initrd.img-$K")
    [ "$after" != "$before" ] && echo "LIFECYCLE-TRIGGER-REBUILT: yes" || echo "LIFECYCLE-TRIGGER-REBUILT: no"
    DEBIAN_FRONTEND=noninteractive apt-get remove -y "linux-image-$K" > /tmp/remove.log 2>&1
    echo "LIFECYCLE-REMOVE-STATUS: $?"
    sed 's/^/LIFECYCLE-REMOVE: /' /tmp/remove.log
    echo "LIFECYCLE-PACKAGE: $(dpkg-query -W -f='${db:Status-Abbrev}' "linux-image-$K" 2>&1)"
    echo "LIFECYCLE-INITRD-LEFT: $(initrd_size "$K")"
    ls -la /boot | sed 's/^/LIFECYCLE-BOOT: /'
}

main() {
    phase=$(cat "$STATE" 2>/dev/null || echo 0)
    echo "LIFECYCLE: phase $phase"
    report_boot "$phase"
    case "$phase" in
        1) phase1 ;;
        2) phase2 ;;
        *) echo "LIFECYCLE-ERROR: unknown phase $phase" ;;
    esac
    echo $((phase + 1)) > "$STATE"
    echo "LIFECYCLE-DONE: phase $phase"
}

main 2>&1 | tee -a "$LOG"
sync
systemctl poweroff
"""


@dataclass
class Root:
    distro: Distro
    disk: Path  # pristine: copy before booting (the guest writes to it)
    vmlinuz: Path
    initrd: Path  # the image the kernel's postinst built in the chroot
    kver: str
    uuid: str
    install_log: str
    seconds: dict


def root_key(distro: Distro, base: Path, deb: Path) -> str:
    deb_hash = hashlib.sha256(deb.read_bytes()).hexdigest()
    return _sha(base.name, deb_hash, UNIT, PHASE_SCRIPT, str(DISK_MB), str(RECIPE))


def ensure_root(distro_name: str, deb: Path, cache: Path | None = None, log=None) -> Root:
    """The root disk of `distro_name` with `deb` installed (made on first use)."""
    say = log or (lambda m: None)
    distro = DISTROS[distro_name]
    cache = Path(cache) if cache else default_cache()
    t0 = time.monotonic()
    base = ensure_base(distro, cache, log)
    t_base = time.monotonic() - t0
    folder = cache / "lifecycle" / distro.name
    out = folder / f"root-{root_key(distro, base, deb)}"
    info = out / "root.json"
    if not info.exists():
        with _Locked(folder):
            if not info.exists():
                _make_root(distro, base, deb, out, say)
                _prune(folder, "root-", out, keep=1)
    data = json.loads(info.read_text())
    os.utime(info)
    seconds = dict(data["seconds"], base_check=round(t_base, 1))
    return Root(distro, out / "disk.img", out / "vmlinuz", out / "initrd.img", data["kver"], data["uuid"],
                (out / "install.log").read_text(), seconds)


def _make_root(distro: Distro, base: Path, deb: Path, out: Path, say) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp = out.parent / f".root.{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    seconds = {}
    try:
        tree = tmp / "tree"
        t = time.monotonic()
        _run(["cp", "-a", str(base), str(tree)], what="copying the base tree")
        (tree / ".pyinit-base-complete").unlink(missing_ok=True)
        seconds["copy"] = round(time.monotonic() - t, 1)
        shutil.copyfile(deb, tree / "tmp" / deb.name)
        target = f"-t {distro.kernel_from} " if distro.kernel_from else ""
        say(f"installing {deb.name} and {KERNEL_PACKAGE} in a chroot of {tree}")
        t = time.monotonic()
        install_log = tmp / "install.log"
        _in_chroot(tree, f"DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                         f"{target}/tmp/{deb.name} {KERNEL_PACKAGE}", install_log)
        seconds["install"] = round(time.monotonic() - t, 1)
        (tree / "tmp" / deb.name).unlink()
        _in_chroot(tree, "apt-get clean && rm -rf /var/lib/apt/lists/*", install_log)
        kvers = sorted(p.name[len("vmlinuz-"):] for p in (tree / "boot").glob("vmlinuz-*"))
        if len(kvers) != 1:
            raise LifecycleError(f"expected one kernel in {tree}/boot, found {kvers}\n"
                                 f"{install_log.read_text()[-4000:]}")
        kver = kvers[0]
        initrd = tree / "boot" / f"initrd.img-{kver}"
        if not initrd.exists():
            raise LifecycleError(f"the kernel's postinst left no {initrd}:\n{install_log.read_text()[-6000:]}")
        fs_uuid = str(uuidlib.uuid4())
        _configure_guest(tree, fs_uuid)
        shutil.copyfile(tree / "boot" / f"vmlinuz-{kver}", tmp / "vmlinuz")
        shutil.copyfile(initrd, tmp / "initrd.img")
        t = time.monotonic()
        disk = tmp / "disk.img"
        with open(disk, "wb") as f:
            f.truncate(DISK_MB * 1024 * 1024)
        _run(["mkfs.ext4", "-q", "-F", "-d", str(tree), "-U", fs_uuid, "-L", "root", str(disk)], what="mkfs.ext4 -d")
        seconds["mkfs"] = round(time.monotonic() - t, 1)
        shutil.rmtree(tree)
        (tmp / "root.json").write_text(json.dumps({"kver": kver, "uuid": fs_uuid, "deb": deb.name,
                                                   "base": base.name, "seconds": seconds}, indent=2) + "\n")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


CHROOT = r"""
set -eu
T=$1; shift
mount -t proc proc "$T/proc"
mount --rbind /sys "$T/sys"
mount --make-rslave "$T/sys"
mount --rbind /dev "$T/dev"
mount --make-rslave "$T/dev"
exec chroot "$T" /bin/sh -c "$1"
"""


def _in_chroot(tree: Path, command: str, log: Path) -> str:
    """Run a shell command in the tree, as mmdebstrap's root mode does: chroot(8) with /proc,
    /sys and /dev mounted, in a private mount namespace (nothing stays mounted after)."""
    env = _clean_env()
    env.pop("TMPDIR", None)
    return _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", CHROOT, "chroot", str(tree), command],
                log=log, env=env, what=f"in the chroot: {command}")


def _configure_guest(tree: Path, fs_uuid: str) -> None:
    (tree / "etc" / "fstab").write_text(f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n")
    (tree / "etc" / "hostname").write_text("lifecycle\n")
    # A machine id: an empty one makes this a first boot (systemd-firstboot would ask questions).
    (tree / "etc" / "machine-id").write_text(uuidlib.uuid4().hex + "\n")
    unit = tree / "etc" / "systemd" / "system" / "lifecycle.service"
    unit.write_text(UNIT)
    wants = tree / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "lifecycle.service").symlink_to("/etc/systemd/system/lifecycle.service")
    script = tree / "usr" / "local" / "sbin" / "lifecycle-phase"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(PHASE_SCRIPT)
    script.chmod(0o755)
    state = tree / "var" / "lib" / "lifecycle"
    state.mkdir(parents=True, exist_ok=True)
    (state / "phase").write_text("1\n")


def report_port(path: Path) -> list[str]:
    """QEMU arguments giving the guest's second serial port (ttyS1) to a file."""
    return ["-serial", f"file:{path}"]


def grub_cmdline(root: Root) -> str:
    """What GRUB's 10_linux passes (without "quiet"; console= is added by devtools.qemu)."""
    return f"BOOT_IMAGE=/boot/vmlinuz-{root.kver} root=UUID={root.uuid} ro"


def copy_disk(root: Root, dest: Path) -> Path:
    _run(["cp", "--sparse=always", str(root.disk), str(dest)], what="copying the root disk")
    return dest


def lines(console: str, kind: str) -> list[str]:
    """The values of the LIFECYCLE-<kind> lines (kind "" for the bare LIFECYCLE: lines)."""
    tag = "LIFECYCLE" + (f"-{kind}" if kind else "") + ": "
    out = []
    for line in console.replace("\r", "").split("\n"):
        i = line.find(tag)
        if i >= 0:
            out.append(line[i + len(tag):])
    return out


def value(console: str, kind: str) -> str | None:
    found = lines(console, kind)
    return found[-1] if found else None


def main() -> int:
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python -m devtools.lifecycle", description="make the lifecycle roots")
    p.add_argument("deb", type=Path)
    p.add_argument("distros", nargs="*", default=list(DISTROS))
    args = p.parse_args()
    for name in args.distros:
        r = ensure_root(name, args.deb, log=lambda m: print(m, file=sys.stderr))
        print(json.dumps({"distro": name, "disk": str(r.disk), "kver": r.kver, "uuid": r.uuid,
                          "initrd": r.initrd.stat().st_size, "seconds": r.seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
