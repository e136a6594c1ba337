"""One host's check over SSH with libssh2: resolve, connect, check the host key, authenticate.

Why libssh2 (through ssh2-python) rather than paramiko, which the verifier uses:
an audit makes hundreds of logins in a burst on a machine that also does other
work. libssh2 does the key exchange and packet handling in C with the GIL
released, costing ~1.2 ms of client CPU per login where paramiko costs ~3-5 ms
(see benchmarks/audit_fleet.py), and it imports in milliseconds where paramiko
takes ~150 ms. Both drivers share the host key decision (`recovery.hostkeys`)
and the naming of failures (`recovery.diagnosis`), so they judge a host alike.

The check stops once authentication succeeds: no session, no shell, no command.
A login that authenticates is what "the key still works" means, and an hourly
audit of a thousand VMs should not fill their wtmp or run their login scripts.

`--timeout` bounds the whole check of a host (not each phase), so a tarpit costs
exactly one timeout and a fleet's worst case is predictable.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from recovery import diagnosis
from recovery.audit.model import Host, HostResult, Status
from recovery.diagnosis import Diagnosis, Failure
from recovery.errors import HostKeyMismatch, KeyGenerationError, UsageError, VerifyError
from recovery.hostkeys import Advice, HostKeyCheck, KnownHosts
from recovery.keys import fingerprint_sha256

__all__ = ["AUDIT_ADVICE", "AuditKey", "HostKeyDecision", "HostTrust", "Libssh2Checker", "load_keys"]

log = logging.getLogger(__name__)

AUDIT_ADVICE = Advice(
    pin="host_key: {fingerprint} in the inventory, or the key in a --known-hosts file", trust="--accept-new"
)

# Host key algorithms by family, in OpenSSH's order of preference. libssh2's own
# default puts ECDSA first; a pin taken from `ssh-keyscan` or a known_hosts line
# written by ssh is most often the Ed25519 key. ssh-rsa (SHA-1) is left out, as
# OpenSSH has done since 8.8.
_FAMILIES: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa": ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}


def _family(key_type: str) -> str:
    """`ecdsa-sha2-nistp384` and its siblings are one family; the others are their own."""
    return "ecdsa" if key_type.startswith("ecdsa-") else key_type


class _Session(Protocol):
    """The part of ssh2-python's `Session` used here (ssh2-python ships no type hints)."""

    def set_timeout(self, timeout: int) -> None: ...
    def method_pref(self, method_type: object, prefs: str) -> int: ...
    def handshake(self, sock: socket.socket) -> int: ...
    def hostkey(self) -> tuple[bytes, int]: ...
    def userauth_publickey_frommemory(self, username: str, privatekeyfiledata: bytes) -> int: ...
    def disconnect(self) -> int: ...
    def last_error(self) -> str: ...


@dataclass(frozen=True)
class AuditKey:
    """A private key the audit logs in with: its path, its `SHA256:` fingerprint, its bytes.

    The bytes are kept out of `repr`, so a key in a log line or a traceback shows only where it came from.
    """

    path: Path
    fingerprint: str
    private_bytes: bytes = field(repr=False)


def load_keys(paths: Iterable[Path]) -> dict[Path, AuditKey]:
    """Read each key once (`recovery.keys.load_keypair`: a `.pub` beside it, mode 0600, Ed25519 or RSA).

    An encrypted key is refused: an audit runs unattended, so it needs a key of
    its own without a passphrase, authorized for logins and nothing else.

    :raises UsageError: a key is missing, unreadable, encrypted, too open or mismatched.
    """
    from recovery.keys import load_keypair

    keys = {}
    for path in dict.fromkeys(paths):
        try:
            pair = load_keypair(path, None)
            keys[path] = AuditKey(path, pair.sha256, path.read_bytes())
        except (KeyGenerationError, OSError) as exc:
            raise UsageError(f"--key {path}: {exc}") from exc
    return keys


@dataclass
class HostKeyDecision:
    """The host key decision for one host: revoked keys first, then `HostKeyCheck`."""

    check: HostKeyCheck
    revoked: dict[str, int]  # fingerprint -> known_hosts line
    source: str
    # Preferred algorithms: the known key types first. None when the pin's type
    # is unknown (an inventory pin is a bare fingerprint), so that a mismatch is
    # retried with the other key types before it is called a change.
    preferred: tuple[str, ...] | None

    def decide(self, key_type: str, public_line: str) -> None:
        fingerprint = fingerprint_sha256(public_line)
        if fingerprint in self.revoked:
            raise HostKeyMismatch(
                f"{self.check.where} offered host key {key_type} {fingerprint}, which {self.source} marks "
                f"@revoked (line {self.revoked[fingerprint]}): never accepted"
            )
        self.check.check(key_type, public_line)


class HostTrust:
    """The audit's host key policy: the inventory's pin, else a known_hosts file, else `--accept-new`."""

    def __init__(self, known_hosts: KnownHosts | None = None, *, accept_new: bool = False) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new

    def for_host(self, host: Host) -> HostKeyDecision:
        where = host.where
        if host.host_key is not None:
            check = HostKeyCheck(where, [host.host_key], advice=AUDIT_ADVICE, pinned_by="the inventory's host_key")
            return HostKeyDecision(check, {}, "the inventory", preferred=None)
        known = self.known_hosts.lookup(host.address or "", host.port) if self.known_hosts else []
        source = str(self.known_hosts.path) if self.known_hosts else "no file"
        usable = [key for key in known if not key.revoked]
        lines = ", ".join(str(key.line) for key in usable)
        check = HostKeyCheck(
            where,
            [key.fingerprint for key in usable],
            trust_first_use=self.accept_new,
            advice=AUDIT_ADVICE,
            pinned_by=f"{source} (line {lines})",
        )
        families = dict.fromkeys(_family(key.key_type) for key in usable)
        preferred = tuple(alg for family in [*families, *_FAMILIES] for alg in _FAMILIES.get(family, ()))
        revoked = {key.fingerprint: key.line for key in known if key.revoked}
        return HostKeyDecision(check, revoked, source, preferred=tuple(dict.fromkeys(preferred)))


class Libssh2Checker:
    """Checks hosts one at a time per thread; many threads may share one checker.

    :param keys: every key any host may name, loaded by `load_keys`.
    :param trust: the host key policy.
    :param timeout: seconds for each host's whole check.
    """

    def __init__(self, keys: dict[Path, AuditKey], trust: HostTrust, timeout: float) -> None:
        # Imported here, not at the top: `recovery --help` must not load a C library.
        import ssh2.exceptions
        import ssh2.session

        self._session_class = ssh2.session.Session
        self._method_hostkey = ssh2.session.LIBSSH2_METHOD_HOSTKEY
        self._errors = ssh2.exceptions
        self.keys = keys
        self.trust = trust
        self.timeout = timeout

    def check(self, host: Host) -> HostResult:
        """Check one host; every failure becomes a result, never an exception."""
        started = time.monotonic()
        if host.address is None:
            return HostResult(host, Status.NO_ADDRESS, 0.0, "no address to connect to" + _note(host))
        trust = self.trust.for_host(host)
        try:
            key = self._login(host, trust, deadline=started + self.timeout)
        except _Failed as failed:
            found = failed.diagnosis
        except VerifyError as exc:  # the host key decision
            found = diagnosis.from_error(exc)
        else:
            return HostResult(
                host,
                Status.OK,
                time.monotonic() - started,
                key_fingerprint=key.fingerprint,
                key_path=key.path,
                host_key_fingerprint=trust.check.offered_sha256,
                host_key_trusted_on_first_use=trust.check.trusted_on_first_use,
            )
        return HostResult(
            host,
            Status(found.failure.value),
            time.monotonic() - started,
            found.message + _note(host),
            host_key_fingerprint=trust.check.offered_sha256 or None,
        )

    def _login(self, host: Host, trust: HostKeyDecision, *, deadline: float) -> AuditKey:
        """Connect until the host key is accepted, then authenticate; returns the key that logged in.

        A bare pin does not say which key type it is for, and a server has
        several host keys (cloud-init prints ECDSA's first). So when an offered
        key does not match, the other types are asked for, one connection each,
        before the host is reported as changed.
        """
        untried = list(_FAMILIES)
        mismatch: HostKeyMismatch | None = None
        while True:
            algorithms = trust.preferred or tuple(alg for family in untried for alg in _FAMILIES[family])
            with self._connection(host, deadline) as (session, sock):
                try:
                    self._handshake(session, sock, host, algorithms, deadline)
                except _Failed:
                    if mismatch is not None:  # none of the other key types is on offer
                        raise mismatch from None
                    raise
                key_type, public_line = _offered_key(session)
                try:
                    trust.decide(key_type, public_line)
                except HostKeyMismatch as exc:
                    mismatch = mismatch or exc
                    untried = [family for family in untried if family != _family(key_type)]
                    if trust.preferred is not None or not untried:
                        raise mismatch from None
                    log.debug("%s: its %s key is not the pin; asking for another key type", host.name, key_type)
                    continue
                return self._authenticate(session, host, deadline)

    @contextlib.contextmanager
    def _connection(self, host: Host, deadline: float) -> Iterator[tuple[_Session, socket.socket]]:
        """A TCP connection and a fresh session on it; disconnected politely and closed on exit."""
        address = host.address or ""
        try:
            sock = socket.create_connection((address, host.port), timeout=_remaining(deadline, host))
        except OSError as exc:
            raise _Failed(diagnosis.socket_failure(exc, address, host.port)) from exc
        # The socket keeps its timeout, which leaves it non-blocking: libssh2 then
        # waits with poll() and its own timeout, so a silent peer cannot hang a thread.
        session: _Session = self._session_class()
        try:
            yield session, sock
        finally:
            with contextlib.suppress(self._errors.SSH2Error):
                session.disconnect()
            sock.close()

    def _handshake(
        self, session: _Session, sock: socket.socket, host: Host, algorithms: Sequence[str], deadline: float
    ) -> None:
        where = host.where
        session.set_timeout(_milliseconds(deadline, host))
        session.method_pref(self._method_hostkey, ",".join(algorithms))
        try:
            session.handshake(sock)
        except self._errors.Timeout as exc:
            raise _Failed(diagnosis.handshake_timeout(where)) from exc
        except (self._errors.SocketRecvError, self._errors.SocketDisconnectError, self._errors.BannerRecvError) as exc:
            banner = "banner" in session.last_error().lower()
            found = diagnosis.closed_before_banner(where) if banner else diagnosis.closed_during_handshake(where)
            raise _Failed(found) from exc
        except self._errors.SSH2Error as exc:
            raise _Failed(diagnosis.session_failed(where, session.last_error() or type(exc).__name__)) from exc

    def _authenticate(self, session: _Session, host: Host, deadline: float) -> AuditKey:
        where = host.where
        tried = []
        for path in host.keys:
            key = self.keys[path]
            session.set_timeout(_milliseconds(deadline, host))
            try:
                session.userauth_publickey_frommemory(host.user, key.private_bytes)
            except (self._errors.AuthenticationError, self._errors.PublickeyUnverifiedError):
                tried.append(key.fingerprint)
                continue
            except self._errors.Timeout as exc:
                raise _Failed(diagnosis.auth_timeout(where)) from exc
            except self._errors.FileError as exc:
                raise _Failed(
                    Diagnosis(Failure.ERROR, f"libssh2 cannot use the key {path}: {session.last_error()}")
                ) from exc
            except self._errors.SSH2Error as exc:
                raise _Failed(diagnosis.session_failed(where, session.last_error() or type(exc).__name__)) from exc
            return key
        detail = "offered " + ", ".join(tried)
        raise _Failed(diagnosis.auth_rejected(where, host.user, detail))


class _Failed(Exception):
    """Carries a diagnosis out of the connection's `with` block."""

    def __init__(self, found: Diagnosis) -> None:
        super().__init__(found.message)
        self.diagnosis = found


def _offered_key(session: _Session) -> tuple[str, str]:
    """The server's host key as (type, OpenSSH public key line); the type is read from the blob itself."""
    blob, _ = session.hostkey()
    length = int.from_bytes(blob[:4], "big")
    key_type = blob[4 : 4 + length].decode("ascii", errors="replace")
    return key_type, f"{key_type} {base64.b64encode(blob).decode('ascii')}"


def _remaining(deadline: float, host: Host) -> float:
    """Seconds left before `deadline`; a check out of time fails as a timeout rather than wait zero seconds."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Failed(Diagnosis(Failure.TIMEOUT, f"{host.where} did not complete the check in time"))
    return left


def _milliseconds(deadline: float, host: Host) -> int:
    return max(1, int(_remaining(deadline, host) * 1000))


def _note(host: Host) -> str:
    return f" ({host.note})" if host.note else ""
