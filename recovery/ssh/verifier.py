"""Proof of login: SSH into the VM with the new key and ask who we are.

The host key is checked against a pinned fingerprint (SHA256 or MD5 form, as a
console log's `BEGIN SSH HOST KEY FINGERPRINTS` block prints it) by a custom
paramiko `MissingHostKeyPolicy`. No known_hosts file is read: a stale entry
there must neither vouch for a rebuilt VM nor bypass the pin. Without a pin
the login is refused unless the caller explicitly trusts the first key.

paramiko is imported inside the functions that use it, because importing it
costs ~150 ms that `recovery --help` should not pay. Every paramiko and socket
exception is translated in `_map_errors`, so nothing above this module sees one.
The host key decision (`recovery.ssh.hostkeys`) and the naming and wording of each
failure (`recovery.ssh.diagnosis`) are shared with the fleet audit, which makes the
same check with another SSH library.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from recovery.errors import ConnectTimeout, VerifyError
from recovery.ssh import diagnosis
from recovery.ssh.hostkeys import HostKeyCheck
from recovery.ssh.keys import KeyPair

if TYPE_CHECKING:
    import socket

    from paramiko import PKey, SSHClient

    from recovery.safety.redact import Secret
    from recovery.ssh.jump import JumpHop

__all__ = ["Connection", "ParamikoVerifier", "SSHTarget", "Verifier", "VerifyResult", "connect"]

log = logging.getLogger(__name__)

_COMMAND = "id -un"
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
    `MD5:` prefix, or several separated by commas: a VM has one host key per type
    (cloud-init prints them all), and the key the server offers must match one.
    With no fingerprint, `trust_first_use` must be set to accept whatever key the
    server offers; a pin, when given, always wins.
    """

    host: str
    port: int
    user: str
    host_key_fingerprint: str | None = None
    trust_first_use: bool = False
    jumps: tuple[JumpHop, ...] = ()  # bastions on the way, first hop first (recovery.ssh.jump)
    revoked_host_keys: tuple[str, ...] = ()  # `SHA256:` keys never accepted (known_hosts `@revoked`)


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
        log.debug("verifying ssh login to %s@%s:%s with key %s", target.user, target.host, target.port, key.sha256)
        with connect(target, key, passphrase=passphrase, timeout=timeout) as connection:
            remote_user = _run_id(connection.client, target, timeout)
        check = connection.check
        where = f"{target.user}@{target.host}:{target.port}"
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


@dataclass(frozen=True)
class Connection:
    """An SSH login that `connect` made: the client to run commands on, and the host key decision."""

    client: SSHClient
    check: HostKeyCheck


@contextmanager
def connect(
    target: SSHTarget, key: KeyPair, *, passphrase: Secret | None = None, timeout: float = 10.0
) -> Iterator[Connection]:
    """Log in to `target` with `key` alone (no agent, no ~/.ssh keys), the host key checked against the pin.

    The verifier's one `id -un` and the remote runner's scripts (`recovery.ssh.remote`) share it, so both
    check host keys and name failures the same way: paramiko and socket errors raised inside the
    `with` block come out as the `VerifyError` family too. Raises what `ParamikoVerifier.verify` lists.
    """
    pins = [pin.strip() for pin in (target.host_key_fingerprint or "").split(",") if pin.strip()]
    check = HostKeyCheck(f"{target.host}:{target.port}", pins, trust_first_use=target.trust_first_use,
                         revoked=target.revoked_host_keys)
    pkey = _load_private_key(key, passphrase)
    with _through_jumps(target, key, passphrase, timeout) as sock, _map_errors(target), _client(check) as client:
        client.connect(
            hostname=target.host,
            port=target.port,
            username=target.user,
            pkey=pkey,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            look_for_keys=False,
            allow_agent=False,
        )
        yield Connection(client=client, check=check)


@contextmanager
def _through_jumps(
    target: SSHTarget, key: KeyPair, passphrase: Secret | None, timeout: float
) -> Iterator[socket.socket | None]:
    """The socket through the jump hosts to `target`, or None to connect directly."""
    if not target.jumps:
        yield None
        return
    from recovery.ssh.jump import tunnel

    with tunnel(target.jumps, (target.host, target.port), key, passphrase=passphrase, timeout=timeout) as sock:
        yield sock


@contextmanager
def _client(check: HostKeyCheck) -> Iterator[SSHClient]:
    """An SSHClient whose only trust decision is `check`; closed on exit."""
    import paramiko

    class PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):
        # With no known_hosts loaded, paramiko asks the policy about every key.
        def missing_host_key(self, client: SSHClient, hostname: str, key: PKey) -> None:
            check.check(key.get_name(), f"{key.get_name()} {key.get_base64()}")
            if check.trusted_on_first_use:
                where, fingerprint = check.where, check.offered_sha256
                log.warning("trusting host key %s %s of %s on first use", key.get_name(), fingerprint, where)

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
    """Translate paramiko and socket failures into the `VerifyError` family, via `recovery.ssh.diagnosis`.

    Order matters: `socket.gaierror`, `ConnectionRefusedError`, `TimeoutError`
    and paramiko's `NoValidConnectionsError` are all `OSError`s.
    """
    import paramiko

    where = f"{target.host}:{target.port}"
    try:
        yield
    except paramiko.AuthenticationException as exc:
        found = (
            diagnosis.auth_timeout(where)
            if str(exc) in _TIMEOUT_MESSAGES
            else diagnosis.auth_rejected(where, target.user, str(exc))
        )
        raise found.error() from exc
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        causes = {getattr(cause, "errno", None) for cause in exc.errors.values()}
        if causes == {errno.ECONNREFUSED}:
            raise diagnosis.refused(where).error() from exc
        raise VerifyError(f"cannot reach {where}: {exc}") from exc
    except OSError as exc:
        raise diagnosis.socket_failure(exc, target.host, target.port).error() from exc
    except EOFError as exc:
        raise diagnosis.closed_during_handshake(where).error() from exc
    except paramiko.SSHException as exc:
        message = str(exc)
        if message in _TIMEOUT_MESSAGES or (
            message.startswith(_BANNER_ERROR) and isinstance(exc.__context__, TimeoutError)
        ):
            raise diagnosis.handshake_timeout(where).error() from exc
        if message.startswith(_BANNER_ERROR):
            raise diagnosis.closed_before_banner(where).error() from exc
        raise diagnosis.session_failed(where, message).error() from exc
