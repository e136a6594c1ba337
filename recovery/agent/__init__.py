"""Guest agents: run a command inside a VM, or hand it SSH keys, with no console at all.

A hypervisor administrator can talk to the QEMU guest agent (qemu-ga) inside a VM
directly: through QEMU's own socket, through libvirt, or through the Proxmox API.
The boundary is three verbs (`GuestAgent`); what a route does with them (the install
script, the fallback where `guest-exec` is blocked) sits above it in
`recovery.steps.agent`. Drivers are chosen by URL scheme from a registry of
"module:Class" strings imported on first use, like the channels and publishers.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from recovery.errors import AgentError
from recovery.safety.redact import Secret, Text, reveal

__all__ = ["AGENTS", "ExecResult", "GuestAgent", "agent_for", "agent_url_problem", "describe_agent"]


@dataclass(frozen=True)
class ExecResult:
    """How a command run by the agent ended. `exit_code` is None when a signal killed it."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    signal: int | None = None
    truncated: bool = False  # the agent kept only the first part of the output (qemu-ga: 16 MB)


class GuestAgent(Protocol):
    """The guest agent of one VM, as far as restoring access needs it."""

    def exec(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float) -> ExecResult:
        """Run `argv` in the guest with `stdin` as its input, and wait for it to end.

        Raises:
            AgentError: the agent is unreachable or silent, refuses the command (`blocked` set when
                the agent forbids running commands), or the command outlived `timeout`.
        """

    def add_authorized_keys(self, user: str, keys: Sequence[str], *, timeout: float) -> None:
        """Add `keys` to `user`'s authorized_keys through the agent's own SSH key command."""

    def get_authorized_keys(self, user: str, *, timeout: float) -> list[str]:
        """The key lines of `user`'s authorized_keys, as the agent reads them."""

    def append_newline_if_missing(self, user: str, *, timeout: float) -> bool | None:
        """End `user`'s authorized_keys with a newline through the agent's file commands.

        Returns: True if one was added, False if the file already ended with one, None if the agent
            offers no way to do it (its file commands are blocked, or it has none).
        """

    def close(self) -> None:
        """Disconnect; safe to call twice."""


AGENTS: dict[str, str] = {
    "unix": "recovery.agent.qga:UnixSocketAgent",
    "libvirt": "recovery.agent.libvirt:LibvirtAgent",
    "proxmox": "recovery.agent.proxmox:ProxmoxAgent",
}

_FORMS = "unix:///path/to/qga.sock, libvirt://[URI/]DOMAIN or proxmox://HOST[:PORT]/NODE/VMID"


def agent_url_problem(url: Text) -> str | None:
    """Why `url` names no guest agent we can drive, or None. Checks the form only: nothing is contacted."""
    raw = reveal(url)
    scheme = urlsplit(raw).scheme.lower()
    if scheme not in AGENTS:
        shown = f"{scheme}://" if scheme else "no scheme"
        return f"{describe_agent(url)}: {shown} is not a guest agent we can reach (expected {_FORMS})"
    module_name, class_name = AGENTS[scheme].split(":")
    problem: str | None = getattr(importlib.import_module(module_name), class_name).url_problem(raw)
    return problem


def describe_agent(url: Text) -> str:
    """The URL as it may be shown: without a password or token in its user part."""
    raw = reveal(url)
    parts = urlsplit(raw)
    if parts.username is None and parts.password is None:
        return raw
    return raw.replace(parts.netloc, parts.netloc.rsplit("@", 1)[-1], 1)


def agent_for(url: Text, *, token: Secret | None = None) -> GuestAgent:
    """The driver for the agent `url` names, not yet connected (it connects on first use).

    Args:
        url: `unix:///path` (QEMU's agent socket), `libvirt://[URI/]DOMAIN` or
            `proxmox://HOST[:PORT]/NODE/VMID`.
        token: the Proxmox API token (`USER@REALM!NAME=SECRET`); the other kinds ignore it.
    Raises:
        AgentError: the URL names no agent we can drive.
    """
    problem = agent_url_problem(url)
    if problem:
        raise AgentError(problem)
    raw = reveal(url)
    module_name, class_name = AGENTS[urlsplit(raw).scheme.lower()].split(":")
    agent_class = getattr(importlib.import_module(module_name), class_name)
    agent: GuestAgent = agent_class.from_url(raw, token=token)
    return agent
