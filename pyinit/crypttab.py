"""/etc/crypttab (crypttab(5)) and the unlock options of rd.luks.options=: pure functions.

One home for these rules: the builder (--host-only picks the root chain's entries of the
machine's /etc/crypttab) and the luks hook (reads the image's /etc/crypttab and the command
line) both use them.

A line is `NAME DEVICE [KEYFILE [OPTIONS]]`, fields separated by blanks, `#` starts a comment
line. DEVICE is a path or UUID=/LABEL=/PARTUUID=/PARTLABEL=. KEYFILE `none`, `-` or absent
means no key file (a passphrase, or a token); `/path:DEVICE` is a key file on another device
(systemd's form). OPTIONS are comma-separated, values after `=`; a field may be quoted
("..." or '...') to hold blanks.

Options understood (systemd's names and meaning); others are kept in `unknown` and ignored
with a warning (Debian's `luks`, `initramfs`, `keyscript=` are known and ignored silently):

    discard                      allow discards through dm-crypt (--allow-discards)
    readonly, read-only          open read-only
    same-cpu-crypt, submit-from-crypt-cpus, no-read-workqueue, no-write-workqueue
                                 dm-crypt performance flags, passed to cryptsetup
    keyfile-offset=N, keyfile-size=N
                                 bytes to skip in / to read from the key file
    keyfile-timeout=T            how long to wait for the key file's device, then ask
    header=PATH                  a detached LUKS header (in the image)
    tries=N                      passphrase prompts before giving up (default 3; 0: forever)
    timeout=T                    how long one prompt waits for an answer (0: forever)
    tpm2-device=auto|PATH        unlock with the header's systemd-tpm2 token
    tpm2-device=                 (empty) do not use the TPM2 token
    fido2-device=auto|PATH       unlock with the header's systemd-fido2 token
    token-timeout=T              how long to wait for a TPM2/FIDO2 device (default 30 s)
    headless                     never prompt: tokens and key files only
    nofail                       a device that cannot be unlocked does not stop the boot
    noauto                       not unlocked at boot unless named on the command line

T is a systemd time span: `30`, `30s`, `500ms`, `2min`, `1h`, `1min 30s`.
"""
from __future__ import annotations

from pyinit.errors import CrypttabError

DEFAULT_TRIES = 3
DEFAULT_TOKEN_TIMEOUT = 30.0
FLAGS = {"discard", "readonly", "read-only", "same-cpu-crypt", "submit-from-crypt-cpus",
         "no-read-workqueue", "no-write-workqueue", "headless", "nofail", "noauto"}
VALUED = {"keyfile-offset", "keyfile-size", "keyfile-timeout", "header", "tries", "timeout",
          "tpm2-device", "fido2-device", "token-timeout"}
# Words of Debian's cryptsetup-initramfs and of systemd that change nothing here.
IGNORED = {"luks", "initramfs", "keyscript", "cipher", "size", "hash", "x-systemd.device-timeout",
           "tpm2-pcrs", "tpm2-signature", "tpm2-measure-pcr", "tpm2-measure-bank", "fido2-cid", "fido2-rp",
           "x-initrd.attach", "_netdev", "plain", "bitlk", "tcrypt", "password-echo", "verify",
           "key-slot", "pkcs11-uri", "try-empty-password", "link-volume-key", "sector-size", "offset", "skip"}
_UNITS = (("usec", 1e-6), ("us", 1e-6), ("msec", 1e-3), ("ms", 1e-3), ("seconds", 1.0), ("second", 1.0),
          ("sec", 1.0), ("s", 1.0), ("minutes", 60.0), ("minute", 60.0), ("min", 60.0), ("m", 60.0),
          ("hours", 3600.0), ("hour", 3600.0), ("hr", 3600.0), ("h", 3600.0))


def parse_timespan(text: str) -> float:
    """A systemd time span -> seconds ("30" is seconds). Raises ValueError."""
    s = text.strip().replace(" ", "")
    if not s:
        raise ValueError("empty time span")
    total, i = 0.0, 0
    while i < len(s):
        j = i
        while j < len(s) and (s[j].isdigit() or s[j] == "."):
            j += 1
        if j == i:
            raise ValueError(f"{text!r} is not a time span (e.g. 30s, 2min)")
        number = float(s[i:j])
        k = j
        while k < len(s) and s[k].isalpha():
            k += 1
        unit = s[j:k]
        factor = 1.0 if not unit else dict(_UNITS).get(unit)
        if factor is None:
            raise ValueError(f"{text!r}: unknown time unit {unit!r}")
        total += number * factor
        i = k
    return total


def split_fields(line: str) -> list[str]:
    """Blank-separated fields, with "..." / '...' quoting and backslash escapes."""
    out: list[str] = []
    cur: list[str] = []
    quote = None
    have = False
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == quote:
                quote = None
            elif ch == "\\" and quote == '"' and i + 1 < len(line):
                i += 1
                cur.append(line[i])
            else:
                cur.append(ch)
        elif ch in "\"'":
            quote, have = ch, True
        elif ch == "\\" and i + 1 < len(line):
            i += 1
            cur.append(line[i])
            have = True
        elif ch.isspace():
            if have or cur:
                out.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(ch)
            have = True
        i += 1
    if quote:
        raise CrypttabError(f"unterminated {quote} quote")
    if have or cur:
        out.append("".join(cur))
    return out


class Options:
    """Unlock options (parsed, validated). `given` names the options actually written, so
    that command-line options can be laid over a crypttab line's (`merged`)."""

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.keyfile_offset = 0
        self.keyfile_size = 0
        self.keyfile_timeout: float | None = None
        self.header: str | None = None
        self.tries = DEFAULT_TRIES
        self.timeout: float | None = None  # None or 0: wait forever
        self.tpm2_device: str | None = None  # None: use the token when the header has one ("auto")
        self.fido2_device: str | None = None
        self.token_timeout = DEFAULT_TOKEN_TIMEOUT
        self.unknown: list[str] = []
        self.given: list[str] = []

    def __repr__(self) -> str:
        return f"Options({','.join(self.given)})"

    @property
    def discard(self) -> bool:
        return "discard" in self.flags

    @property
    def headless(self) -> bool:
        return "headless" in self.flags

    @property
    def nofail(self) -> bool:
        return "nofail" in self.flags

    @property
    def readonly(self) -> bool:
        return bool(self.flags & {"readonly", "read-only"})

    def cryptsetup_args(self) -> list[str]:
        """The `cryptsetup open` flags these options ask for."""
        args = []
        if self.discard:
            args.append("--allow-discards")
        if self.readonly:
            args.append("--readonly")
        for flag, arg in (("same-cpu-crypt", "--perf-same_cpu_crypt"),
                          ("submit-from-crypt-cpus", "--perf-submit_from_crypt_cpus"),
                          ("no-read-workqueue", "--perf-no_read_workqueue"),
                          ("no-write-workqueue", "--perf-no_write_workqueue")):
            if flag in self.flags:
                args.append(arg)
        if self.header:
            args += ["--header", self.header]
        return args

    def systemd_options(self) -> list[str]:
        """The options systemd-cryptsetup attach takes from these (the token path)."""
        out = [f for f in sorted(self.flags) if f in {"discard", "readonly", "read-only", "same-cpu-crypt",
                                                      "submit-from-crypt-cpus", "no-read-workqueue",
                                                      "no-write-workqueue"}]
        if self.header:
            out.append(f"header={self.header}")
        return out


def _int(name: str, value: str, minimum: int = 0) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise CrypttabError(f"{name}={value}: not a whole number") from None
    if n < minimum:
        raise CrypttabError(f"{name}={value}: must be at least {minimum}")
    return n


def _span(name: str, value: str) -> float:
    try:
        return parse_timespan(value)
    except ValueError as e:
        raise CrypttabError(f"{name}={value}: {e}") from None


def parse_options(text: str | None, base: Options | None = None) -> Options:
    """"discard,tries=2" -> Options (on top of `base`, a copy). Raises CrypttabError."""
    import copy
    opts = copy.deepcopy(base) if base is not None else Options()
    for raw in (text or "").split(","):
        word = raw.strip()
        if not word:
            continue
        name, sep, value = word.partition("=")
        if name in FLAGS and not sep:
            opts.flags.add(name)
        elif name in VALUED:
            if not sep:
                raise CrypttabError(f"{name} needs a value ({name}=...)")
            if name == "keyfile-offset":
                opts.keyfile_offset = _int(name, value)
            elif name == "keyfile-size":
                opts.keyfile_size = _int(name, value, 1)
            elif name == "tries":
                opts.tries = _int(name, value)
            elif name in ("keyfile-timeout", "timeout", "token-timeout"):
                setattr(opts, name.replace("-", "_"), _span(name, value))
            elif name == "header":
                if not value.startswith("/"):
                    raise CrypttabError(f"header={value}: an absolute path to the detached header")
                opts.header = value
            elif name == "tpm2-device":
                opts.tpm2_device = value  # "" turns the token off
            elif name == "fido2-device":
                opts.fido2_device = value
        elif name in IGNORED:
            pass
        else:
            opts.unknown.append(word)
            continue
        if name not in opts.given:
            opts.given.append(name)
    return opts


class Entry:
    """One crypttab line."""

    def __init__(self, name: str, device: str, keyfile: str | None, options: Options, line: int = 0,
                 options_text: str = "") -> None:
        self.name, self.device, self.keyfile, self.options = name, device, keyfile, options
        self.line, self.options_text = line, options_text

    def __repr__(self) -> str:
        return f"Entry({self.name!r}, {self.device!r}, {self.keyfile!r}, {self.options_text!r})"

    @property
    def keyfile_path(self) -> str | None:
        return None if self.keyfile is None else self.keyfile.partition(":")[0]

    @property
    def keyfile_device(self) -> str | None:
        if self.keyfile is None:
            return None
        _, _, dev = self.keyfile.partition(":")
        return dev or None

    @property
    def uuid(self) -> str | None:
        """The LUKS UUID when DEVICE is UUID=... (lower case), else None."""
        if self.device[:5].upper() == "UUID=":
            return self.device[5:].strip().lower()
        if self.device.startswith("/dev/disk/by-uuid/"):
            return self.device[len("/dev/disk/by-uuid/"):].lower()
        return None

    def format(self) -> str:
        def q(s: str) -> str:
            if s and not any(c.isspace() or c in "\"'\\#" for c in s):
                return s
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return " ".join([q(self.name), q(self.device), q(self.keyfile or "none")]
                        + ([q(self.options_text)] if self.options_text else []))


def parse(text: str) -> tuple[list[Entry], list[str]]:
    """crypttab text -> (entries, problems). A bad line is skipped and named in `problems`
    (systemd's generator does the same: one bad line does not lose the others)."""
    entries: list[Entry] = []
    problems: list[str] = []
    seen: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            fields = split_fields(line)
            if len(fields) < 2 or len(fields) > 4:
                raise CrypttabError(f"expected NAME DEVICE [KEYFILE [OPTIONS]], got {len(fields)} fields")
            name, device = fields[0], fields[1]
            if "/" in name or name in (".", ".."):
                raise CrypttabError(f"volume name {name!r}: no '/' allowed (it becomes /dev/mapper/NAME)")
            if name in seen:
                raise CrypttabError(f"volume {name!r} is listed twice")
            keyfile = fields[2] if len(fields) > 2 else None
            if keyfile in ("none", "-", ""):
                keyfile = None
            if keyfile is not None and not keyfile.startswith("/"):
                raise CrypttabError(f"key file {keyfile!r}: an absolute path, or none")
            options_text = fields[3] if len(fields) > 3 else ""
            options = parse_options(options_text)
        except CrypttabError as e:
            problems.append(f"line {n}: {e}")
            continue
        seen.add(name)
        entries.append(Entry(name, device, keyfile, options, n, options_text))
    return entries, problems


def format_entries(entries: list[Entry]) -> str:
    head = "# written by pyinit-mkinitramfs from the build host's /etc/crypttab: the root's chain\n"
    return head + "".join(e.format() + "\n" for e in entries)


def cmdline_options(values: list[str | None]) -> tuple[str, dict[str, str]]:
    """rd.luks.options= values -> (options for every device, {uuid: options}).
    `rd.luks.options=UUID=opts` names one device (systemd); a value whose part before the
    first '=' is not a UUID applies to all (`rd.luks.options=tpm2-device=auto`)."""
    common: list[str] = []
    per: dict[str, str] = {}
    for value in values:
        if not value:
            continue
        head, sep, rest = value.partition("=")
        h = head.lower()
        if h.startswith("luks-"):
            h = h[5:]
        if sep and _looks_like_uuid(h):
            per[h] = ",".join(filter(None, [per.get(h, ""), rest]))
        else:
            common.append(value)
    return ",".join(common), per


def _looks_like_uuid(text: str) -> bool:
    hexdigits = text.replace("-", "")
    return len(hexdigits) == 32 and all(c in "0123456789abcdef" for c in hexdigits)
