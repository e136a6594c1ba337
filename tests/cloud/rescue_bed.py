"""Real machines behind the test Nova's rescue and unrescue (issue 10, route 4).

`prepare()` builds, in a temp dir, what the fake driver runs (nova_server.py `--machines`):

- the server's own root disk: a qcow2 overlay on the agent VM's image (tests/agentvm: Debian 12,
  ext4 labelled ``rootfs``, a user ``debian`` with a locked password, sshd with a known host key);
- the rescue system: the agent image's kernel with a small initramfs (static busybox and the
  virtio/ext4 modules taken from the image's own initrd) that mounts the *rescue disk* (a 16 MB
  ext4 labelled ``rootfs`` too, as a rescue image built from the same template would be) and
  switches root to it: its console is busybox getty/login on ttyS0 (root, a known password);
- rescue = QEMU with the rescue disk first (vda, the boot disk) and the server's disk second
  (vdb), its serial port a TCP server on 127.0.0.1 that Nova's serial proxy bridges to the
  websocket URL the API hands out; unrescue = QEMU booting the server's disk alone (a cold boot:
  the disk changed under any saved state), SSH forwarded to `ssh_port`.

The two QEMU command lines are data (JSON): the Nova process, in its own venv, only starts and
stops them (by PID, with a pidfile each as a safety net for the test).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.agentvm.vm import copy_old_key, ensure_image, host_key_fingerprint, overlay
from tests.e2e.qemu_vm import busybox_root, pack_initramfs, parts

LABEL = "rootfs"  # the agent image's label (build_image.sh: mkfs.ext4 -L rootfs)
RESCUE_USER = "root"
# Load order: dependencies first (the image initrd's modules.dep).
MODULES = (
    "drivers/virtio/virtio.ko", "drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci.ko", "drivers/block/virtio_blk.ko",
    "lib/crc16.ko", "fs/mbcache.ko", "fs/jbd2/jbd2.ko", "crypto/crc32c_generic.ko", "fs/ext4/ext4.ko",
)

# The initramfs: modules, then the rescue disk as / (what a rescue image's own boot does).
STAGE1 = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t devtmpfs dev /dev
for m in {modules}; do insmod /lib/$m; done
while [ ! -b /dev/vda ]; do sleep 0.1; done
mkdir -p /newroot; mount -t ext4 /dev/vda /newroot
exec switch_root /newroot /init
"""

# The rescue disk's init: a console login on the serial port, nothing else.
STAGE2 = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /tmp /mnt; hostname rescue
echo RESCUE-READY > /dev/ttyS0
while :; do getty -L 115200 ttyS0 vt100; done
"""


@dataclass(frozen=True)
class RescueBed:
    """What a test gives Nova (`spec_path`) and the playbook (`ssh_port`, `host_key`, the password)."""

    directory: Path
    spec_path: Path
    server_disk: Path
    ssh_port: int
    host_key: str
    rescue_password: str
    old_key: Path
    pidfiles: tuple[Path, ...]


def _modules(image: Path, work: Path) -> Path:
    """The image initrd's modules (the image kernel's version), unpacked under `work`."""
    unpacked = work / "initrd"
    unpacked.mkdir()
    data = subprocess.run(["zcat", str(image / "initrd.img")], capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=data, cwd=unpacked, check=True)
    found = sorted((unpacked / "usr" / "lib" / "modules").glob("*/kernel"))
    if not found:
        raise RuntimeError(f"no kernel modules in {image / 'initrd.img'}")
    return found[0]


def _initramfs(work: Path, modules: Path, busybox: Path) -> Path:
    root = work / "stage1"
    names = " ".join(Path(m).name for m in MODULES)
    busybox_root(root, busybox, STAGE1.format(modules=names), "lib")
    for module in MODULES:
        shutil.copy(modules / module, root / "lib" / Path(module).name)
    archive = work / "rescue-initrd.cpio"
    pack_initramfs(root, archive)
    return archive


def _rescue_disk(work: Path, busybox: Path, password: str) -> Path:
    """A 16 MB ext4 labelled like the server's root, holding the rescue system (busybox, login)."""
    root = work / "stage2"
    busybox_root(root, busybox, STAGE2, "etc", "root", "tmp", "mnt")
    hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                            check=True).stdout.strip()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "shadow").write_text(f"root:{hashed}:19000::::::\n")
    (root / "etc" / "shadow").chmod(0o600)
    disk = work / "rescue.raw"
    subprocess.run(["truncate", "-s", "16M", str(disk)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", LABEL, "-d", str(root), str(disk)], check=True)
    return disk


def prepare(directory: Path, *, ssh_port: int, rescue_serial_port: int, password: str) -> RescueBed:
    """Build the disks and the rescue system in `directory`, and write the driver's spec."""
    image = ensure_image()
    busybox = parts()["busybox"]
    work = directory / "build"
    work.mkdir(parents=True)
    modules = _modules(image, work)
    initrd = _initramfs(work, modules, busybox)
    rescue_disk = _rescue_disk(work, busybox, password)
    server_disk = overlay(image / "base.qcow2", directory / "server.qcow2")
    old_key = copy_old_key(image, directory)
    rescue_pid, server_pid = directory / "rescue.pid", directory / "server.pid"
    common = ["qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-nodefaults", "-display", "none",
              "-vga", "none", "-kernel", str(image / "vmlinuz"), "-no-reboot"]
    rescue = [
        *common, "-m", "256", "-initrd", str(initrd), "-append", "console=ttyS0 quiet",
        "-drive", f"file={rescue_disk},if=virtio,format=raw",
        "-drive", f"file={server_disk},if=virtio,format=qcow2",
        "-serial", f"tcp:127.0.0.1:{rescue_serial_port},server=on,wait=off",
        "-pidfile", str(rescue_pid),
    ]
    server = [
        *common, "-m", "512", "-initrd", str(image / "initrd.img"), "-append", "root=/dev/vda rw console=ttyS0 quiet",
        "-drive", f"file={server_disk},if=virtio,format=qcow2",
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", f"file:{directory / 'server-serial.log'}",
        "-pidfile", str(server_pid),
    ]
    spec = {
        "rescue": {"argv": rescue, "serial": ["127.0.0.1", rescue_serial_port], "log": str(directory / "rescue.log")},
        "unrescue": {"argv": server, "log": str(directory / "server.log")},
    }
    spec_path = directory / "rescue-spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    shutil.rmtree(work / "initrd", ignore_errors=True)
    return RescueBed(directory, spec_path, server_disk, ssh_port, host_key_fingerprint(image), password, old_key,
                     (rescue_pid, server_pid))


def stop_leftovers(pidfiles: Iterable[Path]) -> None:
    """Stop any QEMU the driver started and did not stop (Nova killed), by the PID in its pidfile."""
    import os
    import signal

    for pidfile in pidfiles:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(pidfile).encode() in cmdline:  # still the QEMU this pidfile belongs to
            os.kill(pid, signal.SIGKILL)
