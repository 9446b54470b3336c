"""Hooks: the manifest, ordering, names, the runner against real executables and Python
modules in a temporary folder, and the builder's hook declarations and includes."""
from __future__ import annotations

import os
import stat
import textwrap

import pytest

from mkinitramfs import hookpack, include
from mkinitramfs.image import Image
from pyinit import cmdline, hookmanifest, hooks, initqueue, names
from pyinit.errors import BootError
from tests.support.hooks import Ctx, runner, write

pytestmark = pytest.mark.unit


def test_every_boot_stage_has_a_hook_folder():
    assert set(names.STAGES) <= set(names.HOOK_STAGES)


@pytest.mark.parametrize("file, name", [("30-luks.py", "luks"), ("luks", "luks"), ("10-foo-bar", "foo-bar"),
                                         ("x-1", "x-1"), ("99-", "99-")])
def test_hook_name(file, name):
    assert hookmanifest.hook_name(file) == name


def test_manifest_round_trip_and_errors():
    text = hookmanifest.format_manifest([("initqueue/settled/30-luks.py", "luks", False, 0.0),
                                  ("pre-mount/60-x", "x", True, None)])
    parsed = hookmanifest.parse_manifest(text)
    assert parsed == {"initqueue/settled/30-luks.py": {"name": "luks", "optional": False, "timeout": 0.0},
                      "pre-mount/60-x": {"name": "x", "optional": True}}
    for bad, words in [("nowhere/10-x", "not in a hook stage folder"), ("cmdline/10-x optional=yes", "0 or 1"),
                       ("cmdline/10-x timeout=soon", "not a number"), ("cmdline/10-x colour=red", "unknown"),
                       ("cmdline/10-x lonely", "name=value")]:
        with pytest.raises(ValueError, match=words):
            hookmanifest.parse_manifest(bad)


@pytest.fixture
def tree(tmp_path):
    return tmp_path / "hooks"


def test_hooks_run_in_name_order_with_the_environment(tree, tmp_path):
    out = tmp_path / "out"
    write(tree / "pre-mount" / "20-second",
          f"#!/bin/sh\necho \"second $NEWROOT $root $PYINIT_HOOK $PYINIT_STAGE\" >> {out}\n", 0o755)
    write(tree / "pre-mount" / "10-first.py", f"""
        def run(context):
            with open({str(out)!r}, "a") as f:
                f.write(f"first {{context.newroot}} {{context.root}} {{context.name}} "
                        f"{{context.cmdline.get('rd.x')}}\\n")
        """)
    write(tree / "pre-mount" / "README", "not a hook")
    write(tree / "pre-mount" / "30-notexec", "#!/bin/sh\n", 0o644)  # skipped: neither .py nor executable
    r = runner(tree, tmp_path)
    r.run_stage("pre-mount", boot_stage="pre-mount")
    assert out.read_text() == "first /sysroot /dev/vda first 1\nsecond /sysroot /dev/vda second pre-mount\n"
    r.run_stage("pre-mount", boot_stage="pre-mount")  # done hooks do not run twice
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("script, reason", [
    ("#!/bin/sh\nexit 3\n", "exit status 3"),
    ("#!/bin/sh\nkill -9 $$\n", "killed by signal 9"),
    ("#!/no/such/interpreter\n", "exit status 127"),
])
def test_a_failing_executable_raises_boot_error_naming_it(tree, tmp_path, script, reason):
    write(tree / "mount" / "40-broken", script, 0o755)
    with pytest.raises(BootError) as e:
        runner(tree, tmp_path).run_stage("mount", boot_stage="mount")
    assert e.value.stage == "mount"
    assert e.value.message.startswith("hook broken (mount/40-broken) failed at stage mount: " + reason)


def test_a_failing_python_hook_and_an_optional_one(tree, tmp_path, capsys):
    write(tree / "cleanup" / "10-opt.py", "def run(context):\n    raise OSError('nope')\n")
    write(tree / "cleanup" / "20-bad.py", "def run(context):\n    return False\n")
    r = runner(tree, tmp_path, "cleanup/10-opt.py name=opt optional=1\n")
    with pytest.raises(BootError,
                       match=r"hook bad \(cleanup/20-bad\.py\) failed at stage cleanup: run\(\) returned False"):
        r.run_stage("cleanup", boot_stage="cleanup")
    assert r.results[0][:2] == ("cleanup/10-opt.py", "OSError: nope")


def test_timeouts_kill_executables_and_interrupt_python(tree, tmp_path):
    write(tree / "pre-pivot" / "10-slow", "#!/bin/sh\nsleep 30\n", 0o755)
    write(tree / "pre-udev" / "10-slowpy.py", "import time\ndef run(context):\n    time.sleep(30)\n")
    r = runner(tree, tmp_path, "pre-pivot/10-slow timeout=0.5\npre-udev/10-slowpy.py timeout=0.5\n")
    with pytest.raises(BootError, match=r"timed out after 0.5 s \(killed\)"):
        r.run_stage("pre-pivot", boot_stage="pre-pivot")
    with pytest.raises(BootError, match=r"10-slowpy.py\) failed at stage pre-udev: timed out after 0.5 s"):
        r.run_stage("pre-udev", boot_stage="pre-udev")
    assert all(seconds < 10 for _, _, seconds in r.results)


def test_initqueue_settled_timeout_and_finished(tree, tmp_path):
    count = tmp_path / "count"
    write(tree / "initqueue" / "settled" / "10-count.py", f"""
        def run(context):
            p = {str(count)!r}
            n = int(open(p).read()) if __import__('os').path.exists(p) else 0
            open(p, 'w').write(str(n + 1))
        """)
    flag = tmp_path / "flag"
    write(tree / "initqueue" / "timeout" / "10-start", f"#!/bin/sh\ntouch {flag}\n", 0o755)
    write(tree / "initqueue" / "finished" / "10-ready", f"#!/bin/sh\ntest -e {flag}\n", 0o755)
    r = runner(tree, tmp_path)
    q = initqueue.InitQueue(r, r.ctx, retry=0.6)
    q.wait_finished(timeout=30)
    assert flag.exists() and q.timeout_ran
    assert int(count.read_text()) >= 2  # settled hooks ran again and again meanwhile
    flag.unlink()
    q2 = initqueue.InitQueue(r, r.ctx, retry=100)
    with pytest.raises(BootError, match=r"did not finish within 0.5 s.*still waiting for ready"):
        q2.wait_finished(timeout=0.5)


def test_retry_defaults_to_two_thirds_of_the_root_timeout():
    c = Ctx("root=/dev/vda rootwait=9")
    assert initqueue.initqueue_retry(c) == 6
    assert initqueue.initqueue_retry(Ctx("root=/dev/vda rd.retry=4 rootwait")) == 4
    assert initqueue.initqueue_retry(Ctx("root=/dev/vda rootwait")) == 20


def test_params_file_format():
    c = cmdline.parse('root=/dev/vda quiet rd.luks.name="a=b c"')
    assert hooks.format_params(c.params) == "root=/dev/vda\nquiet\nrd.luks.name=a=b c\n"


# ---------------------------------------------------------------------------- the builder

def make_hook(folder, toml, files=None):
    folder.mkdir(parents=True)
    (folder / "hook.toml").write_text(textwrap.dedent(toml))
    for name, (text, mode) in (files or {}).items():
        write(folder / name, text, mode)
    return str(folder)


def test_hook_declaration_goes_into_the_image(tmp_path):
    key = tmp_path / "root.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    folder = make_hook(tmp_path / "demo", f"""
        description = "demo"
        binaries = ["true"]
        modules = ["dm_crypt"]
        files = ["{key}:/etc/keys/root.key"]
        python_modules = ["json"]
        [[run]]
        stage = "initqueue/settled"
        file = "demo.py"
        order = 30
        timeout = 0
        [[run]]
        stage = "pre-mount"
        file = "check"
        optional = true
        """, {"demo.py": ("import subprocess\nfrom termios import ECHO\ndef run(c):\n    pass\n", 0o644),
              "check": ("#!/bin/sh\n", 0o755)})
    decl = hookpack.load_hook(folder)
    assert decl.modules == ["dm_crypt"]
    extra, packages, allow, exclude = hookpack.python_needs([decl])
    assert extra == ["json", "subprocess", "termios"] and packages == allow == exclude == []
    image = Image()
    hookpack.add_hooks(image, [decl])
    assert image.get("/usr/lib/pyinit/hooks/initqueue/settled/30-demo.py").mode == 0o644
    assert image.get("/usr/lib/pyinit/hooks/pre-mount/50-demo").mode == 0o755
    assert image.get("/usr/bin/true") is not None
    assert any(p.endswith("libc.so.6") for p in image.entries)  # the binary's ELF closure
    assert image.get("/etc/keys/root.key").mode == 0o600
    manifest = hookmanifest.parse_manifest(image.get("/etc/pyinit/hooks.conf").content().decode())
    assert manifest == {"initqueue/settled/30-demo.py": {"name": "demo", "optional": False, "timeout": 0.0},
                        "pre-mount/50-demo": {"name": "demo", "optional": True}}


@pytest.mark.parametrize("toml, words", [
    ('[[run]]\nstage = "later"\nfile = "x.py"\n', "stage 'later' is not one of"),
    ('binaries = "cryptsetup"\n[[run]]\nstage = "mount"\nfile = "x.py"\n', "binaries must be a list"),
    ('description = "no run"\n', "no [[run]] table"),
    ('colour = 1\n[[run]]\nstage = "mount"\nfile = "x.py"\n', "unknown keys colour"),
    ('[[run]]\nstage = "mount"\nfile = "missing.py"\n', "does not exist"),
    ('[[run]]\nstage = "mount"\nfile = "plain"\n', "neither a .py module nor executable"),
    ('[[run]]\nstage = "mount"\nfile = "x.py"\norder = 100\n', "order must be"),
    ('binaries = ["no-such-binary-anywhere"]\n[[run]]\nstage = "mount"\nfile = "x.py"\n', "not found on this machine"),
])
def test_bad_declarations_name_the_problem(tmp_path, toml, words):
    folder = make_hook(tmp_path / "bad", toml, {"x.py": ("def run(c): pass\n", 0o644), "plain": ("x", 0o644)})
    with pytest.raises(hookpack.HookError, match=words.replace("[", r"\[").replace("(", r"\(")) as e:
        hookpack.add_hooks(Image(), [hookpack.load_hook(folder)])
    assert "bad" in str(e.value)


def test_unknown_hook_name_lists_the_shipped_ones():
    with pytest.raises(hookpack.HookError, match=r"no .*/no-such-hook/hook\.toml"):
        hookpack.find_hook("no-such-hook")


def test_include_keeps_modes_and_folders(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "secret").write_text("s")
    os.chmod(tmp_path / "d" / "sub" / "secret", 0o600)
    image = Image()
    include.add_include(image, *include.parse_include(f"{tmp_path / 'd'}:/etc/d"))
    assert stat.S_IMODE(image.get("/etc/d/sub/secret").mode) == 0o600
    for bad in ("a:relative", ":/x", "/nope/nothing:/x"):
        with pytest.raises(include.IncludeError):
            include.add_include(image, *include.parse_include(bad))


def test_dracut_write_tree_merges_into_a_staging_folder(tmp_path):
    """dracut's tree keeps its directories and symlinked directories; our files (and /init)
    replace theirs; existing device nodes are left alone."""
    from mkinitramfs import dracut
    root = tmp_path / "initdir"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "init").symlink_to("usr/lib/systemd/systemd")
    (root / "usr" / "bin" / "tool").write_text("theirs")
    image = Image()
    image.add_dir("/bin")
    image.add_symlink("/sbin", "usr/bin")
    image.add_file("/bin/python3", data=b"ours", mode=0o755)
    image.add_file("/usr/bin/tool", data=b"ours too", mode=0o700)
    image.add_file("/init", data=b"#!/usr/bin/python3 -IS\n", mode=0o755)
    assert dracut.write_tree(image, str(root)) == 3
    assert (root / "bin").is_symlink() and (root / "usr" / "bin" / "python3").read_bytes() == b"ours"
    assert (root / "sbin").is_symlink() and os.readlink(root / "sbin") == "usr/bin"
    assert (root / "usr" / "bin" / "tool").read_text() == "ours too"
    assert not (root / "init").is_symlink() and (root / "init").read_bytes().startswith(b"#!")
    assert stat.S_IMODE((root / "usr" / "bin" / "tool").stat().st_mode) == 0o700


def test_the_hook_runner_is_packed_only_with_hooks(tmp_path):
    """pyinit.hooks and what it alone imports (subprocess, threading, termios...) go into an
    image that has hooks, or an --include that may fill /usr/lib/pyinit/hooks; not otherwise."""
    from mkinitramfs import build

    def stdlib(opts):
        image = build.assemble(opts).image
        return {p.rsplit("/", 1)[-1] for p in image.entries if p.endswith((".pyc", ".so"))}

    plain = stdlib(build.BuildOptions(output="x", kver="k", strip=False))
    assert "hooks.pyc" not in plain and "subprocess.pyc" not in plain
    assert "boot.pyc" in plain and "traceback.pyc" in plain  # rescue's lazy import stays
    (tmp_path / "h" / "pre-mount").mkdir(parents=True)
    (tmp_path / "h" / "pre-mount" / "10-x.py").write_text("def run(c):\n    pass\n")
    included = stdlib(build.BuildOptions(output="x", kver="k", strip=False,
                                         includes=[f"{tmp_path / 'h'}:/usr/lib/pyinit/hooks"]))
    assert {"hooks.pyc", "subprocess.pyc"} <= included
    folder = make_hook(tmp_path / "demo", '[[run]]\nstage = "pre-mount"\nfile = "x.py"\n',
                       {"x.py": ("def run(c):\n    pass\n", 0o644)})
    hooked = stdlib(build.BuildOptions(output="x", kver="k", strip=False, hooks=[str(folder)]))
    assert {"hooks.pyc", "subprocess.pyc"} <= hooked
