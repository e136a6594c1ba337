"""Fleets behind one bastion: the checks share its logins, counted in the bastion's own log.

The bastion is an sshd at LogLevel DEBUG1 (`tests.integration.test_jump_sshd.bastion`): it logs
each login ("Accepted publickey"), each TCP connection ("Connection from") and each
``direct-tcpip`` channel it opens. The VMs are four more sshd of 15 ports each for the lab's user.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.ssh.jump import JumpPool, parse_jumps
from recovery.ssh.keys import KeyPair, generate_keypair
from tests.integration.sshd_fixture import SSHServer, running_sshd
from tests.integration.sshd_fleet import ExtraSSHD, extra_sshd
from tests.integration.test_jump_sshd import Bastion, authorize_at_bastion, bastion

VMS = 60


@dataclass(frozen=True)
class Site:
    lab: SSHServer
    jump_host: Bastion
    fleet: list[ExtraSSHD]
    vm_key: KeyPair
    jump_key: KeyPair
    directory: Path

    @property
    def jump(self) -> str:
        return f"{self.lab.user}@127.0.0.1:{self.jump_host.port}"

    def ports(self) -> list[tuple[int, str]]:
        """(port, host key pin) of every VM."""
        return [(port, sshd.fingerprint("ed25519")) for sshd in self.fleet for port in sshd.ports]

    def log_mark(self) -> int:
        return len(self.jump_host.log.read_text(errors="replace"))

    def log_since(self, mark: int) -> str:
        return self.jump_host.log.read_text(errors="replace")[mark:]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("jump-pool")
    with ExitStack() as stack:
        lab = stack.enter_context(running_sshd())
        jump_host = stack.enter_context(bastion(directory, lab.user, "bastion"))
        fleet = [stack.enter_context(extra_sshd(directory, lab.user, ports=15, name=f"vms{number}"))
                 for number in range(VMS // 15)]
        vm_key = generate_keypair(directory / "vm", comment="vm")
        jump_key = generate_keypair(directory / "jump", comment="jump")
        lab.authorize(vm_key.public_line)
        authorize_at_bastion(lab.home, jump_key.public_line)
        yield Site(lab, jump_host, fleet, vm_key, jump_key, directory)


def inventory(site: Site, path: Path, *, pin: str, count: int = VMS) -> Path:
    """Every VM behind the bastion through `defaults.jump`, its jump key and pin as lists (one hop)."""
    lines = ["defaults:", f"  user: {site.lab.user}", f"  key: {site.vm_key.private_path}", "  host: 127.0.0.1",
             f"  jump: {site.jump}", f"  jump_keys: [{site.jump_key.private_path}]", f"  jump_host_keys: ['{pin}']",
             "hosts:"]
    lines += [f"  - {{name: vm{index:02d}, port: {port}, host_key: '{host_key}'}}"
              for index, (port, host_key) in enumerate(site.ports()[:count])]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_audits_one_after_another_each_log_in_once_and_lose_no_vm(site: Site, tmp_path: Path) -> None:
    """A fleet's channels opening and closing on one login: each run's VMs all ok, on one login each.

    Against a pump that select()ed on paramiko's `Channel.fileno` pipe: a byte for a closed pipe
    went to a reused descriptor, the login's own socket failed with EBADF and every VM in flight
    failed with it (benchmarks/revoke_fleet.py --bastion: a run in three lost 35 to 47 of 200).
    """
    from recovery.audit.api import check
    from recovery.audit.inventory import HostDefaults, load_inventory

    hosts = load_inventory(inventory(site, tmp_path / "fleet.yaml", pin=site.jump_host.host_key), HostDefaults())
    for _ in range(4):
        mark = site.log_mark()
        report = check(hosts, concurrency=30, timeout=120)
        assert [(result.host.name, result.message) for result in report.results if not result.ok] == []
        assert site.log_since(mark).count("Accepted publickey for") == 1


@pytest.mark.parametrize("engine", ["libssh2", "paramiko"])
def test_an_audit_of_60_vms_behind_one_bastion_logs_in_to_it_once(
    site: Site, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECOVERY_AUDIT_ENGINE", engine)
    mark = site.log_mark()

    code = main(["audit", "--inventory", str(inventory(site, tmp_path / "fleet.yaml", pin=site.jump_host.host_key)),
                 "--format", "json", "--concurrency", str(VMS), "--timeout", "120"])

    report = json.loads(capsys.readouterr().out)
    assert [(host["name"], host["status"]) for host in report["hosts"] if host["status"] != "ok"] == []
    assert code == 0
    assert report["summary"]["engine"] == engine
    log = site.log_since(mark)
    assert log.count("Accepted publickey for") == 1  # 60 channels fit on one login (64 each)
    forwarded = re.findall(r"server_request_direct_tcpip: originator .*, target 127\.0\.0\.1 port (\d+)", log)
    assert sorted(map(int, forwarded)) == sorted(port for port, _ in site.ports())
    assert "referred to nonexistent channel" not in log


def test_a_wrong_bastion_host_key_fails_every_vm_naming_it_after_one_connection(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mark = site.log_mark()

    code = main(["audit", "--inventory", str(inventory(site, tmp_path / "fleet.yaml", pin="SHA256:" + "B" * 43,
                                                       count=20)),
                 "--format", "json", "--concurrency", "20", "--timeout", "60"])

    hosts = json.loads(capsys.readouterr().out)["hosts"]
    assert code == 1
    assert {host["status"] for host in hosts} == {"host_key_changed"}
    assert all(host["message"].startswith(f"jump host {site.jump}: ") for host in hosts), hosts[0]["message"]
    log = site.log_since(mark)
    assert log.count("Connection from 127.0.0.1") == 1  # refused once for all: not a login per VM
    assert "Accepted publickey for" not in log


def test_the_flags_reach_hosts_whose_inventory_names_no_jump(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (port, host_key), (direct_port, direct_key) = site.ports()[:2]
    path = tmp_path / "two.yaml"
    path.write_text(f"defaults: {{user: {site.lab.user}, key: {site.vm_key.private_path}, host: 127.0.0.1}}\n"
                    f"hosts:\n  - {{name: behind, port: {port}, host_key: '{host_key}'}}\n"
                    f"  - {{name: direct, port: {direct_port}, host_key: '{direct_key}', jump: ''}}\n")
    mark = site.log_mark()

    code = main(["audit", "--inventory", str(path), "--format", "json", "--timeout", "60", "--jump", site.jump,
                 "--jump-keys", str(site.jump_key.private_path), "--jump-host-keys", site.jump_host.host_key])

    assert [host["status"] for host in json.loads(capsys.readouterr().out)["hosts"]] == ["ok", "ok"]
    assert code == 0
    log = site.log_since(mark)
    assert re.search(rf"target 127\.0\.0\.1 port {port}\b", log)
    assert not re.search(rf"target 127\.0\.0\.1 port {direct_port}\b", log)


def test_a_bastion_login_that_drops_is_replaced_for_the_next_vm(site: Site) -> None:
    hops = parse_jumps(site.jump, keys=str(site.jump_key.private_path), host_keys=site.jump_host.host_key)
    port = site.ports()[0][0]
    with JumpPool() as pool:
        with pool.connect(hops, ("127.0.0.1", port), None, timeout=60) as sock:
            sock.settimeout(60)
            assert sock.recv(64).startswith(b"SSH-2.0-")
            [login] = [login for chain in pool._chains.values() for login in chain.logins]
            login.transport.close()  # the bastion connection drops (sshd restarted, a NAT timeout)
        with pool.connect(hops, ("127.0.0.1", port), None, timeout=60) as sock:
            sock.settimeout(60)
            assert sock.recv(64).startswith(b"SSH-2.0-")
        assert pool.logins == 2


def test_revoke_reads_the_inventory_jump_and_shares_the_bastion_login_with_its_proof(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen@laptop")
    site.lab.authorize(stolen.public_line)  # every VM of the site reads the lab user's file
    mark = site.log_mark()

    code = main(["revoke", "--public-key", str(stolen.public_path), "--stolen-key", str(stolen.private_path),
                 "--inventory", str(inventory(site, tmp_path / "fleet.yaml", pin=site.jump_host.host_key, count=5)),
                 "--concurrency", "1", "--format", "json", "--timeout", "60"])

    hosts = json.loads(capsys.readouterr().out)["hosts"]
    assert [(host["status"], host["proof"]) for host in hosts] == [("removed", "auth_rejected")] + [
        ("clean", "auth_rejected")] * 4
    assert code == 0
    assert stolen.public_line not in (site.lab.home / ".ssh" / "authorized_keys").read_text()
    log = site.log_since(mark)
    assert log.count("Accepted publickey for") == 1  # the admin's sessions and the proofs, on one login
    assert len(re.findall(r"server_request_direct_tcpip: originator", log)) == 10


def test_a_bastion_without_a_pin_is_checked_against_known_hosts_else_unknown(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (port, host_key), = site.ports()[:1]
    path = tmp_path / "one.yaml"
    path.write_text(f"hosts:\n  - {{name: vm, host: 127.0.0.1, port: {port}, host_key: '{host_key}', "
                    f"user: {site.lab.user}, key: {site.vm_key.private_path}, jump: {site.jump}, "
                    f"jump_keys: {site.jump_key.private_path}}}\n")
    public = (site.directory / "bastion_host_key.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{site.jump_host.port} {public[0]} {public[1]}\n")

    vouched = main(["audit", "--inventory", str(path), "--format", "json", "--known-hosts", str(known)])
    [first] = json.loads(capsys.readouterr().out)["hosts"]
    unknown = main(["audit", "--inventory", str(path), "--format", "json"])
    [second] = json.loads(capsys.readouterr().out)["hosts"]

    assert (vouched, first["status"]) == (0, "ok")
    assert (unknown, second["status"]) == (1, "host_key_unknown")
    assert second["message"].startswith(f"jump host {site.jump}: ")
