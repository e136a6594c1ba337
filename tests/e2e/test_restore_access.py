"""restore-access.yaml (issue 10, route 5): the first route the VM allows, against the real lab and the agent VM.

The lab has a serial console with a known password and no guest agent: a dead agent socket makes the
agent route not possible (its first step finds no agent answering), and the console route runs, proven
by the SSH login with the host key pinned. The agent route against the agent test VM:
tests/e2e/test_restore_access_vm.py.
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery import lab
from tests.e2e.conftest import ROOT, Result, recovery
from tests.e2e.test_recovery import assert_recovered

PLAYBOOK = ROOT / "playbooks" / "restore-access.yaml"


@pytest.fixture
def dead_agent() -> Iterator[str]:
    """A guest agent socket nobody listens on any more: its QEMU has stopped. (A qemu-ga that does not answer
    is the same class of error, after the agent's 15 s sync timeout: tests/unit/test_choose.py.)"""
    directory = Path(tempfile.mkdtemp(prefix="rcv-qga-"))
    path = directory / "qga.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
    yield f"unix://{path}"
    path.unlink()
    directory.rmdir()


def restore(info: lab.LabInfo, workdir: Path, *extra: str, password: str | None = None) -> Result:
    return recovery(
        "run", str(PLAYBOOK),
        "-e", f"console_url={info.console_url}",
        "-e", f"ssh_host={info.ssh_host}",
        "-e", f"ssh_port={info.ssh_port}",
        "-e", f"user={info.user}",
        "-e", f"host_key_fingerprint={info.host_key_fingerprint}",
        "--journal", str(workdir / "runs"),
        *extra,
        env={"RECOVERY_CONSOLE_PASSWORD": password or info.console_password().reveal(),
             "RECOVERY_KEYS_DIR": str(workdir / "keys")},
        timeout=240,
    )


def report_of(workdir: Path, result: Result) -> dict:
    return json.loads((workdir / "runs" / result.run_id / "report.json").read_text())


@pytest.mark.lab
def test_the_agent_route_is_not_possible_so_the_console_route_with_the_password_runs(
    start_lab, workdir: Path, dead_agent: str,
) -> None:
    info = start_lab()
    result = restore(info, workdir, "-e", f"agent={dead_agent}")
    assert_recovered(info, workdir, result)
    report = report_of(workdir, result)
    (choice,) = report["choices"]
    assert choice["route"] == "console"
    assert choice["skipped"]["agent"].startswith("not possible: step agent_install (agent.install): ")
    assert "nothing listens on the guest agent socket" in choice["skipped"]["agent"]
    statuses = {record["id"]: record["status"] for record in report["timeline"]}
    assert statuses["agent_install"] == "not_possible"
    assert statuses["install"] == "succeeded"
    markdown = (workdir / "runs" / result.run_id / "report.md").read_text()
    assert "- access (add the new key through the first route the VM allows): route `console` was used" in markdown
    assert "route agent skipped: not possible" in result.stderr


@pytest.mark.lab
def test_when_no_route_is_possible_the_run_fails_with_each_reason_and_changes_nothing(
    start_lab, workdir: Path,
) -> None:
    info = start_lab()
    before = lab.read_authorized_keys(info)
    result = restore(info, workdir, password="not-the-password")
    assert result.code == 1, result.stderr
    report = report_of(workdir, result)
    assert report["failed_step"] == "access"
    assert "access: no route is possible:" in report["error"]
    assert "- agent (the guest agent, no console, no password): no guest agent given" in report["error"]
    assert "- console (the console, with a known password): not possible: step login (console.login)" in report["error"]
    assert report["choices"][0]["route"] is None
    assert lab.read_authorized_keys(info) == before
    assert "closed the console" in report["rolled_back"]
    assert "not-the-password" not in result.stdout + result.stderr


def test_without_password_or_agent_the_run_is_refused_before_anything_changes(workdir: Path) -> None:
    result = recovery(
        "run", str(PLAYBOOK), "-e", "ssh_host=127.0.0.1", "-e", "user=ops",
        "-e", "host_key_fingerprint=SHA256:" + "A" * 43, "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_PASSWORD": "", "RECOVERY_KEYS_DIR": str(workdir / "keys")},
    )
    assert result.code == 2, result.stderr
    assert "no route is possible" in result.stderr
    assert not (workdir / "keys").exists()



@pytest.mark.lab
def test_replace_stolen_key_goes_through_the_console_when_the_working_key_is_refused(
    start_lab, workdir: Path,
) -> None:
    """issue 12 item 3: no key works any more. The lab's own old key plays the stolen one."""
    from recovery.ssh.keys import generate_keypair

    info = start_lab()
    refused = generate_keypair(workdir / "no-longer-works", comment="revoked-by-someone")
    result = recovery(
        "run", str(ROOT / "playbooks" / "replace-stolen-key.yaml"),
        "-e", f"console_url={info.console_url}", "-e", f"ssh_host={info.ssh_host}", "-e", f"ssh_port={info.ssh_port}",
        "-e", f"user={info.user}", "-e", f"host_key_fingerprint={info.host_key_fingerprint}",
        "-e", f"working_key={refused.private_path}", "-e", f"stolen_public_key={info.old_public_key}",
        "-e", f"stolen_private_key={info.old_key_path}", "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal(), "RECOVERY_KEYS_DIR": str(workdir / "keys")},
        timeout=240,
    )
    assert result.code == 0, result.stderr
    report = report_of(workdir, result)
    (choice,) = report["choices"]
    assert choice["route"] == "console"
    assert choice["skipped"]["ssh"].startswith("not possible: step add (authorized_keys.install_ssh): ")
    new_key = report["keys"][0]["public_key"]
    lines = (lab.read_authorized_keys(info) or b"").decode().splitlines()
    assert new_key in lines
    assert info.old_public_key not in lines, "the stolen key must be gone"
    assert any("is refused by" in note for note in report["notes"])
