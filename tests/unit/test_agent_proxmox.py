"""The Proxmox driver against an HTTPS fake of the Proxmox VE API (tests/agentvm/fake_proxmox.py).

Behind the fake is a scripted agent transport here; tests/e2e/test_agent_recovery.py puts the
test VM's real qemu-ga behind it and recovers the VM through proxmox://.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest

from recovery.agent import agent_for, agent_url_problem
from recovery.agent.proxmox import ProxmoxAgent
from recovery.errors import AgentError
from recovery.safety.redact import Secret
from tests.agentvm.fake_proxmox import serving

TOKEN = "root@pam!recovery=4f2c1e6a-0d1b-4c55-9a6e-2b8f3c7d9e10"


class ScriptedTransport:
    where = "scripted agent"

    def __init__(self, *, blocked: bool = False) -> None:
        self.blocked = blocked
        self.seen: list[tuple[str, Mapping[str, object] | None]] = []
        self.polls = 0

    def command(self, name: str, arguments: Mapping[str, object] | None, timeout: float) -> Any:
        self.seen.append((name, arguments))
        if self.blocked:
            raise AgentError(f"the guest agent of x refuses {name}: The command {name} has been disabled for this "
                             "instance", command=name, blocked=True)
        if name == "guest-exec":
            return {"pid": 77}
        self.polls += 1
        if self.polls < 2:
            return {"exited": False}
        return {"exited": True, "exitcode": 0, "out-data": base64.b64encode(b"RCV-x added=yes\n").decode(),
                "err-data": base64.b64encode(b"").decode()}

    def close(self) -> None:
        pass


def test_exec_through_the_api_with_the_token_and_the_clusters_ca() -> None:
    transport = ScriptedTransport()
    with serving(transport, TOKEN) as fake:
        agent = agent_for(fake.url, token=Secret(TOKEN))
        result = agent.exec(["runuser", "-u", "debian", "--", "/bin/sh"], stdin=b"echo hi\n", timeout=10)
    assert (result.exit_code, result.stdout) == (0, b"RCV-x added=yes\n")
    exec_call = fake.requests[0]
    assert exec_call["method"] == "POST"
    assert exec_call["path"] == "/api2/json/nodes/pve/qemu/100/agent/exec"
    assert exec_call["form"] == {"command": ["runuser", "-u", "debian", "--", "/bin/sh"], "input-data": ["echo hi\n"]}
    assert exec_call["authorization"] == f"PVEAPIToken={TOKEN}"
    assert fake.requests[1]["path"] == "/api2/json/nodes/pve/qemu/100/agent/exec-status"
    assert transport.seen[0] == ("guest-exec", {"path": "runuser", "arg": ["-u", "debian", "--", "/bin/sh"],
                                                "capture-output": True,
                                                "input-data": base64.b64encode(b"echo hi\n").decode()})


def test_a_wrong_token_is_refused_without_showing_it() -> None:
    with serving(ScriptedTransport(), TOKEN) as fake:
        agent = agent_for(fake.url, token=Secret("root@pam!recovery=wrong-secret-value"))
        with pytest.raises(AgentError, match="refused the token \\(HTTP 401") as caught:
            agent.exec(["/bin/true"], timeout=5)
    assert "wrong-secret-value" not in str(caught.value)


def test_an_unknown_vm_is_named() -> None:
    with serving(ScriptedTransport(), TOKEN) as fake:
        agent = agent_for(fake.url.replace("/100?", "/999?"), token=Secret(TOKEN))
        with pytest.raises(AgentError, match=r"Proxmox VM 999 on node pve .* does not exist"):
            agent.exec(["/bin/true"], timeout=5)


def test_a_blocked_guest_exec_is_marked_blocked_and_there_is_no_ssh_key_fallback() -> None:
    with serving(ScriptedTransport(blocked=True), TOKEN) as fake:
        agent = agent_for(fake.url, token=Secret(TOKEN))
        with pytest.raises(AgentError, match="refuses guest-exec") as caught:
            agent.exec(["/bin/true"], timeout=5)
    assert caught.value.blocked
    with pytest.raises(AgentError, match="the Proxmox API has no guest-ssh-\\* commands"):
        agent.add_authorized_keys("debian", ["ssh-ed25519 AAAA"], timeout=5)


def test_a_certificate_not_from_the_given_ca_is_refused() -> None:
    with serving(ScriptedTransport(), TOKEN) as fake:
        agent = agent_for(fake.url.split("?")[0], token=Secret(TOKEN))
        with pytest.raises(AgentError, match=r"is not trusted .*add \?ca=/path/to/pve-root-ca.pem"):
            agent.exec(["/bin/true"], timeout=5)


def test_no_token_says_where_to_give_one() -> None:
    agent = ProxmoxAgent("127.0.0.1", 8006, "pve", "100", None)
    with pytest.raises(AgentError, match="needs an API token: set RECOVERY_AGENT_TOKEN"):
        agent.exec(["/bin/true"], timeout=5)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("proxmox://pve1.example/pve/100", None),
        ("proxmox://pve1.example:8006/pve/100?ca=/etc/pve/pve-root-ca.pem", None),
        ("proxmox://pve1.example/pve", "a Proxmox agent is proxmox://HOST[:PORT]/NODE/VMID"),
        ("proxmox://pve1.example/pve/web-1", "the VM id 'web-1' is not a number"),
        ("proxmox://root@pam:secret@pve1.example/pve/100", "never in the URL"),
        ("proxmox://pve1.example/pve/100?verify=no", "unknown option verify"),
    ],
)
def test_proxmox_urls(url: str, problem: str | None) -> None:
    found = agent_url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found), found
