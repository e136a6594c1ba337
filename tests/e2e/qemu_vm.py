"""A real VM for the VNC tests: QEMU (software emulation) booting a small Linux whose VGA console runs
getty and login, with OpenSSH's sshd on a loopback port. QEMU's own VNC server is the console, the one
libvirt and Nova VMs have.

The parts come from Debian packages, unpacked into .cache/qemu-vm by tests/qemu/ensure_vm_parts.sh
(not installed: busybox-static would replace the system's busybox): the kernel and its e1000 module,
and a static busybox. The host's sshd and the libraries it links are copied in. The initramfs is
built per VM in a temp dir. QEMU binds VNC and the SSH forward to 127.0.0.1, and the guest's
user-mode network is restricted (no way out).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from recovery.lab.processes import free_port
from tests.processes import stop_child

ROOT = Path(__file__).resolve().parents[2]
PARTS = ROOT / ".cache" / "qemu-vm"
ENSURE = ROOT / "tests" / "qemu" / "ensure_vm_parts.sh"
BOOT_TIMEOUT = 120.0
USER, UID = "ops", 1000

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run/sshd /tmp; mount -t devpts devpts /dev/pts
insmod /lib/e1000.ko
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
mkdir -p /home/{user}; chown {uid}:{uid} /home/{user}; chmod 755 /home/{user}
/usr/sbin/sshd -E /tmp/sshd.log
echo VM-READY > /dev/ttyS0
while :; do getty 38400 tty1 linux; done
"""

SSHD_CONFIG = """Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AuthorizedKeysFile .ssh/authorized_keys
PidFile /run/sshd.pid
"""


@dataclass(frozen=True)
class Vm:
    vnc_url: str
    ssh_port: int
    user: str
    password: str
    host_key_fingerprint: str


def parts() -> dict[str, Path]:
    """The unpacked kernel, e1000 module and static busybox; ensure_vm_parts.sh fetches them once."""
    found = {name: PARTS / name for name in ("vmlinuz", "e1000.ko", "busybox")}
    if not all(path.exists() for path in found.values()):
        subprocess.run(["bash", str(ENSURE)], check=True)
    return found


def free_vnc_display() -> int:
    """A VNC display number whose port (5900 + display, as QEMU's -vnc counts) is free on 127.0.0.1."""
    port = free_port()
    if port < 5900:
        raise RuntimeError(f"the free port {port} is below 5900, where QEMU's VNC displays start")
    return port - 5900


def _copy_with_libraries(binary: Path, root: Path) -> None:
    """Copy `binary` and every shared library `ldd` names to the same paths under `root`."""
    listing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    paths = [binary] + [Path(word) for line in listing.splitlines() for word in line.split() if word.startswith("/")]
    for path in paths:
        target = root / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path.resolve(), target)


def busybox_root(root: Path, busybox: Path, init: str, *dirs: str) -> None:
    """A root file system in `root`: /bin/busybox, the script `init` as /init, /proc, /sys, /dev and `dirs`."""
    for sub in ("bin", "proc", "sys", "dev", *dirs):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "init").write_text(init)
    (root / "init").chmod(0o755)


def build_initramfs(work: Path, password: str, found: dict[str, Path]) -> tuple[Path, str]:
    """The VM's root file system as a cpio archive, from `parts()`; returns it and the SSH host key's fingerprint."""
    root = work / "root"
    busybox_root(root, found["busybox"], INIT.format(user=USER, uid=UID), "etc/ssh", "lib", "home", "root")
    shutil.copy(found["e1000.ko"], root / "lib" / "e1000.ko")
    _copy_with_libraries(Path("/usr/sbin/sshd"), root)
    hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                            check=True).stdout.strip()
    (root / "etc" / "passwd").write_text(
        f"root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\n{USER}:x:{UID}:{UID}::/home/{USER}:/bin/sh\n"
    )
    (root / "etc" / "group").write_text(f"root:x:0:\nnogroup:x:65534:\n{USER}:x:{UID}:\n")
    (root / "etc" / "shadow").write_text(f"root:*:19000::::::\nsshd:*:19000::::::\n{USER}:{hashed}:19000::::::\n")
    (root / "etc" / "shadow").chmod(0o600)
    (root / "etc" / "ssh" / "sshd_config").write_text(SSHD_CONFIG)
    key = root / "etc" / "ssh" / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    archive = work / "initrd.cpio"
    pack_initramfs(root, archive)
    return archive, fingerprint


def pack_initramfs(root: Path, archive: Path) -> None:
    """`root` as a newc cpio archive, every file owned by root, as the kernel wants an initramfs."""
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    archive.write_bytes(subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=root, input=files,
                                       capture_output=True, check=True).stdout)


def start_qemu(
    kernel: Path, initrd: Path, serial: Path, display: int, *extra: str, stderr: int | IO[str] = subprocess.DEVNULL,
    append: str = "console=ttyS0 quiet",
) -> subprocess.Popen[bytes]:
    """QEMU booting `kernel` with `initrd`: its serial port written to the file `serial`, its VNC server on
    127.0.0.1 at `display`, with the `extra` arguments (network); stop it with tests.processes.stop_child."""
    return subprocess.Popen(
        ["qemu-system-x86_64", "-m", "256", "-kernel", str(kernel), "-initrd", str(initrd),
         "-append", append, "-serial", f"file:{serial}", "-vnc", f"127.0.0.1:{display}",
         *extra, "-monitor", "none", "-no-reboot"],
        stdout=subprocess.DEVNULL, stderr=stderr,
    )


def wait_for_text(path: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} did not appear in {path} within {timeout:.0f} s; it ends: {content[-600:]!r}")


# Kernel messages on the VGA console every KERNEL_NOISE seconds, printed wherever the cursor is (over a prompt).
KERNEL_NOISE = 2
NOISE_LOOP = f"(while sleep {KERNEL_NOISE}; do echo '<3>recovery-test: kernel noise' >/dev/kmsg; done) &\n"


# The kernel command line that gives the VM a framebuffer console: QEMU's boot code sets VESA mode 0x317
# (1024x768, 16 bits) on the emulated VGA, the kernel's simple framebuffer driver takes it, and fbcon draws
# the console with the kernel's built-in VGA 8x16 font in 128x48 cells, as cloud images boot.
FRAMEBUFFER = "vga=791"


@contextmanager
def running_vm(
    password: str = "vm-Passw0rd", *, kernel_noise: bool = False, framebuffer: bool = False
) -> Iterator[Vm]:
    """Boot the VM and wait for its console and sshd; stops QEMU (by PID) afterwards. With `kernel_noise`,
    the kernel also prints to the console, a message every KERNEL_NOISE seconds. Its console is VGA text
    mode (80x25, the font SeaBIOS loads), or with `framebuffer` the Linux framebuffer console (FRAMEBUFFER)."""
    with tempfile.TemporaryDirectory(prefix="recovery-qemu-") as scratch:
        work = Path(scratch)
        found = parts()
        initrd, fingerprint = build_initramfs(work, password, found)
        if kernel_noise:
            init = work / "root" / "init"
            init.write_text(init.read_text().replace("echo VM-READY", NOISE_LOOP + "echo VM-READY"))
            pack_initramfs(work / "root", initrd)
        serial = work / "serial.log"
        display, ssh_port = free_vnc_display(), free_port()
        with (work / "qemu.log").open("w") as qemu_log:  # QEMU has its own copy
            qemu = start_qemu(
                found["vmlinuz"], initrd, serial, display,
                "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                "-device", "e1000,netdev=net0",
                stderr=qemu_log,
                append=" ".join(["console=tty0"] * kernel_noise + ["console=ttyS0", "quiet"]
                                + [FRAMEBUFFER] * framebuffer),
            )
        try:
            wait_for_text(serial, "VM-READY", BOOT_TIMEOUT)
            yield Vm(f"vnc://127.0.0.1:{5900 + display}", ssh_port, USER, password, fingerprint)
        finally:
            stop_child(qemu)
