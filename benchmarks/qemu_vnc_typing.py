"""Typing through QEMU's own VNC server (the one libvirt and Nova VMs use) into a real VM.

    .venv/bin/python benchmarks/qemu_vnc_typing.py

It uses the test VM's parts (tests/qemu/ensure_vm_parts.sh, which `make test` runs: a Debian kernel
and busybox-static's busybox, unpacked into .cache/qemu-vm) and qemu-system-x86. The whole
recovery through the same kind of VM is tests/e2e/test_qemu_vnc_recovery.py; this measures typing.

The VM boots that kernel with a busybox initramfs built in a temp dir (the kernel's built-in
i8042/atkbd, VGA console and 8250 serial need no modules). Its init
reads lines on tty1, the VGA text console that QEMU's VNC keyboard feeds, and writes each as
`GOT<line>` to the serial port, which QEMU writes to a file. We type every printable ASCII character,
the reverse, and the install commands for an ed25519 key: the terse one restore-access-vnc.yaml types
where the screen is read (recovery.terse_install), and the long one without facts it types where it
is not; each with its characters, key events and seconds, and compare what the VM read. The VGA
screen shows what was typed (the tty echoes it): the screen reader's accuracy is measured on it,
characters read right out of those shown, and its milliseconds per screen. Exit status 0: exact.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import require_programs
from recovery.channels.vnc import QEMU_KEYS_PER_ACK, VncChannel, keys_for
from recovery.screen import GlyphReader
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


def key_events(text: str) -> int:
    """KeyEvents typing `text` on QEMU as VncChannel sends them: a modifier held across a run of characters
    that need it, and a Num Lock press and release after every QEMU_KEYS_PER_ACK characters (the guest's
    acknowledgement)."""
    events, held = 0, None
    for key in keys_for(text):
        if key.modifier != held:
            events += (held is not None) + (key.modifier is not None)
            held = key.modifier
        events += 2
    events += held is not None
    return events + 2 * -(-len(text) // QEMU_KEYS_PER_ACK)


def reading_accuracy(channel: VncChannel, typed: list[str]) -> tuple[int, int, float]:
    """(characters read right, characters shown, ms per screen): the typed lines the screen still shows."""
    reader = GlyphReader()
    frame = channel.frame()
    reader.read(frame)  # finds the grid
    started = time.perf_counter()
    text = reader.read(frame)
    ms = (time.perf_counter() - started) * 1000
    shown = text.lines if text is not None else []
    right = total = 0
    for line in typed[-len(shown):]:
        if line.rstrip() in shown:
            right += len(line.rstrip())
        total += len(line.rstrip())
    return right, total, ms


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
                variants = {
                    "every printable character, and reversed": [PRINTABLE, PRINTABLE[::-1]],
                    "install, terse (a read screen)": preview(InstallParams(key=PREVIEW_KEY, facts="compact")),
                    "install, long without facts (blind)": preview(InstallParams(key=PREVIEW_KEY, facts=False)),
                }
                failures = 0
                for name, lines in variants.items():
                    typed_at = time.monotonic()
                    for line in lines:  # one send per line, as a recovery types them
                        channel.send(line + "\r")
                    elapsed = time.monotonic() - typed_at
                    content = wait_for_text(serial, f"GOT<{lines[-1]}>", 20)
                    got = [line[4:-1] for line in content.splitlines() if line.startswith("GOT<")]
                    exact = got[-len(lines):] == lines
                    failures += not exact
                    chars = sum(len(line) + 1 for line in lines)
                    events = sum(key_events(line + "\r") for line in lines)
                    channel.screenshot(Path(scratch) / "screen.png")  # the screen as it is now
                    right, shown, ms = reading_accuracy(channel, lines)
                    print(f"{name}: {chars} characters, {events} key events ({events * 10 / 1000:.1f} s at QEMU's "
                          f"10 ms), typed in {elapsed:.1f} s; exact: {exact}; screen read {right}/{shown} "
                          f"characters right, {ms:.0f} ms")
                    if not exact:
                        print(f"expected {lines!r}\ngot      {got[-len(lines):]!r}")
            finally:
                channel.close()
            return 1 if failures else 0
        finally:
            stop_child(qemu)


if __name__ == "__main__":
    sys.exit(main())
