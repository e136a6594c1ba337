"""`recovery revoke` usage errors: exit 2, naming the flag, before any connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.ssh.keys import generate_keypair


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    admin = generate_keypair(tmp_path / "admin", comment="admin")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen")
    other = generate_keypair(tmp_path / "other", comment="other")
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(f"hosts:\n  - {{name: a, host: 127.0.0.1, user: ops, key: {admin.private_path}}}\n")
    return {"inventory": str(inventory), "stolen_pub": str(stolen.public_path), "admin_pub": str(admin.public_path),
            "other": str(other.private_path), "stolen": stolen.sha256}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cloud", "mycloud"], "--cloud needs --user and --key"),
        (["--yes"], "--yes only confirms deleting Nova key pairs"),
        (["--concurrency", "0"], "--concurrency 0: expected 1 to 500"),
        (["--timeout", "0"], "--timeout 0: expected a positive number"),
        (["--max-changes", "0"], "--max-changes 0: expected 1 or more"),
    ],
)
def test_flags_out_of_range(files: dict[str, str], extra: list[str], capsys: pytest.CaptureFixture[str],
                            message: str) -> None:
    source = [] if "--cloud" in extra else ["--inventory", files["inventory"]]
    assert main(["revoke", "--public-key", files["stolen_pub"], *source, *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_malformed_fingerprint(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["revoke", "--fingerprint", "SHA256:nope", "--inventory", files["inventory"]]) == 2
    assert "--fingerprint: not a SHA256" in capsys.readouterr().err


def test_the_stolen_private_key_must_be_the_revoked_one(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["revoke", "--fingerprint", files["stolen"], "--inventory", files["inventory"],
                 "--stolen-key", files["other"]])
    assert code == 2
    assert "not the key being revoked" in capsys.readouterr().err


def test_the_admin_key_is_never_revoked(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["revoke", "--public-key", files["admin_pub"], "--inventory", files["inventory"]]) == 2
    assert "rotate the admin key first" in capsys.readouterr().err


def test_one_of_fingerprint_or_public_key_is_required(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["revoke", "--inventory", files["inventory"]]) == 2
    assert "one of the arguments --fingerprint --public-key is required" in capsys.readouterr().err
