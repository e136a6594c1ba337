"""The password-set route (issue 10, route 1): a password set through the guest agent, then the console.

Real parts throughout: the test cloud's Nova 34, whose fake driver sets passwords as libvirt's does
(tests/cloud/nova_server.py: refused without the image property hw_qemu_guest_agent, 409; an agent
that does not answer, 501; else `guest-set-user-password` for os_admin_user, else root) on the agent
test VM's own qemu-ga (Debian 12; root and `debian` have no usable password), and that VM's serial
console (a getty on ttyS0) as the console Nova's serial proxy hands out. The VM is the session's one
boot (tests/e2e/conftest.py), each test resuming its own copy.

Each recovery is proven by an SSH login with the host key pinned; the old key still logs in; the
password Nova set is locked again, or set once more to a value nobody keeps; no console password is
given to any run.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.lab.processes import free_port
from tests.agentvm.vm import AgentVm, SavedVm, guest, ssh_run
from tests.cloud.nova_fixture import NovaCloud, NovaServerSpec, running_nova
from tests.e2e.conftest import ROOT, Result, recovery

pytestmark = pytest.mark.vm

PLAYBOOK = ROOT / "playbooks" / "restore-access-serial.yaml"
CLOUD = "nova-test"
KEYS = "/home/debian/.ssh/authorized_keys"
AGENT = {"hw_qemu_guest_agent": "True"}


@pytest.fixture(scope="module")
def sockets() -> Iterator[Path]:
    """The agent socket Nova is given (a symlink to the running VM's) and one that never answers."""
    directory = Path(tempfile.mkdtemp(prefix="rcv-pw-agent-"))
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(directory / "silent.sock"))
    silent.listen(4)  # connections wait in the backlog: nothing ever reads or answers them
    yield directory
    silent.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def serial_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def nova(sockets: Path, serial_port: int) -> Iterator[NovaCloud]:
    vm_agent, silent = str(sockets / "vm.sock"), str(sockets / "silent.sock")
    servers = [
        NovaServerSpec("vm-root", "10.0.0.5", floating_ip="127.0.0.1", image_properties=AGENT, agent_socket=vm_agent),
        NovaServerSpec("vm-admin", "10.0.0.6", floating_ip="127.0.0.1", agent_socket=vm_agent,
                       image_properties={**AGENT, "os_admin_user": "debian"}),
        NovaServerSpec("no-agent", "10.0.0.7", floating_ip="127.0.0.1", agent_socket=vm_agent,
                       image_properties={"os_admin_user": "debian"}),
        # Booted from an image since deleted: no properties to read, as for a server booted from a volume.
        NovaServerSpec("no-image", "10.0.0.8", floating_ip="127.0.0.1", agent_socket=vm_agent,
                       image_properties={}, image_deleted=True),
        NovaServerSpec("silent", "10.0.0.9", floating_ip="127.0.0.1", image_properties=AGENT, agent_socket=silent),
    ]
    with running_nova(("127.0.0.1", serial_port), None, servers, agent_timeout=8) as cloud:
        yield cloud


@pytest.fixture
def vm(saved_agent_vm: SavedVm, sockets: Path, serial_port: int) -> Iterator[AgentVm]:
    with saved_agent_vm.start(serial_port=serial_port) as machine:
        link = sockets / "vm.sock"
        link.unlink(missing_ok=True)
        link.symlink_to(machine.qga_socket)
        yield machine


@pytest.fixture
def workdir(nova: NovaCloud) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="rcv-pw-e2e-"))
    nova.clouds_yaml(directory / "clouds.yaml", CLOUD)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def run(workdir: Path, server: str, *extra: str, ssh_port: int = 22, fingerprint: str = "SHA256:" + "A" * 43,
        user: str = "debian") -> Result:
    env = {"OS_CLIENT_CONFIG_FILE": str(workdir / "clouds.yaml"), "RECOVERY_CONSOLE_PASSWORD": ""}
    return recovery(
        "run", str(PLAYBOOK), "--cloud", CLOUD,
        "-e", f"server={server}",
        "-e", f"user={user}",
        "-e", "set_password=true",
        "-e", f"ssh_port={ssh_port}",
        "-e", f"host_key_fingerprint={fingerprint}",
        "-e", f"key_path={workdir / 'id_new'}",
        "-e", f"report={workdir / 'report.json'}",
        "--journal", str(workdir / "runs"),
        *extra,
        env=env, timeout=300,
    )


def recover(vm: AgentVm, workdir: Path, server: str, user: str = "debian") -> Result:
    return run(workdir, server, ssh_port=vm.ssh_port, fingerprint=vm.host_key_fingerprint, user=user)




def shadow(vm: AgentVm, user: str) -> str:
    return guest(vm, f"getent shadow {user} | cut -d: -f2").strip()


def password_sets(nova: NovaCloud, server: str) -> int:
    """How many changePassword (server action) requests Nova got for this server."""
    path = f"/v2.1/servers/{nova.server_id(server)}/action"
    return sum(1 for request in nova.api_requests() if request["method"] == "POST" and request["path"] == path)


def report(workdir: Path) -> dict:
    data: dict = json.loads((workdir / "report.json").read_text())
    return data


def test_root_password_set_used_on_the_console_and_locked_again(vm: AgentVm, workdir: Path, nova: NovaCloud) -> None:
    """No os_admin_user: Nova sets root's; root logs in on the serial console, installs as debian, locks root."""
    assert shadow(vm, "root") == "*"
    assert shadow(vm, "debian") == "*"
    keys_before = guest(vm, f"cat {KEYS}")
    result = recover(vm, workdir, "vm-root")
    assert result.code == 0, result.stderr
    done = report(workdir)
    assert done["status"] == "succeeded"
    assert done["proof"]["host_key_trust"] == "pinned"
    assert done["proof"]["remote_user"] == "debian"
    changes = done["vm_changes"]
    assert "set a random password for root through the guest agent (Nova changePassword), for the console login" in (
        changes)
    assert "appended the new key to ~/.ssh/authorized_keys" in changes
    assert "locked the password of root again on the console (passwd -l): no usable password is left" in changes
    assert any(note.startswith("route: a password set through the guest agent, then the console, as root")
               for note in done["notes"])
    assert done["authorized_keys"]["after"]["lines"] == 2
    assert password_sets(nova, "vm-root") == 1
    # No usable password is left: root's is locked (a `!` before the hash the agent set), debian's untouched.
    root = shadow(vm, "root")
    assert root.startswith("!$"), root
    assert shadow(vm, "debian") == "*"
    # Installed as debian through runuser: owner and modes are the user's; the old line kept byte for byte.
    new_public = (workdir / "id_new.pub").read_text().strip()
    after = guest(vm, f"cat {KEYS}; stat -c '%U:%G %a' {KEYS} /home/debian/.ssh")
    assert after.startswith(keys_before + new_public + "\n"), after
    assert after.endswith("debian:debian 600\ndebian:debian 700\n"), after
    assert ssh_run(vm.ssh_port, workdir / "id_new", "id -un").strip() == "debian"
    assert ssh_run(vm.ssh_port, vm.old_key, "id -un").strip() == "debian"
    # Nothing of the console left open: the logout happened after the lock.
    assert "logged out of the console" in done["rolled_back"]


def test_admin_user_who_cannot_lock_gets_a_password_nobody_keeps(vm: AgentVm, workdir: Path,
                                                                  nova: NovaCloud) -> None:
    """os_admin_user=debian, neither root nor a sudoer: it logs in and installs its own key, then Nova sets
    its password once more to a random value nobody keeps."""
    result = recover(vm, workdir, "vm-admin")
    assert result.code == 0, result.stderr
    done = report(workdir)
    assert done["status"] == "succeeded"
    assert "set a random password for debian through the guest agent (Nova changePassword), for the console login" in (
        done["vm_changes"])
    assert any("set it again, through the guest agent, to a random value nobody keeps" in change
               for change in done["vm_changes"])
    assert any(note.startswith("the password of debian was not locked on the console: the console's shell is "
                               "neither root nor allowed `sudo`") for note in done["notes"])
    assert password_sets(nova, "vm-admin") == 2
    assert shadow(vm, "root") == "*"
    assert shadow(vm, "debian").startswith("$"), "the second password is set (and unknown), not the first"
    assert ssh_run(vm.ssh_port, workdir / "id_new", "id -un").strip() == "debian"
    assert ssh_run(vm.ssh_port, vm.old_key, "id -un").strip() == "debian"


def test_a_wrong_user_fails_clearly_and_leaves_no_usable_password(vm: AgentVm, workdir: Path,
                                                                 nova: NovaCloud) -> None:
    """The install fails, and the lock in its own command still locks root's password: nothing more to undo."""
    before = password_sets(nova, "vm-root")
    keys_before = guest(vm, f"cat {KEYS}")
    result = recover(vm, workdir, "vm-root", user="nosuchuser")
    assert result.code == 1, result.stderr
    assert "the VM has no such user in /etc/passwd (check -e user" in result.stderr
    done = report(workdir)
    assert done["failed_step"] == "install"
    assert "locked the password of root again on the console (passwd -l): no usable password is left" in (
        done["vm_changes"]), done
    assert password_sets(nova, "vm-root") == before + 1
    assert shadow(vm, "root").startswith("!$")  # locked, though the install failed
    assert guest(vm, f"cat {KEYS}") == keys_before


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("no-agent", "its image does not enable the QEMU guest agent (image property hw_qemu_guest_agent is "
                     "'not set')"),
        ("no-image", "The image does not enable the QEMU guest agent: set the image property "
                     "hw_qemu_guest_agent=True"),
        ("silent", "The guest agent channel is there but the agent did not answer"),
    ],
)
def test_no_agent_is_refused_before_anything_changes(workdir: Path, nova: NovaCloud, server: str,
                                                      message: str) -> None:
    result = run(workdir, server)
    assert result.code == 1, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    done = report(workdir)
    assert done["failed_step"] == "set_password"
    assert done["vm_changes"] == []
    assert not (workdir / "id_new").exists(), "no key is made before the password is set"
    assert password_sets(nova, server) == (0 if server == "no-agent" else 1)


def test_set_password_needs_no_console_password_but_a_cloud_server(tmp_path: Path) -> None:
    env = {"RECOVERY_CONSOLE_PASSWORD": "", "OS_CLOUD": "", "OS_AUTH_URL": ""}
    without = recovery("run", str(PLAYBOOK), "-e", "user=debian", "-e", "set_password=true",
                       "-e", "console_url=ws://127.0.0.1:9/", "-e", "ssh_host=127.0.0.1", "-e", "trust_first_use=true",
                       "--journal", str(tmp_path), env=env)
    assert without.code == 2, without.stderr
    assert "set_password=true sets the console password through the cloud: give --cloud and -e server=NAME" in (
        without.stderr)
    assert "console_password" not in without.stderr
    plain = recovery("run", str(PLAYBOOK), "-e", "user=debian", "-e", "console_url=ws://127.0.0.1:9/",
                     "-e", "ssh_host=127.0.0.1", "-e", "trust_first_use=true", "--journal", str(tmp_path), env=env)
    assert plain.code == 2, plain.stderr
    assert "secret 'console_password' is missing" in plain.stderr


def test_no_console_password_is_asked_for_with_set_password() -> None:
    """Both console playbooks take set_password; the VNC one keeps its VNC password (not the console's)."""
    from recovery.api import secrets_in_use

    for name in ("restore-access-serial.yaml", "restore-access-vnc.yaml"):
        playbook = ROOT / "playbooks" / name
        base = {"user": "debian", "server": "web-1"}
        assert "console_password" in secrets_in_use(playbook, base)
        assert "console_password" not in secrets_in_use(playbook, {**base, "set_password": "true"})
    assert "vnc_password" in secrets_in_use(ROOT / "playbooks" / "restore-access-vnc.yaml",
                                            {"user": "debian", "server": "web-1", "set_password": "true"})
