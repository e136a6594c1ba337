"""ssh.verify against a real sshd: a rejected key names where the VM's sshd looks for keys, when the
install script saw it, instead of blaming authorized_keys modes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from recovery.engine.config import Config
from recovery.engine.context import SharedState, StepContext
from recovery.engine.journal import Journal
from recovery.engine.report import RunReport
from recovery.errors import AuthRejected
from recovery.ssh.keys import generate_keypair
from recovery.steps.ssh import VerifyParams, verify
from tests.integration.sshd_fixture import SSHServer

SSSD_LOOKUP = {
    "read_from": "files",
    "authorized_keys_file": "/etc/ssh/keys/%u",
    "authorized_keys_command": "/usr/bin/sss_ssh_authorizedkeys",
}


def verify_stranger(sshd: SSHServer, tmp_path: Path, sshd_facts: dict[str, str] | None) -> AuthRejected:
    journal = Journal.create(tmp_path / "runs")
    report = RunReport(journal.run_id, "test")
    if sshd_facts is not None:
        report.authorized_keys = {"sshd": sshd_facts}
    ctx = StepContext(run_id=journal.run_id, run_dir=journal.directory, journal=journal, config=Config(),
                      report=report, shared=SharedState(), deadline=time.monotonic() + 30)
    stranger = generate_keypair(tmp_path / "stranger")
    params = VerifyParams(host=sshd.host, port=sshd.port, user=sshd.user, private_key_path=str(stranger.private_path),
                          host_key_fingerprint=sshd.host_key_sha256)
    with pytest.raises(AuthRejected) as caught:
        verify(ctx, params)
    return caught.value


def test_a_key_sshd_never_reads_is_named_as_the_cause(sshd: SSHServer, tmp_path: Path) -> None:
    message = str(verify_stranger(sshd, tmp_path, SSSD_LOOKUP))
    assert "sshd reads keys from /etc/ssh/keys/%u, not from ~/.ssh/authorized_keys" in message
    assert "sss_ssh_authorizedkeys" in message
    assert "modes" not in message


def test_without_facts_the_rejection_keeps_its_general_explanation(sshd: SSHServer, tmp_path: Path) -> None:
    assert "ownership or modes" in str(verify_stranger(sshd, tmp_path, None))
