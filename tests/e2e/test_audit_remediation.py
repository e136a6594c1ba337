"""`recovery audit --remediate` end to end: the audit finds a rejected key on the lab VM and recovers it.

Everything comes from a file inventory and the shipped serial playbook, unchanged:
the console URL through the inventory's `inputs:` and the console password
through its `secrets:` (a file, named relative to the inventory), as an operator
with no cloud would write them. No environment variable carries the password.
Two inventory entries name the same VM, so the blast-radius limit shows: one
recovery runs, the other is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from recovery import lab
from recovery.ssh.keys import generate_keypair
from tests.e2e.conftest import PLAYBOOK, recovery


def test_a_file_inventory_remediates_a_lab_vm_with_the_shipped_playbook(
    workdir: Path, start_lab: Callable[..., lab.LabInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    info = start_lab()
    stranger = generate_keypair(workdir / "audit_key")  # not in the VM's authorized_keys: auth_rejected
    password = workdir / "secrets" / "console.password"
    password.parent.mkdir()
    password.write_text(info.console_password().reveal() + "\n")
    password.chmod(0o600)
    inventory = workdir / "inventory.yaml"
    inventory.write_text(
        f"defaults:\n"
        f"  host: {info.ssh_host}\n  port: {info.ssh_port}\n  user: {info.user}\n  key: {stranger.private_path}\n"
        f"  host_key: '{info.host_key_fingerprint}'\n"
        f"  inputs: {{console_url: '{info.console_url}'}}\n"
        f"  secrets: {{console_password: '@secrets/console.password'}}\n"
        "hosts:\n  - name: vm-a\n  - name: vm-b\n"
    )
    before = lab.read_authorized_keys(info) or b""
    env = {"RECOVERY_KEYS_DIR": str(workdir / "keys")}
    monkeypatch.delenv("RECOVERY_CONSOLE_PASSWORD", raising=False)  # the secrets: file is the only source

    done = recovery(
        "audit", "--inventory", str(inventory), "--format", "json", "--remediate", str(PLAYBOOK), "--yes",
        "--journal", str(workdir / "runs"),
        env=env,
    )

    assert done.code == 1, done.stderr  # the audit key itself is still rejected: the hosts failed
    report = json.loads(done.stdout)  # stdout is the audit's report alone; the run's report went to stderr
    first, second = (host["remediation"] for host in report["hosts"])
    assert [host["status"] for host in report["hosts"]] == ["auth_rejected", "auth_rejected"]
    assert first["outcome"] == "succeeded", done.stderr
    journal = Path(first["journal"])
    assert journal.parent == workdir / "runs"
    run_report = json.loads((journal / "report.json").read_text())
    assert run_report["status"] == "succeeded"
    assert second == {
        "outcome": "skipped", "message": "--max-remediations 1 reached", "run_id": None, "journal": None,
        "exit_code": None,
    }
    after = lab.read_authorized_keys(info) or b""
    assert after.startswith(before)
    assert len(after.splitlines()) == len(before.splitlines()) + 1  # the recovery added exactly one key
    secret = info.console_password().reveal()
    token = info.console_token
    for text in (done.stdout, done.stderr, *(path.read_text(errors="replace") for path in journal.rglob("*.json"))):
        assert secret not in text
        assert token not in text
