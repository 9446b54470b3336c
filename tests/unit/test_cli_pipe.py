"""The command line as a shell pipeline sees it: `pyinit-mkinitramfs ls IMG | head` stops
quietly when head has read enough, with no "error: None: Broken pipe"."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mkinitramfs import compress, cpio
from mkinitramfs.image import Image

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_ls_into_a_closed_pipe_says_nothing(tmp_path):
    img = Image()
    for i in range(3000):  # more listing than a pipe buffer holds
        img.add_file(f"/usr/share/x/file-{i:05d}", data=b"x")
    image = tmp_path / "initrd.img"
    image.write_bytes(compress.compress(cpio.write(img), "none"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(f"'{sys.executable}' -m mkinitramfs ls '{image}' | head -n 2",
                       shell=True, capture_output=True, text=True, env=env, check=False)
    assert len(r.stdout.splitlines()) == 2
    assert r.stderr == "", r.stderr
