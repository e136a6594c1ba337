"""The guest-agent route (issue 10, route 2) against a real Debian 12 VM with qemu-ga: no console.

One boot per module (tests/agentvm/vm.py): the VM is saved to a file when its agent and sshd
answer, and each test resumes its own copy of that moment (its own overlay and QEMU process).
Each recovery is proven by an SSH login with the host key pinned (RejectPolicy), the old key must
still log in, and the user's password field must still be `*` (no usable password, none set).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.agent.qga import UnixSocketTransport
from recovery.errors import AgentError
from tests.agentvm.fake_proxmox import serving
from tests.agentvm.vm import IMAGE, AgentVm, SavedVm, guest, ssh_run
from tests.e2e.conftest import ROOT, Result, recovery

pytestmark = pytest.mark.vm

PLAYBOOK = ROOT / "playbooks" / "restore-access-agent.yaml"
KEYS = "/home/debian/.ssh/authorized_keys"


@pytest.fixture(scope="module")
def saved(saved_agent_vm: SavedVm) -> SavedVm:
    return saved_agent_vm  # one boot for every test module that uses the VM


@pytest.fixture
def vm(saved: SavedVm) -> Iterator[AgentVm]:
    with saved.start() as machine:
        yield machine



def run(vm: AgentVm, workdir: Path, *extra: str, agent: str | None = None, user: str = "debian",
        env: dict[str, str] | None = None) -> Result:
    return recovery(
        "run", str(PLAYBOOK),
        "-e", f"agent={agent or vm.agent_url}",
        "-e", f"user={user}",
        "-e", "ssh_host=127.0.0.1",
        "-e", f"ssh_port={vm.ssh_port}",
        "-e", f"host_key_fingerprint={vm.host_key_fingerprint}",
        "-e", f"key_path={workdir / 'id_new'}",
        "-e", f"report={workdir / 'report.json'}",
        "--journal", str(workdir / "runs"),
        *extra,
        env=env,
    )




def test_the_agent_alone_recovers_a_locked_password_vm(vm: AgentVm, workdir: Path) -> None:
    shadow_before = guest(vm, "getent shadow debian | cut -d: -f2")
    keys_before = guest(vm, f"cat {KEYS}")
    result = run(vm, workdir)
    assert result.code == 0, result.stderr
    report = json.loads((workdir / "report.json").read_text())
    assert report["status"] == "succeeded"
    assert report["proof"]["host_key_trust"] == "pinned"
    assert report["proof"]["remote_user"] == "debian"
    assert "appended the new key to ~/.ssh/authorized_keys" in report["vm_changes"]
    assert any(note.startswith("route: the guest agent") for note in report["notes"])
    assert report["authorized_keys"]["before"]["lines"] == 1
    assert report["authorized_keys"]["after"]["lines"] == 2
    assert report["typed"] == []
    # The proof, again and independently: both keys log in, the host key pinned.
    assert ssh_run(vm.ssh_port, workdir / "id_new", "id -un").strip() == "debian"
    assert ssh_run(vm.ssh_port, vm.old_key, "id -un").strip() == "debian"
    new_public = (workdir / "id_new.pub").read_text().strip()
    after = guest(vm, f"cat {KEYS}; stat -c '%U:%G %a' {KEYS} /home/debian/.ssh")
    assert after.startswith(keys_before + new_public + "\n"), after  # the old line kept, byte for byte
    assert after.endswith("debian:debian 600\ndebian:debian 700\n"), after
    assert guest(vm, "getent shadow debian | cut -d: -f2") == shadow_before == "*\n"


def test_libvirt_urls_go_through_virsh_qemu_agent_command(vm: AgentVm, workdir: Path) -> None:
    """virsh here is tests/agentvm/fake_virsh.py, relaying to the VM's socket (no libvirtd on our machines)."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    virsh = bin_dir / "virsh"
    virsh.write_text(f"#!/bin/sh\nexec {sys.executable} {ROOT / 'tests' / 'agentvm' / 'fake_virsh.py'} \"$@\"\n")
    virsh.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_VIRSH_DOMAINS": json.dumps({"web-1": str(vm.qga_socket)}),
           "FAKE_VIRSH_LOG": str(workdir / "virsh.log")}
    result = run(vm, workdir, agent="libvirt://qemu:///system/web-1", env=env)
    assert result.code == 0, result.stderr
    calls = [json.loads(line) for line in (workdir / "virsh.log").read_text().splitlines()]
    assert calls[0][:4] == ["-c", "qemu:///system", "qemu-agent-command", "web-1"]
    assert json.loads(calls[0][4])["execute"] == "guest-exec"
    assert ssh_run(vm.ssh_port, workdir / "id_new", "id -un").strip() == "debian"
    (workdir / "report.json").unlink()
    (workdir / "id_new").unlink()
    (workdir / "id_new.pub").unlink()
    missing = run(vm, workdir, agent="libvirt://qemu:///system/web-2", env=env)
    assert missing.code == 1
    assert "libvirt knows no libvirt domain web-2 (qemu:///system): check the name with `virsh list --all`" in (
        missing.stderr)


def test_proxmox_urls_go_through_its_api_with_the_token_as_a_secret(vm: AgentVm, workdir: Path) -> None:
    """The API is tests/agentvm/fake_proxmox.py over HTTPS, relaying to the VM's real qemu-ga."""
    token = "root@pam!recovery=0b7e5c1a-63f2-4d0e-8c39-5a1f2e9d7b44"
    transport = UnixSocketTransport(str(vm.qga_socket))
    with serving(transport, token) as fake:
        result = run(vm, workdir, agent=fake.url, env={"RECOVERY_AGENT_TOKEN": token})
    transport.close()
    assert result.code == 0, result.stderr
    assert [request["path"].rsplit("/", 1)[1] for request in fake.requests][:2] == ["exec", "exec-status"]
    assert ssh_run(vm.ssh_port, workdir / "id_new", "id -un").strip() == "debian"
    for text in [result.stdout, result.stderr, (workdir / "report.json").read_text(),
                 *(path.read_text() for path in (workdir / "runs").rglob("*") if path.is_file())]:
        assert "0b7e5c1a-63f2" not in text


def test_a_missing_agent_socket_is_refused_and_nothing_changes(vm: AgentVm, workdir: Path) -> None:
    keys_before = guest(vm, f"cat {KEYS}")
    result = run(vm, workdir, agent=f"unix://{workdir}/no-such-qga.sock")
    assert result.code == 1
    assert f"there is no guest agent socket at {workdir}/no-such-qga.sock" in result.stderr
    assert "org.qemu.guest_agent.0" in result.stderr
    assert guest(vm, f"cat {KEYS}") == keys_before


def test_a_silent_agent_fails_in_seconds_with_a_clear_message(workdir: Path) -> None:
    """A socket that takes the connection and never answers: no qemu-ga behind it (no VM needed)."""
    path = workdir / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    try:
        result = recovery(
            "run", str(PLAYBOOK), "-e", f"agent=unix://{path}", "-e", "user=debian", "-e", "ssh_host=127.0.0.1",
            "-e", "trust_first_use=true", "-e", f"key_path={workdir / 'id_new'}", "--journal", str(workdir / "runs"))
    finally:
        listener.close()
    assert result.code == 1
    assert f"the guest agent of {path} did not answer guest-sync-delimited in time: qemu-ga is not running" in (
        result.stderr)


def test_an_agent_url_of_no_known_kind_is_refused_before_a_key_is_made(vm: AgentVm, workdir: Path) -> None:
    result = run(vm, workdir, agent="tcp://127.0.0.1:4444")
    assert result.code == 2
    assert "tcp:// is not a guest agent we can reach" in result.stderr
    assert not (workdir / "id_new").exists()


def test_a_user_the_vm_does_not_have_fails_clearly_and_changes_nothing(vm: AgentVm, workdir: Path) -> None:
    keys_before = guest(vm, f"cat {KEYS}")
    result = run(vm, workdir, user="nosuchuser")
    assert result.code == 1
    assert "the install script reported nothing" in result.stderr
    assert "user nosuchuser does not exist" in result.stderr
    assert guest(vm, f"cat {KEYS}") == keys_before
    assert guest(vm, "ls /home") == "debian\n"


def block_agent_commands(vm: AgentVm, commands: str) -> None:
    """Restart the VM's qemu-ga with `commands` blocked, as RHEL-family guests ship it.

    The agent kills itself (SIGKILL; the unit's Restart=always starts it again at once), so the
    command's own status is never read. `systemctl restart` took ~35 s here, waiting on SIGTERM.
    """
    script = (f"mkdir -p /etc/qemu && printf '[general]\\nblock-rpcs=%s\\n' '{commands}' >/etc/qemu/qemu-ga.conf"
              " && systemctl kill --signal=KILL qemu-guest-agent")
    vm.agent("guest-exec", {"path": "/bin/sh", "arg": ["-c", script]})
    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.5)
        try:  # while qemu-ga restarts, the socket takes the sync and nobody answers: short tries
            vm.agent("guest-exec", {"path": "/bin/true"}, timeout=2)
        except AgentError as exc:
            if "disabled" in str(exc):
                return
        assert time.monotonic() < deadline, "qemu-ga did not come back with guest-exec blocked"


def test_where_guest_exec_is_blocked_the_agents_ssh_command_adds_the_key_and_the_newline(
    vm: AgentVm, workdir: Path
) -> None:
    block_agent_commands(vm, "guest-exec,guest-exec-status")
    result = run(vm, workdir)
    assert result.code == 0, result.stderr
    report = json.loads((workdir / "report.json").read_text())
    assert "added the final newline qemu-ga leaves out, through guest-file-*" in report["vm_changes"]
    assert ssh_run(vm.ssh_port, workdir / "id_new", "id -un").strip() == "debian"
    assert ssh_run(vm.ssh_port, vm.old_key, "tail -c 1 .ssh/authorized_keys | od -An -c").strip() == "\\n"


def test_a_rhel_like_agent_gets_the_key_and_the_report_warns_of_the_missing_newline(
    vm: AgentVm, workdir: Path
) -> None:
    block_agent_commands(vm, "guest-exec,guest-exec-status,guest-file-open,guest-file-read,guest-file-write")
    result = run(vm, workdir)
    assert result.code == 0, result.stderr
    report = json.loads((workdir / "report.json").read_text())
    assert any("may now end without a newline" in note for note in report["notes"])
    assert ssh_run(vm.ssh_port, workdir / "id_new", "id -un").strip() == "debian"
    # qemu-ga 7.2 splits the file on newlines and joins the lines back with none at the end: the old
    # final newline becomes an empty line (harmless to sshd), the new key the unterminated last one.
    lines = ssh_run(vm.ssh_port, vm.old_key, "cat .ssh/authorized_keys").split("\n")
    new = workdir / "id_new.pub"
    assert lines[0] == (IMAGE / "old_key.pub").read_text().strip(), lines
    assert lines[-1] == new.read_text().strip(), lines
    assert set(lines[1:-1]) <= {""}, lines
