"""A revoke logged in as a sudoer changes a root-owned key file through ``sudo -n``; without sudo it says so.

The boundary faked is the SSH session and sudo: `SudoShell` runs each command on this machine,
as `nobody` (uid 65534, the login user "alice" of a private /etc) or, for ``sudo -n ...`` when
alice is a sudoer, as root; every script is the real one and touches real files. sshd is not
involved: the files come from the private /etc/ssh/sshd_config, as a user reads them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.audit.model import Host
from recovery.revoke.engine import HostOutcome, RevokeRequest, Status, StolenKey, _Budget, _revoke_with
from recovery.ssh.remote import RemoteOutput
from tests.unit.test_guest_remove import ADMIN, OTHER, STOLEN

NOBODY = 65534
OVERLAY_ETC = '/usr/bin/mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0,workdir=$1" /etc && shift && exec "$@"'


class SudoShell:
    """`RemoteShell.run` on this machine in a private /etc: as alice, or as root through a working ``sudo -n``."""

    def __init__(self, root: Path, *, sudoer: bool) -> None:
        self.root = root
        self.sudoer = sudoer
        self.commands: list[str] = []

    def run(self, command: str, stdin: str = "", *, timeout: float) -> RemoteOutput:
        self.commands.append(command)
        as_root = command.startswith("sudo -n ")
        if as_root and not self.sudoer:
            return RemoteOutput(1, "sudo: a password is required\n")
        argv = ["/bin/sh", "-c", command.removeprefix("sudo -n ")]
        if not as_root:
            argv = ["/usr/bin/setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
        upper, work = self.root / "etc-upper", self.root / "etc-work"
        argv = ["/usr/bin/unshare", "--mount", "/bin/sh", "-c", OVERLAY_ETC, str(upper), str(work), *argv]
        home = self.root / "alice"
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "USER": "alice",
                                   "SSH_CLIENT": "127.0.0.1 40000 22"})
        return RemoteOutput(done.returncode, done.stdout + done.stderr)


@pytest.fixture
def machine() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("run the unit tests as root: this one mounts a private /etc and runs scripts as nobody")
    root = Path(tempfile.mkdtemp(prefix="rcv-revoke-sudo-"))
    try:
        root.chmod(0o755)
        home = root / "alice"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        (home / ".ssh" / "authorized_keys").write_text(f"{ADMIN}\n")
        for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
            os.chown(path, NOBODY, NOBODY)
        upper = root / "etc-upper"
        (upper / "ssh" / "authorized_keys").mkdir(parents=True)
        (root / "etc-work").mkdir()
        (upper / "passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\nalice:x:{NOBODY}:{NOBODY}::{home}:/bin/sh\n")
        (upper / "ssh" / "sshd_config").write_text(
            "HostKey /nonexistent/rcv_host_key\nAuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys/%u\n")
        keys = upper / "ssh" / "authorized_keys" / "alice"
        keys.write_text(f"{OTHER}\n{STOLEN}\n")
        keys.chmod(0o644)
        yield root
    finally:
        shutil.rmtree(root)


def revoke(machine: Path, *, sudoer: bool) -> tuple[HostOutcome, SudoShell]:
    shell = SudoShell(machine, sudoer=sudoer)
    host = Host("vm", "127.0.0.1", 22, "alice", ())
    outcome = HostOutcome("vm", "alice@127.0.0.1:22", Status.CLEAN)
    request = RevokeRequest(StolenKey.from_public_line(STOLEN), {})
    _revoke_with(shell, host, request, _Budget(None), outcome, ADMIN.split()[1])  # type: ignore[arg-type]
    return outcome, shell


def test_a_sudoer_changes_the_root_owned_file_through_sudo_and_root_keeps_it(machine: Path) -> None:
    outcome, shell = revoke(machine, sudoer=True)

    keys = machine / "etc-upper" / "ssh" / "authorized_keys" / "alice"
    assert (outcome.status, outcome.read_from) == (Status.REMOVED, "sshd_config")
    assert [(item.file, item.status) for item in outcome.files] == [
        (str(machine / "alice" / ".ssh" / "authorized_keys"), "nothing-to-remove"),
        ("/etc/ssh/authorized_keys/alice", "removed"),
    ]
    assert keys.read_text() == f"{OTHER}\n"
    assert (keys.stat().st_uid, keys.stat().st_mode & 0o777) == (0, 0o644)
    assert shell.commands.count("sudo -n sh -s") == 2  # the removal, and the read back


def test_without_sudo_the_file_is_named_as_still_holding_the_key(machine: Path) -> None:
    outcome, _ = revoke(machine, sudoer=False)

    assert outcome.status == Status.NEEDS_ROOT
    assert outcome.files[-1].status == "needs-root"
    assert "/etc/ssh/authorized_keys/alice still hold(s) the key" in outcome.message
    assert (machine / "etc-upper" / "ssh" / "authorized_keys" / "alice").read_text() == f"{OTHER}\n{STOLEN}\n"


def test_a_directory_that_hides_the_file_is_searched_through_sudo(machine: Path) -> None:
    (machine / "etc-upper" / "ssh" / "authorized_keys").chmod(0o700)

    outcome, _ = revoke(machine, sudoer=True)

    assert outcome.status == Status.REMOVED
    assert (machine / "etc-upper" / "ssh" / "authorized_keys" / "alice").read_text() == f"{OTHER}\n"


def test_without_sudo_a_hidden_file_leaves_the_host_unchecked_and_says_which(machine: Path) -> None:
    (machine / "etc-upper" / "ssh" / "authorized_keys").chmod(0o700)

    outcome, _ = revoke(machine, sudoer=False)

    assert outcome.status == Status.NEEDS_ROOT
    assert [(item.file, item.status) for item in outcome.files][-1] == ("/etc/ssh/authorized_keys/alice", "unreadable")
    assert "/etc/ssh/authorized_keys/alice could not be read: log in as root or as a user with sudo -n" in (
        outcome.message)
