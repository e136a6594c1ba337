"""restore-access.yaml against the agent test VM (the session's one boot): its qemu-ga answers, so the first
route, the guest agent, runs; no console is needed and no password is set. Proven by the SSH login with the
host key pinned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agentvm.vm import SavedVm
from tests.e2e.conftest import ROOT, recovery

pytestmark = pytest.mark.vm

PLAYBOOK = ROOT / "playbooks" / "restore-access.yaml"



def test_with_a_guest_agent_the_agent_route_runs_and_no_console_is_needed(
    saved_agent_vm: SavedVm, workdir: Path,
) -> None:
    with saved_agent_vm.start() as vm:
        result = recovery(
            "run", str(PLAYBOOK), "-e", f"agent={vm.agent_url}", "-e", f"user={vm.user}",
            "-e", "ssh_host=127.0.0.1", "-e", f"ssh_port={vm.ssh_port}",
            "-e", f"host_key_fingerprint={vm.host_key_fingerprint}", "--journal", str(workdir / "runs"),
            env={"RECOVERY_CONSOLE_PASSWORD": "", "RECOVERY_KEYS_DIR": str(workdir / "keys")}, timeout=240,
        )
        assert result.code == 0, result.stderr
        report = json.loads((workdir / "runs" / result.run_id / "report.json").read_text())
        assert [(choice["route"], choice["skipped"]) for choice in report["choices"]] == [("agent", {})]
        assert report["proof"]["host_key_trust"] == "pinned"
        statuses = {record["id"]: record["status"] for record in report["timeline"]}
        assert statuses["agent_install"] == "succeeded"
        assert "install" not in statuses  # the console route never ran
        status, shadow = vm.shell(f"getent shadow {vm.user} | cut -d: -f2")
        assert (status, shadow.strip()) == (0, "*"), "no password was set"
