"""The agent VM booted through GRUB, for the boot loader route (issue 10, route 3).

GRUB comes on a small CD image made by `grub-mkrescue` (grub-pc-bin, xorriso: no loop device, no
mount), whose embedded grub.cfg loads the kernel and initrd from the agent VM's own ext4 disk, as
Debian's grub.cfg does, with the hard case set: `timeout=0` and a hidden menu (only an ESC sent from
power-on stops it), GRUB's terminal on the serial port, and an entry like Debian's (`load_video`,
`insmod`, `search`, `echo 'Loading Linux ...'` lines) whose kernel line is longer than the editor
is wide and is not where a count would put it. The VM's serial port is a loopback TCP port behind
websockify (as Nova's serial proxy), its QMP socket the power control.

The VNC variant (`grub_vm("vnc")`) is the same VM with GRUB's terminal on the VGA console (text
mode), the kernel's console last on tty0 (the root shell of init=/bin/sh comes up there), and
QEMU's VNC server on a loopback port as the console. Its hidden menu waits 5 s (Debian's default): a key sent over
VNC reaches GRUB through the BIOS keyboard, and GRUB's single look for a key with timeout=0 missed
it in every try here (880 ESCs, and Shift held, in one run); and the first ESC after the reset can
go out a second late (the screen reader meets the firmware's new screen size), which a 1 s
countdown missed in 2 of 5 runs, and more on a machine busy with other tests. Each CD is named by a
digest of its grub.cfg: a changed configuration makes a new one.

QEMU starts the VM stopped (`-S`, a VM powered off): the route's first reset starts it, so the
test pays for the route's two boots only.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recovery.lab.processes import free_port
from tests.agentvm.vm import IMAGE, copy_old_key, ensure_image, host_key_fingerprint, overlay, tail
from tests.processes import stop_child

GRUB_ISO = IMAGE.parent / "agent-vm-grub" / "grub.iso"
GRUB_VGA_ISO = IMAGE.parent / "agent-vm-grub" / "grub-vga.iso"

SERIAL_TERMINAL = """serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
"""
VGA_TERMINAL = """terminal_input console
terminal_output console
set timeout=5
"""

GRUB_CFG = """{terminal}set default=0
set timeout_style=hidden
function load_video {{
	insmod all_video
}}
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os {{
	load_video
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_msdos
	insmod ext2
	search --no-floppy --label --set=root rootfs
	echo	'Loading Linux {version} ...'
	linux	/boot/vmlinuz-{version} root=/dev/vda ro {consoles} quiet
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-{version}
}}
menuentry 'Debian GNU/Linux, with Linux {version} (recovery mode)' {{
	linux	/boot/vmlinuz-{version} root=/dev/vda ro single console=ttyS0,115200
	initrd	/boot/initrd.img-{version}
}}
"""


def kernel_version(kernel: Path) -> str:
    """The release of a bzImage (`6.1.0-50-amd64`), from the version string its header points to."""
    data = kernel.read_bytes()
    offset = int.from_bytes(data[0x20E:0x210], "little") + 0x200
    return data[offset: data.index(b"\0", offset)].decode().split()[0]


def grub_cfg(console: str, version: str) -> str:
    """grub.cfg for GRUB on the serial console, or with `console="vnc"` on the VGA console."""
    if console == "vnc":
        return GRUB_CFG.format(terminal=VGA_TERMINAL, consoles="console=ttyS0,115200 console=tty0", version=version)
    return GRUB_CFG.format(terminal=SERIAL_TERMINAL, consoles="console=tty0 console=ttyS0,115200", version=version)


def ensure_grub_iso(console: str = "serial") -> Path:
    """The GRUB CD for the agent VM's disk, made once (grub-mkrescue, well under a second)."""
    image = ensure_image()
    cfg = grub_cfg(console, kernel_version(image / "vmlinuz"))
    base = GRUB_VGA_ISO if console == "vnc" else GRUB_ISO
    iso = base.with_name(f"{base.stem}-{hashlib.sha256(cfg.encode()).hexdigest()[:12]}{base.suffix}")
    if iso.exists():
        return iso
    for tool in ("grub-mkrescue", "xorriso"):
        if shutil.which(tool) is None or not Path("/usr/lib/grub/i386-pc").is_dir():
            raise RuntimeError(f"{tool} or GRUB's BIOS modules are missing: apt-get install grub-pc-bin grub-common "
                               "xorriso mtools")
    iso.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rcv-grub-") as scratch:
        tree = Path(scratch) / "iso"
        (tree / "boot" / "grub").mkdir(parents=True)
        (tree / "boot" / "grub" / "grub.cfg").write_text(cfg)
        partial = Path(scratch) / "grub.iso"
        subprocess.run(["grub-mkrescue", "-o", str(partial), str(tree)], check=True, capture_output=True)
        shutil.move(partial, iso)
    return iso


@dataclass(frozen=True)
class GrubVm:
    console_url: str  # the serial console's websocket, or the VNC console
    power: str  # qmp+unix:// URL of its QMP socket
    ssh_port: int
    host_key_fingerprint: str
    old_key: Path
    serial_log: Path  # QEMU's own log of the serial port (the whole conversation, for failures)


def qemu_argv(iso: Path, disk: Path, ssh_port: int, consoles: list[str], *, paused: bool) -> list[str]:
    """QEMU booting the agent VM from the GRUB CD (`paused`: stopped at power-on, as with -S)."""
    return ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1", "-nodefaults", "-display", "none",
            *(["-S"] if paused else []), "-cdrom", str(iso), "-boot", "d",
            "-drive", f"file={disk},if=virtio,format=qcow2",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            "-device", "virtio-net-pci,netdev=n0", *consoles]


def serial_console(port: int, log: Path) -> list[str]:
    """The serial port as a TCP server on 127.0.0.1:`port` (what a console proxy connects to), logged to `log`."""
    return ["-vga", "none", "-serial", "chardev:s0", "-chardev",
            f"socket,id=s0,host=127.0.0.1,port={port},server=on,wait=off,logfile={log},logappend=on"]


@contextmanager
def grub_vm(console: str = "serial") -> Iterator[GrubVm]:
    """The agent VM, stopped at power-on, booting from the GRUB CD; stopped (by PID) afterwards. Its console
    is the serial port behind websockify, or with `console="vnc"` QEMU's VNC server (VGA)."""
    from tests.e2e.qemu_vm import free_vnc_display
    from tests.e2e.test_qemu_serial_recovery import wait_listening

    iso = ensure_grub_iso(console)
    directory = Path(tempfile.mkdtemp(prefix="rcv-grubvm-"))
    qemu = proxy = None
    try:
        disk = overlay(IMAGE / "base.qcow2", directory / "disk.qcow2")
        old_key = copy_old_key(IMAGE, directory)
        ssh_port, serial_port, ws_port = free_port(), free_port(), free_port()
        qmp, serial_log = directory / "qmp.sock", directory / "serial.log"
        if console == "vnc":
            display = free_vnc_display()
            consoles = ["-vga", "std", "-vnc", f"127.0.0.1:{display}", "-serial", f"file:{serial_log}"]
            url, listening = f"vnc://127.0.0.1:{5900 + display}", 5900 + display
        else:
            consoles = serial_console(serial_port, serial_log)
            url, listening = f"ws://127.0.0.1:{ws_port}/", ws_port
        with open(directory / "qemu.log", "wb") as log:
            qemu = subprocess.Popen(
                [*qemu_argv(iso, disk, ssh_port, consoles, paused=True), "-qmp", f"unix:{qmp},server=on,wait=off"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        if console != "vnc":
            with open(directory / "websockify.log", "wb") as log:
                proxy = subprocess.Popen([sys.executable, "-m", "websockify", f"127.0.0.1:{ws_port}",
                                          f"127.0.0.1:{serial_port}"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not qmp.exists() and qemu.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # QEMU makes its QMP socket after the serial port's
        wait_listening(listening, 30)
        if qemu.poll() is not None:
            raise RuntimeError(f"QEMU did not start: {tail(directory / 'qemu.log')}")
        yield GrubVm(url, f"qmp+unix://{qmp}", ssh_port, host_key_fingerprint(IMAGE), old_key, serial_log)
    finally:
        if proxy is not None:
            stop_child(proxy)
        if qemu is not None:
            stop_child(qemu)
        shutil.rmtree(directory, ignore_errors=True)
