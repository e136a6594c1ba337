"""Ansible inventories against real sshd: `recovery audit -l` with INI, `recovery revoke --dry-run` with YAML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.ssh.keys import KeyPair, generate_keypair
from tests.integration.sshd_fixture import HOST, SSHServer, running_sshd
from tests.integration.sshd_fleet import known_hosts_line

ROOT = Path(__file__).resolve().parents[2]


def test_audit_an_ini_inventory_limited_to_a_group(
    tmp_path: Path, sshd: SSHServer, audit_key: KeyPair, closed: int
) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "# the fleet, as Ansible has it\n"
        "[web]\n"
        f"web-1 ansible_host={HOST} ansible_port={sshd.port}\n"
        f"{HOST}:{sshd.port}   # a host:port name\n"
        "[db]\n"
        f"db-1 ansible_host={HOST} ansible_port={closed}\n"
        "[control]\n"
        "localhost ansible_connection=local\n"
        "[all:vars]\n"
        f"ansible_user={sshd.user}\n"
        f"ansible_ssh_private_key_file={audit_key.private_path}\n"
    )
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(sshd.port, sshd.host_public_key) + "\n")

    def audit(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "recovery", "audit", "--inventory", str(inventory), "--known-hosts",
             str(known_hosts), "--format", "json", *extra],
            capture_output=True, text=True, timeout=120, cwd=ROOT, check=False, env=dict(os.environ),
        )

    limited = audit("-l", "web")
    everything = audit()

    assert limited.returncode == 0, limited.stderr
    hosts = json.loads(limited.stdout)["hosts"]
    assert [(host["name"], host["status"]) for host in hosts] == [("web-1", "ok"), (HOST, "ok")]
    assert limited.stderr == ""  # localhost is not among the hosts chosen: nothing to say
    assert everything.returncode == 1, everything.stderr
    statuses = {host["name"]: host["status"] for host in json.loads(everything.stdout)["hosts"]}
    assert statuses == {"web-1": "ok", HOST: "ok", "db-1": "refused"}
    assert "ansible_connection is local (this machine, not reached over SSH): localhost" in everything.stderr


@pytest.fixture
def labs() -> Iterator[list[SSHServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(running_sshd()) for _ in range(3)]


def test_revoke_dry_run_with_an_ansible_yaml_inventory(
    tmp_path: Path, labs: list[SSHServer], capsys: pytest.CaptureFixture[str]
) -> None:
    admin = generate_keypair(tmp_path / "admin", comment="admin")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen@laptop")
    holds, clean, left_out = labs
    for lab, lines in ((holds, [admin, stolen]), (clean, [admin]), (left_out, [admin, stolen])):
        (lab.home / ".ssh" / "authorized_keys").write_text("".join(key.public_line + "\n" for key in lines))
    before = {lab.port: (lab.home / ".ssh" / "authorized_keys").read_bytes() for lab in labs}

    def entry(name: str, lab: SSHServer) -> str:
        return f"            {name}: {{ansible_host: {lab.host}, ansible_port: {lab.port}, ansible_user: {lab.user}}}\n"

    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n"
        "  vars:\n"
        f"    ansible_ssh_private_key_file: {admin.private_path}\n"
        "    ansible_become_pass: '{{ lookup(\"env\", \"BECOME\") }}'   # not read by recovery\n"
        "  children:\n"
        "    prod:\n"
        "      children:\n"
        "        web:\n"
        "          hosts:\n" + entry("web-1", holds) + entry("web-2", clean) + "    staging:\n"
        "      hosts:\n" + entry("stage-1", left_out).replace("            ", "        ")
    )
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(known_hosts_line(lab.port, lab.host_public_key) + "\n" for lab in labs))

    code = main(["revoke", "--public-key", str(stolen.public_path), "--inventory", str(inventory), "-l", "prod",
                 "--known-hosts", str(known_hosts), "--dry-run", "--format", "json", "--timeout", "20"])

    hosts = json.loads(capsys.readouterr().out)["hosts"]
    assert code == 1  # a host holds the key
    assert {host["name"]: host["status"] for host in hosts} == {"web-1": "holds_key", "web-2": "clean"}
    assert {lab.port: (lab.home / ".ssh" / "authorized_keys").read_bytes() for lab in labs} == before
