"""Jump hosts (bastions), as OpenSSH's ``ProxyJump``: one or more hops, each its own login.

A VM behind a bastion is reached by logging in to the bastion and asking its sshd for a
``direct-tcpip`` channel to the VM (``ssh -J``); the SSH session to the VM runs inside that
channel, end to end, so the bastion never sees the VM's session keys. With several hops each
one is reached through the one before it.

Every hop is a full login (`recovery.ssh.verifier.connect`): its own user, key and host key pin,
the pin checked exactly as the VM's is (a jump host is no more trusted than a VM: a wrong key
is refused). A failure at a hop keeps its class (`HostKeyMismatch`, `AuthRejected`...) and its
message starts with ``jump host user@host:port:``, so nobody reads a bastion's refusal as the
VM's.

The text forms are OpenSSH's and the playbook inputs': ``jump`` is ``user@host:port`` hops
separated by commas (``host`` alone means port 22; an IPv6 address goes in brackets),
``jump_keys`` and ``jump_host_keys`` are comma-separated lists in the same order (one value
for all hops, or empty: the VM's key, and no pin).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from recovery.errors import ConnectionRefused, KeyGenerationError, VerifyError

if TYPE_CHECKING:
    from paramiko import Channel

    from recovery.safety.redact import Secret
    from recovery.ssh.keys import KeyPair

__all__ = [
    "JumpHop", "check_jump", "check_jump_inputs", "check_jump_lists", "check_jump_pins", "parse_jumps", "tunnel",
]

_HOP = re.compile(
    r"(?:(?P<user>[^@\s,]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>\d+))?"
)
PREFIX = "jump host "


@dataclass(frozen=True)
class JumpHop:
    """One bastion on the way. No `private_key_path`: the key the VM is reached with."""

    host: str
    port: int
    user: str
    private_key_path: str | None = None
    host_key_fingerprint: str | None = None
    trust_first_use: bool = False

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def parse_jumps(
    jump: str, *, keys: str = "", host_keys: str = "", default_user: str = "", trust_first_use: bool = False
) -> tuple[JumpHop, ...]:
    """The hops `jump` names, with their keys and pins from the lists in the same order.

    Args:
        jump: ``user@host:port[,user@host:port...]``; empty means no jump host.
        keys: private key paths, comma-separated: one per hop, or one for all, or empty.
        host_keys: host key pins (SHA256:... or MD5), comma-separated: one per hop, or one for all, or empty.
        default_user: the user of a hop written without ``user@``.
        trust_first_use: accept an unpinned jump host key (as for the VM).
    Raises:
        ValueError: a hop is malformed, or a list's length is neither 1 nor the number of hops.
    """
    texts = [text.strip() for text in jump.split(",") if text.strip()]
    hops = []
    for text in texts:
        found = _HOP.fullmatch(text)
        if found is None:
            raise ValueError(f"jump host {text!r} is not user@host:port (an IPv6 address in brackets)")
        user = found.group("user") or default_user
        if not user:
            raise ValueError(f"jump host {text!r} names no user: write user@{text}")
        port = int(found.group("port") or 22)
        if not 1 <= port <= 65535:
            raise ValueError(f"jump host {text!r}: {port} is not a TCP port (1-65535)")
        hops.append(JumpHop(found.group("v6") or found.group("host") or "", port, user,
                            trust_first_use=trust_first_use))
    key_list = _per_hop("jump_keys", keys, len(hops))
    pin_list = _per_hop("jump_host_keys", host_keys, len(hops))
    return tuple(
        replace(hop, private_key_path=key, host_key_fingerprint=pin)
        for hop, key, pin in zip(hops, key_list, pin_list, strict=True)
    )


def _per_hop(name: str, text: str, count: int) -> list[str | None]:
    values = [value.strip() for value in text.split(",")] if text.strip() else []
    if not values:
        return [None] * count
    if count == 0:
        raise ValueError(f"{name} is given but jump names no jump host")
    if len(values) == 1:
        return [values[0]] * count
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} values for {count} jump hosts: give one per hop, in order")
    return [value or None for value in values]


def check_jump_inputs(jump: str, keys: str = "", host_keys: str = "") -> str | None:
    """Pre-flight: the jump inputs parse, the pins are pins and the key files exist; None when fine."""
    from recovery.engine.checks import host_key_pins

    try:
        hops = parse_jumps(jump, keys=keys, host_keys=host_keys, default_user="user")
    except ValueError as exc:
        return str(exc)
    for hop in hops:
        if hop.host_key_fingerprint and (problem := host_key_pins(hop.host_key_fingerprint)):
            return f"jump host {hop.where}: host key {problem}"
        if hop.private_key_path and not Path(hop.private_key_path).expanduser().is_file():
            return f"jump host {hop.where}: key file {hop.private_key_path} does not exist"
    return None


def check_jump(value: str | None) -> str | None:
    """Pre-flight of a `jump` parameter alone: the hops parse."""
    return check_jump_inputs(value or "")


def check_jump_pins(value: str | None) -> str | None:
    """Pre-flight of a `jump_host_keys` parameter alone: every pin is a pin."""
    from recovery.engine.checks import host_key_pins

    for pin in (value or "").split(","):
        if pin.strip() and (problem := host_key_pins(pin.strip())):
            return problem
    return None


def check_jump_lists(values: Mapping[str, object]) -> list[str]:
    """Pre-flight across a step's `jump`, `jump_keys`, `jump_host_keys`: the lists agree, the key files exist."""
    from recovery.engine.templating import Unknown

    texts = [values.get(name) for name in ("jump", "jump_keys", "jump_host_keys")]
    if any(isinstance(text, Unknown) for text in texts):
        return []
    jump, keys, pins = (text if isinstance(text, str) else "" for text in texts)
    if check_jump_inputs(jump):
        return []  # the jump parameter's own check names it
    problem = check_jump_inputs(jump, keys, pins)
    return [problem] if problem else []


@contextmanager
def tunnel(
    hops: tuple[JumpHop, ...], destination: tuple[str, int], key: KeyPair, *,
    passphrase: Secret | None = None, timeout: float = 10.0,
) -> Iterator[Channel]:
    """A channel to `destination` through `hops` (the last hop opens it), for paramiko's ``sock=``.

    The hops stay logged in until the `with` block ends. Errors raised inside the block are the
    caller's (the VM's) and come out unchanged; a hop's own failure is named after the hop.

    Raises:
        VerifyError family: a hop refused the login, its host key, or the channel to the next hop.
    """
    import paramiko

    from recovery.ssh.keys import load_keypair
    from recovery.ssh.verifier import SSHTarget, connect

    last = hops[-1]
    target = SSHTarget(last.host, last.port, last.user, host_key_fingerprint=last.host_key_fingerprint,
                       trust_first_use=last.trust_first_use, jumps=hops[:-1])
    caller_error: BaseException | None = None
    try:
        hop_key = load_keypair(Path(last.private_key_path).expanduser(), None) if last.private_key_path else key
        with connect(target, hop_key, passphrase=None if last.private_key_path else passphrase,
                     timeout=timeout) as connection:
            transport = connection.client.get_transport()
            if transport is None:
                raise VerifyError(f"the SSH connection to {last.host}:{last.port} closed")
            try:
                channel = transport.open_channel("direct-tcpip", destination, ("127.0.0.1", 0), timeout=timeout)
            except paramiko.ChannelException as exc:
                raise ConnectionRefused(
                    f"{last.host}:{last.port} could not open a connection to {destination[0]}:{destination[1]} "
                    f"({exc.text}): the VM is down, not listening, or the bastion may not forward there "
                    "(AllowTcpForwarding, PermitOpen)"
                ) from exc
            try:
                yield channel
            except BaseException as exc:  # the VM's failure, raised again below, after the hop logged out
                caller_error = exc
            finally:
                channel.close()
    except VerifyError as exc:
        if str(exc).startswith(PREFIX):  # an earlier hop, already named
            raise
        raise type(exc)(f"{PREFIX}{last.where}: {exc}") from exc
    except KeyGenerationError as exc:  # the hop's key file cannot be read
        raise VerifyError(f"{PREFIX}{last.where}: {exc}") from exc
    if caller_error is not None:
        raise caller_error
