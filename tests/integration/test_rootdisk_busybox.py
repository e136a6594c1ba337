"""The disk probe's own superblock reading, run by busybox sh on image files holding real file systems.

A minimal rescue image has busybox and nothing else: no lsblk, no blkid. These tests give the
probe's shell exactly that (a PATH of busybox applets, blkid left out) and run the functions
`probe_script` types (`recovery.rootdisk.superblock_reader`) on files made by mkfs.ext4, mke2fs,
busybox mkdosfs and mkswap, as the rescue console would run them on /dev/vdb1. xfs, btrfs, LVM and
LUKS have no mkfs on this machine: their files carry the magic numbers where those formats put
them. The whole probe is also run as it is typed (here-document and all) on this machine's own
devices, read-only, to prove busybox ash runs every line of it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from recovery.channels.dialogue import heredoc_command
from recovery.guest import _check_wire_safe, heredoc_delimiter
from recovery.rootdisk import build_probe, choose, parse_probe, probe_script, superblock_reader, superblock_type

NONCE = "b0x1b0x1"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise AssertionError(f"{name} is not installed: this test needs it (apt-get install busybox e2fsprogs "
                             "util-linux)")
    return found


def _busybox_path(directory: Path, *, without: tuple[str, ...] = ()) -> str:
    """A PATH of busybox's applets only (a minimal rescue image), less `without`."""
    busybox = _tool("busybox")
    listed = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    directory.mkdir()
    for applet in listed:
        if applet not in ("blkid", *without):
            (directory / applet).symlink_to(busybox)
    return str(directory)


def _run(script: list[str], path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([f"{path}/sh"], input="".join(f"{line}\n" for line in script), env={"PATH": path},
                          capture_output=True, text=True, timeout=120)


def _images(directory: Path) -> dict[str, Path]:
    """Image files by the type blkid would name them ("" for a BIOS boot partition: no file system)."""
    def blank(name: str, size: str) -> Path:
        path = directory / name
        subprocess.run(["truncate", "-s", size, str(path)], check=True)
        return path

    def made(name: str, size: str, *command: str) -> Path:
        path = blank(name, size)
        subprocess.run([*command, str(path)], check=True, capture_output=True)
        return path

    def magic(name: str, *at: tuple[int, bytes]) -> Path:
        path = blank(name, "2M")
        with path.open("r+b") as file:
            for offset, value in at:
                file.seek(offset)
                file.write(value)
        return path

    busybox = _tool("busybox")
    return {
        "ext4": made("ext4", "32M", _tool("mkfs.ext4"), "-q", "-F", "-L", "cloudimg-rootfs"),
        "ext3": made("ext3", "16M", _tool("mke2fs"), "-q", "-F", "-t", "ext3"),
        "ext2": made("ext2", "8M", _tool("mke2fs"), "-q", "-F", "-t", "ext2"),
        "vfat": made("vfat", "106M", busybox, "mkdosfs", "-n", "UEFI"),  # FAT32: "FAT32" at 82
        "vfat16": made("vfat16", "32M", busybox, "mkdosfs", "-F", "16"),  # "FAT16" at 54
        "swap": made("swap", "8M", _tool("mkswap")),
        "": blank("bios", "4M"),
        "xfs": magic("xfs", (0, b"XFSB\x00\x00\x10\x00")),
        "btrfs": magic("btrfs", (65600, b"_BHRfS_M")),
        "LVM2_member": magic("lvm", (512, b"LABELONE\x01\x00\x00\x00\x00\x00\x00\x00"), (536, b"LVM2 001")),
        "crypto_LUKS": magic("luks", (0, b"LUKS\xba\xbe\x00\x02")),
    }


@pytest.mark.parametrize("dumper", ["od", "hexdump"])
def test_busybox_reads_each_file_systems_magic_number(tmp_path: Path, dumper: str) -> None:
    """`sb` through busybox od, and through hexdump where od is missing (busybox built without it)."""
    images = _images(tmp_path)
    path = _busybox_path(tmp_path / "bin", without=("od",) if dumper == "hexdump" else ())
    script = ["L=; B=", *superblock_reader(), *(f'echo "{name or "none"} $(sb {image})"'
                                                for name, image in images.items())]
    done = _run(script, path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    found = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert {name: superblock_type(rows) for name, rows in found.items()} == {
        name or "none": name.replace("vfat16", "vfat") for name in images}


def test_busybox_cloud_layout_chooses_the_servers_root(tmp_path: Path) -> None:
    """vda (the rescue disk) and vdb carry the same cloud image layout and label: vdb1 is chosen."""
    images = _images(tmp_path)
    path = _busybox_path(tmp_path / "bin")
    layout = {"1": images["ext4"], "14": images[""], "15": images["vfat"]}
    script = ["L=; B=", *superblock_reader(),
              *(f'echo "{disk}{part} $(sb {image})"' for disk in ("vda", "vdb") for part, image in layout.items())]
    done = _run(script, path)
    assert done.returncode == 0, done.stderr
    probe = build_probe(
        mounts=["/dev/root / ext4 rw,relatime 0 0", "proc /proc proc rw 0 0"],
        partitions=[f" 254 {minor} 1024 {name}" for minor, name in enumerate(
            ["vda", "vda1", "vda14", "vda15", "vdb", "vdb1", "vdb14", "vdb15"])],
        devnos=["vda 254:0", "vda1 254:1", "vdb 254:4", "vdb1 254:5"],
        magic=done.stdout.splitlines(),
        rootdev=str((254 << 8) | 1),
    )
    choice = choose(probe)
    assert choice.device.path == "/dev/vdb1"
    assert choice.rescue_disks == ("vda",)
    assert [probe.devices[name].describe() for name in ("vdb14", "vdb15")] == [
        "/dev/vdb14 (no file system, 1 MiB)", "/dev/vdb15 (vfat, 1 MiB)"]


def test_devices_lsblk_or_blkid_typed_are_not_read_again(tmp_path: Path) -> None:
    """`typed`: blkid's TYPE= (not PTTYPE=, not a PARTUUID-only line) or lsblk's non-empty FSTYPE."""
    path = _busybox_path(tmp_path / "bin")
    lsblk = ('NAME="vdc" KNAME="vdc" PKNAME="" TYPE="disk" FSTYPE="" LABEL="" UUID=""\\n'
             'NAME="vdc1" KNAME="vdc1" PKNAME="vdc" TYPE="part" FSTYPE="ext4" LABEL="" UUID="u"\\n'
             'NAME="vdc14" KNAME="vdc14" PKNAME="vdc" TYPE="part" FSTYPE="" LABEL="" UUID=""')
    blkid = ('/dev/vda: PTUUID="p" PTTYPE="gpt"\\n/dev/vda1: UUID="r" BLOCK_SIZE="4096" TYPE="ext4" PARTUUID="a"\\n'
             '/dev/vda14: PARTUUID="b"\\n/dev/vda15: SEC_TYPE="msdos" UUID="E" TYPE="vfat" PARTUUID="c"')
    names = ["vda", "vda1", "vda14", "vda15", "vda2", "vdc", "vdc1", "vdc14", "vdc2"]
    script = [f"L=$(printf '{lsblk}')", f"B=$(printf '{blkid}')", *superblock_reader(),
              *(f"typed {name} && echo {name}" for name in names)]
    done = _run(script, path)
    assert done.returncode in (0, 1), done.stderr
    assert done.stdout.split() == ["vda1", "vda15", "vdc1"]


def test_the_whole_probe_as_typed_runs_in_busybox_sh_and_ends_with_its_marker(tmp_path: Path) -> None:
    """The here-document the console gets, on this machine's devices (read-only): every line parses and runs."""
    path = _busybox_path(tmp_path / "bin")
    lines = probe_script(NONCE)
    _check_wire_safe(lines, NONCE)
    typed = heredoc_command(lines, delimiter=heredoc_delimiter(NONCE), nonce=NONCE)
    done = _run([str(line) for line in typed], path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.rstrip().endswith(f"RCV-{NONCE}-0")
    probe = parse_probe(done.stdout, NONCE)
    read = [line.split("=", 1)[1] for line in done.stdout.splitlines() if line.startswith(f"RCV-{NONCE} magic=")]
    for fact in read:
        name, _, rows = fact.partition(" ")
        assert not name.startswith(("loop", "zram", "ram", "sr")), fact
        assert name in probe.devices
        assert superblock_type(rows) is not None or rows == "", fact
