"""`recovery audit --remediate` end to end: the audit finds a rejected key on the lab VM and recovers it.

The shipped serial playbook runs unchanged but for one default: the lab's
console URL, which a file inventory cannot supply (a cloud inventory gets it
from Nova). Two inventory entries name the same VM, so the blast-radius limit
shows: one recovery runs, the other is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from recovery import lab
from recovery.keys import generate_keypair
from tests.e2e.conftest import PLAYBOOK, recovery


def test_remediation_runs_once_with_its_own_journal_and_the_report_links_it(
    workdir: Path, start_lab: Callable[..., lab.LabInfo]
) -> None:
    info = start_lab()
    playbook = yaml.safe_load(PLAYBOOK.read_text())
    playbook["inputs"]["console_url"]["default"] = info.console_url
    playbook_path = workdir / "restore-lab.yaml"
    playbook_path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    stranger = generate_keypair(workdir / "audit_key")  # not in the VM's authorized_keys: auth_rejected
    inventory = workdir / "inventory.yaml"
    inventory.write_text(
        f"defaults: {{host: {info.ssh_host}, port: {info.ssh_port}, user: {info.user}, "
        f"key: {stranger.private_path}, host_key: '{info.host_key_fingerprint}'}}\n"
        "hosts:\n  - name: vm-a\n  - name: vm-b\n"
    )
    before = lab.read_authorized_keys(info) or b""

    done = recovery(
        "audit", "--inventory", str(inventory), "--format", "json", "--remediate", str(playbook_path), "--yes",
        "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal(), "RECOVERY_KEYS_DIR": str(workdir / "keys")},
    )

    assert done.code == 1, done.stderr  # the audit key itself is still rejected: the hosts failed
    report = json.loads(done.stdout)  # stdout is the audit's report alone; the run's report went to stderr
    first, second = (host["remediation"] for host in report["hosts"])
    assert [host["status"] for host in report["hosts"]] == ["auth_rejected", "auth_rejected"]
    assert first["outcome"] == "succeeded", done.stderr
    journal = Path(first["journal"])
    assert journal.parent == workdir / "runs"
    assert json.loads((journal / "report.json").read_text())["status"] == "succeeded"
    assert second == {
        "outcome": "skipped", "message": "--max-remediations 1 reached", "run_id": None, "journal": None,
        "exit_code": None,
    }
    after = lab.read_authorized_keys(info) or b""
    assert after.startswith(before)
    assert len(after.splitlines()) == len(before.splitlines()) + 1  # the recovery added exactly one key
