"""playbooks/replace-stolen-key.yaml against a real sshd: new key in, stolen key out, both proven."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.errors import AuthRejected
from recovery.ssh.keys import KeyPair, generate_keypair, load_keypair
from recovery.ssh.verifier import ParamikoVerifier, SSHTarget
from tests.integration.sshd_fixture import SSHServer, running_sshd

PLAYBOOK = Path(__file__).parents[2] / "playbooks" / "replace-stolen-key.yaml"


@pytest.fixture(scope="module")
def lab() -> Iterator[SSHServer]:
    with running_sshd() as server:
        yield server


def logs_in(lab: SSHServer, key: KeyPair) -> bool:
    try:
        ParamikoVerifier().verify(SSHTarget(lab.host, lab.port, lab.user, lab.host_key_sha256), key, timeout=10)
    except AuthRejected:
        return False
    return True


def run(lab: SSHServer, tmp_path: Path, working: KeyPair, stolen: KeyPair, *extra: str) -> int:
    return main([
        "run", str(PLAYBOOK), "--journal", str(tmp_path / "journal"), "--json",
        "-e", f"ssh_host={lab.host}", "-e", f"ssh_port={lab.port}", "-e", f"user={lab.user}",
        "-e", f"working_key={working.private_path}", "-e", f"stolen_public_key={stolen.public_line}",
        "-e", f"host_key_fingerprint={lab.host_key_sha256}", "-e", f"key_path={tmp_path / 'new' / 'id_ed25519'}",
        *extra,
    ])


def test_the_stolen_key_is_replaced_and_both_proofs_pass(
    lab: SSHServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    working = generate_keypair(tmp_path / "working", comment="working")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen@laptop")
    ak = lab.home / ".ssh" / "authorized_keys"
    ak.write_text(f"{working.public_line}\n{stolen.public_line}\n")

    code = run(lab, tmp_path, working, stolen, "-e", f"stolen_private_key={stolen.private_path}")

    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    new = load_keypair(tmp_path / "new" / "id_ed25519", None)
    assert ak.read_text() == f"{working.public_line}\n{new.public_line}\n"
    assert logs_in(lab, new)
    assert not logs_in(lab, stolen)
    assert any("is refused by" in note for note in report["notes"])


def test_a_stolen_key_that_still_logs_in_fails_the_run(
    lab: SSHServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The proof is a real login: a "stolen" private key that still gets in (here, the working key,
    which the removal leaves alone) makes ssh.rejected fail the run."""
    working = generate_keypair(tmp_path / "working", comment="working")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen@laptop")
    ak = lab.home / ".ssh" / "authorized_keys"
    ak.write_text(f"{working.public_line}\n")

    code = run(lab, tmp_path, working, stolen, "-e", f"stolen_private_key={working.private_path}")

    capsys.readouterr()
    assert code == 1  # ssh.rejected: the "stolen" private key (here the working one) still logs in
