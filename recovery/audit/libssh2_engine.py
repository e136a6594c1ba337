"""The default audit engine: libssh2, through ssh2-python, which does the SSH work in C with the GIL released.

Imported only when an audit runs with it (`recovery.audit.engine.choose_engine`),
so `recovery --help` never loads a C library, and a machine without ssh2-python
falls back to paramiko at this module's import.

libssh2 waits with poll() and its own timeout, set before each blocking call
to what is left of the host's deadline, so a silent peer cannot hang a thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import ssh2.exceptions
import ssh2.session

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
from recovery.ssh.diagnosis import Diagnosis, Failure

__all__ = ["Libssh2Engine"]

_errors = ssh2.exceptions


class _Ssh2Session(Protocol):
    """The part of ssh2-python's `Session` used here (ssh2-python ships no type hints)."""

    def set_timeout(self, timeout: int) -> None: ...
    def method_pref(self, method_type: object, prefs: str) -> int: ...
    def handshake(self, sock: object) -> int: ...
    def hostkey(self) -> tuple[bytes, int]: ...
    def userauth_publickey_frommemory(self, username: str, privatekeyfiledata: bytes) -> int: ...
    def disconnect(self) -> int: ...
    def last_error(self) -> str: ...


class Libssh2Engine:
    """`Engine` over libssh2: one ssh2-python `Session` per connection.

    :param keys: every key any host may name, loaded by `load_keys`.
    :param trust: the host key policy.
    """

    name = "libssh2"

    def __init__(self, keys: Mapping[Path, AuditKey], trust: HostTrust) -> None:
        self.keys = keys
        self.trust = trust

    def check(self, host: Host, deadline: float) -> HostResult:
        return check_host(host, deadline, keys=self.keys, trust=self.trust, open_session=_session)


@contextlib.contextmanager
def _session(connection: Connection) -> Iterator[_Libssh2Session]:
    """A fresh libssh2 session on the connection, disconnected politely on exit."""
    # The socket keeps a timeout, which leaves it non-blocking: libssh2 then
    # waits with poll() and its own timeout.
    connection.sock.settimeout(connection.remaining())
    session = _Libssh2Session(connection, ssh2.session.Session())
    try:
        yield session
    finally:
        with contextlib.suppress(_errors.SSH2Error):
            session.session.disconnect()


class _Libssh2Session:
    """`Session` over one ssh2-python session; libssh2's exceptions become `CheckFailed`."""

    def __init__(self, connection: Connection, session: _Ssh2Session) -> None:
        self.connection = connection
        self.session = session

    def _set_timeout(self) -> None:
        self.session.set_timeout(max(1, int(self.connection.remaining() * 1000)))

    def handshake(self, algorithms: Sequence[str]) -> bytes:
        session = self.session
        self._set_timeout()
        session.method_pref(ssh2.session.LIBSSH2_METHOD_HOSTKEY, ",".join(algorithms))
        try:
            session.handshake(self.connection.sock)
        except _errors.SSH2Error as exc:
            raise self._handshake_failure(exc) from exc
        blob, _ = session.hostkey()
        return blob

    def _handshake_failure(self, exc: Exception) -> CheckFailed:
        # libssh2 reports a peer that hung up before its banner as a socket error
        # whose last error mentions the banner.
        banner_missing = "banner" in self.session.last_error().lower()
        if isinstance(exc, _errors.BannerRecvError):  # a banner libssh2 refuses (a NUL, a line too long)
            end = HandshakeEnd.BAD_BANNER
        elif isinstance(exc, _errors.Timeout):
            end = HandshakeEnd.TIMEOUT
        elif isinstance(exc, (_errors.SocketRecvError, _errors.SocketDisconnectError)):
            end = HandshakeEnd.CLOSED
        else:
            end = HandshakeEnd.OTHER
        detail = self.session.last_error() or type(exc).__name__
        return handshake_failure(self.connection, end, banner_received=not banner_missing, detail=detail)

    def authenticate(self, user: str, key: AuditKey) -> bool:
        where = self.connection.host.where
        self._set_timeout()
        try:
            self.session.userauth_publickey_frommemory(user, key.private_bytes)
        except (_errors.AuthenticationError, _errors.PublickeyUnverifiedError):
            return False
        except _errors.Timeout as exc:
            raise CheckFailed(diagnosis.auth_timeout(where)) from exc
        except _errors.FileError as exc:
            raise CheckFailed(
                Diagnosis(Failure.ERROR, f"libssh2 cannot use the key {key.path}: {self.session.last_error()}")
            ) from exc
        except _errors.SSH2Error as exc:
            raise CheckFailed(
                diagnosis.session_failed(where, self.session.last_error() or type(exc).__name__)
            ) from exc
        return True
