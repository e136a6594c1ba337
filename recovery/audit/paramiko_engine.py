"""The fallback audit engine: paramiko, for machines where ssh2-python cannot be imported.

ssh2-python has no wheel for musl (Alpine) and is absent from an install made
with `--no-deps` or from a distribution's packages; paramiko is a dependency
anyway (the verifier logs in with it). It costs ~3-5 ms of client CPU per login
where libssh2 costs ~1.2 ms (benchmarks/audit_fleet.py, its paramiko row), so it is
chosen only when libssh2 cannot be (`recovery.audit.engine.choose_engine`), and
the report names it.

paramiko's `Transport` is driven directly on the socket the audit opened (the
name resolved within the deadline, the first bytes peeked at), not through
`SSHClient`, which would resolve and connect by itself. A transport runs the
protocol in a thread of its own; this side waits on events with what is left
of the host's deadline, so every phase ends by it, and closing the transport
ends that thread. paramiko's own timeouts are set past the deadline: they only
back it up.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import paramiko

from recovery.audit.engine import (
    AuditKey,
    CheckFailed,
    Connection,
    HandshakeEnd,
    HostTrust,
    check_host,
    handshake_failure,
)
from recovery.audit.model import Host, HostResult
from recovery.ssh import diagnosis

__all__ = ["ParamikoEngine"]

# Added to the deadline for paramiko's own timeouts, so that the deadline, not they, ends a wait.
_BACKSTOP = 5.0

# paramiko logs every failed banner as an ERROR traceback from its transport's thread, and with
# no logging configured (a program calling recovery.audit.check) Python prints those on stderr.
# The results already say it in plain words: the transports log to a channel of their own, under
# "paramiko" (which the CLI quiets below -vvv), that has a handler doing nothing.
_LOG_CHANNEL = "paramiko.audit"
logging.getLogger(_LOG_CHANNEL).addHandler(logging.NullHandler())


class ParamikoEngine:
    """`Engine` over paramiko: one `Transport` per connection.

    :param keys: every key any host may name, loaded by `load_keys`; parsed for paramiko once, here.
    :param trust: the host key policy.
    """

    name = "paramiko"

    def __init__(self, keys: Mapping[Path, AuditKey], trust: HostTrust) -> None:
        self.keys = keys
        self.trust = trust
        self._pkeys = {path: _pkey(key) for path, key in keys.items()}

    def check(self, host: Host, deadline: float) -> HostResult:
        return check_host(host, deadline, keys=self.keys, trust=self.trust, open_session=self._session)

    @contextlib.contextmanager
    def _session(self, connection: Connection) -> Iterator[_ParamikoSession]:
        """A paramiko transport on the connection's socket; closed (its thread ended) on exit."""
        transport = paramiko.Transport(connection.sock)
        transport.set_log_channel(_LOG_CHANNEL)
        try:
            yield _ParamikoSession(connection, transport, self._pkeys)
        finally:
            transport.close()


def _pkey(key: AuditKey) -> paramiko.PKey:
    """The key as paramiko signs with it; `load_keys` has already checked it is a usable Ed25519 or RSA key."""
    key_class: type[paramiko.Ed25519Key | paramiko.RSAKey] = (
        paramiko.Ed25519Key if key.key_type == "ed25519" else paramiko.RSAKey
    )
    return key_class.from_private_key(io.StringIO(key.private_bytes.decode("ascii")))


class _ParamikoSession:
    """`Session` over one paramiko transport; paramiko's exceptions become `CheckFailed`."""

    def __init__(self, connection: Connection, transport: paramiko.Transport, pkeys: Mapping[Path, paramiko.PKey]):
        self.connection = connection
        self.transport = transport
        self.pkeys = pkeys

    def _wait(self, event: threading.Event) -> bool:
        """Wait for `event` until the deadline; False when the deadline came first."""
        try:
            remaining = self.connection.remaining()
        except CheckFailed:
            return False
        return event.wait(remaining)

    def handshake(self, algorithms: Sequence[str]) -> bytes:
        transport = self.transport
        backstop = self.connection.remaining() + _BACKSTOP
        transport.banner_timeout = backstop
        transport.handshake_timeout = backstop
        options = transport.get_security_options()
        options.key_types = tuple(alg for alg in algorithms if alg in options.key_types)
        done = threading.Event()
        transport.start_client(event=done)
        if not self._wait(done):
            raise handshake_failure(
                self.connection, HandshakeEnd.TIMEOUT, banner_received=transport.remote_version != ""
            )
        if not transport.is_active():
            raise self._handshake_failure(transport.get_exception())
        return transport.get_remote_server_key().asbytes()

    def _handshake_failure(self, exc: Exception | None) -> CheckFailed:
        banner_received = self.transport.remote_version != ""
        if isinstance(exc, (EOFError, ConnectionError)):
            end = HandshakeEnd.CLOSED
        elif isinstance(exc, paramiko.SSHException) and str(exc).startswith("Error reading SSH protocol banner"):
            # paramiko's words for a peer that hung up, or stayed silent, before a banner.
            end = HandshakeEnd.TIMEOUT if isinstance(exc.__context__, TimeoutError) else HandshakeEnd.CLOSED
        elif isinstance(exc, paramiko.SSHException) and str(exc).startswith("Indecipherable protocol version"):
            end = HandshakeEnd.BAD_BANNER  # a hundred lines and none of them a banner
        else:
            end = HandshakeEnd.OTHER
        detail = str(exc) if exc is not None else "the key exchange failed"
        return handshake_failure(self.connection, end, banner_received=banner_received, detail=detail)

    def authenticate(self, user: str, key: AuditKey) -> bool:
        transport = self.transport
        where = self.connection.host.where
        transport.auth_timeout = self.connection.remaining() + _BACKSTOP
        done = threading.Event()
        try:
            transport.auth_publickey(user, self.pkeys[key.path], event=done)
        except paramiko.SSHException as exc:  # the transport died between the handshake and now
            raise CheckFailed(diagnosis.session_failed(where, str(exc))) from exc
        if not self._wait(done):
            raise CheckFailed(diagnosis.auth_timeout(where))
        if transport.is_authenticated():
            return True
        error = transport.get_exception()
        if not transport.is_active():
            detail = str(error) if error is not None and not isinstance(error, EOFError) else "the server closed it"
            raise CheckFailed(diagnosis.session_failed(where, detail)) from error
        if error is None or isinstance(error, paramiko.AuthenticationException):
            return False  # refused, partly accepted (another method wanted) or publickey not allowed
        raise CheckFailed(diagnosis.session_failed(where, str(error))) from error
