"""Proof of login: SSH into the VM with the new key and ask who we are.

The host key is checked against a pinned fingerprint (SHA256 or MD5 form, as a
console log's `BEGIN SSH HOST KEY FINGERPRINTS` block prints it) by a custom
paramiko `MissingHostKeyPolicy`. No known_hosts file is read: a stale entry
there must neither vouch for a rebuilt VM nor bypass the pin. Without a pin
the login is refused unless the caller explicitly trusts the first key.

paramiko is imported inside the functions that use it, because importing it
costs ~150 ms that `recovery --help` should not pay. Every paramiko and socket
exception is translated in `_map_errors`, so nothing above this module sees one.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from recovery.errors import (
    AuthRejected,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    VerifyError,
)
from recovery.keys import KeyPair, fingerprint_md5, fingerprint_sha256

if TYPE_CHECKING:
    from paramiko import PKey, SSHClient

    from recovery.redact import Secret

__all__ = ["ParamikoVerifier", "SSHTarget", "Verifier", "VerifyResult"]

log = logging.getLogger(__name__)

_COMMAND = "id -un"
_SHA256_PIN = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_MD5_PIN = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){15}")
# paramiko reports these waits running out as plain SSHException/AuthenticationException
# texts; "No existing session" is what a peer that accepts TCP and never speaks produces.
_TIMEOUT_MESSAGES = frozenset(
    {"No existing session", "Timeout opening channel.", "Authentication timeout."}
)
_BANNER_ERROR = "Error reading SSH protocol banner"


@dataclass(frozen=True)
class SSHTarget:
    """Where to log in, and how the server proves who it is.

    `host_key_fingerprint` is `SHA256:...` or MD5 colon hex, with or without an
    `MD5:` prefix. With no fingerprint, `trust_first_use` must be set to accept
    whatever key the server offers; a pin, when given, always wins.
    """

    host: str
    port: int
    user: str
    host_key_fingerprint: str | None = None
    trust_first_use: bool = False


@dataclass(frozen=True)
class VerifyResult:
    """What a successful login proved; fingerprints only, never key material."""

    remote_user: str
    host_key_fingerprint: str
    host_key_type: str
    trusted_on_first_use: bool
    key_fingerprint: str
    seconds: float


class Verifier(Protocol):
    """Proves that `key` logs in to `target`; the boundary the ssh step calls."""

    def verify(
        self,
        target: SSHTarget,
        key: KeyPair,
        *,
        passphrase: Secret | None = None,
        timeout: float = 10.0,
    ) -> VerifyResult: ...


class ParamikoVerifier:
    """`Verifier` over paramiko: one connection, one `id -un`, then close."""

    def verify(
        self,
        target: SSHTarget,
        key: KeyPair,
        *,
        passphrase: Secret | None = None,
        timeout: float = 10.0,
    ) -> VerifyResult:
        """Log in to `target` with `key` alone and check the remote user name.

        Only `key` is offered: no agent, no `~/.ssh` keys, so success proves
        the new key works and nothing else.

        :param target: host, port, user and the host key pin.
        :param key: the key pair whose private half logs in.
        :param passphrase: decrypts the private key, if it is encrypted.
        :param timeout: seconds allowed for each phase (TCP connect, SSH banner
            and handshake, authentication, the command), so a silent peer fails
            in about this long rather than hanging.
        :returns: the remote user and the host key that was accepted.
        :raises HostKeyUnknown: no pin and `trust_first_use` is off; the message
            shows the offered fingerprint to pin.
        :raises HostKeyMismatch: the server's key differs from the pin.
        :raises AuthRejected: the server refused the key.
        :raises ConnectionRefused: nothing listens on the port, or the server
            closed the connection before the handshake finished.
        :raises ConnectTimeout: the server did not answer in time.
        :raises VerifyError: the pin is malformed, the private key cannot be
            loaded, the host name does not resolve, or the login landed as
            another user.
        """
        started = time.monotonic()
        check = _HostKeyCheck(target)
        pkey = _load_private_key(key, passphrase)
        where = f"{target.user}@{target.host}:{target.port}"
        log.debug("verifying ssh login to %s with key %s", where, key.sha256)
        with _map_errors(target), _client(check) as client:
            client.connect(
                hostname=target.host,
                port=target.port,
                username=target.user,
                pkey=pkey,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                look_for_keys=False,
                allow_agent=False,
            )
            remote_user = _run_id(client, target, timeout)
        if remote_user != target.user:
            raise VerifyError(
                f"logged in to {where}, but `{_COMMAND}` says {remote_user!r}: "
                "the server maps the login to another account"
            )
        return VerifyResult(
            remote_user=remote_user,
            host_key_fingerprint=check.offered_sha256,
            host_key_type=check.offered_type,
            trusted_on_first_use=check.trusted_on_first_use,
            key_fingerprint=key.sha256,
            seconds=time.monotonic() - started,
        )


class _HostKeyCheck:
    """Decides whether the server's host key is acceptable, and remembers it.

    Kept free of paramiko so the trust decision reads on its own; `_client`
    wires it into a paramiko policy.
    """

    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self.pin = _parse_pin(target.host_key_fingerprint)
        self.offered_sha256 = ""
        self.offered_type = ""
        self.trusted_on_first_use = False

    def check(self, key_type: str, public_line: str) -> None:
        """Accept the offered key or raise; called once per connection."""
        sha256 = fingerprint_sha256(public_line)
        md5 = fingerprint_md5(public_line)
        self.offered_sha256, self.offered_type = sha256, key_type
        where = f"{self.target.host}:{self.target.port}"
        if self.pin is None:
            if not self.target.trust_first_use:
                raise HostKeyUnknown(
                    f"{where} offered host key {key_type} {sha256} (MD5:{md5}) and no host "
                    "key fingerprint is pinned. Compare it with the 'BEGIN SSH HOST KEY "
                    "FINGERPRINTS' block of the VM's console log, then pin it "
                    f"(host_key_fingerprint: {sha256}), or accept the first key "
                    "explicitly (--trust-first-key)"
                )
            log.warning("trusting host key %s %s of %s on first use", key_type, sha256, where)
            self.trusted_on_first_use = True
            return
        offered = sha256 if self.pin.startswith("SHA256:") else f"MD5:{md5}"
        if offered != self.pin:
            raise HostKeyMismatch(
                f"host key of {where} does not match the pin: expected {self.pin}, "
                f"server offered {key_type} {offered}"
                + ("" if offered == sha256 else f" ({sha256})")
                + ". The VM may have new host keys, or something is intercepting the "
                "connection; check the console log's fingerprints before changing the pin"
            )


def _parse_pin(text: str | None) -> str | None:
    """Normalise a pin to `SHA256:<43 chars>` or `MD5:<lowercase hex>`."""
    if text is None:
        return None
    pin = text.strip()
    if pin.startswith("SHA256:"):
        pin = pin.rstrip("=")
        if _SHA256_PIN.fullmatch(pin):
            return pin
    else:
        hex_pairs = pin[4:] if pin.upper().startswith("MD5:") else pin
        if _MD5_PIN.fullmatch(hex_pairs.lower()):
            return "MD5:" + hex_pairs.lower()
    raise VerifyError(
        f"host key fingerprint {text!r} is neither 'SHA256:<base64>' nor MD5 colon hex "
        "('MD5:3f:a2:...' or '3f:a2:...')"
    )


@contextmanager
def _client(check: _HostKeyCheck) -> Iterator[SSHClient]:
    """An SSHClient whose only trust decision is `check`; closed on exit."""
    import paramiko

    class PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):
        # With no known_hosts loaded, paramiko asks the policy about every key.
        def missing_host_key(self, client: SSHClient, hostname: str, key: PKey) -> None:
            check.check(key.get_name(), f"{key.get_name()} {key.get_base64()}")

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(PinnedHostKeyPolicy())
    try:
        yield client
    finally:
        client.close()


def _load_private_key(key: KeyPair, passphrase: Secret | None) -> PKey:
    """The private key as paramiko needs it, checked to be the pair described.

    `PKey.from_path` is avoided: in paramiko 5.1 it hands a str passphrase to
    cryptography, which wants bytes, so encrypted keys fail with a TypeError.
    """
    import paramiko

    key_class: type[paramiko.Ed25519Key | paramiko.RSAKey] = (
        paramiko.Ed25519Key if key.key_type == "ed25519" else paramiko.RSAKey
    )
    path = key.private_path
    try:
        pkey = key_class.from_private_key_file(
            str(path), password=passphrase.reveal() if passphrase else None
        )
    except paramiko.PasswordRequiredException as exc:
        raise VerifyError(f"private key {path} is encrypted: a passphrase is needed") from exc
    except (paramiko.SSHException, ValueError) as exc:
        problem = "wrong passphrase, or the file is corrupt" if passphrase else "corrupt file"
        raise VerifyError(f"cannot load private key {path}: {problem}") from exc
    except OSError as exc:
        raise VerifyError(f"cannot read private key {path}: {exc.strerror}") from exc
    if pkey.fingerprint != key.sha256:
        raise VerifyError(
            f"private key {path} is {pkey.fingerprint}, not the expected {key.sha256}; "
            "was the file replaced?"
        )
    return pkey


def _run_id(client: SSHClient, target: SSHTarget, timeout: float) -> str:
    """Run `id -un` and return its output; a non-zero exit is an error."""
    stdin, stdout, stderr = client.exec_command(_COMMAND, timeout=timeout)
    stdin.close()
    output = stdout.read().decode("utf-8", errors="replace").strip()
    channel = stdout.channel
    # recv_exit_status() waits forever; the status normally follows EOF at once.
    if not channel.status_event.wait(timeout):
        raise ConnectTimeout(
            f"{target.host}:{target.port} sent no exit status for `{_COMMAND}` within {timeout:g} s"
        )
    status = channel.recv_exit_status()
    if status != 0:
        detail = stderr.read().decode("utf-8", errors="replace").strip()
        raise VerifyError(
            f"logged in to {target.host}:{target.port}, but `{_COMMAND}` exited {status}"
            + (f": {detail[:200]}" if detail else "")
        )
    return output


@contextmanager
def _map_errors(target: SSHTarget) -> Iterator[None]:
    """Translate paramiko and socket failures into the `VerifyError` family.

    Order matters: `socket.gaierror`, `ConnectionRefusedError`, `TimeoutError`
    and paramiko's `NoValidConnectionsError` are all `OSError`s.
    """
    import paramiko

    where = f"{target.host}:{target.port}"
    try:
        yield
    except paramiko.AuthenticationException as exc:
        if str(exc) in _TIMEOUT_MESSAGES:
            raise ConnectTimeout(f"{where} did not finish authentication in time") from exc
        raise AuthRejected(
            f"{where} rejected the key for user {target.user!r} ({exc}); the key may not "
            "be in authorized_keys yet, or sshd refuses the file's ownership or modes"
        ) from exc
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        causes = {getattr(cause, "errno", None) for cause in exc.errors.values()}
        if causes == {errno.ECONNREFUSED}:
            raise ConnectionRefused(f"{where} refused the connection (is sshd up?)") from exc
        raise VerifyError(f"cannot reach {where}: {exc}") from exc
    except socket.gaierror as exc:
        raise VerifyError(
            f"cannot resolve host name {target.host!r} (DNS lookup failed: {exc.strerror})"
        ) from exc
    except ConnectionRefusedError as exc:
        raise ConnectionRefused(f"{where} refused the connection (is sshd up?)") from exc
    except TimeoutError as exc:
        raise ConnectTimeout(f"{where} did not answer in time") from exc
    except EOFError as exc:
        raise ConnectionRefused(
            f"{where} closed the connection during the SSH handshake "
            "(sshd starting, or over its MaxStartups limit?)"
        ) from exc
    except OSError as exc:
        raise VerifyError(f"connection to {where} failed: {exc.strerror or exc}") from exc
    except paramiko.SSHException as exc:
        message = str(exc)
        if message in _TIMEOUT_MESSAGES or (
            message.startswith(_BANNER_ERROR) and isinstance(exc.__context__, TimeoutError)
        ):
            raise ConnectTimeout(
                f"{where} accepted the connection but did not complete the SSH handshake "
                "in time (sshd still starting, or not an SSH server?)"
            ) from exc
        if message.startswith(_BANNER_ERROR):
            raise ConnectionRefused(
                f"{where} closed the connection before sending its SSH banner "
                "(sshd starting, or over its MaxStartups limit?)"
            ) from exc
        raise VerifyError(f"SSH session with {where} failed: {message}") from exc
