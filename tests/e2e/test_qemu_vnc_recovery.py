"""A whole recovery through QEMU's own VNC server (the console libvirt and Nova VMs have) into a real VM.

The VM (tests/e2e/qemu_vm.py) runs under software emulation: busybox getty and login on its VGA
text console (in one test the Linux framebuffer console, as cloud images boot), OpenSSH's sshd behind a
loopback port forward, and the kernel printing a message on the
console every 2 s, over whatever prompt is there (a screen that keeps changing, with QEMU's blinking
cursor). QEMU feeds the guest keyboard one key event per 10 ms and drops what overflows, so this is
where typing pace gets tested. The screen is read (recovery.channels.screen): the tests check it really was,
that a wrong password ends the run at login, and that a reader with no font still recovers, blind.
The same VM then takes every printable ASCII character, read back over SSH.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from recovery.channels.dialogue import ConsoleSession
from recovery.safety.redact import Secret
from tests.e2e.conftest import VNC_PLAYBOOK, Result, assert_screenshots, recovery
from tests.e2e.qemu_vm import Vm, running_vm
from tests.e2e.test_recovery import report_of
from tests.integration.vnc_fixture import PRINTABLE, opened

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def vm() -> Iterator[Vm]:
    with running_vm(kernel_noise=True) as machine:
        yield machine


def recover(vm: Vm, workdir: Path, password: str, **env: str) -> Result:
    return recovery(
        "run", str(VNC_PLAYBOOK),
        "-e", f"console_url={vm.vnc_url}",
        "-e", "ssh_host=127.0.0.1",
        "-e", f"ssh_port={vm.ssh_port}",
        "-e", f"user={vm.user}",
        "-e", f"host_key_fingerprint={vm.host_key_fingerprint}",
        "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_PASSWORD": password, "RECOVERY_KEYS_DIR": str(workdir / "keys"), **env},
        timeout=400,
    )


def screen_reading(workdir: Path, result: Result) -> str:
    """How the run read the VNC screen (console.open's output): font and grid, or "blind"."""
    (step,) = (workdir / "runs" / result.run_id / "steps").glob("*-console.json")
    reading: str = json.loads(step.read_text())["outputs"]["screen"]
    return reading


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


def test_a_wrong_password_ends_the_run_at_login_then_the_right_one_recovers(vm: Vm, workdir: Path) -> None:
    started = time.monotonic()
    refused = recover(vm, workdir, "not-the-password")
    refused_after = time.monotonic() - started
    assert refused.code == 1, refused.stderr
    assert "the console refused the password" in refused.stderr
    assert report_of(workdir, refused)["failed_step"] == "login"
    transcript = (workdir / "runs" / refused.run_id / "transcript.log").read_text()
    typed = re.findall(r"^>>> (.*)$", transcript, re.MULTILINE)
    assert typed[-1] == "<password>", typed  # nothing typed after it

    started = time.monotonic()
    result = recover(vm, workdir, vm.password)
    elapsed = time.monotonic() - started
    assert result.code == 0, result.stderr
    assert screen_reading(workdir, result) == "iso01a-8x16 in 9x16 cells, 80x25", "VGA text mode, read"
    report = report_of(workdir, result)
    seconds = {record["id"]: record["seconds"] for record in report["timeline"]}
    print(f"QEMU VNC: wrong password refused {refused_after:.1f} s after the start; recovery {elapsed:.1f} s "
          f"(login {seconds['login']:.1f} s, install {seconds['install']:.1f} s)")
    key = report["keys"][0]
    # Only this run's key: the refused run changed nothing (the VM had no authorized_keys).
    assert ssh_read(vm, Path(key["private_key_path"]), ".ssh/authorized_keys") == key["public_key"] + "\n"
    assert "appended the new key to ~/.ssh/authorized_keys" in report["vm_changes"], "the screen was read"
    assert "created ~/.ssh (0700)" in report["vm_changes"]
    assert "key checksum on the VM: verified" in report["vm_changes"]
    assert_screenshots(report)
    screens = sorted((workdir / "runs" / result.run_id).glob("screen-*.txt"))
    assert len(screens) == 3
    assert "login:" in screens[0].read_text()
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


def test_a_screen_no_font_reads_is_driven_blind_and_still_recovers(vm: Vm, workdir: Path) -> None:
    result = recover(vm, workdir, vm.password, RECOVERY_SCREEN_FONTS="")
    assert result.code == 0, result.stderr
    report = report_of(workdir, result)
    assert any("typed blind" in change for change in report["vm_changes"]), report["vm_changes"]
    assert screen_reading(workdir, result) == "blind"
    assert not list((workdir / "runs" / result.run_id).glob("screen-*.txt"))
    key = report["keys"][0]
    lines = ssh_read(vm, Path(key["private_key_path"]), ".ssh/authorized_keys").splitlines()
    assert lines.count(key["public_key"]) == 1


def test_the_framebuffer_console_is_read(workdir: Path) -> None:
    """fbcon (vga=791: 1024x768, the kernel's built-in VGA 8x16 font in 128x48 cells), with kernel messages
    printed over it: the screen is read, not fallen back on (the facts come back from it)."""
    with running_vm(kernel_noise=True, framebuffer=True) as machine:
        result = recover(machine, workdir, machine.password)
        assert result.code == 0, result.stderr
        assert screen_reading(workdir, result).endswith(" in 8x16 cells, 128x48"), "read, not blind"
        report = report_of(workdir, result)
        assert "appended the new key to ~/.ssh/authorized_keys" in report["vm_changes"], "the facts were read"
        assert "key checksum on the VM: verified" in report["vm_changes"]
        screens = sorted((workdir / "runs" / result.run_id).glob("screen-*.txt"))
        assert re.search(r"^RCV-[0-9a-f]{8}-0$", screens[-1].read_text(), re.MULTILINE), "the marker was read"
        key = report["keys"][0]
        assert ssh_read(machine, Path(key["private_key_path"]), ".ssh/authorized_keys") == key["public_key"] + "\n"
        print(f"QEMU VNC, framebuffer console: recovery {report['seconds']:.1f} s")
