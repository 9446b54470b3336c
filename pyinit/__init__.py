"""pyinit: a PID 1 for the Linux initramfs. Helpers every module of the boot path shares
live here, where importing them costs nothing more: the package is loaded anyway."""


def read_text(path: str) -> str:
    """The whole text of a file, or "" when it cannot be read (sysfs and procfs files vanish
    as devices come and go; a missing file is an answer, not an error, here). Bytes that are
    not UTF-8 come back as surrogates (the file system's own rule), never as an exception."""
    try:
        # Binary and one decode: a text-mode open() builds a TextIOWrapper and runs the
        # UTF-8 codec's Python-level incremental decoder, 15-20 ms of every boot under TCG.
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return ""
