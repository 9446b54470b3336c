#!/bin/sh
# Idempotent set-up for a fresh Debian 12 machine, as root: Debian packages, a venv with the
# project installed (editable) and its test tools, the generated cffi module, and Debian's
# kernels unpacked into the cache. A second run does nothing that needs the network.
set -eu
cd "$(dirname "$0")/.."

PACKAGES="python3 python3-venv python3-dev gcc libcap-dev libffi-dev
  qemu-system-x86 qemu-utils busybox-static e2fsprogs xfsprogs btrfs-progs dosfstools
  f2fs-tools squashfs-tools erofs-utils gdisk fdisk mtools
  cpio libarchive-tools xz-utils zstd kmod util-linux apt-utils binutils
  cryptsetup-bin lvm2 mdadm nfs-ganesha nfs-ganesha-vfs dracut-core initramfs-tools
  nbdkit libcrypt1"
# nbdkit: a disk that never answers a read (tests/vm/test_hostile_disks.py); libcrypt1:
# the rescue password's crypt(3), packed into --rescue password images.
# dracut-core and initramfs-tools (the drop-in tests, the bench anchors) do not conflict;
# neither runs for the host, which has no Debian kernel.

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV from Debian's python3"
  /usr/bin/python3 -m venv "$VENV"
fi
stamp="$VENV/.pyinit-installed"
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pyinit and its test tools into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[test,network]"
  echo "$want" > "$stamp"
fi
# The out-of-line cffi module, for running from the source tree.
[ -f pyinit/_libc.py ] || "$VENV/bin/python" pyinit/_libc_build.py >/dev/null
"$VENV/bin/python" -m devtools.kernels >/dev/null
# Debian's intel-microcode and amd64-microcode (non-free-firmware), unpacked for the
# early-microcode tests; never installed on the host.
"$VENV/bin/python" -m devtools.firmware >/dev/null
echo "setup: ready"
