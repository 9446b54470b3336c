"""pyinit-mkinitramfs, the entry point: `update-initramfs` takes initramfs-tools' command line
(update_initramfs.py, the /usr/sbin/update-initramfs of the Debian package); every other
command is cli.py's."""
from __future__ import annotations

import sys

from mkinitramfs import cli, update_initramfs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["update-initramfs"]:
        return update_initramfs.main(argv[1:])
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
