"""Typing through QEMU's own VNC server (the one libvirt and Nova VMs use) into a real VM.

    .venv/bin/python benchmarks/qemu_vnc_typing.py

It uses the test VM's parts (tests/qemu/ensure_vm_parts.sh, which `make test` runs: a Debian kernel
and busybox-static's busybox, unpacked into .cache/qemu-vm) and qemu-system-x86. The whole
recovery through the same kind of VM is tests/e2e/test_qemu_vnc_recovery.py; this measures typing.

The VM boots that kernel with a busybox initramfs built in a temp dir (the kernel's built-in
i8042/atkbd, VGA console and 8250 serial need no modules). Its init
reads lines on tty1, the VGA text console that QEMU's VNC keyboard feeds, and writes each as
`GOT<line>` to the serial port, which QEMU writes to a file. We type every printable ASCII character,
the reverse, and the lines a recovery types through VNC (the install command for an ed25519 key,
without facts, as restore-access-vnc.yaml types it), and compare what the VM read. Exit status 0:
exact.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import require_programs
from recovery.steps.authorized_keys import PREVIEW_KEY, InstallParams, preview
from tests.e2e.qemu_vm import busybox_root, free_vnc_display, pack_initramfs, parts, start_qemu, wait_for_text
from tests.integration.vnc_fixture import PRINTABLE, opened
from tests.processes import stop_child

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo READY-FOR-KEYS > /dev/ttyS0
while :; do
  setsid sh -c 'exec </dev/tty1; while IFS= read -r line; do printf "GOT<%s>\\n" "$line" >/dev/ttyS0; done'
done
"""


def build_initramfs(busybox: Path, out: Path) -> None:
    root = out.parent / "root"
    busybox_root(root, busybox, INIT)
    pack_initramfs(root, out)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    require_programs("qemu-system-x86_64", "cpio")
    vm_parts = parts()
    with tempfile.TemporaryDirectory() as scratch:
        initrd = Path(scratch) / "initrd.cpio"
        build_initramfs(vm_parts["busybox"], initrd)
        serial = Path(scratch) / "serial.log"
        display = free_vnc_display()
        qemu = start_qemu(vm_parts["vmlinuz"], initrd, serial, display)
        try:
            started = time.monotonic()
            wait_for_text(serial, "READY-FOR-KEYS", 90)
            print(f"booted in {time.monotonic() - started:.1f} s")
            time.sleep(1)
            channel = opened(f"vnc://127.0.0.1:{5900 + display}", timeout=10)
            try:
                print(f"server name {channel.name!r}, scancodes: {channel.qemu_keys}, paced: {channel.slow_keyboard}, "
                      f"acknowledged by the guest: {channel.guest_acks}")
                lines = [PRINTABLE, PRINTABLE[::-1], *preview(InstallParams(key=PREVIEW_KEY, facts=False))]
                typed_at = time.monotonic()
                for line in lines:  # one send per line, as a recovery types them
                    channel.send(line + "\r")
                elapsed = time.monotonic() - typed_at
            finally:
                channel.close()
            content = wait_for_text(serial, f"GOT<{lines[-1]}>", 20)
            got = [line[4:-1] for line in content.splitlines() if line.startswith("GOT<")]
            exact = got[-len(lines):] == lines
            chars = sum(len(line) + 1 for line in lines)
            print(f"typed {chars} characters in {elapsed:.1f} s ({chars / elapsed:.0f}/s); exact: {exact}")
            if not exact:
                print(f"expected {lines!r}\ngot      {got!r}")
            return 0 if exact else 1
        finally:
            stop_child(qemu)


if __name__ == "__main__":
    sys.exit(main())
