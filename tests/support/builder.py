"""The builder as the tests run it: from this checkout, in a subprocess, as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# the checkout under test (tests/support/builder.py -> the folder holding tests/)
REPO = Path(__file__).resolve().parents[2]

# what an ext4 root on virtio-blk needs; virtio_pci is built in from 6.12 on
BASE_MODULES = {"6.1": "virtio_pci,virtio_blk,ext4", "6.12": "virtio_blk,ext4", "7.x": "virtio_blk,ext4"}


def run_builder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The builder as users run it, in a subprocess; `python -m mkinitramfs` from this
    checkout, so the code under test is this tree's (tests/unit checks the console script).
    `env` adds to the environment (e.g. SOURCE_DATE_EPOCH)."""
    return subprocess.run([sys.executable, "-m", "mkinitramfs", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env} if env else None, check=False)
