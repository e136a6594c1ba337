"""`recovery revoke --all-users` logged in as root: every user's authorized_keys, owners kept.

The sshd runs in a private mount namespace whose /etc (an overlay) has a passwd listing only the test's users (root,
alice, bob, each with a home under the test's directory), so the revoke run, which reads the passwd
database on the host, sees and changes those homes only, never this machine's real ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from recovery.cli.main import main
from recovery.lab import commands, processes, sshd
from recovery.ssh.keys import KeyPair, generate_keypair

ALICE, BOB = 65534, 65533
OVERLAY_ETC = '/usr/bin/mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0,workdir=$1" /etc && shift && exec "$@"'
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBF9u7Q3vUMKTGjzHVZP1bzUXXOCVHTBTvjXwcoxnP0v other@ops"


@dataclass(frozen=True)
class Host:
    port: int
    host_key: str
    homes: dict[str, Path]
    admin: KeyPair
    stolen: KeyPair

    def ak(self, user: str) -> Path:
        return self.homes[user] / ".ssh" / "authorized_keys"


def _home(root: Path, user: str, uid: int, content: str) -> Path:
    home = root / user
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    home.chmod(0o755)
    (home / ".ssh" / "authorized_keys").write_text(content)
    (home / ".ssh" / "authorized_keys").chmod(0o600)
    for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
        os.chown(path, uid, uid)
    return home


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.fail("run the integration tests as root: this one starts an sshd that root logs in to")
    # World-traversable, under /tmp: pytest's tmp_path sits in a directory only root may enter, where sshd,
    # reading alice's keys as alice, would find none, and every stolen-key login would fail for nothing.
    root = Path(tempfile.mkdtemp(prefix="rcv-allusers-"))
    root.chmod(0o755)
    try:
        yield from _host(tmp_path, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _host(tmp_path: Path, root: Path) -> Iterator[Host]:
    admin = generate_keypair(tmp_path / "admin", comment="admin")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen@laptop")
    homes = {
        "root": _home(root, "root", 0, f"{admin.public_line}\n"),
        "alice": _home(root, "alice", ALICE, f"{stolen.public_line}\n{OTHER}\n"),
        "bob": _home(root, "bob", BOB, f'command="true" {stolen.public_line}'),
    }
    sshd_line = next(line for line in Path("/etc/passwd").read_text().splitlines() if line.startswith("sshd:"))
    # /etc overlaid, not /etc/passwd bound: useradd elsewhere on this machine renames over /etc/passwd,
    # which would detach a bind mount on it (Linux >= 3.18) and show sshd the real users again.
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    upper.mkdir()
    work.mkdir()
    (upper / "passwd").write_text(
        f"root:x:0:0:root:{homes['root']}:/bin/sh\n{sshd_line}\n"
        f"alice:x:{ALICE}:{ALICE}::{homes['alice']}:/bin/sh\nbob:x:{BOB}:{BOB}::{homes['bob']}:/bin/sh\n"
    )
    key_path = tmp_path / "host_key"
    public = commands.generate_key(key_path, comment="all-users-host")
    port = processes.free_port()
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f'HostKey "{key_path}"', "PidFile none",
        "AuthorizedKeysFile .ssh/authorized_keys", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes yes", "LogLevel VERBOSE", "PermitRootLogin prohibit-password", "",
    ]))
    log = tmp_path / "sshd.log"
    binary = commands.find_tool("sshd", "openssh-server")
    argv = ["/usr/bin/unshare", "--mount", "/bin/sh", "-c", OVERLAY_ETC, str(upper), str(work), binary, "-D", "-f",
            str(config), "-E", str(log)]
    pid = processes.spawn(argv, log_path=log)
    try:
        if not processes.poll_until(lambda: sshd.answers(port), 20.0):
            raise RuntimeError(f"sshd did not answer: {processes.log_tail(log)}")
        yield Host(port, commands.fingerprint(public), homes, admin, stolen)
    finally:
        processes.stop(pid)


def logs_in(host: Host, user: str, key: KeyPair) -> bool:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect("127.0.0.1", host.port, username=user, key_filename=str(key.private_path),
                       look_for_keys=False, allow_agent=False, timeout=20)
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()
    return True


def test_every_users_file_is_cleaned_and_keeps_its_owner(
    host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logs_in(host, "alice", host.stolen), "the stolen key must log in first, or its proof proves nothing"
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(f"hosts:\n  - {{name: vm, host: 127.0.0.1, port: {host.port}, user: root, "
                         f"key: {host.admin.private_path}, host_key: '{host.host_key}'}}\n")

    code = main(["revoke", "--public-key", str(host.stolen.public_path), "--inventory", str(inventory),
                 "--all-users", "--stolen-key", str(host.stolen.private_path), "--format", "json"])

    document = json.loads(capsys.readouterr().out)
    [vm] = document["hosts"]
    assert code == 0, vm
    assert (vm["status"], vm["proof"]) == ("removed", "auth_rejected")
    assert {item["user"]: item["status"] for item in vm["files"]} == {
        "root": "nothing-to-remove", "alice": "removed", "bob": "removed"}
    assert host.ak("alice").read_text() == f"{OTHER}\n"
    assert host.ak("bob").read_text() == ""
    assert host.ak("root").read_text() == f"{host.admin.public_line}\n"
    for user, uid in (("alice", ALICE), ("bob", BOB)):
        stat = host.ak(user).stat()
        assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (uid, uid, 0o600)
    assert not logs_in(host, "alice", host.stolen)
