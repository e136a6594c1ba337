"""The boot loader route (issue 10, route 3) against a real Debian 12 VM behind a real GRUB.

One test, the whole route, two boots (~25 s each under software emulation): the VM is reset through
its QMP socket, GRUB's hidden menu (timeout=0) stopped with ESC from power-on, the kernel line found
by reading the editor on the serial console, the entry booted once with init=/bin/sh, the key
installed as the user from the root shell, and the VM reset into its normal boot. Proven by an SSH
login with the host key pinned; the old key still logs in, the password field is still `*`, and the
next boot is the normal one (GRUB's edit was not saved).

The same route through the VM's VNC console (`vnc`): GRUB on the VGA screen, its menu and editor read
by glyphs and its cursor found by its blinking, the root shell on the VGA console.

And through a real Nova 34 (`--cloud`): its hard reboot, done as libvirt's driver does it (the machine
stopped and another started, its serial port on another TCP port), closes the console; the route opens
it again with a fresh URL from Nova (the old token names the old port, which Nova's proxy refuses).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.lab.processes import free_port
from tests.agentvm.grub import GrubVm, ensure_grub_iso, grub_vm, kernel_version, qemu_argv, serial_console
from tests.agentvm.vm import IMAGE, copy_old_key, host_key_fingerprint, overlay, ssh_run, tail
from tests.cloud.nova_fixture import NovaServerSpec, running_nova
from tests.cloud.rescue_bed import stop_leftovers
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



def test_through_nova_the_hard_reboot_closes_the_console_and_the_route_opens_it_again(workdir: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="rcv-boot-nova-"))
    iso, disk = ensure_grub_iso("serial"), overlay(IMAGE / "base.qcow2", directory / "disk.qcow2")
    ssh_port, serial_log, pidfile = free_port(), directory / "serial.log", directory / "qemu.pid"

    def machine(serial_port: int, *, paused: bool) -> dict[str, object]:
        argv = qemu_argv(iso, disk, ssh_port, serial_console(serial_port, serial_log), paused=paused)
        return {"argv": [*argv, "-pidfile", str(pidfile)], "serial": ["127.0.0.1", serial_port],
                "log": str(directory / "qemu.log")}

    # Created powered off at power-on (-S); each hard reboot starts the VM afresh on the second port.
    spec = directory / "machines.json"
    spec.write_text(json.dumps({"boot": machine(free_port(), paused=True),
                                "reboot": machine(free_port(), paused=False)}))
    try:
        with running_nova(None, None, [NovaServerSpec("web-1", fixed_ip="10.0.0.5", floating_ip="127.0.0.1")],
                          machines=spec) as nova:
            nova.clouds_yaml(directory / "clouds.yaml", "bootcloud")
            result = recovery(
                "run", str(PLAYBOOK), "--cloud", "bootcloud",
                "-e", "server=web-1", "-e", "allow_reboot=true", "-e", "user=debian",
                "-e", f"ssh_port={ssh_port}", "-e", f"host_key_fingerprint={host_key_fingerprint(IMAGE)}",
                "-e", f"key_path={workdir / 'id_new'}", "--journal", str(workdir / "runs"),
                env={"OS_CLIENT_CONFIG_FILE": str(directory / "clouds.yaml")},
                timeout=1500,
            )
            assert result.code == 0, f"{result.stderr[-4000:]}\nserial console:\n{tail(serial_log, 40)}"
            reboots = [r for r in nova.api_requests() if r["method"] == "POST" and r["path"].endswith("/action")]
            assert len(reboots) == 2  # into GRUB, then the normal boot
            events = [json.loads(line)["event"]
                      for line in (workdir / "runs" / result.run_id / "events.jsonl").read_text().splitlines()]
            assert events.index("console_closed") < events.index("console_reopened") < events.index("grub_menu")
            old_key = copy_old_key(IMAGE, directory)
            assert ssh_run(ssh_port, workdir / "id_new", "id -un").strip() == "debian"
            assert ssh_run(ssh_port, old_key, "id -un").strip() == "debian"
    finally:
        stop_leftovers([pidfile])
        shutil.rmtree(directory, ignore_errors=True)
