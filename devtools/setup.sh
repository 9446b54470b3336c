#!/bin/sh
# Idempotent set-up for a fresh Debian 12 machine, as root: Debian packages, a venv with the
# project installed (editable) and its test tools, the generated cffi module, and Debian's
# kernels unpacked into the cache. A second run does nothing that needs the network.
#   setup.sh deb   only the tools that build the Debian package (make deb)
set -eu
cd "$(dirname "$0")/.."

PACKAGES="python3 python3-venv python3-dev gcc libcap-dev libffi-dev
  qemu-system-x86 qemu-utils busybox-static e2fsprogs xfsprogs btrfs-progs dosfstools
  f2fs-tools squashfs-tools erofs-utils gdisk fdisk mtools
  cpio libarchive-tools xz-utils zstd kmod util-linux apt-utils binutils
  cryptsetup-bin lvm2 mdadm nfs-ganesha nfs-ganesha-vfs dracut-core initramfs-tools
  systemd libtss2-esys-3.0.2-0 libtss2-mu0 libtss2-rc0 libtss2-tcti-device0 libtss2-tcti-swtpm0
  libfido2-1 swtpm swtpm-tools tpm2-tools
  ovmf systemd-boot-efi sbsigntool openssl
  nbdkit libcrypt1"
# systemd (systemd-cryptsetup, systemd-cryptenroll, the LUKS2 token plugins), the TPM2
# libraries they dlopen() and libfido2: --hook luks-tokens packs them. swtpm, swtpm-tools and
# tpm2-tools (and libtss2-tcti-swtpm0 for the host's tools) give the VM tier its TPM.
# nbdkit: a disk that never answers a read (tests/vm/test_hostile_disks.py); libcrypt1:
# the rescue password's crypt(3), packed into --rescue password images.
# dracut-core and initramfs-tools (the drop-in tests, the bench anchors) do not conflict;
# neither runs for the host, which has no Debian kernel. ovmf (UEFI firmware for QEMU),
# systemd-boot-efi (the boot loader and systemd-stub, as files: nothing is installed to an
# ESP), sbsigntool and openssl: the UEFI boots, `pyinit-mkinitramfs uki` and its signing.
# Building pyinit's Debian package (make deb, and the lifecycle tests, which build it too):
# (debian/control's Build-Depends, and dpkg-buildpackage, fakeroot, lintian; a unit test
# checks that they agree)
DEB_PACKAGES="debhelper dh-python help2man pybuild-plugin-pyproject python3-all python3-cffi
  python3-pyelftools python3-setuptools dpkg-dev fakeroot lintian"
# The lifecycle tests: Debian 12 and 13 roots made by mmdebstrap that install the package.
PACKAGES="$PACKAGES $DEB_PACKAGES mmdebstrap"
# make bench: librsvg2-bin (rsvg-convert, to look at chart.svg as a PNG), strace (packed
# into `bench --profile`'s strace variant), make (devtools/smallpython.py's CPython build);
# mmdebstrap (above) also makes the Debian 13 tree whose python3.13 builds a bench row.
PACKAGES="$PACKAGES librsvg2-bin strace make"

install_missing() {
  missing=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
}

if [ "${1:-}" = deb ]; then
  # make deb: only what building the package needs, no venv, no kernels
  # shellcheck disable=SC2086
  install_missing $DEB_PACKAGES
  exit 0
fi
# shellcheck disable=SC2086
install_missing $PACKAGES

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
  "$VENV/bin/pip" install -q -e ".[test,network,lint]"
  echo "$want" > "$stamp"
fi
# The out-of-line cffi module, for running from the source tree.
[ -f pyinit/_libc.py ] || "$VENV/bin/python" pyinit/_libc_build.py >/dev/null
"$VENV/bin/python" -m devtools.kernels >/dev/null
# Debian's intel-microcode and amd64-microcode (non-free-firmware), unpacked for the
# early-microcode tests; never installed on the host.
"$VENV/bin/python" -m devtools.firmware >/dev/null
echo "setup: ready"
