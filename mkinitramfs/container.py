"""`pyinit-mkinitramfs run IMAGE --root DISK|DIR`: the whole boot flow of an image, in a
container, without a VM.

    pyinit-mkinitramfs run initrd.img --root root.img -- rd.debug
    pyinit-mkinitramfs run initrd.img --root /srv/rootfs --child

The image is unpacked onto a tmpfs inside a new mount namespace and a new pid namespace
(`unshare --mount --pid --fork`, private propagation: nothing is mounted on the host), and
its /init runs there: pyinit as PID 1 of that pid namespace (default), or with `--child` as
an ordinary child of a small waiter that is PID 1 (pyinit then makes itself a child
subreaper). It mounts /proc, /sys, /dev and /run, reads the command line, waits for the
root, mounts it on /sysroot, switches root and execs the root's init, as in a VM.

The root: a disk image file is attached to a loop device (read-only unless --rw) and
`root=/dev/loopN` is put on the command line, unless the words after `--` name a root=; a
directory becomes the lower layer of an overlay mounted on the image's /sysroot (read-only
unless --rw), and pyinit uses what is mounted there. Never a bind mount of the directory
itself: remounting a bind mount remounts the host filesystem under it, and a real init
remounts / (`mount -o remount,ro /`). Writes (with --rw) go to a tmpfs and are discarded. The
command line pyinit reads is those words (a file bind-mounted over /proc/cmdline inside the
container), never the host's.

What is different from a machine, on purpose: pyinit sees it is not PID 1 of the initial
pid namespace and then never opens the host's /dev/kmsg (it logs to stdout with <N>
priority prefixes), never loads kernel modules into the host's kernel (CAP_SYS_MODULE is
also dropped from the bounding set), and uses its stdio as the console. reboot(2) inside a
pid namespace only ends that namespace; with --child, CAP_SYS_BOOT is dropped as well, so
nothing in the container can reboot anything.

Needs root and util-linux (unshare, losetup). The exit status is the container's: the real
init's exit status, or 128 + the signal that ended the namespace (reboot(2) in a pid
namespace ends it with SIGHUP for a reboot, SIGINT for a power-off or halt).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TypedDict

from mkinitramfs import paths, unpack
from mkinitramfs.errors import MkinitramfsError


class ContainerError(MkinitramfsError):
    """`run` cannot set up or finish the container; the message says what is missing."""


REBOOT_SIGNALS = {1: "reboot (SIGHUP)", 2: "power-off or halt (SIGINT)"}


class Spec(TypedDict):
    """What `run` hands the process inside the namespaces (as JSON on its command line)."""

    image: str
    work: str  # a temporary folder of the host, for the mounts
    cmdline: str  # the file bind-mounted over /proc/cmdline
    root_dir: str | None  # --root as a directory, else None (a loop device named by root=)
    rw: bool
    child: bool


def container_cmdline(words: list[str], root: str | None) -> str:
    """The command line pyinit will read: the user's words, plus root= when given."""
    out = list(words)
    if root is not None and not any(w.startswith("root=") for w in words):
        out.insert(0, f"root={root}")
    return " ".join(out) + "\n"


def run(image: str, root: str, *, words: Sequence[str] = (), child: bool = False, rw: bool = False,
        timeout: float | None = None) -> int:
    """Run the image's boot flow in a container; returns the container's exit status."""
    if os.geteuid() != 0:
        raise ContainerError("run needs root (mount and pid namespaces, loop devices)")
    for tool in ("unshare", "losetup"):
        if shutil.which(tool) is None:
            raise ContainerError(f"{tool} not found: install the Debian package util-linux")
    if not os.path.isfile(image):
        raise ContainerError(f"{image}: no such image file")
    if not os.path.exists(root):
        raise ContainerError(f"--root {root}: no such disk image or directory")
    work = tempfile.mkdtemp(prefix="pyinit-run.")
    loop = None
    try:
        if os.path.isdir(root):
            root_dir, root_dev = os.path.abspath(root), None
        else:
            argv = ["losetup", "--find", "--show"] + ([] if rw else ["--read-only"]) + [os.path.abspath(root)]
            proc = subprocess.run(argv, check=False, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ContainerError(f"losetup {root}: {proc.stderr.strip()}")
            loop = root_dev = proc.stdout.strip()
            root_dir = None
        cmdline = os.path.join(work, "cmdline")
        with open(cmdline, "w") as f:
            f.write(container_cmdline(list(words), root_dev))
        spec: Spec = {"image": os.path.abspath(image), "work": work, "cmdline": cmdline, "root_dir": root_dir,
                      "rw": rw, "child": child}
        argv = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
                sys.executable, "-m", "mkinitramfs.container", json.dumps(spec)]
        env = {**os.environ, "PYTHONPATH": _source_root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
        p = subprocess.Popen(argv, env=env)
        try:
            code = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise ContainerError(f"the container did not end within {timeout:g} s (killed)") from None
        return 128 - code if code < 0 else code
    finally:
        if loop:
            _detach(loop)
        shutil.rmtree(work, ignore_errors=True)


def describe_status(code: int) -> str:
    if code > 128 and code - 128 in REBOOT_SIGNALS:
        return f"the namespace ended by {REBOOT_SIGNALS[code - 128]}"
    return f"exit status {code}"


def _detach(loop: str) -> None:
    for _ in range(20):  # the loop may stay busy a moment after the namespace ended
        if subprocess.run(["losetup", "-d", loop], check=False, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)


def _source_root() -> str:
    """The directory holding the mkinitramfs package (a checkout or site-packages)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------- inside

def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _drop_capabilities(names: list[str]) -> None:
    """Drop capabilities from the bounding set, so the exec'd /init never has them."""
    try:
        import prctl
    except ImportError:
        raise ContainerError("python-prctl is needed to drop capabilities in the container") from None
    for name in names:
        prctl.capbset.drop(name)


def inside(spec: Spec) -> None:
    """Runs as PID 1 of the new pid namespace, in the new mount namespace: build the initramfs
    tree on a tmpfs and exec its /init (or, with child, fork it and wait)."""
    root = os.path.join(spec["work"], "initramfs")
    os.makedirs(root)
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", root)
    with open(spec["image"], "rb") as f:
        # The image is the one the user asked to run, as root, into a fresh tmpfs: its device
        # nodes and owners are what the boot needs.
        unpack.unpack(f.read(), root, warn=lambda msg: None, same_owner=True)
    proc = os.path.join(root, "proc")
    os.makedirs(proc, exist_ok=True)
    # The container's own /proc (this pid namespace) with its own command line over it.
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", proc)
    # From a tmpfs of the namespace, not the host file: a bind mount's superblock is its
    # source's, and nothing in the container may remount a host filesystem.
    meta = os.path.join(spec["work"], "meta")
    os.makedirs(meta)
    _mount("-t", "tmpfs", "-o", "mode=0755,size=64k", "tmpfs", meta)
    shutil.copyfile(spec["cmdline"], os.path.join(meta, "cmdline"))
    _mount("--bind", "-o", "ro", os.path.join(meta, "cmdline"), os.path.join(proc, "cmdline"))
    if spec["root_dir"]:
        # An overlay of our own over the directory: see the module doc (never a bind mount).
        sysroot = os.path.join(root, "sysroot")
        layers = os.path.join(spec["work"], "layers")
        os.makedirs(layers)
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", layers)
        for d in ("upper", "work"):
            os.makedirs(os.path.join(layers, d))
        os.makedirs(sysroot, exist_ok=True)
        _mount("-t", "overlay", "-o", f"lowerdir={spec['root_dir']},upperdir={layers}/upper,"
               f"workdir={layers}/work" + ("" if spec["rw"] else ",ro"), "overlay", sysroot)
    drop = ["sys_module"] + (["sys_boot"] if spec["child"] else [])
    _drop_capabilities(drop)
    env = {"HOME": "/", "TERM": os.environ.get("TERM", "linux")}
    if not spec["child"]:
        os.chroot(root)
        os.chdir("/")
        os.execve(paths.INIT, [paths.INIT], env)
    pid = os.fork()
    if pid == 0:
        try:
            os.chroot(root)
            os.chdir("/")
            os.execve(paths.INIT, [paths.INIT], env)
        finally:
            os._exit(127)
    # PID 1 of the namespace: reap everything; end with pyinit's (or the real init's) status.
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    inside(json.loads(sys.argv[1]))
