"""`libvirt://[URI/]DOMAIN`: the guest agent through libvirt, with `virsh qemu-agent-command`.

libvirt owns the agent socket of the domains it runs (a second client would wait forever
behind libvirtd), so the commands go through libvirt itself. `virsh` rather than the
libvirt-python binding: it is on every libvirt host, and the binding is a compiled extra
that would have to match the host's libvirt. virsh prints the agent's JSON answer on
success, and libvirt's error text on failure, which is mapped to our errors here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any, ClassVar

from recovery.agent.qga import QgaAgent, error_from_reply
from recovery.errors import AgentError
from recovery.safety.redact import Secret

__all__ = ["LibvirtAgent", "VirshTransport"]

_PREFIX = "libvirt://"


class VirshTransport:
    """One `virsh -c URI qemu-agent-command DOMAIN JSON --timeout N` per agent command."""

    def __init__(self, domain: str, uri: str | None = None, *, virsh: str = "virsh") -> None:
        self.domain = domain
        self.uri = uri
        self.virsh = virsh
        self.where = f"libvirt domain {domain}" + (f" ({uri})" if uri else "")

    def command(self, name: str, arguments: Mapping[str, object] | None, timeout: float) -> Any:
        request: dict[str, object] = {"execute": name}
        if arguments is not None:
            request["arguments"] = dict(arguments)
        argv = [self.virsh, *(["-c", self.uri] if self.uri else []), "qemu-agent-command", self.domain,
                json.dumps(request), "--timeout", str(max(int(timeout), 1))]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10, check=False)
        except FileNotFoundError as exc:
            raise AgentError(f"virsh is not installed here ({self.virsh}): apt-get install libvirt-clients, "
                             "or reach the agent's socket with unix:///path") from exc
        except subprocess.TimeoutExpired as exc:
            raise AgentError(f"virsh did not return from {name} on {self.where} within {timeout + 10:.0f} s",
                             command=name) from exc
        if done.returncode != 0:
            raise _virsh_error(self.where, name, done.stderr)
        try:
            reply = json.loads(done.stdout)
        except ValueError as exc:
            raise AgentError(f"virsh printed something that is not the agent's JSON answer to {name}: "
                             f"{done.stdout[:200]!r}", command=name) from exc
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            raise error_from_reply(self.where, name, reply["error"])
        if not isinstance(reply, dict) or "return" not in reply:
            raise AgentError(f"virsh printed no agent answer to {name}: {done.stdout[:200]!r}", command=name)
        return reply["return"]

    def close(self) -> None:
        """Nothing stays open between commands."""


def _virsh_error(where: str, name: str, stderr: str) -> AgentError:
    text = " ".join(line.strip() for line in stderr.splitlines() if line.strip())
    lowered = text.lower()
    if "has been disabled" in lowered or "has not been found" in lowered or "commandnotfound" in lowered:
        return error_from_reply(where, name, {"class": "CommandNotFound", "desc": text})
    if "not connected" in lowered or "not responding" in lowered or "not synced" in lowered:
        return AgentError(f"the guest agent of {where} is not answering ({text}): is qemu-guest-agent running in "
                          "the VM, and does the domain have an org.qemu.guest_agent.0 channel?", command=name)
    if "failed to get domain" in lowered or "domain not found" in lowered:
        return AgentError(f"libvirt knows no {where}: check the name with `virsh list --all` ({text})",
                          command=name)
    if "failed to connect" in lowered:
        return AgentError(f"virsh could not connect to libvirt for {where}: {text}", command=name)
    return AgentError(f"virsh qemu-agent-command {name} failed on {where}: {text or 'no message'}", command=name)


class LibvirtAgent(QgaAgent):
    """`libvirt://DOMAIN` (virsh's default connection) or `libvirt://URI/DOMAIN` (`qemu:///system/web-1`)."""

    poll: ClassVar[tuple[float, ...]] = (0.02, 0.05, 0.1, 0.2)  # each poll starts a virsh: no finer

    scheme: ClassVar[str] = "libvirt"

    @staticmethod
    def split(url: str) -> tuple[str | None, str]:
        rest = url[len(_PREFIX):]
        uri, _, domain = rest.rpartition("/")
        return (uri or None), domain

    @classmethod
    def url_problem(cls, url: str) -> str | None:
        if not url.startswith(_PREFIX):
            return f"{url}: a libvirt agent is libvirt://DOMAIN or libvirt://URI/DOMAIN"
        uri, domain = cls.split(url)
        if not domain:
            return f"{url}: no domain name after the last '/' (libvirt://qemu:///system/DOMAIN)"
        if uri is not None and "://" not in uri:
            return f"{url}: {uri!r} is not a libvirt connection URI such as qemu:///system"
        return None

    @classmethod
    def from_url(cls, url: str, *, token: Secret | None = None) -> LibvirtAgent:
        uri, domain = cls.split(url)
        return cls(VirshTransport(domain, uri, virsh=shutil.which("virsh") or "virsh"))
