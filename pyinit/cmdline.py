"""The kernel command line: text in, a read-only `Cmdline` out. Pure: no I/O here.

Tokenising follows the kernel's own `next_arg()` (lib/cmdline.c) byte for byte: a word may
start with a double quote, a quote anywhere toggles "inside quotes" so spaces do not split,
the first '=' splits name from value, and one pair of quotes around the value (or around
the whole word) is dropped. Everything after a bare `--` belongs to init, not the kernel.

Precedence of read-only/read-write for the root mount, documented in README.md:
  1. read-only by default (like dracut and initramfs-tools);
  2. then the words of rootflags= in order (`rootflags=rw` makes it read-write);
  3. then the last of the kernel's `ro` / `rw` words, which wins over rootflags (systemd's rule).
"""

# The kernel's isspace() (lib/ctype.c marks \t \n \v \f \r, space, and byte 0xA0). The
# kernel works on bytes: tokenize() runs next_arg() over the line's bytes, each held in one
# character (latin-1), so a UTF-8 no-break space (C2 A0) splits a word where the kernel does.
_SPACES = " \t\n\v\f\r\xa0"


def next_arg(args: str) -> tuple[str, str | None, str]:
    """One step of the kernel's next_arg(): returns (param, value or None, rest).

    `args` holds one byte per character (see tokenize()). A faithful model: the kernel
    writes NULs into its buffer to end the name, the value and the word; we do the same on
    a list of characters and read C strings back out.
    `args` must not start with a space (callers skip spaces, as the kernel does).
    """
    buf = [*args, "\0"]
    a = 0
    in_quote = quoted = False
    if buf[0] == '"':
        a = 1
        in_quote = quoted = True
    equals = 0
    i = 0
    while buf[a + i] != "\0":
        c = buf[a + i]
        if c in _SPACES and not in_quote:
            break
        if equals == 0 and c == "=":
            equals = i
        if c == '"':
            in_quote = not in_quote
        i += 1
    value_at = None
    if equals:
        buf[a + equals] = "\0"
        value_at = a + equals + 1
        # Don't include quotes in the value.
        if buf[value_at] == '"':
            value_at += 1
            if buf[a + i - 1] == '"':
                buf[a + i - 1] = "\0"
    if quoted and i > 0 and buf[a + i - 1] == '"':
        buf[a + i - 1] = "\0"
    if buf[a + i] != "\0":
        buf[a + i] = "\0"
        nxt = a + i + 1
    else:
        nxt = a + i
    rest = "".join(buf[nxt:-1]).lstrip(_SPACES)
    return _cstr(buf, a), (None if value_at is None else _cstr(buf, value_at)), rest


def _cstr(buf: list[str], start: int) -> str:
    end = buf.index("\0", start)
    return "".join(buf[start:end])


def _as_bytes(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def _as_text(raw: str) -> str:
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")


def tokenize(text: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split a whole command line: ([(param, value), ...] for the kernel, [args after --])."""
    params: list[tuple[str, str | None]] = []
    # The kernel's command line is a C string: nothing after a NUL exists.
    rest = _as_bytes(text.split("\0", 1)[0]).lstrip(_SPACES)
    while rest:
        param, value, rest = next_arg(rest)
        if param == "--" and value is None:
            return params, _init_args(rest)
        params.append((_as_text(param), None if value is None else _as_text(value)))
    return params, []


def _init_args(rest: str) -> list[str]:
    out = []
    while rest:
        param, value, rest = next_arg(rest)
        out.append(_as_text(param if value is None else f"{param}={value}"))
    return out


_TRUE = {"1", "y", "yes", "on", "true", ""}
_FALSE = {"0", "n", "no", "off", "false"}


def parse_bool(value: str | None, default: bool = True) -> bool:
    """dracut's getargbool: a bare word is true, 0/no/off/false are false."""
    if value is None:
        return default
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return default


def parse_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        s = float(value)
    except ValueError:
        return None
    return s if s >= 0 else None


class Cmdline:
    """The parsed command line. Attributes are plain values; read-only."""

    __slots__ = ("consoles", "init", "init_args", "loglevel", "params", "quiet", "raw", "rd", "readonly",
                 "root", "rootdelay", "rootflags", "rootfstype", "rootwait", "rootwait_timeout")
    params: tuple[tuple[str, str | None], ...]  # (name, value or None), in order
    init_args: tuple[str, ...]  # the words after --
    root: str | None
    rootfstype: str | None
    rootflags: str
    readonly: bool
    rootwait: bool
    rootwait_timeout: float | None
    rootdelay: float
    init: str | None
    rd: dict[str, tuple[str | None, ...]]  # every rd.* word's values
    quiet: bool
    loglevel: int | None
    consoles: tuple[str, ...]  # console= values
    raw: str  # the text as read

    def __init__(self, *, params: tuple[tuple[str, str | None], ...], init_args: tuple[str, ...], root: str | None,
                 rootfstype: str | None, rootflags: str, readonly: bool, rootwait: bool,
                 rootwait_timeout: float | None, rootdelay: float, init: str | None,
                 rd: dict[str, tuple[str | None, ...]], quiet: bool, loglevel: int | None,
                 consoles: tuple[str, ...], raw: str) -> None:
        values = {"params": params, "init_args": init_args, "root": root, "rootfstype": rootfstype,
                  "rootflags": rootflags, "readonly": readonly, "rootwait": rootwait,
                  "rootwait_timeout": rootwait_timeout, "rootdelay": rootdelay, "init": init, "rd": rd,
                  "quiet": quiet, "loglevel": loglevel, "consoles": consoles, "raw": raw}
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Cmdline is read-only")

    def __repr__(self) -> str:
        return "Cmdline(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if n != "raw") + ")"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the last `name=` on the line (like the kernel: the last one wins)."""
        found = default
        for p, v in self.params:
            if p == name:
                found = v
        return found

    def get_all(self, name: str) -> list[str | None]:
        return [v for p, v in self.params if p == name]

    def has(self, name: str) -> bool:
        return any(p == name for p, _ in self.params)

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean rd.* style option: absent -> default; bare -> True; name=0 -> False."""
        if not self.has(name):
            return default
        return parse_bool(self.get(name), True)

    def rd_list(self, name: str) -> list[str]:
        """Every value of a repeatable option, commas split too (`rd.x=a,b rd.x=c`)."""
        out: list[str] = []
        for v in self.get_all(name):
            if v:
                out.extend(x for x in v.split(",") if x)
        return out


def parse(text: str) -> Cmdline:
    params, init_args = tokenize(text)
    values: dict[str, str | None] = {}
    readonly_word = None
    rd: dict[str, list[str | None]] = {}
    consoles = []
    for p, v in params:
        values[p] = v
        if v is None and p in ("ro", "rw"):
            readonly_word = p == "ro"
        if p.startswith("rd."):
            rd.setdefault(p, []).append(v)
        if p == "console" and v is not None:
            consoles.append(v)
    rootflags = values.get("rootflags") or ""
    readonly = True
    for opt in rootflags.split(","):
        if opt == "ro":
            readonly = True
        elif opt == "rw":
            readonly = False
    if readonly_word is not None:
        readonly = readonly_word
    rootwait = "rootwait" in values
    rootwait_timeout = parse_seconds(values.get("rootwait"))
    loglevel = None
    level = values.get("loglevel")
    if level is not None:
        try:
            loglevel = int(level)
        except ValueError:
            loglevel = None
    return Cmdline(
        params=tuple(params),
        init_args=tuple(init_args),
        root=values.get("root") or None,
        rootfstype=values.get("rootfstype") or None,
        rootflags=rootflags,
        readonly=readonly,
        rootwait=rootwait,
        rootwait_timeout=rootwait_timeout,
        rootdelay=parse_seconds(values.get("rootdelay")) or 0.0,
        init=values.get("init") or None,
        rd={k: tuple(v) for k, v in rd.items()},
        quiet="quiet" in values,
        loglevel=loglevel,
        consoles=tuple(consoles),
        raw=text,
    )


DEFAULT_ROOT_TIMEOUT = 30.0  # without rootwait; dracut waits rd.retry/rd.timeout similarly


def root_timeout(c: Cmdline) -> float | None:
    """How long to wait for the root device: rootwait=N, else rd.timeout=N, else forever
    with a bare rootwait, else DEFAULT_ROOT_TIMEOUT. None means forever."""
    if c.rootwait_timeout is not None:
        return c.rootwait_timeout
    rd_timeout = parse_seconds(c.get("rd.timeout"))
    if rd_timeout:
        return rd_timeout
    if c.rootwait:
        return None
    return DEFAULT_ROOT_TIMEOUT


def read(path: str = "/proc/cmdline") -> Cmdline:
    with open(path, "rb") as f:
        return parse(f.read().decode("utf-8", "surrogateescape"))


def read_or_empty(path: str = "/proc/cmdline") -> Cmdline:
    """read(), or an empty command line when /proc/cmdline cannot be read or parsed (the
    rescue and the emergency action must decide something even then)."""
    try:
        return read(path)
    except (OSError, ValueError):
        return parse("")
