"""A whole recovery through a real VM's serial console: the busybox VM of tests/e2e/qemu_vm.py, with
busybox getty and login on its second serial port, which QEMU serves on a loopback TCP port and
websockify turns into a websocket, as Nova's serial proxy does.

Only here does busybox meet our serial console: its getty prints `(none) login:` (no host name
set), its ash asks where the cursor is (ESC[6n) after every prompt and gets our answer, and the
install script runs under busybox as a user whose PATH has no sshd, so it reads sshd_config itself.
The kernel writes its messages to the first serial port (console=ttyS0), like a cloud VM's log.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from recovery.lab.processes import free_port
from tests.e2e.conftest import PLAYBOOK, recovery
from tests.e2e.qemu_vm import (
    BOOT_TIMEOUT,
    USER,
    Vm,
    build_initramfs,
    free_vnc_display,
    pack_initramfs,
    parts,
    start_qemu,
    wait_for_text,
)
from tests.e2e.test_qemu_vnc_recovery import ssh_read
from tests.e2e.test_recovery import report_of
from tests.processes import stop_child

pytestmark = pytest.mark.vm

# A getty on ttyS1, respawned as init respawns one; -L: a local line, no carrier to wait for.
SERIAL_GETTY = "(while :; do getty -L 115200 ttyS1 vt100; done) &\n"


@dataclass(frozen=True)
class SerialVm:
    vm: Vm  # its VNC console stays as it is; the SSH forward and the password are the same
    console_url: str


def wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def running_serial_vm(password: str = "vm-Passw0rd") -> Iterator[SerialVm]:
    """Boot the busybox VM with a login on ttyS1 behind websockify; stops both (by PID) afterwards."""
    with tempfile.TemporaryDirectory(prefix="recovery-qemu-serial-") as scratch:
        work = Path(scratch)
        found = parts()
        initrd, fingerprint = build_initramfs(work, password, found)
        init = work / "root" / "init"
        init.write_text(init.read_text().replace("echo VM-READY", SERIAL_GETTY + "echo VM-READY"))
        pack_initramfs(work / "root", initrd)
        kernel_log = work / "serial.log"
        display, ssh_port, serial_port, ws_port = free_vnc_display(), free_port(), free_port(), free_port()
        with (work / "qemu.log").open("w") as qemu_log:  # QEMU has its own copy
            qemu = start_qemu(
                found["vmlinuz"], initrd, kernel_log, display,
                "-serial", f"tcp:127.0.0.1:{serial_port},server=on,wait=off",
                "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                "-device", "e1000,netdev=net0",
                stderr=qemu_log,
            )
        proxy: subprocess.Popen[bytes] | None = None
        try:
            wait_for_text(kernel_log, "VM-READY", BOOT_TIMEOUT)
            with (work / "websockify.log").open("w") as proxy_log:
                proxy = subprocess.Popen(
                    [sys.executable, "-m", "websockify", f"127.0.0.1:{ws_port}", f"127.0.0.1:{serial_port}"],
                    stdout=proxy_log, stderr=subprocess.STDOUT,
                )
            wait_listening(ws_port, 20)
            vm = Vm(f"vnc://127.0.0.1:{5900 + display}", ssh_port, USER, password, fingerprint)
            yield SerialVm(vm, f"ws://127.0.0.1:{ws_port}/")
        finally:
            if proxy is not None:
                stop_child(proxy)
            stop_child(qemu)


@pytest.fixture(scope="module")
def serial_vm() -> Iterator[SerialVm]:
    with running_serial_vm() as machine:
        yield machine


def test_recovery_through_a_busybox_vms_serial_console(serial_vm: SerialVm, workdir: Path) -> None:
    vm = serial_vm.vm
    result = recovery(
        "run", str(PLAYBOOK),
        "-e", "ssh_host=127.0.0.1",
        "-e", f"ssh_port={vm.ssh_port}",
        "-e", f"user={vm.user}",
        "-e", f"host_key_fingerprint={vm.host_key_fingerprint}",
        "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_URL": serial_vm.console_url, "RECOVERY_CONSOLE_PASSWORD": vm.password,
             "RECOVERY_KEYS_DIR": str(workdir / "keys")},
        timeout=400,
    )
    assert result.code == 0, result.stderr
    report = report_of(workdir, result)
    key = report["keys"][0]
    assert ssh_read(vm, Path(key["private_key_path"]), ".ssh/authorized_keys") == key["public_key"] + "\n"
    assert report["authorized_keys"]["sshd"] == {
        "read_from": "files", "authorized_keys_file": ".ssh/authorized_keys", "authorized_keys_command": "default",
    }
    transcript = (workdir / "runs" / result.run_id / "transcript.log").read_bytes()
    assert b"(none) login:" in transcript
    assert b"\x1b[6n" in transcript, "busybox ash asked where the cursor is"
    assert vm.password.encode() not in transcript
