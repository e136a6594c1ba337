"""authorized_keys.remove over SSH against a real sshd: the stolen key is gone, and refused afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.engine.config import Config
from recovery.engine.context import SharedState, StepContext
from recovery.engine.journal import Journal
from recovery.engine.report import RunReport
from recovery.errors import AuthRejected, GuestCommandError, HostKeyMismatch
from recovery.ssh.keys import KeyPair, generate_keypair
from recovery.ssh.verifier import ParamikoVerifier, SSHTarget
from recovery.steps.authorized_keys import RemoveParams, remove
from tests.integration.sshd_fixture import SSHServer, running_sshd


@pytest.fixture(scope="module")
def lab() -> Iterator[SSHServer]:
    """A lab of its own: these tests take keys out of authorized_keys, which the shared one must keep."""
    with running_sshd() as server:
        yield server


def context(tmp_path: Path) -> StepContext:
    journal = Journal.create(tmp_path / "runs")
    return StepContext(run_id=journal.run_id, run_dir=journal.directory, journal=journal, config=Config(),
                       report=RunReport(journal.run_id, "test"), shared=SharedState(),
                       deadline=time.monotonic() + 60)


def keys(tmp_path: Path, lab: SSHServer) -> tuple[KeyPair, KeyPair]:
    admin = generate_keypair(tmp_path / "admin", comment="admin")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen@laptop")
    ak = lab.home / ".ssh" / "authorized_keys"
    ak.write_text(f"{admin.public_line}\n{stolen.public_line}\n")
    return admin, stolen


def logs_in(lab: SSHServer, key: KeyPair) -> bool:
    target = SSHTarget(lab.host, lab.port, lab.user, host_key_fingerprint=lab.host_key_sha256)
    try:
        ParamikoVerifier().verify(target, key, timeout=10)
    except AuthRejected:
        return False
    return True


def params(lab: SSHServer, admin: KeyPair, **kwargs: object) -> RemoveParams:
    return RemoveParams(via="ssh", host=lab.host, port=lab.port, ssh_user=lab.user,
                        private_key_path=str(admin.private_path), host_key_fingerprint=lab.host_key_sha256,
                        **kwargs)  # type: ignore[arg-type]


def test_the_stolen_key_is_removed_over_ssh_and_no_longer_logs_in(lab: SSHServer, tmp_path: Path) -> None:
    admin, stolen = keys(tmp_path, lab)
    assert logs_in(lab, stolen)
    ctx = context(tmp_path)

    outputs = remove(ctx, params(lab, admin, keys=stolen.public_line))

    assert outputs["status"] == "removed"
    assert outputs["removed"] == stolen.sha256
    assert outputs["kept"] == admin.sha256
    assert (lab.home / ".ssh" / "authorized_keys").read_text() == f"{admin.public_line}\n"
    assert not logs_in(lab, stolen)
    assert logs_in(lab, admin)
    assert ctx.report.authorized_keys["removal"]["removed"] == [f"{stolen.sha256} stolen@laptop"]


def test_by_fingerprint_where_the_vm_has_ssh_keygen(lab: SSHServer, tmp_path: Path) -> None:
    admin, stolen = keys(tmp_path, lab)

    outputs = remove(context(tmp_path), params(lab, admin, fingerprints=stolen.sha256))

    assert outputs["removed"] == stolen.sha256
    assert not logs_in(lab, stolen)


def test_the_key_it_logs_in_with_is_not_removed(lab: SSHServer, tmp_path: Path) -> None:
    admin, _ = keys(tmp_path, lab)
    (lab.home / ".ssh" / "authorized_keys").write_text(f"{admin.public_line}\n")

    with pytest.raises(GuestCommandError, match="every key this run has proven to log in"):
        remove(context(tmp_path), params(lab, admin, keys=admin.public_line))

    assert logs_in(lab, admin)


def test_exclusive_keeps_only_the_admin_key(lab: SSHServer, tmp_path: Path) -> None:
    admin, stolen = keys(tmp_path, lab)

    outputs = remove(context(tmp_path), params(lab, admin, keys=admin.public_line, exclusive=True))

    assert outputs["removed"] == stolen.sha256
    assert not logs_in(lab, stolen)


def test_a_wrong_host_key_pin_changes_nothing(lab: SSHServer, tmp_path: Path) -> None:
    admin, stolen = keys(tmp_path, lab)
    wrong = "SHA256:" + "A" * 43

    with pytest.raises(HostKeyMismatch):
        remove(context(tmp_path), RemoveParams(
            via="ssh", host=lab.host, port=lab.port, ssh_user=lab.user, private_key_path=str(admin.private_path),
            host_key_fingerprint=wrong, keys=stolen.public_line))

    assert logs_in(lab, stolen)
