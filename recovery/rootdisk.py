"""Which disk, seen from a rescue system, is the server's own root: never the rescue system's.

In Nova's rescue mode the server boots the rescue image from a new boot disk, and its own
root disk is attached next to it. Both are often made from the same template, so they carry
the same file system label and even the same UUID: a label or UUID says nothing about which
is which. What does: the rescue system's root is *mounted*, at ``/``. So the rescue system's
own devices are those mounted anywhere (``/`` first, found by its device number, which also
works where /proc/mounts says ``/dev/root``), and every disk under them (a partition's disk,
an LVM volume's physical volumes' disks) is the rescue disk, excluded whole. What remains,
with a file system a root can be on, is a candidate; one candidate is the answer, several are
refused with a list (``root_device`` then names one), unless exactly one looks like a root
(a label or LVM name with ``root`` in it). An LVM physical volume or LUKS container that nothing
sits on (the rescue system could not open it) may hold the root out of sight: then the other file
systems may be /boot or data only, and they are refused too.

Where the rescue system's root is not a disk (an initramfs, a live image's overlay), nothing
mounted names the boot disk; then the first disk (Nova attaches the rescue disk first: vda,
sda, xvda) is taken for it when other disks have candidates, and the choice says so.

`probe_script` is the read-only shell text typed into the rescue console (busybox included: lsblk,
blkid and stat are used where present); `parse_probe` reads its fact lines, `choose` decides.
Nothing here touches a disk.

A minimal busybox rescue image has neither lsblk nor blkid (or a blkid applet built without file
system types), and then a cloud image's disk (an ext4 root, a BIOS boot partition with no file
system, a vfat EFI partition) shows three partitions of unknown type: too many to choose from. So
for every device neither tool typed, the probe reads the first 4 KiB and 16 bytes at 64 KiB with
`dd` and reports the rows holding the magic numbers as hex (`od`, else `hexdump`);
`superblock_type` turns them into the type blkid would have named, or "no file system".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from recovery.errors import GuestCommandError

__all__ = ["BlockDevice", "Choice", "Probe", "RootDiskError", "choose", "parse_probe", "probe_script",
           "superblock_reader", "superblock_type"]

ROOT_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs"})
_NOT_ROOT = frozenset({"swap", "vfat", "LVM2_member", "iso9660", "squashfs", "linux_raid_member", "crypto_LUKS"})
_PSEUDO = re.compile(r"(loop|ram|sr|zram|fd|nbd)\d")
_LSBLK_FIELD = re.compile(r'([A-Z:]+)="((?:[^"\\]|\\.)*)"')
_BLKID = re.compile(r"^(/dev/\S+):\s*(.*)$")

# The 16-byte rows of a device the probe reports: 0 (xfs, LUKS), 3 and 5 (FAT's "FAT" at 54 or 82),
# 31 (0x55AA at 510), 32 (LVM's LABELONE in sector 1), 67, 69 and 70 (ext's magic at 1080, its
# feature flags at 1116-1127), 255 (swap's signature at 4086, 4 KiB pages), and 4100 (btrfs at 65600).
_ROWS = (0, 3, 5, 31, 32, 67, 69, 70, 255)
_BTRFS_ROW = 4100
_EXT3_INCOMPAT = 0x0002 | 0x0004 | 0x0010  # filetype, recover, meta_bg: anything else is ext4's
_EXT3_RO_COMPAT = 0x0001 | 0x0002 | 0x0004  # sparse_super, large_file, btree_dir


class RootDiskError(GuestCommandError):
    """No disk, or more than one, could be the server's root: nothing was mounted or changed."""


@dataclass(frozen=True)
class BlockDevice:
    """One block device as the rescue system sees it (`name` is the kernel name: vdb1, dm-0)."""

    name: str
    type: str  # disk, part, lvm (any device-mapper device), rom, loop
    parents: tuple[str, ...] = ()  # the disk of a partition; the physical volumes of a dm device
    fstype: str = ""
    label: str = ""
    uuid: str = ""
    mapper_name: str = ""  # a dm device's name (vg-root)
    size_kib: int = 0
    no_filesystem: bool = False  # its superblock was read and no file system's magic number is there

    @property
    def path(self) -> str:
        return f"/dev/mapper/{self.mapper_name}" if self.mapper_name else f"/dev/{self.name}"

    def describe(self) -> str:
        what = [self.fstype or ("no file system" if self.no_filesystem else "unknown file system")]
        if self.label:
            what.append(f"label {self.label!r}")
        if self.size_kib:
            what.append(f"{self.size_kib // 1024} MiB")
        return f"{self.path} ({', '.join(what)})"


@dataclass(frozen=True)
class Probe:
    """What the probe saw: devices by kernel name, mounts (device path -> mount points), the root's devno."""

    devices: Mapping[str, BlockDevice]
    mounts: Mapping[str, tuple[str, ...]]
    root_devno: str | None  # "MAJOR:MINOR" of the device / is on, if stat could tell
    devnos: Mapping[str, str] = field(default_factory=dict)  # kernel name -> "MAJOR:MINOR"


@dataclass(frozen=True)
class Choice:
    device: BlockDevice
    rescue_disks: tuple[str, ...]
    reason: str


def probe_script(nonce: str) -> list[str]:
    """The read-only lines typed into the rescue console; each fact is ``RCV-<nonce> name=value``.

    Activating LVM volume groups (where vgchange exists) is the one change: it writes nothing to
    a disk, and an LVM root cannot be seen otherwise.
    """
    return [
        "{",
        f"n={nonce}",
        "fact() { printf 'RCV-%s %s=%s\\n' \"$n\" \"$1\" \"$2\"; }",
        "command -v vgchange >/dev/null 2>&1 && vgchange -ay >/dev/null 2>&1",
        "while IFS= read -r l; do fact mount \"$l\"; done </proc/mounts",
        "fact rootdev \"$(stat -c '%d' / 2>/dev/null)\"",
        "while IFS= read -r l; do fact part \"$l\"; done </proc/partitions",
        "for b in /sys/class/block/*; do [ -r \"$b/dev\" ] && fact devno \"${b##*/} $(cat \"$b/dev\")\"; done",
        "for s in /sys/block/*/slaves/*; do [ -e \"$s\" ] && fact slave \"${s#/sys/block/}\"; done",
        "for b in /sys/block/dm-*; do [ -r \"$b/dm/name\" ] && fact dm \"${b##*/} $(cat \"$b/dm/name\")\"; done",
        "L=; B=",
        "command -v lsblk >/dev/null 2>&1 &&",
        "L=$(lsblk -P -o NAME,KNAME,PKNAME,TYPE,FSTYPE,LABEL,UUID 2>/dev/null)",
        "command -v blkid >/dev/null 2>&1 && B=$(blkid 2>/dev/null)",
        "[ -n \"$L\" ] && printf '%s\\n' \"$L\" | while IFS= read -r l; do fact lsblk \"$l\"; done",
        "[ -n \"$B\" ] && printf '%s\\n' \"$B\" | while IFS= read -r l; do fact blkid \"$l\"; done",
        *superblock_reader(),
        "for p in /sys/class/block/*; do d=${p##*/}",
        "case $d in loop*|ram*|sr*|zram*|fd*|nbd*) continue;; esac",
        "ls -d \"$p/$d\"?* >/dev/null 2>&1 && continue",
        "[ -b \"/dev/$d\" ] || continue",
        "typed \"$d\" || fact magic \"$d $(sb \"/dev/$d\")\"",
        "done",
        "fact exit 0",
        "} </dev/null",
    ]


def superblock_reader() -> list[str]:
    """The shell functions of `probe_script` that read a device's magic numbers (run by the tests on files).

    ``typed NAME`` succeeds when lsblk (``$L``) or blkid (``$B``) gave the device a type already;
    ``sb PATH`` prints the rows `superblock_type` reads, as hex: one read of the first 4 KiB and
    one of 16 bytes at 64 KiB, through ``od`` or, where busybox has no full od, ``hexdump``.
    """
    lines = [f"{row + 1}p" for row in _ROWS] + ["257p"]  # the btrfs row follows the first read's 256
    return [
        "hx() { od -An -tx1 -v; }",
        "od -An -tx1 </dev/null >/dev/null 2>&1 ||",
        "hx() { hexdump -v -e '16/1 \" %02x\" \"\\n\"'; }",
        "sb() { { dd if=\"$1\" bs=4096 count=1; dd if=\"$1\" bs=16 skip=4100 count=1; } 2>/dev/null |",
        f"hx | sed -n '{';'.join(lines)}' | tr -d ' \\n'; }}",
        "typed() { printf '%s\\n' \"$L\" \"$B\" |",
        "grep -q -e \"^/dev/$1:.* TYPE=\" -e \" KNAME=\\\"$1\\\".* FSTYPE=\\\"[^\\\"]\"; }",
    ]


def superblock_type(hexdump: str) -> str | None:
    """The file system type (blkid's name) the rows `sb` printed show; "" for none, None if unread.

    Rows missing (a read that failed, a device under 4 KiB) leave the type unknown; only the btrfs
    row may be missing, on a device too small for btrfs.
    """
    try:
        data = bytes.fromhex(hexdump.strip())
    except ValueError:
        return None
    if len(data) not in (16 * len(_ROWS), 16 * len(_ROWS) + 16):
        return None
    rows = {row: data[16 * index:16 * index + 16] for index, row in enumerate((*_ROWS, _BTRFS_ROW))}

    def at(offset: int, length: int) -> bytes:
        row = rows.get(offset // 16, b"")
        return row[offset % 16:offset % 16 + length]

    if at(0, 6) == b"LUKS\xba\xbe":
        return "crypto_LUKS"
    if at(0, 4) == b"XFSB":
        return "xfs"
    if at(1080, 2) == b"\x53\xef":
        return _ext_type(at(1116, 4), at(1120, 4), at(1124, 4))
    if at(65600, 8) == b"_BHRfS_M":
        return "btrfs"
    if at(512, 8) == b"LABELONE":
        return "LVM2_member"
    if at(4086, 10) in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if at(510, 2) == b"\x55\xaa" and b"FAT" in (at(54, 3), at(82, 3)):
        return "vfat"
    return ""


def _ext_type(compat: bytes, incompat: bytes, ro_compat: bytes) -> str:
    """ext2, ext3 or ext4 by the superblock's feature flags, as blkid tells them apart."""
    flags = [int.from_bytes(value, "little") for value in (compat, incompat, ro_compat)]
    if flags[1] & 0x0008:
        return "jbd"  # an external journal, not a file system
    if flags[1] & ~_EXT3_INCOMPAT or flags[2] & ~_EXT3_RO_COMPAT:
        return "ext4"
    return "ext3" if flags[0] & 0x0004 else "ext2"


def parse_probe(output: str, nonce: str) -> Probe:
    """The facts of `probe_script` from the console output, echo and noise ignored."""
    marker = re.compile(rf"RCV-{re.escape(nonce)} ([a-z]+)=(.*)")
    facts: list[tuple[str, str]] = []
    for line in re.split(r"\r\n|\r|\n", output):
        found = marker.search(line)
        if found:
            facts.append((found.group(1), found.group(2).rstrip()))
    if ("exit", "0") not in facts:
        raise GuestCommandError(
            f"the disk probe printed no end marker (RCV-{nonce} exit=0): its output was lost or it did not run"
        )
    return build_probe(
        mounts=[v for k, v in facts if k == "mount"],
        partitions=[v for k, v in facts if k == "part"],
        devnos=[v for k, v in facts if k == "devno"],
        slaves=[v for k, v in facts if k == "slave"],
        dm_names=[v for k, v in facts if k == "dm"],
        lsblk=[v for k, v in facts if k == "lsblk"],
        blkid=[v for k, v in facts if k == "blkid"],
        magic=[v for k, v in facts if k == "magic"],
        rootdev=next((v for k, v in facts if k == "rootdev"), ""),
    )


def build_probe(
    *,
    mounts: Iterable[str],
    partitions: Iterable[str] = (),
    devnos: Iterable[str] = (),
    slaves: Iterable[str] = (),
    dm_names: Iterable[str] = (),
    lsblk: Iterable[str] = (),
    blkid: Iterable[str] = (),
    magic: Iterable[str] = (),
    rootdev: str = "",
) -> Probe:
    """A `Probe` from the raw lines of each source (/proc/mounts, /proc/partitions, `lsblk -P`, `blkid`,
    and the probe's own superblock rows, ``NAME HEX``, for what lsblk and blkid left untyped)."""
    sizes: dict[str, int] = {}
    for line in partitions:
        words = line.split()
        if len(words) == 4 and words[0].isdigit():
            sizes[words[3]] = int(words[2])
    numbers = {}
    for line in devnos:
        words = line.split()
        if len(words) == 2:
            numbers[words[0]] = words[1]
    parents: dict[str, list[str]] = {}
    for line in slaves:  # "dm-0/slaves/vdb2"
        holder, _, slave = line.partition("/slaves/")
        if slave:
            parents.setdefault(holder, []).append(slave)
    mapper = {}
    for line in dm_names:
        words = line.split()
        if len(words) == 2:
            mapper[words[0]] = words[1]
    names = set(sizes) | set(numbers)
    info: dict[str, dict[str, str]] = {}
    for line in lsblk:
        fields = {key: _unescape(value) for key, value in _LSBLK_FIELD.findall(line)}
        kname = fields.get("KNAME") or fields.get("NAME", "")
        if not kname:
            continue
        names.add(kname)
        info.setdefault(kname, {}).update(fields)
        if fields.get("PKNAME"):
            parents.setdefault(kname, [])
            if fields["PKNAME"] not in parents[kname]:
                parents[kname].append(fields["PKNAME"])
        if fields.get("TYPE") in ("lvm", "crypt", "dm") and fields.get("NAME"):
            mapper.setdefault(kname, fields["NAME"])
    by_mapper = {value: key for key, value in mapper.items()}
    for line in blkid:
        found = _BLKID.match(line.strip())
        if not found:
            continue
        kname = _kernel_name(found.group(1), by_mapper)
        names.add(kname)
        values = dict(_LSBLK_FIELD.findall(found.group(2)))
        entry = info.setdefault(kname, {})
        for key, value in (("FSTYPE", "TYPE"), ("LABEL", "LABEL"), ("UUID", "UUID")):
            if not entry.get(key):
                entry[key] = values.get(value, "")
    unformatted = set()
    for line in magic:
        name, _, rows = line.strip().partition(" ")
        fstype = superblock_type(rows)
        if not name or fstype is None or info.get(name, {}).get("FSTYPE"):
            continue
        names.add(name)
        info.setdefault(name, {})["FSTYPE"] = fstype
        if not fstype:
            unformatted.add(name)
    devices = {}
    for name in sorted(names):
        if _PSEUDO.match(name):
            continue
        entry = info.get(name, {})
        kind = entry.get("TYPE") or _guess_type(name, names)
        if kind in ("crypt", "dm"):
            kind = "lvm"
        own_parents = tuple(parents.get(name, ())) or ((_disk_of(name, names),) if kind == "part" else ())
        devices[name] = BlockDevice(
            name=name, type=kind, parents=tuple(p for p in own_parents if p), fstype=entry.get("FSTYPE", ""),
            label=entry.get("LABEL", ""), uuid=entry.get("UUID", ""), mapper_name=mapper.get(name, ""),
            size_kib=sizes.get(name, 0), no_filesystem=name in unformatted,
        )
    mounted: dict[str, list[str]] = {}
    for line in mounts:
        words = line.split()
        if len(words) >= 2 and words[0].startswith("/dev/"):
            mounted.setdefault(_kernel_name(words[0], by_mapper), []).append(_octal_unescape(words[1]))
    return Probe(devices, {k: tuple(v) for k, v in mounted.items()}, _devno(rootdev), numbers)


def choose(probe: Probe, wanted: str | None = None) -> Choice:
    """The server's root device, or RootDiskError saying why none can be chosen safely.

    Args:
        wanted: a device the user named (``/dev/vdb1``, ``vdb1`` or ``/dev/mapper/vg-root``); it is
            still refused if it is on the rescue system's disk or mounted.
    """
    devices = probe.devices
    root = _root_device(probe)
    owned = set(probe.mounts) | ({root} if root else set())
    owned &= set(devices)
    rescue_disks = {disk for name in owned for disk in _disks_under(name, devices)}
    note = ""
    disks = sorted(name for name, device in devices.items() if device.type == "disk")
    if not rescue_disks:
        if not disks:
            raise RootDiskError("the rescue system shows no disks at all (/proc/partitions is empty)")
        boot = disks[0]
        rescue_disks = {boot}
        note = (f"the rescue system's root is not on a disk (an initramfs or live image), so {boot}, the first "
                "disk, is taken for the rescue boot disk (Nova attaches the rescue disk first); ")
    if wanted:
        name = _kernel_name(wanted if wanted.startswith("/dev/") else f"/dev/{wanted}",
                            {d.mapper_name: n for n, d in devices.items() if d.mapper_name})
        if name not in devices:
            raise RootDiskError(f"root_device {wanted}: the rescue system has no such device; it has: "
                                + ", ".join(d.describe() for d in devices.values()))
        device = devices[name]
        if name in owned or set(_disks_under(name, devices)) & rescue_disks:
            raise RootDiskError(f"root_device {wanted} is the rescue system's own disk (it holds what the rescue "
                                "system runs on): never the one to change; name the server's disk instead")
        return Choice(device, tuple(sorted(rescue_disks)), note + f"named by root_device ({device.describe()})")
    candidates = [
        device for name, device in sorted(devices.items())
        if name not in owned and not set(_disks_under(name, devices)) & rescue_disks and _could_be_root(device, devices)
    ]
    rescued = ", ".join(sorted(rescue_disks))
    # An LVM physical volume or LUKS container nothing sits on: the root may be inside, out of sight.
    closed = [device for name, device in sorted(devices.items()) if device.fstype in ("LVM2_member", "crypto_LUKS")
              and not set(_disks_under(name, devices)) & rescue_disks
              and not any(name in other.parents for other in devices.values())]
    if closed and candidates:
        raise RootDiskError(
            "the server's root may be inside " + ", ".join(d.describe() for d in closed) + ", which the rescue "
            "system has not opened (an LVM volume group needs vgchange, which this rescue image lacks; an encrypted "
            "disk cannot be opened on this route), so the other file systems, "
            + "; ".join(d.describe() for d in candidates)
            + ", may be /boot or data only. If the root is one of them, name it with -e root_device=/dev/...; "
            "nothing was changed"
        )
    if not candidates:
        encrypted = [d.describe() for d in devices.values() if d.fstype == "crypto_LUKS"
                     and not set(_disks_under(d.name, devices)) & rescue_disks]
        if encrypted:
            raise RootDiskError(f"the server's disk is encrypted ({', '.join(encrypted)}): this route cannot open "
                                "it; nothing was changed")
        if closed:
            raise RootDiskError(
                "the server's disk holds LVM (" + ", ".join(d.describe() for d in closed) + ") that the rescue "
                "system has not opened: it needs vgchange, which this rescue image lacks; use a rescue image with the "
                "LVM tools. Nothing was changed"
            )
        raise RootDiskError(
            f"no disk other than the rescue system's own ({rescued}) has a file system a root could be on: is the "
            "server's disk attached (a volume-backed server needs a rescue that keeps it, Nova 2.87 stable "
            "device rescue)? Nothing was changed"
        )
    if len(candidates) > 1:
        rooty = [d for d in candidates if "root" in d.label.lower() or "root" in d.mapper_name.lower()]
        if len(rooty) == 1:
            return Choice(rooty[0], tuple(sorted(rescue_disks)), note + f"{rooty[0].describe()}: the one of "
                          f"{len(candidates)} candidates named like a root")
        raise RootDiskError(
            f"more than one disk could be the server's root (the rescue system's own, {rescued}, left out): "
            + "; ".join(d.describe() for d in candidates)
            + ". Name it with -e root_device=/dev/...; nothing was changed"
        )
    device = candidates[0]
    return Choice(device, tuple(sorted(rescue_disks)),
                  note + f"{device.describe()}: the only file system outside the rescue system's disk ({rescued})")


def _root_device(probe: Probe) -> str | None:
    if probe.root_devno:
        for name, number in probe.devnos.items():
            if number == probe.root_devno and name in probe.devices:
                return name
    for name, points in probe.mounts.items():
        if "/" in points:
            return name
    return None


def _disks_under(name: str, devices: Mapping[str, BlockDevice], depth: int = 0) -> list[str]:
    """The whole disks `name` lives on (itself for a disk; through partitions and dm layers)."""
    device = devices.get(name)
    if device is None or depth > 8:
        return [name]
    if device.type == "disk" or not device.parents:
        return [name]
    found: list[str] = []
    for parent in device.parents:
        found += _disks_under(parent, devices, depth + 1)
    return found


def _could_be_root(device: BlockDevice, devices: Mapping[str, BlockDevice]) -> bool:
    if device.type in ("rom", "loop") or device.fstype in _NOT_ROOT or device.no_filesystem:
        return False
    if device.fstype:
        return device.fstype in ROOT_FILESYSTEMS
    # Nothing read the file system type (its superblock could not be read): a device nothing else sits on.
    return not any(device.name in other.parents for other in devices.values())


def _guess_type(name: str, names: set[str]) -> str:
    if name.startswith("dm-"):
        return "lvm"
    if name.startswith(("sr", "loop")):
        return "rom" if name.startswith("sr") else "loop"
    return "part" if _disk_of(name, names) else "disk"


def _disk_of(name: str, names: set[str]) -> str:
    """vdb1 -> vdb, nvme0n1p2 -> nvme0n1, mmcblk0p1 -> mmcblk0; "" if `name` is not a partition."""
    found = re.fullmatch(r"(.*\d)p\d+|(.*\D)\d+", name)
    if not found:
        return ""
    disk = found.group(1) or found.group(2)
    return disk if disk in names and disk != name else ""


def _kernel_name(path: str, by_mapper: Mapping[str, str]) -> str:
    if path.startswith("/dev/mapper/"):
        return by_mapper.get(path[len("/dev/mapper/"):], path[len("/dev/mapper/"):])
    return path[len("/dev/"):] if path.startswith("/dev/") else path


def _devno(text: str) -> str | None:
    """stat's decimal st_dev as "MAJOR:MINOR" (Linux's encoding), None if not a number."""
    text = text.strip()
    if not text.isdigit():
        return None
    value = int(text)
    major = ((value >> 8) & 0xFFF) | ((value >> 32) & ~0xFFF)
    minor = (value & 0xFF) | ((value >> 12) & ~0xFF)
    return f"{major}:{minor}"


def _unescape(value: str) -> str:
    return value.encode().decode("unicode_escape") if "\\" in value else value


def _octal_unescape(value: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), value)

