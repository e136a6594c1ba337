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

`--timeout` bounds the whole check of a host (not each phase), resolving its
name included, so a tarpit or a hung resolver costs exactly one timeout and a
fleet's worst case is predictable.

A listener that is not an SSH server (a web server, a TLS port, a proxy) is
`protocol_error`, not `refused`: what it said first is peeked at before libssh2
starts, and a peer that stays silent until it hears the client's banner and then
hangs up without an SSH banner of its own is one too. libssh2 alone cannot tell
them apart: it skips lines that are not a banner and reports "failed getting
banner" for an HTTP server's 400 and for sshd dropping an excess connection alike.
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
from recovery.audit.resolve import ResolveFailed, resolve
from recovery.diagnosis import Diagnosis, Failure
from recovery.errors import HostKeyMismatch, KeyGenerationError, UsageError, VerifyError
from recovery.hostkeys import Advice, HostKeyCheck, KnownHosts, KnownHostsAppender, KnownKey
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
    """The host key decision for one host: revoked keys first, then `HostKeyCheck`, then recording a new key."""

    check: HostKeyCheck
    revoked: dict[str, int]  # fingerprint -> known_hosts line
    source: str
    # Preferred algorithms: the known key types first. None when the pin's type
    # is unknown (an inventory pin is a bare fingerprint), so that a mismatch is
    # retried with the other key types before it is called a change.
    preferred: tuple[str, ...] | None
    # Where a key accepted on first use is recorded (`--accept-new`), and under which host and port.
    record: KnownHostsAppender | None = None
    address: tuple[str, int] = ("", 22)

    def decide(self, key_type: str, public_line: str) -> None:
        fingerprint = fingerprint_sha256(public_line)
        if fingerprint in self.revoked:
            raise HostKeyMismatch(
                f"{self.check.where} offered host key {key_type} {fingerprint}, which {self.source} marks "
                f"@revoked (line {self.revoked[fingerprint]}): never accepted"
            )
        self.check.check(key_type, public_line)
        if self.check.trusted_on_first_use and self.record is not None:
            self.record.add(*self.address, public_line)


class HostTrust:
    """The audit's host key policy: `@revoked` first, then the inventory's pin, else known_hosts, else `--accept-new`.

    :param record: with `accept_new`, where the keys accepted on first use are added, as ssh's
        `StrictHostKeyChecking=accept-new` adds them, so that the next audit checks them.
    """

    def __init__(
        self,
        known_hosts: KnownHosts | None = None,
        *,
        accept_new: bool = False,
        record: KnownHostsAppender | None = None,
    ) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.record = record
        self._prepared: dict[tuple[str, int], list[KnownKey]] = {}

    def prepare(self, hosts: Iterable[Host]) -> None:
        """Look every host up in the known_hosts file now, once, outside every host's timeout.

        A hashed file (`ssh-keygen -H`) has a salt per line, so a lookup costs one
        HMAC per line: done here, in the calling thread before the checks start, a
        fleet of H hosts and a file of L hashed lines cost H x L HMACs once (a few
        seconds per million on a busy machine: benchmarks/audit_known_hosts.py),
        and each check then finds its host's keys in a dict, in time independent
        of the file's length.
        """
        if self.known_hosts is None:
            return
        for host in hosts:
            if host.address is not None:
                where = (host.address.lower(), host.port)
                if where not in self._prepared:
                    self._prepared[where] = self.known_hosts.lookup(*where)

    def _known(self, host: Host) -> list[KnownKey]:
        if self.known_hosts is None or host.address is None:
            return []
        found = self._prepared.get((host.address.lower(), host.port))
        return found if found is not None else self.known_hosts.lookup(host.address, host.port)

    def for_host(self, host: Host) -> HostKeyDecision:
        where = host.where
        known = self._known(host)
        revoked = {key.fingerprint: key.line for key in known if key.revoked}
        source = str(self.known_hosts.path) if self.known_hosts else "no file"
        if host.host_key is not None:
            # A pin says which key to expect, not that a key someone revoked may be used again.
            check = HostKeyCheck(where, [host.host_key], advice=AUDIT_ADVICE, pinned_by="the inventory's host_key")
            return HostKeyDecision(check, revoked, source, preferred=None)
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
        return HostKeyDecision(
            check,
            revoked,
            source,
            preferred=tuple(dict.fromkeys(preferred)),
            record=self.record if self.accept_new else None,
            address=(host.address or "", host.port),
        )


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
            status, message = failed.status, failed.message
        except VerifyError as exc:  # the host key decision
            found = diagnosis.from_error(exc)
            status, message = Status(found.failure.value), found.message
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
            status,
            time.monotonic() - started,
            message + _note(host),
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
            with self._connection(host, deadline) as (session, sock, greeting):
                try:
                    self._handshake(session, sock, host, algorithms, deadline, greeting)
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
    def _connection(self, host: Host, deadline: float) -> Iterator[tuple[_Session, socket.socket, bytes | None]]:
        """A TCP connection, what the peer said first (None: nothing yet), and a fresh session on it.

        The session is disconnected politely and the socket closed on exit.
        """
        sock = _connect(host, deadline)
        try:
            greeting = _greeting(sock, host, deadline)
            # The socket keeps its timeout, which leaves it non-blocking: libssh2 then
            # waits with poll() and its own timeout, so a silent peer cannot hang a thread.
            sock.settimeout(_remaining(deadline, host))
        except BaseException:
            sock.close()
            raise
        session: _Session = self._session_class()
        try:
            yield session, sock, greeting
        finally:
            with contextlib.suppress(self._errors.SSH2Error):
                session.disconnect()
            sock.close()

    def _handshake(
        self,
        session: _Session,
        sock: socket.socket,
        host: Host,
        algorithms: Sequence[str],
        deadline: float,
        greeting: bytes | None,
    ) -> None:
        """libssh2's banner exchange and key exchange; a peer that is not an SSH server is named as one.

        :param greeting: what the peer sent before the client said anything; None if it waited.
        """
        where = host.where
        session.set_timeout(_milliseconds(deadline, host))
        session.method_pref(self._method_hostkey, ",".join(algorithms))
        try:
            session.handshake(sock)
        except self._errors.SSH2Error as exc:
            if greeting is not None and not _is_ssh(greeting):
                raise _Failed.of(Status.PROTOCOL_ERROR, _not_ssh(where, greeting)) from exc
            if isinstance(exc, self._errors.BannerRecvError):  # a banner libssh2 refuses (a NUL, a line too long)
                raise _Failed.of(Status.PROTOCOL_ERROR, _not_ssh(where, None)) from exc
            if isinstance(exc, self._errors.Timeout):
                raise _Failed(diagnosis.handshake_timeout(where)) from exc
            if isinstance(exc, (self._errors.SocketRecvError, self._errors.SocketDisconnectError)):
                if "banner" not in session.last_error().lower():
                    raise _Failed(diagnosis.closed_during_handshake(where)) from exc
                if greeting is None:  # it waited for the client to speak first, then hung up on its banner
                    raise _Failed.of(Status.PROTOCOL_ERROR, _not_ssh(where, None)) from exc
                raise _Failed(diagnosis.closed_before_banner(where)) from exc
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
    """Carries a host's status and its explanation out of the connection's `with` block."""

    def __init__(self, found: Diagnosis) -> None:
        super().__init__(found.message)
        self.status = Status(found.failure.value)
        self.message = found.message

    @classmethod
    def of(cls, status: Status, message: str) -> _Failed:
        """A failure only the audit names (`protocol_error`), which `Diagnosis` has no kind for."""
        failed = cls(Diagnosis(Failure.ERROR, message))
        failed.status = status
        return failed


# How long to wait for the server's banner before libssh2 sends the client's.
# SSH servers speak first (RFC 4253 4.2 lets both sides send at once, and
# OpenSSH and Dropbear send at accept), so an SSH server answers well within
# this; a peer still silent after it may wait for its client (HTTP), and only
# the client's banner makes it show itself. The wait never costs an SSH server
# anything: the check goes on the moment the banner arrives.
_GREETING_WAIT = 1.0
_GREETING_BYTES = 256


def _connect(host: Host, deadline: float) -> socket.socket:
    """A TCP connection to the first of the host's addresses that answers, resolving within the deadline."""
    address = host.address or ""
    try:
        addresses = resolve(address, host.port, _remaining(deadline, host))
    except ResolveFailed as exc:
        status = Status.TIMEOUT if exc.timed_out else Status.DNS_ERROR
        raise _Failed.of(status, exc.message) from exc
    error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(_remaining(deadline, host))
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if error is None:
        raise _Failed.of(Status.DNS_ERROR, f"host name {address!r} resolves to no address")
    raise _Failed(diagnosis.socket_failure(error, address, host.port)) from error


def _greeting(sock: socket.socket, host: Host, deadline: float) -> bytes | None:
    """The first bytes the peer sends unasked, left in the socket for libssh2; None if it waits for the client.

    :raises _Failed: the peer hung up before saying anything (sshd over its MaxStartups does).
    """
    sock.settimeout(min(_GREETING_WAIT, _remaining(deadline, host) / 2))
    try:
        data = sock.recv(_GREETING_BYTES, socket.MSG_PEEK)
    except TimeoutError:
        return None
    except OSError as exc:
        raise _Failed(diagnosis.socket_failure(exc, host.address or "", host.port)) from exc
    if not data:
        raise _Failed(diagnosis.closed_before_banner(host.where))
    return data


def _is_ssh(greeting: bytes) -> bool:
    """An SSH identification (`SSH-2.0-...`), or its start, first or after the lines RFC 4253 allows before it."""
    return any(line.startswith(b"SSH-") or b"SSH-".startswith(line) for line in greeting.split(b"\n") if line)


def _not_ssh(where: str, greeting: bytes | None) -> str:
    said = (
        f"it sent {greeting[:60]!r} instead of an SSH banner"
        if greeting is not None
        else "it did not send an SSH banner, and hung up after the client's (a service that waits for its client "
        "to speak first, such as HTTP?)"
    )
    return f"{where} answered, but not as an SSH server: {said}. Is the port right?"


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
