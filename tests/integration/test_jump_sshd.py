"""Jump hosts with real sshd: the login to the VM goes through one or two bastions, each its own login.

The VM is the lab's sshd (keys in ~/.ssh/authorized_keys). Each bastion is another sshd for the same
user that reads ~/.ssh/jump_keys instead, so the bastion key and the VM key are truly different logins,
and logs at DEBUG1, where sshd names every direct-tcpip request: the proof the path went through it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from recovery.engine.config import Config
from recovery.engine.context import SharedState, StepContext
from recovery.engine.journal import Journal
from recovery.engine.report import RunReport
from recovery.errors import AuthRejected, ConnectionRefused, HostKeyMismatch
from recovery.lab import commands, processes, sshd
from recovery.ssh.jump import parse_jumps
from recovery.ssh.keys import KeyPair, generate_keypair
from recovery.ssh.remote import remote_shell
from recovery.ssh.verifier import ParamikoVerifier, SSHTarget
from recovery.steps.ssh import VerifyParams, verify
from tests.integration.sshd_fixture import SSHServer, running_sshd

JUMP_KEYS = ".ssh/jump_keys"


def authorize_at_bastion(home: Path, public_line: str) -> None:
    """Let `public_line` log in to the bastions (their AuthorizedKeysFile is JUMP_KEYS under the lab user's home)."""
    jump_keys = home / JUMP_KEYS
    jump_keys.write_text(public_line + "\n")
    jump_keys.chmod(0o600)
    owner = (home / ".ssh").stat()
    os.chown(jump_keys, owner.st_uid, owner.st_gid)


@dataclass(frozen=True)
class Bastion:
    port: int
    host_key: str  # SHA256 fingerprint
    log: Path

    def forwarded_to(self, port: int) -> bool:
        text = self.log.read_text(errors="replace")
        found = re.search(rf"server_request_direct_tcpip: originator .*, target 127\.0\.0\.1 port {port}\b", text)
        return found is not None


@contextmanager
def bastion(directory: Path, user: str, name: str) -> Iterator[Bastion]:
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{name}_host_key"
    public = commands.generate_key(key_path, comment=f"{name}-host")
    port = processes.free_port()
    text = sshd.config_text(ports=[port], host_keys=[key_path], pid_file=None, user=user, authorized_keys=JUMP_KEYS)
    assert "LogLevel VERBOSE" in text
    config = directory / f"{name}_sshd_config"
    config.write_text(text.replace("LogLevel VERBOSE", "LogLevel DEBUG1") + "AllowTcpForwarding yes\n")
    log = directory / f"{name}.log"
    binary = commands.find_tool("sshd", "openssh-server")
    commands.run([binary, "-t", "-f", str(config)], purpose=f"check {config}")
    pid = processes.spawn([binary, "-D", "-f", str(config), "-E", str(log)], log_path=log)
    try:
        if not processes.poll_until(lambda: sshd.answers(port), 20.0):
            raise RuntimeError(f"bastion sshd {pid} did not answer: {processes.log_tail(log)}")
        yield Bastion(port, commands.fingerprint(public), log)
    finally:
        processes.stop(pid)


@dataclass(frozen=True)
class Site:
    vm: SSHServer
    first: Bastion
    second: Bastion
    vm_key: KeyPair
    jump_key: KeyPair


@contextmanager
def two_bastions(directory: Path) -> Iterator[Site]:
    """A VM's sshd behind two bastions b1 and b2, with a key for the VM and one the bastions take."""
    with running_sshd() as vm, bastion(directory, vm.user, "b1") as first, bastion(directory, vm.user, "b2") as second:
        vm_key = generate_keypair(directory / "vm", comment="vm")
        jump_key = generate_keypair(directory / "jump", comment="jump")
        vm.authorize(vm_key.public_line)
        authorize_at_bastion(vm.home, jump_key.public_line)
        yield Site(vm, first, second, vm_key, jump_key)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with two_bastions(tmp_path_factory.mktemp("jump")) as site:
        yield site


def target(site: Site, jump: str, host_keys: str) -> SSHTarget:
    hops = parse_jumps(jump, keys=str(site.jump_key.private_path), host_keys=host_keys)
    return SSHTarget(site.vm.host, site.vm.port, site.vm.user, host_key_fingerprint=site.vm.host_key_sha256,
                     jumps=hops)


def test_the_login_goes_through_one_jump_host(site: Site) -> None:
    result = ParamikoVerifier().verify(
        target(site, f"{site.vm.user}@127.0.0.1:{site.first.port}", site.first.host_key), site.vm_key, timeout=15)

    assert result.remote_user == site.vm.user
    assert result.host_key_fingerprint == site.vm.host_key_sha256  # the VM's key, not the bastion's
    assert site.first.forwarded_to(site.vm.port)


def test_two_hops_each_forward_to_the_next(site: Site) -> None:
    user = site.vm.user
    jump = f"{user}@127.0.0.1:{site.first.port},{user}@127.0.0.1:{site.second.port}"

    result = ParamikoVerifier().verify(
        target(site, jump, f"{site.first.host_key},{site.second.host_key}"), site.vm_key, timeout=15)

    assert result.remote_user == user
    assert site.first.forwarded_to(site.second.port)
    assert site.second.forwarded_to(site.vm.port)


def test_a_wrong_jump_host_key_is_refused_naming_the_jump_host(site: Site) -> None:
    where = f"{site.vm.user}@127.0.0.1:{site.first.port}"
    with pytest.raises(HostKeyMismatch, match=rf"^jump host {re.escape(where)}: "):
        ParamikoVerifier().verify(target(site, where, site.second.host_key), site.vm_key, timeout=15)


def test_the_vm_rejecting_the_key_is_the_vms_failure_not_the_jump_hosts(site: Site) -> None:
    jump = f"{site.vm.user}@127.0.0.1:{site.first.port}"
    with pytest.raises(AuthRejected) as caught:
        ParamikoVerifier().verify(target(site, jump, site.first.host_key), site.jump_key, timeout=15)
    assert not str(caught.value).startswith("jump host")
    assert f"{site.vm.host}:{site.vm.port}" in str(caught.value)


def test_a_jump_host_refusing_its_key_is_named(site: Site) -> None:
    jump = f"{site.vm.user}@127.0.0.1:{site.first.port}"
    hops = parse_jumps(jump, keys=str(site.vm_key.private_path), host_keys=site.first.host_key)
    with pytest.raises(AuthRejected, match=rf"^jump host {re.escape(jump)}: "):
        ParamikoVerifier().verify(SSHTarget(site.vm.host, site.vm.port, site.vm.user,
                                            host_key_fingerprint=site.vm.host_key_sha256, jumps=hops),
                                  site.vm_key, timeout=15)


def test_a_vm_down_behind_the_jump_host_is_refused_by_the_jump_host(site: Site) -> None:
    jump = f"{site.vm.user}@127.0.0.1:{site.first.port}"
    closed = processes.free_port()
    hops = parse_jumps(jump, keys=str(site.jump_key.private_path), host_keys=site.first.host_key)
    with pytest.raises(ConnectionRefused, match=f"could not open a connection to 127.0.0.1:{closed}"):
        ParamikoVerifier().verify(SSHTarget("127.0.0.1", closed, site.vm.user, trust_first_use=True, jumps=hops),
                                  site.vm_key, timeout=15)


def test_the_remote_runner_goes_through_the_jump_host_too(site: Site) -> None:
    jump = f"{site.vm.user}@127.0.0.1:{site.first.port}"
    with remote_shell(target(site, jump, site.first.host_key), site.vm_key, timeout=15) as shell:
        first = shell.run("id -un", timeout=15)
        second = shell.run("cat; echo done >&2; exit 3", "piped\n", timeout=15)
    assert (first.status, first.output) == (0, f"{site.vm.user}\n")
    assert second.status == 3
    assert "piped" in second.output
    assert "done" in second.output


def test_the_ssh_verify_step_takes_the_playbook_inputs(site: Site, tmp_path: Path) -> None:
    journal = Journal.create(tmp_path / "runs")
    ctx = StepContext(run_id=journal.run_id, run_dir=journal.directory, journal=journal, config=Config(),
                      report=RunReport(journal.run_id, "test"), shared=SharedState(), deadline=time.monotonic() + 60)
    user = site.vm.user
    params = VerifyParams(
        host=site.vm.host, port=site.vm.port, user=user, private_key_path=str(site.vm_key.private_path),
        host_key_fingerprint=site.vm.host_key_sha256,
        jump=f"127.0.0.1:{site.first.port},{user}@127.0.0.1:{site.second.port}",
        jump_keys=str(site.jump_key.private_path), jump_host_keys=f"{site.first.host_key},{site.second.host_key}",
    )

    outputs = verify(ctx, params)

    assert outputs["remote_user"] == user
    assert ctx.report.proof is not None
    assert ctx.report.proof["jumps"] == [f"{user}@127.0.0.1:{site.first.port}", f"{user}@127.0.0.1:{site.second.port}"]
