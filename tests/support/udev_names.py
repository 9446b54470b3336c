"""The six disks of tests/vm/test_disks.py and the names udev gives them.

DISKS: one disk per controller a PC has, each controller pinned to a PCI slot (and USB
port), so the names are the same whichever of the disks a machine has.

DISK_NAMES: the /dev/disk/by-id and by-path names of each disk (its partition 1 has the
same with -part1), as systemd-udevd 252.39 (Debian 12) made them under QEMU 7.2 on Linux
7.3.4+deb13-amd64: recorded from test_udev_names_the_six_disks_as_recorded, which checks
udev still gives them; pyinit must give the same (the VM boots, and tests/unit/test_diskid.py
from the sysfs attributes recorded in that machine).
"""

DISKS = {
    "virtio": {"interface": "virtio", "slot": 0x04, "serial": "vd-serial-1"},
    "scsi": {"interface": "scsi", "slot": 0x05, "serial": "scsi-serial-1"},
    "nvme": {"interface": "nvme", "slot": 0x06, "serial": "nvme-serial-1"},
    "ahci": {"interface": "ahci", "slot": 0x07, "serial": "ahci-serial-1", "wwn": 0x5000C50015EA71AC},
    "usb-storage": {"interface": "usb-storage", "slot": 0x08, "usb_port": 1, "serial": "usb-serial-1"},
    "uas": {"interface": "uas", "slot": 0x08, "usb_port": 2, "serial": "uas-serial-1"},
}

NVME_WWID = "nvme.1b36-6e766d652d73657269616c2d31-51454d55204e564d65204374726c-00000001"
DISK_NAMES = {
    "virtio": ["by-id/virtio-vd-serial-1",
               "by-path/pci-0000:00:04.0", "by-path/virtio-pci-0000:00:04.0"],
    "scsi": ["by-id/scsi-0QEMU_QEMU_HARDDISK_scsi-serial-1",
             "by-path/pci-0000:00:05.0-scsi-0:0:0:0"],
    # QEMU's NVMe reports no EUI-64 or NGUID here: the kernel's wwid is its nvme.<vid>-<serial>-
    # <model>-<nsid> fallback
    "nvme": [f"by-id/nvme-{NVME_WWID}", "by-id/nvme-QEMU_NVMe_Ctrl_nvme-serial-1",
             "by-id/nvme-QEMU_NVMe_Ctrl_nvme-serial-1_1",
             "by-path/pci-0000:00:06.0-nvme-1"],
    "ahci": ["by-id/ata-QEMU_HARDDISK_ahci-serial-1", "by-id/wwn-0x5000c50015ea71ac",
             "by-path/pci-0000:00:07.0-ata-1.0", "by-path/pci-0000:00:07.0-ata-1"],
    "usb-storage": ["by-id/usb-QEMU_QEMU_HARDDISK_usb-serial-1-0:0",
                    "by-path/pci-0000:00:08.0-usb-0:1:1.0-scsi-0:0:0:0"],
    # UAS: the USB serial number is QEMU's own (its scsi-hd serial is not the USB device's)
    "uas": ["by-id/usb-QEMU_QEMU_HARDDISK_27842-0000:00:08.0-2-0:0",
            "by-path/pci-0000:00:08.0-usb-0:2:1.0-scsi-0:0:0:0"],
}
