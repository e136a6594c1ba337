"""The libvirt driver against recorded virsh output: what virsh prints, and how it fails.

A throwaway `virsh` script prints one recorded answer and exits with its status; the argv it was
called with is kept, so the command line is checked too. The driver against a real qemu-ga (through
tests/agentvm/fake_virsh.py) is in tests/e2e/test_agent_recovery.py.
"""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path

import pytest

from recovery.agent.libvirt import LibvirtAgent, VirshTransport
from recovery.errors import AgentError


def recorded_virsh(tmp_path: Path, answers: list[tuple[int, str, str]]) -> Path:
    """A virsh that gives `answers` (status, stdout, stderr) in turn and logs each argv."""
    lines = ["#!/bin/sh", f"printf '%s\\n' \"$*\" >>{tmp_path}/argv", f"n=$(grep -c '' {tmp_path}/argv)"]
    for index, (status, out, err) in enumerate(answers, 1):
        lines.append(f"if [ $n = {index} ]; then printf %s {shlex.quote(out)}; printf %s {shlex.quote(err)} >&2; "
                     f"exit {status}; fi")
    path = tmp_path / "virsh"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "argv").read_text().splitlines()


def test_exec_through_virsh(tmp_path: Path) -> None:
    done = {"exited": True, "exitcode": 0, "out-data": base64.b64encode(b"hello\n").decode()}
    virsh = recorded_virsh(tmp_path, [(0, '{"return":{"pid":812}}\n', ""),
                                      (0, json.dumps({"return": done}) + "\n", "")])
    agent = LibvirtAgent(VirshTransport("web-1", "qemu:///system", virsh=str(virsh)))
    result = agent.exec(["/bin/echo", "hello"], timeout=10)
    assert (result.exit_code, result.stdout) == (0, b"hello\n")
    first, second = calls(tmp_path)
    assert first.startswith("-c qemu:///system qemu-agent-command web-1 {")
    assert first.endswith("--timeout 10")
    assert '"execute": "guest-exec-status", "arguments": {"pid": 812}' in second


@pytest.mark.parametrize(
    ("stderr", "blocked", "message"),
    [
        ("error: internal error: unable to execute QEMU agent command 'guest-exec': The command guest-exec has "
         "been disabled for this instance\n", True, "refuses guest-exec"),
        ("error: Guest agent is not responding: QEMU guest agent is not connected\n", False,
         "is not answering (error: Guest agent is not responding"),
        ("error: failed to get domain 'web-1'\n", False, "libvirt knows no libvirt domain web-1"),
        ("error: failed to connect to the hypervisor\n", False, "virsh could not connect to libvirt"),
        ("error: something new\n", False, "virsh qemu-agent-command guest-exec failed on libvirt domain web-1"),
    ],
)
def test_virsh_failures_become_agent_errors(tmp_path: Path, stderr: str, blocked: bool, message: str) -> None:
    virsh = recorded_virsh(tmp_path, [(1, "", stderr)])
    agent = LibvirtAgent(VirshTransport("web-1", virsh=str(virsh)))
    with pytest.raises(AgentError) as caught:
        agent.exec(["/bin/true"], timeout=5)
    assert message in str(caught.value)
    assert caught.value.blocked is blocked
    assert calls(tmp_path)[0].startswith("qemu-agent-command web-1 ")  # no -c: virsh's default connection


def test_an_agent_error_answer_printed_by_virsh_is_mapped(tmp_path: Path) -> None:
    virsh = recorded_virsh(tmp_path, [(0, '{"error":{"class":"GenericError","desc":"no such user"}}', "")])
    agent = LibvirtAgent(VirshTransport("web-1", virsh=str(virsh)))
    with pytest.raises(AgentError, match="failed guest-ssh-get-authorized-keys: no such user"):
        agent.get_authorized_keys("x", timeout=5)


def test_output_that_is_not_json(tmp_path: Path) -> None:
    virsh = recorded_virsh(tmp_path, [(0, "Domain web-1 started", "")])
    with pytest.raises(AgentError, match="not the agent's JSON answer"):
        VirshTransport("web-1", virsh=str(virsh)).command("guest-ping", None, 5)


def test_no_virsh_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match=r"virsh is not installed here .*apt-get install libvirt-clients"):
        VirshTransport("web-1", virsh=str(tmp_path / "nowhere" / "virsh")).command("guest-ping", None, 5)
