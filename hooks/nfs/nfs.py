"""An NFS root, mounted by the kernel's own NFS client (mount(2) with text options: no
mount.nfs, no rpcbind, no statd in the image).

    root=nfs:SERVER:/PATH[:OPTIONS]      NFS, version negotiated (4.2, 4.1, 4.0, then 3)
    root=nfs4:SERVER:/PATH[:OPTIONS]     NFSv4 (4.2, 4.1, 4.0)
    root=/dev/nfs nfsroot=SERVER:/PATH[,OPTIONS]    the kernel's own spelling (also root=nfs)

OPTIONS are NFS mount options (port=, vers=, proto=, timeo=...); ro/rw and rootflags= apply
as for any root. NFSv3 gets `nolock` unless told otherwise: there is no statd here.

    rd.nfs.timeout=SECONDS     how long the mount may take, every version tried (default 60)

mount(2) of a server that never answers sleeps in the kernel, where no signal of PID 1's
own can end it: the mount runs in a child (pyinit.reaper.call_with_deadline), which is
killed at the timeout, and the hook fails naming the server.

At the cmdline stage the hook claims root= (pyinit then waits for no block device) and asks
for the network (the network hook configures ip=, or DHCP when there is no ip=); at the
mount stage it mounts NEWROOT.
"""
import functools
import os
import time

from pyinit.hooks import HookFailed

VERSIONS = {"nfs": ("4.2", "4.1", "4.0", "3"), "nfs4": ("4.2", "4.1", "4.0")}
MOUNT_TIMEOUT = 60.0


class NfsRoot:
    __slots__ = ("fstype", "options", "path", "server")

    def __init__(self, fstype, server, path, options):
        self.fstype, self.server, self.path, self.options = fstype, server, path, list(options)

    def __eq__(self, other):
        if not isinstance(other, NfsRoot):
            return NotImplemented  # not an AttributeError when compared with None or a string
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    # compared by value and mutable: unhashable, the data model's way (typeshed marks list's
    # __hash__ the same, with the same ignore: mypy wants a callable there)
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self):
        return f"NfsRoot({self.fstype}, {self.server}, {self.path}, {self.options})"


def _split_server(text, what):
    """"SERVER:/PATH" -> (server, path); [IPv6] servers keep their colons."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{what}: unclosed [ in {text!r}")
        server, rest = text[1:end], text[end + 1:]
        if not rest.startswith(":"):
            raise ValueError(f"{what}: expected SERVER:/PATH")
        return server, rest[1:]
    server, sep, path = text.partition(":")
    if not sep:
        raise ValueError(f"{what}: expected SERVER:/PATH, got {text!r}")
    return server, path


def parse_root(root, nfsroot=None):
    """root= (and nfsroot=) -> NfsRoot, or None when the root is not NFS. Pure; ValueError
    naming the word for a malformed one."""
    if root is None:
        return None
    if root in ("/dev/nfs", "nfs"):
        if not nfsroot:
            raise ValueError(f"root={root} needs nfsroot=SERVER:/PATH[,OPTIONS]")
        spec, _, opts = nfsroot.partition(",")
        if ":" not in spec:
            raise ValueError(f"nfsroot={nfsroot}: no server (SERVER:/PATH); the server from DHCP is not supported")
        server, path = _split_server(spec, f"nfsroot={nfsroot}")
        fstype, options = "nfs", [o for o in opts.split(",") if o]
    else:
        kind, sep, rest = root.partition(":")
        if not sep or kind not in ("nfs", "nfs4"):
            return None
        server, rest = _split_server(rest, f"root={root}")
        path, _, opts = rest.partition(":")
        fstype, options = kind, [o for o in opts.split(",") if o]
    if not server:
        raise ValueError(f"root={root}: empty server")
    if not path.startswith("/"):
        raise ValueError(f"root={root}: the path {path!r} must be absolute")
    return NfsRoot(fstype, server, path, options)


def attempts(nfs, readonly):
    """[(fstype, data)] to try in order: the versions to negotiate, the options of each."""
    opts = [o for o in nfs.options if o not in ("ro", "rw")]
    given = [o.split("=", 1)[1] for o in opts if o.startswith(("vers=", "nfsvers="))]
    versions = given[-1:] or VERSIONS[nfs.fstype]
    opts = [o for o in opts if not o.startswith(("vers=", "nfsvers="))]
    out = []
    for v in versions:
        extra = [f"vers={v}"]
        if v.startswith("2") or v == "3":
            if not any(o in ("lock", "nolock") for o in opts):
                extra.append("nolock")
            fstype = "nfs"
        else:
            fstype = "nfs4"
        out.append((fstype, ",".join(opts + extra)))
    return out


def resolve(server):
    import socket
    try:
        socket.inet_pton(socket.AF_INET, server)
        return server
    except OSError:
        pass
    try:
        socket.inet_pton(socket.AF_INET6, server)
        return server
    except OSError:
        pass
    try:
        return socket.getaddrinfo(server, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except OSError as e:
        raise HookFailed(f"cannot resolve the NFS server {server}: {e}") from None


def mount(context, nfs, timeout=None):
    from pyinit import reaper
    from pyinit import syscalls as sc
    from pyinit.cmdline import parse_seconds
    from pyinit.errors import Deadline
    from pyinit.mounts import parse_options
    c = context.cmdline
    flags, extra = parse_options(c.rootflags or "")
    readonly = (c.readonly and "rw" not in nfs.options) or "ro" in nfs.options
    flags = (flags | sc.MS_RDONLY) if readonly else (flags & ~sc.MS_RDONLY)
    addr = resolve(nfs.server)
    source = f"[{nfs.server}]:{nfs.path}" if ":" in nfs.server else f"{nfs.server}:{nfs.path}"
    os.makedirs(context.newroot, exist_ok=True)
    if timeout is None:
        timeout = parse_seconds(c.get("rd.nfs.timeout")) or MOUNT_TIMEOUT
    end = time.monotonic() + timeout
    errors: list[str] = []
    for fstype, version_opts in attempts(nfs, readonly):
        data = ",".join(x for x in (version_opts, extra, f"addr={addr}") if x)
        try:
            # in a child with a deadline: a server that never answers leaves mount(2) asleep for good
            reaper.call_with_deadline(functools.partial(sc.mount, source, context.newroot, fstype, flags, data),
                                      max(0.1, end - time.monotonic()))
        except Deadline:
            raise HookFailed(f"cannot mount {source}: the server did not answer within {timeout:g} s "
                             f"(rd.nfs.timeout=); tried: " + "; ".join([*errors, f"{fstype} {data}"])) from None
        except OSError as e:
            errors.append(f"{fstype} {data}: {os.strerror(e.errno) if e.errno else e}")
            continue
        context.log.notice(f"nfs: mounted {source} on {context.newroot} ({fstype}, {data}, "
                           f"{'read-only' if readonly else 'read-write'})")
        return
    raise HookFailed(f"cannot mount {source}: " + "; ".join(errors))


def run(context):
    c = context.cmdline
    try:
        nfs = parse_root(c.root, c.get("nfsroot"))
    except ValueError as e:
        raise HookFailed(str(e)) from None
    if nfs is None:
        return
    if context.stage == "cmdline":
        context.claim_root("nfs")
        context.boot.need_network = True
        return
    mount(context, nfs)
