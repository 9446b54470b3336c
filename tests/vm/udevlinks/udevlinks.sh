#!/bin/sh
# test-only: list udev's persistent disk links once every disk of udevlinks.wait= is there
# (on the console: a systemd service's own output goes to the journal), then power off.
{
want=$(getarg udevlinks.wait=)
n=0
IFS=,
for label in $want; do
    while [ ! -e "/dev/disk/by-label/$label" ] && [ $n -lt 600 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    [ -e "/dev/disk/by-label/$label" ] || echo "UDEV-LINK-MISSING: by-label/$label"
done
unset IFS
udevadm settle --timeout=60
for dir in by-id by-path by-label; do
    for f in /dev/disk/$dir/*; do
        [ -L "$f" ] && echo "UDEV-LINK: $dir/${f##*/} -> $(readlink "$f")"
    done
done
echo "UDEV-LINKS-DONE"
} > /dev/console 2>&1
echo o > /proc/sysrq-trigger
sleep 60
