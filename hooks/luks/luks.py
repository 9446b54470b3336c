"""Unlock LUKS devices as they appear (an initqueue/settled hook, run again and again; the same
file is the initqueue/finished hook, which says whether every named device is open, and the
pre-mount hook, which forgets the secrets).

    rd.luks=0                       do nothing
    rd.luks.uuid=UUID               unlock only these (repeatable, "luks-" prefix accepted);
                                    without any, every LUKS device found is unlocked (but
                                    crypttab's noauto entries)
    rd.luks.name=UUID=NAME          the mapping's name (default: crypttab's, else luks-UUID)
    rd.luks.key=[UUID=]PATH[:DEVICE]  a keyfile, in the image, or on DEVICE (UUID=, LABEL=,
                                    /dev/...) mounted read-only; tried before any prompt
    rd.luks.options=[UUID=]OPTS     crypttab options (pyinit.crypttab): tpm2-device=,
                                    fido2-device=, token-timeout=, headless, tries=, timeout=,
                                    discard...; for one device or all
    rd.luks.crypttab=0              ignore the image's /etc/crypttab

The image's /etc/crypttab (host-only builds pack the root chain's entries) names devices,
keyfiles and options; the command line wins over it, option by option.

For each device, in order: its keyfiles; its LUKS2 tokens (systemd-tpm2, systemd-fido2),
through systemd-cryptsetup when the image has it (--hook luks-tokens); the passphrases that
opened earlier devices (systemd's password cache: one passphrase for LVM or RAID over several
LUKS disks); then a prompt on every console of console=, `tries` times. A recovery key
(systemd-recovery) is typed at that prompt. Passphrases live in bytearrays that are wiped
once used; a keyfile packed in the image is unlinked once the devices it opens are open.
"""
import os
import re

from pyinit import rootspec
from pyinit.hooks import HookFailed

TRIES = 3
KEYDEV_WAIT = 10.0  # seconds to wait for a key device before falling back to the prompt


class Options:
    """What the command line (and the image's crypttab) ask for."""

    def __init__(self, enabled, uuids, names, keys, crypttab=(), common_options="", device_options=None,
                 crypttab_problems=()):
        self.enabled, self.uuids, self.names, self.keys = enabled, uuids, names, keys
        self.crypttab = list(crypttab)  # pyinit.crypttab.Entry
        self.common_options = common_options  # rd.luks.options= for every device
        self.device_options = device_options or {}  # rd.luks.options=UUID=...
        self.crypttab_problems = list(crypttab_problems)

    def entry_for(self, uuid, node=None):
        """The crypttab entry of this device (by UUID=, or by a DEVICE that names `node`)."""
        for e in self.crypttab:
            if e.uuid == uuid:
                return e
        if node is not None:
            for e in self.crypttab:
                if e.uuid is None and e.device == node:
                    return e
        return None

    def wanted(self, uuid, node=None):
        if self.uuids:
            return uuid in self.uuids
        entry = self.entry_for(uuid, node)
        return entry is None or "noauto" not in entry.options.flags

    def name_for(self, uuid, node=None):
        entry = self.entry_for(uuid, node)
        return self.names.get(uuid) or (entry.name if entry else None) or f"luks-{uuid}"

    def options_for(self, uuid, node=None):
        """crypttab's options for this device, then rd.luks.options= over them."""
        from pyinit import crypttab
        entry = self.entry_for(uuid, node)
        opts = entry.options if entry else crypttab.Options()
        opts = crypttab.parse_options(self.common_options, opts)
        return crypttab.parse_options(self.device_options.get(uuid, ""), opts)

    def keys_for(self, uuid, node=None):
        """[(path, device or None, packed)]: rd.luks.key= wins over crypttab's keyfile."""
        keys = [(p, d) for u, p, d in self.keys if u in (None, uuid)]
        if not keys:
            entry = self.entry_for(uuid, node)
            if entry is not None and entry.keyfile_path:
                keys = [(entry.keyfile_path, entry.keyfile_device)]
        return keys

    def required(self):
        """UUIDs the initqueue must wait for: named on the command line, or in crypttab
        (without noauto/nofail) by UUID."""
        out = list(self.uuids)
        if not self.uuids:
            out += [e.uuid for e in self.crypttab
                    if e.uuid and not e.options.flags & {"noauto", "nofail"} and e.uuid not in out]
        return out


def _uuid(text):
    text = text.strip().lower()
    return text[5:] if text.startswith("luks-") else text


def parse_options(cmdline, crypttab_text=None):
    """The rd.luks.* words (and the image's crypttab text) -> Options. Pure; raises
    ValueError naming a malformed word."""
    from pyinit import crypttab
    names = {}
    for value in cmdline.get_all("rd.luks.name"):
        uuid, sep, name = (value or "").partition("=")
        if not sep or not uuid or not name:
            raise ValueError(f"rd.luks.name={value}: expected rd.luks.name=UUID=NAME")
        names[_uuid(uuid)] = name
    uuids = [_uuid(u) for u in cmdline.rd_list("rd.luks.uuid")]
    uuids += [u for u in names if u not in uuids]
    keys = []
    for value in cmdline.get_all("rd.luks.key"):
        if not value:
            raise ValueError("rd.luks.key= needs [UUID=]PATH[:DEVICE]")
        uuid, where = None, value
        head, sep, rest = value.partition("=")
        if sep and not head.startswith("/") and crypttab._looks_like_uuid(_uuid(head)):
            uuid, where = _uuid(head), rest
        path, _, device = where.partition(":")
        if not path.startswith("/"):
            raise ValueError(f"rd.luks.key={value}: the key file must be an absolute path")
        keys.append((uuid, path, device or None))
    common, per = crypttab.cmdline_options(cmdline.get_all("rd.luks.options"))
    try:
        crypttab.parse_options(common)
        for v in per.values():
            crypttab.parse_options(v)
    except crypttab.CrypttabError as e:
        raise ValueError(f"rd.luks.options: {e}") from None
    entries: list[crypttab.Entry] = []
    problems: list[str] = []
    if crypttab_text is not None and cmdline.flag("rd.luks.crypttab", True):
        entries, problems = crypttab.parse(crypttab_text)
    return Options(cmdline.flag("rd.luks", True), uuids, names, keys, entries, common, per, problems)


def candidates(devs):
    """(node, uuid) of LUKS devices nothing holds yet, from pyinit's own probe of each
    device (read once per uevent, in a child process with a deadline, bounded: pyinit/probe.py)."""
    return [(dev.node, dev.info["UUID"].lower()) for dev in devs.unheld_of_type("crypto_LUKS")
            if dev.info.get("UUID")]


def find_device(context, spec_text):
    return context.devices.find(rootspec.parse_root(spec_text))


def key_file(context, path, device, state):
    """The host path of a keyfile, mounting its device when needed; None when not there (yet)."""
    if device is None:
        return path if os.path.isfile(path) else None
    mounts = state.setdefault("keydev_mounts", {})
    if device not in mounts:
        dev = find_device(context, device)
        if dev is None:
            return None
        target = f"/run/pyinit/keydev-{len(mounts)}"
        os.makedirs(target, exist_ok=True)
        from pyinit import syscalls as sc
        fstypes = [dev.info["TYPE"]] if dev.info.get("TYPE") else ["ext4", "vfat", "xfs", "btrfs", "iso9660"]
        for fstype in fstypes:
            try:
                sc.mount(dev.node, target, fstype, sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
                break
            except OSError:
                continue
        else:
            context.log.warning(f"luks: cannot mount key device {device} ({dev.node})")
            return None
        mounts[device] = target
    full = os.path.join(mounts[device], path.lstrip("/"))
    return full if os.path.isfile(full) else None


SYSTEMD_CRYPTSETUP = "/usr/bin/systemd-cryptsetup"  # packed by --hook luks-tokens
CRYPTTAB = "/etc/crypttab"
KEYDEV_PREFIX = "/run/pyinit/keydev-"
TOKEN_KINDS = {"systemd-tpm2": "TPM2", "systemd-fido2": "FIDO2"}
FIDO_USAGE_PAGE = b"\x06\xd0\xf1"  # HID report descriptor: Usage Page (FIDO Alliance, 0xF1D0)


class GiveUp(Exception):
    """This device cannot be unlocked now (the message says why)."""


def release_key_devices(state):
    """Key devices are mounted only while cryptsetup reads the key: nothing of them is left
    mounted (under /run, which moves to the real root) once a device is open."""
    from pyinit import syscalls as sc
    for target in state.pop("keydev_mounts", {}).values():
        try:
            sc.umount2(target, sc.MNT_DETACH)
        except OSError:
            pass


def run_with_secret(context, argv, secret=None, env=None):
    """(returncode, output) of `argv` with `secret` (a bytearray) on its stdin. It is written
    from the bytearray itself (unbuffered pipe, memoryview): no str or bytes copy is made."""
    import subprocess
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env or context.env, bufsize=0)
    except FileNotFoundError:
        raise HookFailed(f"{argv[0]} is not in the image (declare it in the hook's binaries)") from None
    assert proc.stdin is not None and proc.stdout is not None  # pipes, as asked
    try:
        if secret:
            view, done = memoryview(secret), 0
            while done < len(view):
                done += proc.stdin.write(view[done:]) or 0
            view.release()
    except BrokenPipeError:
        pass
    finally:
        proc.stdin.close()
    chunks, size = [], 0
    while True:  # an unbuffered pipe: one read() is one read(2), not all the output
        chunk = proc.stdout.read(65536)
        if not chunk:
            break
        if size < 1 << 20:  # bounded: what is kept for the messages
            chunks.append(chunk)
            size += len(chunk)
    proc.stdout.close()
    return proc.wait(), b"".join(chunks).decode("utf-8", "replace")


def open_argv(node, name, opts, key=None):
    """cryptsetup open, the options' flags, the key (a file, or stdin: '-')."""
    argv = ["cryptsetup", "open", "--type", "luks", "--verbose", *opts.cryptsetup_args()]
    if os.path.exists(SYSTEMD_CRYPTSETUP):
        # cryptsetup would try the token plugins first for a key on stdin; the tokens
        # have had their turn (systemd-cryptsetup), and a TPM that refuses would end it here
        argv.append("--disable-external-tokens")
    if key is None:
        argv += ["--key-file", "-"]
    else:
        argv += ["--key-file", key]
        if opts.keyfile_offset:
            argv += ["--keyfile-offset", str(opts.keyfile_offset)]
        if opts.keyfile_size:
            argv += ["--keyfile-size", str(opts.keyfile_size)]
    return [*argv, node, name]


def _first_line(out):
    """The line that says why: the first "Failed ..." line, else the last one, passing over
    tss2's own log lines ("WARNING:esys:src/...") when the program said something itself."""
    lines = [ln.strip() for ln in out.splitlines()
             if ln.strip() and not ln.startswith(("Command ", "No usable token is available"))]
    own = [ln for ln in lines if not re.match(r"(WARNING|ERROR|INFO|DEBUG):[a-z]+:", ln)]
    failed = [ln for ln in own if ln.startswith("Failed") or "does not match" in ln]
    return (failed or own or lines or ["no output"])[0 if failed else -1]


def _memory_error(out):
    return "Not enough available memory" in out


def memory_message(node, meta):
    from pyinit import luks2
    try:
        with open("/proc/meminfo") as f:
            avail = luks2.mem_available_kib(f.read())
    except OSError:
        avail = None
    if meta is not None:
        problem = luks2.memory_problem(meta, avail, node)
        if problem:
            return problem
        slots = ", ".join(f"keyslot {s.id}: {s.kdf} {s.memory_kib // 1024} MiB"
                          for s in luks2.passphrase_keyslots(meta) if s.memory_kib)
    else:
        slots = ""
    return (f"{node}: cryptsetup has not enough memory to open a keyslot ({slots or 'LUKS1 or unknown cost'}; "
            f"{'?' if avail is None else avail // 1024} MiB available). Fix: on a machine with more memory run "
            f"`cryptsetup luksConvertKey --pbkdf-memory 262144 {node}` (KiB), or give this machine more memory")


def consoles(context):
    from pyinit import askpass
    if getattr(context.boot, "console", "/dev/console") is None:  # container mode: our stdio
        return ["/proc/self/fd/0"]
    c = context.cmdline
    return askpass.console_paths(c.consoles if c is not None else ())


class Device:
    """One LUKS device being unlocked."""

    def __init__(self, context, node, uuid, name, opts, state):
        self.context, self.node, self.uuid, self.name = context, node, uuid, name
        self.all = opts
        self.opts = opts.options_for(uuid, node)
        self.state = state
        self.log = context.log
        from pyinit import luks2
        try:
            self.meta = luks2.read_metadata(node)
        except (OSError, luks2.Luks2Error) as e:
            self.log.warning(f"luks: {node}: cannot read the LUKS2 metadata ({e}): no tokens")
            self.meta = None
        self.waits = state.setdefault("waits", {}).setdefault(uuid, {})
        if self.opts.unknown:
            self.once("unknown-options",
                      f"luks: {node}: options not understood, ignored: {','.join(self.opts.unknown)}")

    def waited(self, what, limit):
        """Seconds since this device first waited for `what`, and whether `limit` is reached."""
        import time
        start = self.waits.setdefault(what, time.monotonic())
        spent = time.monotonic() - start
        return spent >= limit

    def opened(self, how, out=""):
        m = re.search(r"Key slot (\d+) unlocked", out)
        slot = f" (keyslot {m.group(1)})" if m else ""
        if m and self.meta is not None and how == "a passphrase":
            from pyinit import luks2
            if any(t.type == "systemd-recovery" and m.group(1) in t.keyslots for t in luks2.tokens(self.meta)):
                how = "the recovery key"
        self.log.notice(f"luks: unlocked {self.node} as /dev/mapper/{self.name} with {how}{slot}")
        return True

    # -- key files --------------------------------------------------------------------
    def try_keyfiles(self):
        """True: open; False: a key device may still come (look again later); None: no key."""
        waiting = False
        for path, device in self.all.keys_for(self.uuid, self.node):
            key = key_file(self.context, path, device, self.state)
            if key is None:
                limit = self.opts.keyfile_timeout if self.opts.keyfile_timeout is not None else KEYDEV_WAIT
                if device is not None and not self.waited(f"key {path}:{device}", limit):
                    waiting = True
                elif device is not None:
                    self.log.warning(f"luks: the key device {device} of {self.node} did not appear within "
                                     f"{limit:g} s: asking for the passphrase")
                continue
            rc, out = run_with_secret(self.context, open_argv(self.node, self.name, self.opts, key))
            if rc == 0:
                self.opened(f"the keyfile {path}" + (f" on {device}" if device else ""), out)
                forget_keyfile_if_done(self.context, self.all, path, device, self.state)
                return True
            if _memory_error(out):
                raise GiveUp(memory_message(self.node, self.meta))
            self.log.warning(f"luks: the keyfile {path} does not open {self.node}: {_first_line(out)}")
        return False if waiting else None

    # -- tokens -----------------------------------------------------------------------
    def token_types(self):
        from pyinit import luks2
        return [t for t in (luks2.tokens(self.meta) if self.meta else []) if t.type in TOKEN_KINDS]

    def try_tokens(self):
        """True: open; False: a token device may still come (look again later); None: no
        token could open it (go on to passphrases)."""
        toks = self.token_types()
        if not toks:
            return None
        if not os.path.exists(SYSTEMD_CRYPTSETUP):
            self.once("no-token-support", f"luks: {self.node} has a {', '.join(sorted({t.type for t in toks}))} "
                      "token, but this image cannot use tokens (build it with --hook luks-tokens)")
            return None
        for tok in toks:
            kind = TOKEN_KINDS[tok.type]
            setting = self.opts.tpm2_device if kind == "TPM2" else self.opts.fido2_device
            if setting == "":
                continue  # tpm2-device= / fido2-device= with no value: this token is off
            device = find_tpm2(setting) if kind == "TPM2" else find_fido2(setting)
            if device is None:
                if not self.waited(f"token {tok.id}", self.opts.token_timeout):
                    return False
                self.once(f"token-missing-{tok.id}",
                          f"luks: no {kind} device appeared within {self.opts.token_timeout:g} s "
                          f"({kind.lower()}-device={setting or 'auto'}, token-timeout=): {self.node}'s "
                          f"{tok.type} token (keyslots {','.join(tok.keyslots)}) cannot be used")
                continue
            if self.attach_with_token(tok, kind, device):
                return True
        return None

    def attach_with_token(self, tok, kind, device):
        from pyinit import askpass
        options = [f"{kind.lower()}-device={device}", "headless", "tries=1", "token-timeout=5s",
                   *self.opts.systemd_options()]
        # its messages on stderr (captured here) rather than in a journal that is not there
        # at debug level: at info it says only "Too many attempts to activate" when the PCRs
        # do not match; the telling line is picked below (_first_line), the rest is rd.debug's
        env = dict(self.context.env, SYSTEMD_LOG_TARGET="console", SYSTEMD_LOG_COLOR="0",
                   SYSTEMD_LOG_LEVEL="debug")
        pin = None
        if tok.needs_pin:
            if self.opts.headless:
                self.log.warning(f"luks: {self.node}'s {kind} token needs a PIN, and headless forbids asking")
                return False
            pin = askpass.ask(f"Enter {kind} PIN for {self.node} ({self.name}): ", consoles(self.context),
                              self.opts.timeout, self.log)
            if pin is None:
                return False
            # systemd-cryptsetup takes the PIN from $PIN; an environment holds str copies,
            # which live only in this child's exec.
            env["PIN"] = pin.decode("utf-8", "replace")
        argv = [SYSTEMD_CRYPTSETUP, "attach", self.name, self.node, "none", ",".join(options)]
        try:
            rc, out = run_with_secret(self.context, argv, env=env)
        finally:
            askpass.wipe(pin)
            env.pop("PIN", None)
        if rc == 0 and os.path.exists(f"/dev/mapper/{self.name}"):
            return self.opened(f"the {kind} token {tok.id} (systemd-cryptsetup, {device})")
        self.log.warning(f"luks: the {kind} token {tok.id} did not open {self.node}: {_first_line(out)}")
        self.log.debug(f"luks: {' '.join(argv)}:")
        for line in out.splitlines()[-200:]:
            self.log.debug(f"luks:   {line}")
        return False

    def once(self, key, message):
        said = self.state.setdefault("said", set())
        if (self.uuid, key) not in said:
            said.add((self.uuid, key))
            self.log.warning(message)

    # -- passphrases ------------------------------------------------------------------
    def try_passphrase(self, secret):
        rc, out = run_with_secret(self.context, open_argv(self.node, self.name, self.opts), secret)
        if rc == 0:
            return True, out
        if _memory_error(out):
            raise GiveUp(memory_message(self.node, self.meta))
        return False, out

    def try_cached(self):
        for secret in reversed(self.state.get("passphrases", [])):
            ok, out = self.try_passphrase(secret)
            if ok:
                return self.opened("a passphrase that opened an earlier device", out)
        return False

    def prompt(self):
        from pyinit import askpass, luks2
        if self.meta is not None:
            problem = luks2.memory_problem(self.meta, _mem_available(), self.node)
            if problem:
                raise GiveUp(problem)  # no passphrase could work: do not ask for one
        if self.opts.headless:
            raise GiveUp(f"{self.node}: no key file or token opened it, and headless forbids a prompt")
        tries = self.opts.tries
        attempt = 0
        while tries == 0 or attempt < tries:
            attempt += 1
            secret = askpass.ask(f"Enter passphrase for {self.node} ({self.name}): ", consoles(self.context),
                                 self.opts.timeout, self.log)
            if secret is None:
                raise GiveUp(f"{self.node}: no passphrase was typed"
                             + (f" within {self.opts.timeout:g} s" if self.opts.timeout else " (end of input)"))
            try:
                ok, out = self.try_passphrase(secret)
            except BaseException:
                askpass.wipe(secret)
                raise
            if ok:
                remember(self.state, secret)
                return self.opened("a passphrase", out)
            askpass.wipe(secret)
            of = f" of {tries}" if tries else ""
            self.log.warning(f"luks: wrong passphrase for {self.node} (try {attempt}{of}): {_first_line(out)}")
        raise GiveUp(f"could not unlock {self.node} (LUKS UUID {self.uuid}) after {tries} passphrase tries")

    def unlock(self):
        """True when open, False when it must wait for a device; raises GiveUp."""
        for step in (self.try_keyfiles, self.try_tokens):
            got = step()
            if got is not None:
                return bool(got)
        return self.try_cached() or self.prompt()


def _mem_available():
    from pyinit import luks2
    try:
        with open("/proc/meminfo") as f:
            return luks2.mem_available_kib(f.read())
    except OSError:
        return None


def remember(state, secret):
    """Keep a passphrase that opened a device for the next ones (systemd's password cache);
    a copy already kept is not kept twice."""
    from pyinit import askpass
    cache = state.setdefault("passphrases", [])
    for s in cache:
        if s == secret:
            askpass.wipe(secret)
            return
    cache.append(secret)


def find_tpm2(setting, sys_class="/sys/class", dev="/dev"):
    """The TPM2 device node to use: the path given, or (auto) the first resource manager
    /dev/tpmrmN the kernel registered; None when not there (yet)."""
    if setting and setting != "auto":
        return setting if os.path.exists(setting) else None
    try:
        names = sorted(os.listdir(os.path.join(sys_class, "tpmrm")))
    except OSError:
        return None
    for n in names:
        if os.path.exists(os.path.join(dev, n)):
            return os.path.join(dev, n)
    return None


def find_fido2(setting, sys_class="/sys/class", dev="/dev"):
    """"auto" when a FIDO security key (a hidraw device whose report descriptor has the FIDO
    usage page) is there, the path when given and present; None when none is there (yet)."""
    if setting and setting != "auto":
        return setting if os.path.exists(setting) else None
    base = os.path.join(sys_class, "hidraw")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return None
    for n in names:
        try:
            with open(os.path.join(base, n, "device", "report_descriptor"), "rb") as f:
                if FIDO_USAGE_PAGE in f.read(4096) and os.path.exists(os.path.join(dev, n)):
                    return "auto"
        except OSError:
            continue
    return None


def _packed(path, device):
    return device is None and not path.startswith(KEYDEV_PREFIX)


def key_users(opts, path):
    """UUIDs of the devices that may use the image's key file `path`; None when any device
    found may (rd.luks.key=PATH with no rd.luks.uuid): then it stays until pre-mount."""
    users = set()
    for uuid, p, d in opts.keys:
        if p == path and d is None:
            if uuid is None:
                if not opts.uuids:
                    return None
                users.update(opts.uuids)
            else:
                users.add(uuid)
    for e in opts.crypttab:
        if e.keyfile_path == path and e.keyfile_device is None:
            if e.uuid is None:
                return None
            users.add(e.uuid)
    return users


def forget_keyfile_if_done(context, opts, path, device, state):
    """Unlink a key file packed in the image once every device it opens is open: a rescue
    session or anything running later cannot read it."""
    if not _packed(path, device):
        return
    users = key_users(opts, path)
    if users is None:
        return
    given_up = state.get("given_up", set())
    if any(u not in given_up and not os.path.exists(f"/dev/mapper/{opts.name_for(u)}") for u in users):
        return
    unlink_key(context, path)


def unlink_key(context, path):
    try:
        os.unlink(path)
        context.log.info(f"luks: removed the key file {path} from the initramfs: the devices it opens are open")
    except FileNotFoundError:
        pass
    except OSError as e:
        context.log.warning(f"luks: cannot remove the key file {path}: {e.strerror}")


def forget_secrets(context, opts, state):
    """pre-mount: the root is found; wipe cached passphrases, unlink the packed key files."""
    from pyinit import askpass
    cache = state.pop("passphrases", [])
    for s in cache:
        askpass.wipe(s)
    paths = {p for _, p, d in opts.keys if _packed(p, d)}
    paths |= {e.keyfile_path for e in opts.crypttab if e.keyfile_path and _packed(e.keyfile_path, e.keyfile_device)}
    for p in sorted(paths):
        if os.path.isfile(p):
            unlink_key(context, p)
    release_key_devices(state)
    if cache:
        context.log.info(f"luks: forgot {len(cache)} cached passphrase(s)")


def unlock(context, node, uuid, name, opts, state):
    try:
        return Device(context, node, uuid, name, opts, state).unlock()
    except GiveUp as e:
        if opts.options_for(uuid, node).nofail:
            state.setdefault("given_up", set()).add(uuid)
            context.log.warning(f"luks: {e} (nofail: the boot goes on without /dev/mapper/{name})")
            return False
        raise HookFailed(str(e)) from None
    finally:
        release_key_devices(state)


def read_crypttab(path=CRYPTTAB):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 20)
    except OSError:
        return None


def run(context):
    try:
        opts = parse_options(context.cmdline, read_crypttab())
    except ValueError as e:
        raise HookFailed(str(e)) from None
    state = context.boot.__dict__.setdefault("luks_state", {})
    if context.stage == "initqueue/finished":
        given_up = state.get("given_up", set())
        return not opts.enabled or all(os.path.exists(f"/dev/mapper/{opts.name_for(u)}")
                                       for u in opts.required() if u not in given_up)
    if context.stage == "pre-mount":
        forget_secrets(context, opts, state)
        return
    if not opts.enabled:
        return
    for problem in opts.crypttab_problems:
        if ("crypttab", problem) not in state.setdefault("said", set()):
            state["said"].add(("crypttab", problem))
            context.log.warning(f"luks: {CRYPTTAB} {problem}: that line is ignored")
    os.makedirs("/run/cryptsetup", exist_ok=True)
    for node, uuid in candidates(context.devices):
        if not opts.wanted(uuid, node) or uuid in state.get("given_up", ()):
            continue
        name = opts.name_for(uuid, node)
        if os.path.exists(f"/dev/mapper/{name}"):
            continue
        unlock(context, node, uuid, name, opts, state)
