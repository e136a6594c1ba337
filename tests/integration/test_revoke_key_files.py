"""`recovery revoke` takes the stolen key out of every file sshd reads, not only ~/.ssh/authorized_keys.

Each test starts an sshd in a private mount namespace whose /etc is an overlay: its passwd lists
root and alice (homes under the test's directory) and its /etc/ssh/sshd_config is the test's, the
one that sshd runs with. The revoke run's session, started by that sshd, sees the same /etc, as a
VM's would: logged in as root it asks `sshd -T`; as alice (no sudo, host keys unreadable) it reads
the sshd_config files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.errors import AuthRejected
from recovery.guest import blob_fingerprints, key_blob
from recovery.lab import commands, processes, sshd
from recovery.ssh.keys import KeyPair, generate_keypair
from recovery.ssh.verifier import ParamikoVerifier, SSHTarget
from recovery.steps.authorized_keys import RemoveParams, remove
from tests.integration.test_revoke_remove_step import context

ALICE = 65534
OVERLAY_ETC = '/usr/bin/mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0,workdir=$1" /etc && shift && exec "$@"'
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBF9u7Q3vUMKTGjzHVZP1bzUXXOCVHTBTvjXwcoxnP0v other@ops"
BOTH = "AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2"  # Debian's and Ubuntu's default


@dataclass(frozen=True)
class Bed:
    port: int
    host_key: str
    homes: dict[str, Path]
    etc_ssh: Path  # the overlay's upper /etc/ssh: what the sshd and the revoke see as /etc/ssh
    admin: KeyPair
    stolen: KeyPair
    directory: Path

    def ssh(self, user: str) -> Path:
        return self.homes[user] / ".ssh"

    def revoke(self, capsys: pytest.CaptureFixture[str], user: str, *extra: str,
               form: str = "json") -> tuple[int, dict[str, object]]:
        inventory = self.directory / f"hosts-{user}.yaml"
        inventory.write_text(f"hosts:\n  - {{name: vm, host: 127.0.0.1, port: {self.port}, user: {user}, "
                             f"key: {self.admin.private_path}, host_key: '{self.host_key}'}}\n")
        code = main(["revoke", "--public-key", str(self.stolen.public_path), "--inventory", str(inventory),
                     "--format", form, "--timeout", "30", *extra])
        out = capsys.readouterr().out
        if form != "json":
            return code, {"text": out}
        [host] = json.loads(out)["hosts"]
        return code, host

    def logs_in(self, user: str, key: KeyPair) -> bool:
        target = SSHTarget("127.0.0.1", self.port, user, host_key_fingerprint=self.host_key)
        try:
            ParamikoVerifier().verify(target, key, timeout=30)
        except AuthRejected:
            return False
        return True


def _home(root: Path, user: str, uid: int) -> Path:
    home = root / user
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    home.chmod(0o755)
    for path in (home, home / ".ssh"):
        os.chown(path, uid, uid)
    return home


def _keys(bed: Bed, user: str, name: str, *lines: str) -> Path:
    path = bed.ssh(user) / name
    path.write_text("".join(f"{line}\n" for line in lines))
    path.chmod(0o600)
    uid = 0 if user == "root" else ALICE
    os.chown(path, uid, uid)
    return path


@contextmanager
def sshd_with(*settings: str) -> Iterator[Bed]:
    """An sshd whose configuration (/etc/ssh/sshd_config in its namespace) ends with `settings`.

    Its directory is under /tmp, world-traversable: pytest's own tmp_path sits in a directory
    only root may enter, where sshd, reading alice's keys as alice, would find none.
    """
    if os.geteuid() != 0:
        pytest.fail("run the integration tests as root: this one starts an sshd in a mount namespace")
    tmp_path = Path(tempfile.mkdtemp(prefix="rcv-keyfiles-"))
    try:
        with _sshd_in(tmp_path, settings) as bed:
            yield bed
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


@contextmanager
def _sshd_in(tmp_path: Path, settings: tuple[str, ...]) -> Iterator[Bed]:
    tmp_path.chmod(0o755)
    root = tmp_path / "homes"
    root.mkdir(mode=0o755)
    admin = generate_keypair(tmp_path / "admin", comment="admin")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen@laptop")
    homes = {"root": _home(root, "root", 0), "alice": _home(root, "alice", ALICE)}
    sshd_line = next(line for line in Path("/etc/passwd").read_text().splitlines() if line.startswith("sshd:"))
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    (upper / "ssh").mkdir(parents=True)
    work.mkdir()
    upper.chmod(0o755)
    (upper / "passwd").write_text(f"root:x:0:0:root:{homes['root']}:/bin/sh\n{sshd_line}\n"
                                  f"alice:x:{ALICE}:{ALICE}::{homes['alice']}:/bin/sh\n")
    key_path = tmp_path / "host_key"
    public = commands.generate_key(key_path, comment="key-files-host")
    port = processes.free_port()
    (upper / "ssh" / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f'HostKey "{key_path}"', "PidFile none",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes yes",
        "LogLevel VERBOSE", "PermitRootLogin prohibit-password", *settings, "",
    ]))
    log = tmp_path / "sshd.log"
    binary = commands.find_tool("sshd", "openssh-server")
    argv = ["/usr/bin/unshare", "--mount", "/bin/sh", "-c", OVERLAY_ETC, str(upper), str(work), binary, "-D", "-f",
            "/etc/ssh/sshd_config", "-E", str(log)]
    pid = processes.spawn(argv, log_path=log)
    try:
        if not processes.poll_until(lambda: sshd.answers(port), 20.0):
            raise RuntimeError(f"sshd did not answer: {processes.log_tail(log)}")
        bed = Bed(port, commands.fingerprint(public), homes, upper / "ssh", admin, stolen, tmp_path)
        _keys(bed, "root", "authorized_keys", admin.public_line)
        _keys(bed, "alice", "authorized_keys", admin.public_line)
        yield bed
    finally:
        processes.stop(pid)


def test_a_key_only_in_authorized_keys2_is_removed_and_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with sshd_with(BOTH) as bed:
        second = _keys(bed, "alice", "authorized_keys2", OTHER, bed.stolen.public_line)
        assert bed.logs_in("alice", bed.stolen)

        code, host = bed.revoke(capsys, "alice", "--stolen-key", str(bed.stolen.private_path))

        assert code == 0, host
        assert (host["status"], host["proof"], host["read_from"]) == ("removed", "auth_rejected", "sshd_config")
        assert [(item["file"], item["status"], item["removed"]) for item in host["files"]] == [  # type: ignore[attr-defined]
            (str(bed.ssh("alice") / "authorized_keys"), "nothing-to-remove", []),
            (str(second), "removed", [f"{bed.stolen.sha256} stolen@laptop"]),
        ]
        assert second.read_text() == f"{OTHER}\n"
        assert (second.stat().st_uid, second.stat().st_mode & 0o777) == (ALICE, 0o600)
        assert not bed.logs_in("alice", bed.stolen)
        assert bed.logs_in("alice", bed.admin)

        code, text = bed.revoke(capsys, "alice", "--dry-run", form="table")
        assert code == 0
        assert f"vm    alice  {second}  nothing-to-remove" in str(text["text"])


def test_as_root_sshd_t_applies_a_match_block(capsys: pytest.CaptureFixture[str]) -> None:
    with sshd_with("AuthorizedKeysFile .ssh/authorized_keys", "Match User alice", f"    {BOTH}") as bed:
        second = _keys(bed, "alice", "authorized_keys2", bed.stolen.public_line)
        assert bed.logs_in("alice", bed.stolen)

        code, host = bed.revoke(capsys, "root", "--all-users", "--stolen-key", str(bed.stolen.private_path))

        assert code == 0, host
        assert (host["status"], host["read_from"], host["notes"]) == ("removed", "sshd -T", [])
        assert second.read_text() == ""
        assert not bed.logs_in("alice", bed.stolen)


def root_keys(bed: Bed) -> Path:
    """/etc/ssh/authorized_keys/alice, root's, as sshd's StrictModes wants it."""
    directory = bed.etc_ssh / "authorized_keys"
    directory.mkdir(mode=0o755)
    path = directory / "alice"
    path.write_text(f"{OTHER}\n{bed.stolen.public_line}\n")
    path.chmod(0o644)
    return path


PER_USER = "AuthorizedKeysFile %h/.ssh/authorized_keys /etc/ssh/authorized_keys/%u"


def test_a_root_owned_per_user_file_is_cleaned_as_root_and_keeps_its_owner(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with sshd_with(PER_USER) as bed:
        path = root_keys(bed)
        assert bed.logs_in("alice", bed.stolen)

        code, host = bed.revoke(capsys, "root", "--all-users", "--stolen-key", str(bed.stolen.private_path))

        assert code == 0, host
        assert (host["status"], host["proof"]) == ("removed", "auth_rejected")
        files = {item["file"]: item["status"] for item in host["files"]}  # type: ignore[attr-defined]
        assert files["/etc/ssh/authorized_keys/alice"] == "removed"
        assert path.read_text() == f"{OTHER}\n"
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (0, 0o644)
        assert not bed.logs_in("alice", bed.stolen)


def test_a_root_owned_file_a_user_cannot_change_is_reported_as_still_holding_the_key(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with sshd_with(PER_USER) as bed:
        path = root_keys(bed)

        code, host = bed.revoke(capsys, "alice", "--stolen-key", str(bed.stolen.private_path))

        assert code == 1
        assert host["status"] == "needs_root"
        assert "/etc/ssh/authorized_keys/alice still hold(s) the key and could not be changed" in str(host["message"])
        files = {item["file"]: (item["status"], item["removed"]) for item in host["files"]}  # type: ignore[attr-defined]
        assert files["/etc/ssh/authorized_keys/alice"] == ("needs-root", [f"{bed.stolen.sha256} stolen@laptop"])
        assert path.read_text() == f"{OTHER}\n{bed.stolen.public_line}\n"
        assert bed.logs_in("alice", bed.stolen)


def test_an_authorized_keys_command_is_named_and_only_the_refused_key_proves_the_host(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with sshd_with(BOTH, "AuthorizedKeysCommand /bin/true", "AuthorizedKeysCommandUser nobody") as bed:
        _keys(bed, "alice", "authorized_keys2", bed.stolen.public_line)

        code, host = bed.revoke(capsys, "alice")

        assert code == 1, host
        assert host["status"] == "removed"
        assert host["keys_command"] == "/bin/true"
        assert "keys also come from AuthorizedKeysCommand /bin/true: revoke the key there" in host["notes"]  # type: ignore[operator]

        code, host = bed.revoke(capsys, "alice", "--stolen-key", str(bed.stolen.private_path))

        assert code == 0, host
        assert (host["status"], host["proof"]) == ("clean", "auth_rejected")


def test_the_remove_step_over_ssh_cleans_authorized_keys2_too() -> None:
    with sshd_with(BOTH) as bed:
        second = _keys(bed, "alice", "authorized_keys2", OTHER, bed.stolen.public_line)
        assert bed.logs_in("alice", bed.stolen)
        ctx = context(bed.directory / "run")

        outputs = remove(ctx, RemoveParams(
            via="ssh", host="127.0.0.1", port=bed.port, ssh_user="alice", private_key_path=str(bed.admin.private_path),
            host_key_fingerprint=bed.host_key, keys=bed.stolen.public_line))

        assert (outputs["status"], outputs["removed"]) == ("removed", bed.stolen.sha256)
        assert outputs["kept"] == f"{bed.admin.sha256},{blob_fingerprints(key_blob(OTHER))[0]}"
        assert second.read_text() == f"{OTHER}\n"
        assert [item["file"] for item in ctx.report.authorized_keys["removal"]["files"]] == [
            str(bed.ssh("alice") / "authorized_keys"), str(second)]
        assert not bed.logs_in("alice", bed.stolen)
