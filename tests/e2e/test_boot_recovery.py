"""The boot loader route (issue 10, route 3) against a real Debian 12 VM behind a real GRUB.

One test, the whole route, two boots (~25 s each under software emulation): the VM is reset through
its QMP socket, GRUB's hidden menu (timeout=0) stopped with ESC from power-on, the kernel line found
by reading the editor on the serial console, the entry booted once with init=/bin/sh, the key
installed as the user from the root shell, and the VM reset into its normal boot. Proven by an SSH
login with the host key pinned; the old key still logs in, the password field is still `*`, and the
next boot is the normal one (GRUB's edit was not saved).

The same route through the VM's VNC console (`vnc`): GRUB on the VGA screen, its menu and editor read
by glyphs and its cursor found by its blinking, the root shell on the VGA console.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentvm.grub import GrubVm, grub_vm, kernel_version
from tests.agentvm.vm import IMAGE, ssh_run, tail
from tests.e2e.conftest import ROOT, recovery

pytestmark = pytest.mark.vm

PLAYBOOK = ROOT / "playbooks" / "restore-access-boot.yaml"


@pytest.fixture(params=["serial", "vnc"])
def vm(request: pytest.FixtureRequest) -> Iterator[GrubVm]:
    with grub_vm(request.param) as machine:
        yield machine


def test_the_boot_loader_route_recovers_a_vm_without_password_or_agent(vm: GrubVm, workdir: Path) -> None:
    result = recovery(
        "run", str(PLAYBOOK),
        "-e", "allow_reboot=true",
        "-e", f"power={vm.power}",
        "-e", "user=debian",
        "-e", "ssh_host=127.0.0.1",
        "-e", f"ssh_port={vm.ssh_port}",
        "-e", f"host_key_fingerprint={vm.host_key_fingerprint}",
        "-e", f"key_path={workdir / 'id_new'}",
        "-e", f"report={workdir / 'report.json'}",
        "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_URL": vm.console_url},
        timeout=1500,  # two boots; a machine busy with other VMs slows an emulated one tenfold
    )
    assert result.code == 0, f"{result.stderr}\nserial console:\n{tail(vm.serial_log, 40)}"
    report = json.loads((workdir / "report.json").read_text())
    assert report["status"] == "succeeded"
    assert report["proof"]["host_key_trust"] == "pinned"
    assert "appended the new key to ~/.ssh/authorized_keys" in report["vm_changes"]
    run = workdir / "runs" / result.run_id
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    edit = next(event for event in events if event["event"] == "grub_edit")
    consoles = (["console=ttyS0,115200", "console=tty0"] if vm.console_url.startswith("vnc://")
                else ["console=tty0", "console=ttyS0,115200"])
    assert edit["before"].split() == ["linux", f"/boot/vmlinuz-{kernel_version(IMAGE / 'vmlinuz')}", "root=/dev/vda",
                                      "ro", *consoles, "quiet"]
    assert edit["after"] == edit["before"] + " init=/bin/sh"
    shell = next(event for event in events if event["event"] == "root_shell")
    # On VNC the root shell acknowledges keys with its Num Lock light again: the install is typed in bursts.
    assert shell["keys_acknowledged"] is (True if vm.console_url.startswith("vnc://") else None)
    checked = ssh_run(vm.ssh_port, workdir / "id_new", "id -un; stat -c '%U:%G %a' .ssh .ssh/authorized_keys; "
                         "cat /proc/cmdline")
    lines = checked.splitlines()
    assert lines[:3] == ["debian", "debian:debian 700", "debian:debian 600"]
    assert "init=/bin/sh" not in lines[-1], "GRUB's edit was saved: the normal boot has it too"
    assert ssh_run(vm.ssh_port, vm.old_key, "id -un").strip() == "debian"

