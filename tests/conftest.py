"""Shared fixtures for all test tiers.

The markers (unit, container, vm) are declared in pyproject.toml; nothing is registered
here. A VM test never skips: when QEMU, busybox or the kernels are missing it fails and
says which Debian package or step is needed (a skipped VM test counted as passing would
hide a broken tier).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.support.builder import REPO


@pytest.fixture(autouse=True)
def _vm_prerequisites(request):
    """Tests marked vm fail at once, with the reason, when QEMU is not installed."""
    if request.node.get_closest_marker("vm") is not None:
        from devtools.qemu import find_qemu
        try:
            find_qemu()
            return
        except FileNotFoundError as e:
            message = str(e)
        pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def kernels():
    """{"6.1": Kernel, "6.12": Kernel, "7.x": Kernel} from devtools.kernels, fetched on first use."""
    from devtools.kernels import KernelFetchError, default_cache, ensure_kernels
    try:
        return ensure_kernels()
    except (KernelFetchError, OSError) as e:
        message = (f"cannot get Debian's kernels into {default_cache()}/kernels "
                   f"(python -m devtools.kernels): {e}")
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def kernel_61(kernels):
    return kernels["6.1"]


@pytest.fixture(scope="session")
def kernel_612(kernels):
    return kernels["6.12"]


@pytest.fixture(scope="session")
def kernel_7(kernels):
    """The newest 7.x of trixie-backports: the initramfs is a tmpfs over nullfs."""
    return kernels["7.x"]


@pytest.fixture(scope="session")
def busybox_bin() -> Path:
    """The host's static busybox (Debian package busybox-static)."""
    from devtools.rootdisk import find_static_busybox
    try:
        return find_static_busybox()
    except FileNotFoundError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """A folder for this session's console logs: <repo>/.cache/test-artifacts/<stamp>/.

    ``.cache/test-artifacts/latest`` points at the newest one.
    """
    base = REPO / ".cache" / "test-artifacts"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{os.getpid()}" + (f"-{worker}" if worker else "")
    folder = base / name
    folder.mkdir(parents=True, exist_ok=True)
    latest = base / f".latest.{os.getpid()}"
    try:
        latest.symlink_to(name)
        os.replace(latest, base / "latest")
    except OSError:
        pass
    return folder


@pytest.fixture
def console_log(request, artifacts) -> Path:
    """A log path named after the running test, inside ``artifacts``."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", request.node.name).strip("_")
    return artifacts / f"{name}.log"
