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
where the screen is read (recovery.guest's terse one-line command), and the long one without facts it types where it
is not; each with its characters, key events and seconds, and compare what the VM read. The VGA
screen shows what was typed (the tty echoes it): the screen reader's accuracy is measured on it,
characters read right out of those shown, and its milliseconds per screen.

Then whole recoveries from the command line (restore-access-vnc.yaml) into the e2e test VM
(tests/e2e/qemu_vm.py: getty, login and sshd, the kernel printing on the console every 2 s), on its
VGA text console and on its framebuffer console (vga=791): a wrong password (seconds until the run
ends, exit 1 at login), then the right one (seconds in all and per step, characters and key events
typed, how the screen was read). Exit status 0: typing exact and every recovery as expected.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import require_programs
from recovery.channels.dialogue import ECHO_PIECE
from recovery.channels.echo import typed_shown
from recovery.channels.screen import GlyphReader
from recovery.channels.vnc import VncChannel, keys_for, qemu_bursts
from recovery.steps.authorized_keys import PREVIEW_KEY, InstallParams, preview
from tests.e2e.conftest import VNC_PLAYBOOK, Result, recovery
from tests.e2e.qemu_vm import (
    Vm,
    busybox_root,
    free_vnc_display,
    pack_initramfs,
    parts,
    running_vm,
    start_qemu,
    wait_for_text,
)
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
    """KeyEvents typing `text` on QEMU as the dialogue and VncChannel send them: in pieces of ECHO_PIECE
    characters, each in bursts (`qemu_bursts`: a modifier held across a run of characters that need it),
    and a Num Lock press and release after each burst (the guest's acknowledgement)."""
    events = 0
    for start in range(0, len(text), ECHO_PIECE):
        for burst in qemu_bursts(keys_for(text[start:start + ECHO_PIECE])):
            held = None
            for key in burst:
                if key.modifier != held:
                    events += (held is not None) + (key.modifier is not None)
                    held = key.modifier
                events += 2
            events += (held is not None) + 2
    return events


def reading_accuracy(channel: VncChannel, typed: list[str]) -> tuple[int, int, float]:
    """(characters read right, characters typed, ms per screen) for the last typed line, which the screen
    shows whole (wrapped over rows): its characters the screen ends with exactly (`typed_shown`)."""
    reader = GlyphReader()
    frame = channel.frame()
    reader.read(frame)  # finds the grid
    started = time.perf_counter()
    text = reader.read(frame)
    ms = (time.perf_counter() - started) * 1000
    last = typed[-1].rstrip()
    return (typed_shown(text, last) if text is not None else 0), len(last), ms


def recover(vm: Vm, work: Path, password: str) -> tuple[Result, float]:
    started = time.monotonic()
    result = recovery(
        "run", str(VNC_PLAYBOOK), "-e", f"console_url={vm.vnc_url}", "-e", "ssh_host=127.0.0.1",
        "-e", f"ssh_port={vm.ssh_port}", "-e", f"user={vm.user}",
        "-e", f"host_key_fingerprint={vm.host_key_fingerprint}",
        "--journal", str(work / "runs"),
        env={"RECOVERY_CONSOLE_PASSWORD": password, "RECOVERY_KEYS_DIR": str(work / "keys")}, timeout=400,
    )
    return result, time.monotonic() - started


def recoveries(framebuffer: bool) -> int:
    """A wrong password, then the right one, into a fresh e2e VM; prints the figures, returns the failures."""
    console = "framebuffer console (vga=791)" if framebuffer else "VGA text console"
    with running_vm(kernel_noise=True, framebuffer=framebuffer) as vm, tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        refused, refused_after = recover(vm, work, "not-the-password")
        refused_ok = refused.code == 1 and "the console refused the password" in refused.stderr
        print(f"{console}: wrong password: exit {refused.code} after {refused_after:.1f} s "
              f"({'refused at login' if refused_ok else 'NOT refused as expected'})")
        result, elapsed = recover(vm, work, vm.password)
        if result.code != 0:
            print(f"{console}: recovery FAILED (exit {result.code}):\n{result.stderr[-2000:]}")
            return 1
        run = work / "runs" / result.run_id
        report = json.loads((run / "report.json").read_text())
        steps = ", ".join(f"{record['id']} {record['seconds']:.1f} s" for record in report["timeline"]
                          if record["seconds"] >= 0.05)
        (console_step,) = run.glob("steps/*-console.json")
        reading = json.loads(console_step.read_text())["outputs"]["screen"]
        typed = [line for line in (run / "typed-install.txt").read_text().splitlines() if line]
        chars = sum(len(line) + 1 for line in typed)
        events = sum(key_events(line + "\r") for line in typed)
        retyped = (run / "transcript.log").read_text().count(">>> <Ctrl-C>")
        print(f"{console}: recovery {elapsed:.1f} s from the command line ({steps}); install typed {chars} "
              f"characters, {events} key events ({events * 10 / 1000:.1f} s at 10 ms); screen read as {reading}; "
              f"Ctrl-C presses {retyped}; changes: {report['vm_changes']}")
        return 0 if refused_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("typing", "recovery"), help="run one half only")
    options = parser.parse_args()
    require_programs("qemu-system-x86_64", "cpio")
    failures = 0
    if options.only != "recovery":
        failures += typing()
    if options.only != "typing":
        failures += recoveries(framebuffer=False) + recoveries(framebuffer=True)
    return 1 if failures else 0


def typing() -> int:
    """Type every printable character and both install commands into the line-reading VM; the failures."""
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
                          f"10 ms), typed in {elapsed:.1f} s; exact: {exact}; the last line read back {right}/{shown} "
                          f"characters right, {ms:.0f} ms a screen")
                    if not exact:
                        print(f"expected {lines!r}\ngot      {got[-len(lines):]!r}")
            finally:
                channel.close()
            return failures
        finally:
            stop_child(qemu)


if __name__ == "__main__":
    sys.exit(main())
