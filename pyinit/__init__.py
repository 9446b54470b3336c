"""pyinit: a PID 1 for the Linux initramfs. Helpers every module of the boot path shares
live here, where importing them costs nothing more: the package is loaded anyway."""


def read_text(path: str) -> str:
    """The whole text of a file, or "" when it cannot be read (sysfs and procfs files vanish
    as devices come and go; a missing file is an answer, not an error, here)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
