"""`recovery revoke --jump`: VMs behind a bastion, reached through it (its DEBUG1 log shows the forwarding)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.ssh.keys import generate_keypair
from tests.integration.sshd_fixture import running_sshd
from tests.integration.test_jump_sshd import authorize_at_bastion, bastion


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as resources:
        yield resources


def test_two_hosts_behind_one_bastion(
    stack: ExitStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vms = [stack.enter_context(running_sshd()) for _ in range(2)]
    jump_host = stack.enter_context(bastion(tmp_path / "bastion", vms[0].user, "b"))
    admin = generate_keypair(tmp_path / "admin", comment="admin")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen@laptop")
    jump_key = generate_keypair(tmp_path / "jump", comment="jump")
    for vm in vms:
        (vm.home / ".ssh" / "authorized_keys").write_text(f"{admin.public_line}\n{stolen.public_line}\n")
    authorize_at_bastion(vms[0].home, jump_key.public_line)
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(f"defaults: {{key: {admin.private_path}}}\nhosts:\n" + "".join(
        f"  - {{name: vm{index}, host: 127.0.0.1, port: {vm.port}, user: {vm.user}, "
        f"host_key: '{vm.host_key_sha256}'}}\n"
        for index, vm in enumerate(vms)))

    code = main(["revoke", "--public-key", str(stolen.public_path), "--inventory", str(inventory), "--format", "json",
                 "--stolen-key", str(stolen.private_path), "--jump", f"{vms[0].user}@127.0.0.1:{jump_host.port}",
                 "--jump-keys", str(jump_key.private_path), "--jump-host-keys", jump_host.host_key])

    hosts = json.loads(capsys.readouterr().out)["hosts"]
    assert code == 0, hosts
    assert [(host["status"], host["proof"]) for host in hosts] == [("removed", "auth_rejected")] * 2
    for vm in vms:
        assert (vm.home / ".ssh" / "authorized_keys").read_text() == f"{admin.public_line}\n"
    assert all(jump_host.forwarded_to(vm.port) for vm in vms)


def test_a_wrong_bastion_pin_fails_every_host_naming_the_bastion(
    stack: ExitStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vm = stack.enter_context(running_sshd())
    jump_host = stack.enter_context(bastion(tmp_path / "bastion", vm.user, "b"))
    admin = generate_keypair(tmp_path / "admin", comment="admin")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen@laptop")
    (vm.home / ".ssh" / "authorized_keys").write_text(f"{admin.public_line}\n{stolen.public_line}\n")
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(f"hosts:\n  - {{name: vm, host: 127.0.0.1, port: {vm.port}, user: {vm.user}, "
                         f"key: {admin.private_path}, host_key: '{vm.host_key_sha256}'}}\n")

    code = main(["revoke", "--public-key", str(stolen.public_path), "--inventory", str(inventory), "--format", "json",
                 "--jump", f"{vm.user}@127.0.0.1:{jump_host.port}", "--jump-host-keys", "SHA256:" + "B" * 43])

    [host] = json.loads(capsys.readouterr().out)["hosts"]
    assert code == 1
    assert host["status"] == "host_key_changed"
    assert host["message"].startswith(f"jump host {vm.user}@127.0.0.1:{jump_host.port}: ")
    assert stolen.public_line in (vm.home / ".ssh" / "authorized_keys").read_text()
