"""A whole recovery through QEMU's own VNC server (the console libvirt and Nova VMs have) into a real VM.

The VM (tests/e2e/qemu_vm.py) runs under software emulation: busybox getty and login on its VGA
console, OpenSSH's sshd behind a loopback port forward. QEMU feeds the guest keyboard one key event
per 10 ms and drops what overflows, so this is where typing pace and the blind login really get
tested; the same VM then takes every printable ASCII character, read back over SSH.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from recovery.console import ConsoleSession
from recovery.redact import Secret
from tests.e2e.conftest import VNC_PLAYBOOK, assert_screenshots, recovery
from tests.e2e.qemu_vm import Vm, running_vm
from tests.e2e.test_recovery import report_of
from tests.integration.vnc_fixture import PRINTABLE, opened


@pytest.fixture(scope="module")
def vm() -> Iterator[Vm]:
    with running_vm() as machine:
        yield machine


def ssh_read(vm: Vm, private_key: Path, path: str) -> str:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # the recovery pinned it; this only reads
    client.connect("127.0.0.1", port=vm.ssh_port, username=vm.user, key_filename=str(private_key),
                   allow_agent=False, look_for_keys=False, timeout=20)
    try:
        _, stdout, _ = client.exec_command(f"cat {path}", timeout=20)
        return stdout.read().decode()
    finally:
        client.close()


def test_recovery_through_qemus_vnc_console_into_a_real_vm(vm: Vm, workdir: Path) -> None:
    result = recovery(
        "run", str(VNC_PLAYBOOK),
        "-e", f"console_url={vm.vnc_url}",
        "-e", "ssh_host=127.0.0.1",
        "-e", f"ssh_port={vm.ssh_port}",
        "-e", f"user={vm.user}",
        "-e", f"host_key_fingerprint={vm.host_key_fingerprint}",
        "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_PASSWORD": vm.password, "RECOVERY_KEYS_DIR": str(workdir / "keys")},
        timeout=400,
    )
    assert result.code == 0, result.stderr
    report = report_of(workdir, result)
    seconds = {record["id"]: record["seconds"] for record in report["timeline"]}
    print(f"QEMU VNC recovery: login {seconds['login']:.1f} s, install {seconds['install']:.1f} s")
    key = report["keys"][0]
    assert ssh_read(vm, Path(key["private_key_path"]), ".ssh/authorized_keys") == key["public_key"] + "\n"
    assert_screenshots(report)
    for written in (workdir / "runs" / result.run_id).rglob("*"):
        if written.is_file() and written.suffix != ".png":
            assert vm.password.encode() not in written.read_bytes(), written

    channel = opened(vm.vnc_url, timeout=20)
    try:
        assert channel.slow_keyboard
        assert channel.guest_acks, "the guest answers Num Lock presses"
        console = ConsoleSession(channel)
        console.login(vm.user, Secret(vm.password), timeout=60)
        channel.send("cat > typed.txt\r" + PRINTABLE + "\r" + PRINTABLE[::-1] + "\r\x04")
        console.logout()
    finally:
        channel.close()
    assert ssh_read(vm, Path(key["private_key_path"]), "typed.txt") == f"{PRINTABLE}\n{PRINTABLE[::-1]}\n"
