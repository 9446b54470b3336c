"""The modprobe the kernel runs for its own requests while the initramfs is in charge.

pyinit points /proc/sys/kernel/modprobe at /usr/lib/pyinit/modprobe, a script that calls
`main()`, from pre-udev until it hands over (it is not at the kernel's default /sbin/modprobe:
the kernel asks for dozens of crypto modules while it boots, and each request would start an
interpreter for nothing). The kernel runs it as `modprobe -q -- <name>` for a filesystem (fs-xfs), a crypto
algorithm (crypto-crc32c), a block or char major, a network family... The name is resolved
and loaded by the same `kmod.ModuleDB` rules as PID 1's own loads, with modprobe.d and the
command line's module options and blacklists. Hooks may call it too:

    modprobe [-q] [-v] [-b] [-a] [--] NAME [PARAM=VALUE...]      (-a: every NAME, no params)

Start-up is kept cheap (it runs once per request, under the kernel's wait): this module
imports pyinit.kmod and pyinit.cmdline only, and logs one line to /dev/kmsg per request.
"""
import os
import sys


def _kmsg(text: str) -> None:
    try:
        fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, f"<6>pyinit-modprobe: {text}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_args(args: list[str]) -> tuple[dict[str, bool], list[str]]:
    flags = {"quiet": False, "verbose": False, "all": False}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i + 1:])
            break
        if a.startswith("-") and len(a) > 1 and not rest:
            for ch in a[1:] if not a.startswith("--") else ():
                if ch == "q":
                    flags["quiet"] = True
                elif ch == "v":
                    flags["verbose"] = True
                elif ch == "a":
                    flags["all"] = True
                elif ch == "b":
                    pass  # blacklists always apply to aliases here
                else:
                    raise ValueError(f"option -{ch} is not supported by pyinit's modprobe")
            if a in ("--quiet",):
                flags["quiet"] = True
            elif a in ("--all",):
                flags["all"] = True
            elif a.startswith("--") and a not in ("--quiet", "--all", "--use-blacklist", "--verbose"):
                raise ValueError(f"option {a} is not supported by pyinit's modprobe")
        else:
            rest.append(a)
        i += 1
    return flags, rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        flags, rest = parse_args(argv)
    except ValueError as e:
        print(f"modprobe: {e}", file=sys.stderr)
        return 2
    if not rest:
        print("modprobe: no module name given", file=sys.stderr)
        return 2
    from pyinit import kmod
    from pyinit.errors import ModuleError
    db = kmod.ModuleDB()
    names = rest if flags["all"] else rest[:1]
    if not any(db.resolve(n)[0] for n in names):
        # Most kernel requests are for things no image carries (crypto-*-all...): say so and
        # stop here, before parsing the command line.
        for n in names:
            _kmsg(f"{n}: no module in the image")
        if not flags["quiet"]:
            print(f"modprobe: {', '.join(names)}: no module in the image", file=sys.stderr)
        return 1
    from pyinit import cmdline
    try:
        with open("/proc/cmdline", "rb") as f:
            params, _ = cmdline.tokenize(f.read().decode("utf-8", "surrogateescape"))
    except OSError:
        params = []
    db.apply_cmdline(params)
    extra = "" if flags["all"] else " ".join(rest[1:])
    if extra:
        for name in db.resolve(rest[0])[0]:
            db.config.add_options(name, extra)
    status = 0
    for name in names:
        try:
            loaded = db.load(name)
        except ModuleError as e:
            status = 1
            if not flags["quiet"]:
                print(f"modprobe: {e}", file=sys.stderr)
            _kmsg(str(e))
            continue
        if loaded:
            _kmsg(f"loaded {', '.join(loaded)} for {name}")
        if flags["verbose"]:
            print(f"modprobe: {name}: " + (f"loaded {', '.join(loaded)}" if loaded else "already loaded"))
    return status


if __name__ == "__main__":
    sys.exit(main())
