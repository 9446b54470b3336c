#!/bin/bash
# A test-only dracut module (tests/vm/test_disks.py): before switching root, wait until the
# disks named on the command line are linked, print udev's /dev/disk/by-id and by-path and
# power off. Never installed anywhere but the test's private dracutbasedir.
check() { return 255; }  # only when asked for (--add udevlinks)
depends() { echo udev-rules; return 0; }
install() {
    inst_multiple readlink sleep
    inst_hook pre-pivot 99 "$moddir/udevlinks.sh"
}
