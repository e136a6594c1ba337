"""Which disk a rescue system says is the server's root: recorded lsblk/blkid//proc/mounts outputs.

The rule under test: never the rescue system's own disk, whatever the labels and UUIDs say; one
candidate is chosen, several are refused with a list unless one is named like a root.
"""

from __future__ import annotations

import pytest

from recovery.rootdisk import RootDiskError, build_probe, choose, parse_probe, probe_script, superblock_type

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


# --- Busybox without lsblk or blkid: the probe reads the superblocks itself (`sb` in probe_script) ---
# Rows as `sb` printed them (16-byte rows 0, 3, 5, 31, 32, 67, 69, 70, 255 and 4100, in hex) for
# file systems made by mkfs.ext4 -L cloudimg-rootfs and busybox mkdosfs -n UEFI, and a zeroed BIOS
# boot partition.
SB_EXT4 = ("0" * 160 + "fd69156b0000ffff53ef010001000000" "000000000b000000000100003c000000"
           "c20200006b0400005f935659526d4caa" + "0" * 64)
SB_VFAT = ("eb58906d6b646f736673000002010600" "01000300000000000000000000000000" "000046415433322020200e1fbe777cac"
           "000000000000000000000000000055aa" "52526141" + "0" * 184)
SB_NONE = "0" * 320
CLOUD_PARTITIONS = ["major minor  #blocks  name", "", " 254 0 3670016 vda", " 254 1 3553263 vda1",
                    " 254 14 4096 vda14", " 254 15 108544 vda15", " 254 16 10485760 vdb", " 254 17 10368495 vdb1",
                    " 254 30 4096 vdb14", " 254 31 108544 vdb15"]
CLOUD_DEVNOS = ["vda 254:0", "vda1 254:1", "vda14 254:14", "vda15 254:15",
                "vdb 254:16", "vdb1 254:17", "vdb14 254:30", "vdb15 254:31"]
CLOUD_MAGIC = [f"{disk}{part} {rows}" for disk in ("vda", "vdb")
               for part, rows in (("1", SB_EXT4), ("14", SB_NONE), ("15", SB_VFAT))]


def _console(nonce: str, **facts: list[str]) -> str:
    """What the rescue console shows: the probe's echo, then its facts among prompts and escapes."""
    lines = [f"> {line}" for line in probe_script(nonce)]
    for name, values in facts.items():
        lines += [f"RCV-{nonce} {name}={value}" for value in values]
    return "\r\n".join([*lines, f"RCV-{nonce} exit=0", "~ # "])


def _rows(size: int = 65616, **magic: bytes) -> str:
    """`sb`'s rows of a device whose bytes are zero but `magic` (offset_N=bytes)."""
    data = bytearray(size)
    for key, value in magic.items():
        offset = int(key.removeprefix("offset_"))
        data[offset:offset + len(value)] = value
    rows = [data[16 * row:16 * row + 16] for row in (0, 3, 5, 31, 32, 67, 69, 70, 255, 4100) if 16 * row < size]
    return b"".join(rows).hex()


def test_busybox_cloud_image_without_blkid_the_root_is_known_by_its_superblock() -> None:
    """Both disks a cloud image's (ext4 root, BIOS boot, EFI); / is /dev/root, found by device number."""
    nonce = "5eed0001"
    output = _console(nonce, mount=["/dev/root / ext4 rw,relatime 0 0", "proc /proc proc rw 0 0"],
                      rootdev=[str((254 << 8) | 1)], part=CLOUD_PARTITIONS, devno=CLOUD_DEVNOS, magic=CLOUD_MAGIC)
    probe = parse_probe(output, nonce)
    assert probe.devices["vdb1"].fstype == "ext4"
    assert probe.devices["vdb15"].fstype == "vfat"
    assert probe.devices["vdb14"].no_filesystem
    choice = choose(probe)
    assert choice.device.path == "/dev/vdb1"
    assert choice.rescue_disks == ("vda",)


def test_busybox_cloud_image_rescue_disk_attached_second_is_still_left_out() -> None:
    """The same layout and label on both disks, the rescue system on vdb: its vdb1 is never chosen."""
    nonce = "5eed0002"
    output = _console(nonce, mount=["/dev/vdb1 / ext4 rw 0 0", "/dev/vdb15 /boot/efi vfat rw 0 0"],
                      rootdev=[str((254 << 8) | 17)], part=CLOUD_PARTITIONS, devno=CLOUD_DEVNOS, magic=CLOUD_MAGIC)
    choice = choose(parse_probe(output, nonce))
    assert choice.device.path == "/dev/vda1"
    assert choice.rescue_disks == ("vdb",)


def test_util_linux_blkid_lists_a_bios_boot_partition_without_a_type_its_superblock_says_none() -> None:
    """A cloud image whose root has no label: blkid's PARTUUID-only line left vdb14 a second candidate."""
    blkid = ['/dev/vda1: UUID="r" BLOCK_SIZE="4096" TYPE="ext4" PARTUUID="a1"', '/dev/vda14: PARTUUID="a14"',
             '/dev/vda15: SEC_TYPE="msdos" UUID="E1" BLOCK_SIZE="512" TYPE="vfat" PARTUUID="a15"',
             '/dev/vdb1: UUID="s" BLOCK_SIZE="4096" TYPE="ext4" PARTUUID="b1"', '/dev/vdb14: PARTUUID="b14"',
             '/dev/vdb15: SEC_TYPE="msdos" UUID="E2" BLOCK_SIZE="512" TYPE="vfat" PARTUUID="b15"']
    nonce = "5eed0003"
    output = _console(nonce, mount=["/dev/vda1 / ext4 rw 0 0"], part=CLOUD_PARTITIONS, devno=CLOUD_DEVNOS,
                      blkid=blkid, magic=[f"vda14 {SB_NONE}", f"vdb14 {SB_NONE}"])
    probe = parse_probe(output, nonce)
    assert choose(probe).device.path == "/dev/vdb1"
    assert probe.devices["vdb14"].describe() == "/dev/vdb14 (no file system, 4 MiB)"


def test_a_superblock_the_probe_could_not_read_leaves_the_type_unknown_not_none() -> None:
    """dd failed (no /dev node, an I/O error): the device is still a candidate, as without the read."""
    probe = build_probe(
        mounts=["/dev/root / ext4 rw,relatime 0 0"],
        partitions=[" 254 0 16384 vda", " 254 16 2097152 vdb"],
        devnos=["vda 254:0", "vdb 254:16"],
        magic=["vdb ", f"vda {SB_EXT4}"],
        rootdev=str(254 << 8),
    )
    assert not probe.devices["vdb"].no_filesystem
    assert choose(probe).device.path == "/dev/vdb"


def test_the_superblock_does_not_override_what_lsblk_or_blkid_said() -> None:
    probe = build_probe(mounts=["/dev/vda1 / ext4 rw 0 0"], partitions=[" 8 0 1 vda", " 8 1 1 vda1"],
                        blkid=['/dev/vda1: TYPE="xfs"'], magic=[f"vda1 {SB_EXT4}"])
    assert probe.devices["vda1"].fstype == "xfs"


def test_busybox_lvm_that_cannot_be_opened_refuses_the_boot_partition_beside_it() -> None:
    """RHEL's layout without vgchange: vdb1 (xfs /boot) is the only file system seen, but not the root."""
    probe = build_probe(
        mounts=["/dev/vda1 / ext4 rw 0 0"],
        partitions=[" 252 0 1 vda", " 252 1 1 vda1", " 252 16 1 vdb", " 252 17 1048576 vdb1", " 252 18 9 vdb2"],
        magic=[f"vdb1 {_rows(offset_0=b'XFSB')}", f"vdb2 {_rows(offset_512=b'LABELONE')}"],
    )
    with pytest.raises(RootDiskError, match=r"inside /dev/vdb2 \(LVM2_member.*vgchange.*/dev/vdb1 \(xfs"):
        choose(probe)
    assert choose(probe, "/dev/vdb1").device.path == "/dev/vdb1"
    only_lvm = build_probe(mounts=["/dev/vda1 / ext4 rw 0 0"],
                           partitions=[" 252 0 1 vda", " 252 1 1 vda1", " 252 16 1 vdb", " 252 18 9 vdb2"],
                           magic=[f"vdb2 {_rows(offset_512=b'LABELONE')}"])
    with pytest.raises(RootDiskError, match=r"holds LVM .*rescue image with the LVM tools"):
        choose(only_lvm)


EXT_SB = {"offset_1080": b"\x53\xef"}


@pytest.mark.parametrize(("rows", "fstype"), [
    (_rows(**EXT_SB), "ext2"),
    (_rows(**EXT_SB, offset_1116=b"\x04", offset_1120=b"\x02"), "ext3"),
    (_rows(**EXT_SB, offset_1116=b"\x3c", offset_1120=b"\xc2\x02"), "ext4"),  # mkfs.ext4's extents, flex_bg
    (_rows(**EXT_SB, offset_1116=b"\x04", offset_1124=b"\x08"), "ext4"),  # huge_file
    (_rows(**EXT_SB, offset_1120=b"\x08"), "jbd"),
    (_rows(offset_0=b"XFSB"), "xfs"),
    (_rows(offset_65600=b"_BHRfS_M"), "btrfs"),
    (_rows(offset_0=b"LUKS\xba\xbe"), "crypto_LUKS"),
    (_rows(offset_512=b"LABELONE"), "LVM2_member"),
    (_rows(offset_4086=b"SWAPSPACE2"), "swap"),
    (_rows(offset_4086=b"SWAP-SPACE"), "swap"),
    (_rows(offset_54=b"FAT16   ", offset_510=b"\x55\xaa"), "vfat"),
    (_rows(offset_82=b"FAT32   ", offset_510=b"\x55\xaa"), "vfat"),
    (_rows(offset_82=b"FAT32   "), ""),  # no boot signature
    (_rows(offset_510=b"\x55\xaa"), ""),  # an MBR: a partition table, no file system
    (_rows(), ""),
    (_rows(size=8192, offset_0=b"XFSB"), "xfs"),  # too small for btrfs: its row is missing
    (_rows(size=2048), None),  # a short read
    ("", None),
    ("not hex", None),
])
def test_superblock_rows_name_the_type_blkid_would(rows: str, fstype: str | None) -> None:
    assert superblock_type(rows) == fstype
