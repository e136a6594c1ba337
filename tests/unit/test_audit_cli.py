"""`recovery audit` usage errors: exit 2, one paragraph, before any connection is made."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.ssh.keys import generate_keypair

CASES = Path(__file__).resolve().parents[1] / "cases" / "audit" / "inventory"


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """A valid inventory whose only host has no address, so nothing is ever connected to."""
    key = generate_keypair(tmp_path / "audit_key")
    path = tmp_path / "inventory.yaml"
    path.write_text(f"defaults: {{user: ops, key: {key.private_path}}}\nhosts:\n  - name: pending\n")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "one of the arguments --inventory --cloud"),
        (["--shard", "4/4"], "I counts from 0"),
        (["--concurrency", "0"], "--concurrency 0: expected 1 to 1000"),
        (["--timeout", "-1"], "expected a positive number of seconds"),
        (["--check-console"], "use it with --cloud"),
        (["--server-filter", "web"], "use it with --cloud"),
        (["--remediate", "playbooks/restore-access-serial.yaml"], "pass --yes when there is no terminal"),
        (["--format", "csv"], "invalid choice: 'csv'"),
    ],
)
def test_usage_errors_exit_two(
    inventory: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = [] if not extra else ["--inventory", str(inventory)]
    assert main(["audit", *source, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_cloud_needs_user_and_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--cloud", "mycloud"]) == 2
    assert "--cloud needs --user and --key" in capsys.readouterr().err


def test_an_invalid_inventory_is_exit_two_with_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    path = CASES / "invalid" / "bad-ports.yaml"

    assert main(["audit", "--inventory", str(path)]) == 2

    assert f"{path}:6: hosts[0].port: expected a port number from 1 to 65535, got '70000'" in capsys.readouterr().err


def test_an_unusable_key_is_exit_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(f"hosts:\n  - {{name: a, host: 127.0.0.1, user: ops, key: {tmp_path / 'missing'}}}\n")

    assert main(["audit", "--inventory", str(path)]) == 2

    assert f"--key {tmp_path / 'missing'}: cannot read" in capsys.readouterr().err


def test_an_invalid_remediation_playbook_is_exit_two_before_any_check(
    inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "broken.yaml"
    playbook.write_text("steps: [\n")

    assert main(["audit", "--inventory", str(inventory), "--remediate", str(playbook), "--yes"]) == 2

    assert "broken.yaml:2: not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: (path.write_text(""), path.chmod(0o444)), "it is read-only (mode 0444)"),
        (lambda path: None, "No such file or directory"),  # its directory is missing
    ],
    ids=["read-only", "no-directory"],
)
def test_accept_new_with_a_known_hosts_file_it_cannot_write_is_exit_two(
    inventory: Path, tmp_path: Path, make: Callable[[Path], object], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before anything connects; even root, who could write through mode 0444, leaves such a file alone."""
    known_hosts = tmp_path / "known_hosts" if reason != "No such file or directory" else tmp_path / "no" / "kh"
    make(known_hosts)

    assert main(["audit", "--inventory", str(inventory), "--known-hosts", str(known_hosts), "--accept-new"]) == 2

    err = capsys.readouterr().err
    assert f"--known-hosts {known_hosts}: --accept-new records the host keys it accepts there" in err
    assert reason in err


def test_accept_new_alone_records_in_the_users_known_hosts_as_ssh_does(
    inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))

    assert main(["audit", "--inventory", str(inventory), "--accept-new"]) == 1

    assert (home / ".ssh").stat().st_mode & 0o777 == 0o700
    assert (home / ".ssh" / "known_hosts").stat().st_mode & 0o777 == 0o600


def test_accept_new_creates_a_missing_known_hosts_file(inventory: Path, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"

    assert main(["audit", "--inventory", str(inventory), "--known-hosts", str(known_hosts), "--accept-new"]) == 1

    assert known_hosts.read_text() == ""  # nothing connected (no address), so nothing learned
    assert known_hosts.stat().st_mode & 0o777 == 0o600


def test_no_address_only_is_exit_one_and_prints_the_table(inventory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--inventory", str(inventory)]) == 1

    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["NAME", "ADDRESS", "STATUS", "SECONDS", "DETAIL"]
    assert out.splitlines()[1].split()[:3] == ["pending", "-", "no_address"]


def test_help_stays_light() -> None:
    """`recovery --help` must not pay for the SSH libraries (or the audit) it does not use."""
    code = (
        "import sys, recovery.cli.main; recovery.cli.main.build_parser(); "
        "print(sorted(m for m in ('ssh2', 'paramiko', 'cryptography', 'recovery.audit') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_an_unknown_engine_is_exit_two(
    inventory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECOVERY_AUDIT_ENGINE", "libssh3")

    assert main(["audit", "--inventory", str(inventory)]) == 2

    assert "RECOVERY_AUDIT_ENGINE=libssh3: expected auto, libssh2 or paramiko" in capsys.readouterr().err
