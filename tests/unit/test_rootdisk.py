"""Which disk a rescue system says is the server's root: recorded lsblk/blkid//proc/mounts outputs.

The rule under test: never the rescue system's own disk, whatever the labels and UUIDs say; one
candidate is chosen, several are refused with a list unless one is named like a root.
"""

from __future__ import annotations

import pytest

from recovery.rootdisk import RootDiskError, build_probe, choose, parse_probe, probe_script

# Ubuntu's cloud image used as its own rescue image: both disks carry the same label AND UUID.
UBUNTU_SAME_UUID_LSBLK = [
    'NAME="vda" KNAME="vda" PKNAME="" TYPE="disk" FSTYPE="" LABEL="" UUID=""',
    'NAME="vda1" KNAME="vda1" PKNAME="vda" TYPE="part" FSTYPE="ext4" LABEL="cloudimg-rootfs" '
    'UUID="6f5b2c1e-0c1a-4d44-9f0e-2b1c4c1d2e3f"',
    'NAME="vda14" KNAME="vda14" PKNAME="vda" TYPE="part" FSTYPE="" LABEL="" UUID=""',
    'NAME="vda15" KNAME="vda15" PKNAME="vda" TYPE="part" FSTYPE="vfat" LABEL="UEFI" UUID="B4D1-2C3E"',
    'NAME="vdb" KNAME="vdb" PKNAME="" TYPE="disk" FSTYPE="" LABEL="" UUID=""',
    'NAME="vdb1" KNAME="vdb1" PKNAME="vdb" TYPE="part" FSTYPE="ext4" LABEL="cloudimg-rootfs" '
    'UUID="6f5b2c1e-0c1a-4d44-9f0e-2b1c4c1d2e3f"',
    'NAME="vdb14" KNAME="vdb14" PKNAME="vdb" TYPE="part" FSTYPE="" LABEL="" UUID=""',
    'NAME="vdb15" KNAME="vdb15" PKNAME="vdb" TYPE="part" FSTYPE="vfat" LABEL="UEFI" UUID="B4D1-2C3E"',
]
UBUNTU_MOUNTS = [
    "/dev/vda1 / ext4 rw,relatime,discard,errors=remount-ro 0 0",
    "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
    "/dev/vda15 /boot/efi vfat rw,relatime,fmask=0077 0 0",
    "tmpfs /run tmpfs rw,nosuid,nodev,size=400k,mode=755 0 0",
]


def test_same_label_and_uuid_the_server_disk_is_chosen_never_the_rescue_disk() -> None:
    choice = choose(build_probe(mounts=UBUNTU_MOUNTS, lsblk=UBUNTU_SAME_UUID_LSBLK))
    assert choice.device.path == "/dev/vdb1"
    assert choice.rescue_disks == ("vda",)


def test_the_same_rule_holds_in_either_disk_order() -> None:
    """Some clouds attach the rescue disk second: the mounted root decides, not the order."""
    swapped = [line.replace("vda", "vdX").replace("vdb", "vda").replace("vdX", "vdb") for line in
               UBUNTU_SAME_UUID_LSBLK]
    mounts = [line.replace("vda", "vdb") for line in UBUNTU_MOUNTS]
    choice = choose(build_probe(mounts=mounts, lsblk=swapped))
    assert choice.device.path == "/dev/vda1"
    assert choice.rescue_disks == ("vdb",)


def test_busybox_rescue_without_lsblk_or_blkid_whole_disks_same_label() -> None:
    """The test bed's rescue system: /proc/partitions and sysfs only; / is /dev/vda, found by device number."""
    probe = build_probe(
        mounts=["/dev/root / ext4 rw,relatime 0 0", "proc /proc proc rw,relatime 0 0"],
        partitions=["major minor  #blocks  name", "", " 254        0      16384 vda", " 254       16    2097152 vdb"],
        devnos=["vda 254:0", "vdb 254:16"],
        rootdev=str(254 << 8),
    )
    choice = choose(probe)
    assert choice.device.path == "/dev/vdb"
    assert choice.rescue_disks == ("vda",)


def test_one_disk_only_the_rescue_disk_is_refused() -> None:
    lsblk = [line for line in UBUNTU_SAME_UUID_LSBLK if "vdb" not in line]
    with pytest.raises(RootDiskError, match=r"no disk other than the rescue system's own \(vda\)"):
        choose(build_probe(mounts=UBUNTU_MOUNTS, lsblk=lsblk))


THREE_DISKS_BLKID = [
    '/dev/vda1: LABEL="cloudimg-rootfs" UUID="aaaa" BLOCK_SIZE="4096" TYPE="ext4" PARTUUID="1"',
    '/dev/vda15: LABEL_FATBOOT="UEFI" LABEL="UEFI" UUID="B4D1-2C3E" BLOCK_SIZE="512" TYPE="vfat"',
    '/dev/vdb1: LABEL="cloudimg-rootfs" UUID="aaaa" BLOCK_SIZE="4096" TYPE="ext4" PARTUUID="2"',
    '/dev/vdc: LABEL="data" UUID="cccc" BLOCK_SIZE="4096" TYPE="ext4"',
]
THREE_DISKS_PARTITIONS = ["major minor  #blocks  name", " 252 0 10485760 vda", " 252 1 10372079 vda1",
                          " 252 15 108544 vda15", " 252 16 10485760 vdb", " 252 17 10372079 vdb1",
                          " 252 32 1048576 vdc"]


def test_three_disks_the_one_named_like_a_root_is_chosen_over_a_data_volume() -> None:
    probe = build_probe(mounts=UBUNTU_MOUNTS, partitions=THREE_DISKS_PARTITIONS, blkid=THREE_DISKS_BLKID)
    choice = choose(probe)
    assert choice.device.path == "/dev/vdb1"
    assert "named like a root" in choice.reason


def test_three_disks_that_cannot_be_told_apart_are_refused_with_the_list_and_the_way_out() -> None:
    blkid = [line.replace('LABEL="cloudimg-rootfs" ', "") for line in THREE_DISKS_BLKID]
    probe = build_probe(mounts=UBUNTU_MOUNTS, partitions=THREE_DISKS_PARTITIONS, blkid=blkid)
    with pytest.raises(RootDiskError) as caught:
        choose(probe)
    message = str(caught.value)
    assert "/dev/vdb1" in message
    assert "/dev/vdc" in message
    assert "/dev/vda1" not in message.split("left out")[1]
    assert "-e root_device=" in message
    assert choose(probe, "/dev/vdc").device.path == "/dev/vdc"


@pytest.mark.parametrize("named", ["/dev/vda1", "vda1", "/dev/vda15", "/dev/vda"])
def test_naming_a_device_of_the_rescue_disk_is_refused(named: str) -> None:
    probe = build_probe(mounts=UBUNTU_MOUNTS, partitions=THREE_DISKS_PARTITIONS, blkid=THREE_DISKS_BLKID)
    with pytest.raises(RootDiskError, match="rescue system's own disk"):
        choose(probe, named)


def test_naming_a_device_that_does_not_exist_lists_what_does() -> None:
    probe = build_probe(mounts=UBUNTU_MOUNTS, partitions=THREE_DISKS_PARTITIONS, blkid=THREE_DISKS_BLKID)
    with pytest.raises(RootDiskError, match=r"no such device.*/dev/vdc"):
        choose(probe, "/dev/sdz1")


# A RHEL 9 server: xfs /boot, its root and swap in LVM on vdb2; the rescue image is a plain ext4.
RHEL_LVM_LSBLK = [
    'NAME="vda" KNAME="vda" PKNAME="" TYPE="disk" FSTYPE="" LABEL="" UUID=""',
    'NAME="vda1" KNAME="vda1" PKNAME="vda" TYPE="part" FSTYPE="ext4" LABEL="rescue" UUID="r1"',
    'NAME="vdb" KNAME="vdb" PKNAME="" TYPE="disk" FSTYPE="" LABEL="" UUID=""',
    'NAME="vdb1" KNAME="vdb1" PKNAME="vdb" TYPE="part" FSTYPE="xfs" LABEL="" UUID="b1"',
    'NAME="vdb2" KNAME="vdb2" PKNAME="vdb" TYPE="part" FSTYPE="LVM2_member" LABEL="" UUID="pv"',
    'NAME="rhel-root" KNAME="dm-0" PKNAME="vdb2" TYPE="lvm" FSTYPE="xfs" LABEL="" UUID="lv0"',
    'NAME="rhel-swap" KNAME="dm-1" PKNAME="vdb2" TYPE="lvm" FSTYPE="swap" LABEL="" UUID="lv1"',
]


def test_lvm_the_root_logical_volume_is_chosen_over_boot_and_swap() -> None:
    probe = build_probe(mounts=["/dev/vda1 / ext4 rw 0 0"], lsblk=RHEL_LVM_LSBLK)
    choice = choose(probe)
    assert choice.device.path == "/dev/mapper/rhel-root"
    assert choice.rescue_disks == ("vda",)


def test_lvm_on_the_rescue_disk_is_the_rescue_systems_own() -> None:
    """The rescue system's root on LVM (mounted as /dev/mapper/...): its volume group's disk is left out."""
    lsblk = [
        'NAME="sda" KNAME="sda" PKNAME="" TYPE="disk" FSTYPE="" LABEL="" UUID=""',
        'NAME="sda2" KNAME="sda2" PKNAME="sda" TYPE="part" FSTYPE="LVM2_member" LABEL="" UUID="pv"',
        'NAME="vg-root" KNAME="dm-0" PKNAME="sda2" TYPE="lvm" FSTYPE="ext4" LABEL="" UUID="x"',
        'NAME="sdb" KNAME="sdb" PKNAME="" TYPE="disk" FSTYPE="" LABEL="" UUID=""',
        'NAME="sdb1" KNAME="sdb1" PKNAME="sdb" TYPE="part" FSTYPE="ext4" LABEL="" UUID="y"',
        'NAME="sdb2" KNAME="sdb2" PKNAME="sdb" TYPE="part" FSTYPE="ext4" LABEL="" UUID="z"',
    ]
    probe = build_probe(mounts=["/dev/mapper/vg-root / ext4 rw 0 0"], lsblk=lsblk)
    with pytest.raises(RootDiskError, match="more than one") as caught:
        choose(probe)
    assert "/dev/sdb1" in str(caught.value)
    assert "/dev/sdb2" in str(caught.value)
    with pytest.raises(RootDiskError, match="rescue system's own disk"):
        choose(probe, "/dev/sda2")


def test_a_partition_table_without_lsblk_partitions_found_from_proc_partitions() -> None:
    probe = build_probe(
        mounts=["/dev/sda1 / ext4 rw 0 0"],
        partitions=[" 8 0 1000 sda", " 8 1 900 sda1", " 8 16 1000 sdb", " 8 17 800 sdb1", " 8 18 100 sdb2",
                    " 259 0 1000 nvme0n1", " 259 1 1000 nvme0n1p1"],
        blkid=['/dev/sda1: TYPE="ext4"', '/dev/sdb1: LABEL="root" TYPE="ext4"', '/dev/sdb2: TYPE="swap"',
               '/dev/nvme0n1p1: TYPE="vfat"'],
    )
    assert probe.devices["nvme0n1p1"].parents == ("nvme0n1",)
    assert choose(probe).device.path == "/dev/sdb1"


def test_an_initramfs_rescue_root_takes_the_first_disk_for_the_boot_disk_and_says_so() -> None:
    probe = build_probe(
        mounts=["rootfs / rootfs rw 0 0", "proc /proc proc rw 0 0"],
        partitions=[" 254 0 16384 vda", " 254 16 2097152 vdb"],
        blkid=['/dev/vda: LABEL="rootfs" TYPE="ext4"', '/dev/vdb: LABEL="rootfs" TYPE="ext4"'],
    )
    choice = choose(probe)
    assert choice.device.path == "/dev/vdb"
    assert "not on a disk" in choice.reason


def test_an_encrypted_server_disk_is_refused_clearly() -> None:
    lsblk = [*(line for line in UBUNTU_SAME_UUID_LSBLK if "vdb" not in line),
             'NAME="vdb" KNAME="vdb" PKNAME="" TYPE="disk" FSTYPE="crypto_LUKS" LABEL="" UUID="l"']
    with pytest.raises(RootDiskError, match="encrypted"):
        choose(build_probe(mounts=UBUNTU_MOUNTS, lsblk=lsblk))


def test_the_probe_output_is_read_through_console_noise_and_its_own_echo() -> None:
    nonce = "c0ffee12"
    echoed = "\r\n".join(f"> {line}" for line in probe_script(nonce))
    output = (
        f"{echoed}\r\n"
        f"RCV-{nonce} mount=/dev/vda / ext4 rw,relatime 0 0\r\n"
        f"RCV-{nonce} rootdev=65024\r\n"
        f"RCV-{nonce} part= 254        0      16384 vda\r\n"
        f"\x1b[6nRCV-{nonce} part= 254       16    2097152 vdb\r\n"
        f"RCV-{nonce} devno=vda 254:0\r\nRCV-{nonce} devno=vdb 254:16\r\n"
        f"RCV-{nonce} exit=0\r\n~ # "
    )
    choice = choose(parse_probe(output, nonce))
    assert choice.device.path == "/dev/vdb"


def test_a_probe_whose_end_marker_never_came_is_an_error_not_a_guess() -> None:
    from recovery.errors import GuestCommandError

    with pytest.raises(GuestCommandError, match="no end marker"):
        parse_probe("RCV-c0ffee12 mount=/dev/vda / ext4 rw 0 0\r\n", "c0ffee12")
