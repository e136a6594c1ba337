"""One host's SSH check, whichever SSH library makes it: the engine boundary and all the engines share.

Two engines check hosts: libssh2 through ssh2-python (`libssh2_engine`, the
default) and paramiko (`paramiko_engine`, when ssh2-python cannot be imported).
Why two: an audit makes hundreds of logins in a burst on a machine that also
does other work. libssh2 does the key exchange and packet handling in C with
the GIL released, costing ~1.2 ms of client CPU per login where paramiko costs
~3-5 ms (benchmarks/audit_fleet.py), and it imports in milliseconds where
paramiko takes ~150 ms. But ssh2-python has no wheel for every platform (musl),
and an install with `--no-deps` or from a distribution's packages may lack it;
paramiko is a dependency anyway (the verifier uses it), so the audit still runs,
only slower, and its report says which engine made it (`choose_engine`).

An engine drives one connection (`Session`: the key exchange, then one login per
key); everything else is decided here, once, so that both engines judge a host
alike: the deadline, resolving the name within it (`recovery.audit.resolve`),
the TCP connection, telling a listener that is not an SSH server from one that
hung up, the host key decision (`HostTrust`, `recovery.ssh.hostkeys`), the retry
with other host key types when a bare pin does not match, the key order, and
the naming of every failure (`recovery.ssh.diagnosis`).

The check stops once authentication succeeds: no session, no shell, no command.
A login that authenticates is what "the key still works" means, and an hourly
audit of a thousand VMs should not fill their wtmp or run their login scripts.

The deadline bounds the whole check of a host (not each phase), resolving its
name included, so a tarpit or a hung resolver costs exactly one timeout and a
fleet's worst case is predictable.

A listener that is not an SSH server (a web server, a TLS port, a proxy) is
`protocol_error`, not `refused`: what it said first is peeked at before the
SSH library starts, and a peer that stays silent until it hears the client's
banner and then hangs up without an SSH banner of its own is one too. The
libraries alone cannot tell them apart: they skip lines that are not a banner
and report a failed banner for an HTTP server's 400 and for sshd dropping an
excess connection alike.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Protocol

from recovery.audit.model import Host, HostResult, Status
from recovery.audit.resolve import ResolveFailed, resolve
from recovery.errors import HostKeyMismatch, KeyGenerationError, UsageError, VerifyError
from recovery.ssh import diagnosis
from recovery.ssh.diagnosis import Diagnosis, Failure
from recovery.ssh.hostkeys import Advice, HostKeyCheck, KnownHosts, KnownHostsAppender, KnownKey
from recovery.ssh.jump import JumpHop, with_host_keys
from recovery.ssh.keys import fingerprint_sha256

__all__ = [
    "AUDIT_ADVICE",
    "ENGINES",
    "AuditKey",
    "CheckFailed",
    "Connection",
    "Engine",
    "HandshakeEnd",
    "HostKeyDecision",
    "HostTrust",
    "Session",
    "check_host",
    "choose_engine",
    "handshake_failure",
    "load_keys",
    "with_timeout",
]

log = logging.getLogger(__name__)

# The engines by the name a report gives them; "auto" is libssh2 when it can be imported, else paramiko.
ENGINES = ("libssh2", "paramiko")

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


class Engine(Protocol):
    """Checks one host before a deadline; many threads share one engine.

    `name` is what the report calls it (one of `ENGINES`). `check` turns every
    failure into a result, never an exception: `deadline` is a `time.monotonic()`
    value, and the whole check (resolving, connecting, the handshake, every key)
    ends by then.
    """

    name: str

    def check(self, host: Host, deadline: float) -> HostResult: ...


def with_timeout(engine: Engine, timeout: float) -> Callable[[Host], HostResult]:
    """A check of one host that gets `timeout` seconds from the moment it starts (what a worker calls)."""

    def check(host: Host) -> HostResult:
        return engine.check(host, time.monotonic() + timeout)

    return check


def choose_engine(keys: Mapping[Path, AuditKey], trust: HostTrust, name: str = "auto") -> Engine:
    """The engine called `name`; "auto" is libssh2 if ssh2-python can be imported, else paramiko.

    :raises UsageError: `name` is none of "auto" and `ENGINES`, or "libssh2" cannot be imported.
    """
    if name not in ("auto", *ENGINES):
        raise UsageError(f"audit engine {name!r}: expected auto, {' or '.join(ENGINES)}")
    if name != "paramiko":
        try:
            from recovery.audit.libssh2_engine import Libssh2Engine
        except ImportError as exc:
            if not (exc.name or "").startswith("ssh2"):
                raise  # not ssh2-python missing: a bug of ours
            if name == "libssh2":
                raise UsageError(
                    f"the libssh2 audit engine needs ssh2-python, which cannot be imported ({exc}): "
                    "install it (pip install ssh2-python), or choose the engine auto or paramiko"
                ) from exc
            log.info("ssh2-python cannot be imported (%s): the audit runs through paramiko, at a higher CPU cost", exc)
        else:
            return Libssh2Engine(keys, trust)
    from recovery.audit.paramiko_engine import ParamikoEngine

    return ParamikoEngine(keys, trust)


@dataclass(frozen=True)
class AuditKey:
    """A private key the audit logs in with: its path, its `SHA256:` fingerprint, its type, its bytes.

    `key_type` is `ed25519` or `rsa` (`recovery.ssh.keys.KEY_TYPES`). The bytes are kept out
    of `repr`, so a key in a log line or a traceback shows only where it came from.
    """

    path: Path
    fingerprint: str
    key_type: str
    private_bytes: bytes = field(repr=False)


def load_keys(paths: Iterable[Path]) -> dict[Path, AuditKey]:
    """Read each key once (`recovery.ssh.keys.load_keypair`: a `.pub` beside it, mode 0600, Ed25519 or RSA).

    An encrypted key is refused: an audit runs unattended, so it needs a key of
    its own without a passphrase, authorized for logins and nothing else.

    :raises UsageError: a key is missing, unreadable, encrypted, too open or mismatched.
    """
    from recovery.ssh.keys import load_keypair

    keys = {}
    for path in dict.fromkeys(paths):
        try:
            pair = load_keypair(path, None)
            keys[path] = AuditKey(path, pair.sha256, pair.key_type, path.read_bytes())
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
        self._jumps: dict[tuple[JumpHop, ...], tuple[JumpHop, ...]] = {}
        self._jumps_lock = threading.Lock()

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

    def with_jumps_checked(self, host: Host) -> Host:
        """The host, its jump hosts' keys checked as its own: @revoked, their pins, else known_hosts, else --accept-new.

        A jump host's key accepted as new is recorded as a VM's is (`record`), once its login succeeds.

        Decided once per chain of hops for the run, not per host (a hashed known_hosts costs an HMAC a line).
        """
        if not host.jumps:
            return host
        with self._jumps_lock:
            hops = self._jumps.get(host.jumps)
            if hops is None:
                hops = self._jumps[host.jumps] = with_host_keys(
                    host.jumps, self.known_hosts, accept_new=self.accept_new,
                    record=self.record if self.accept_new else None,
                )
        return replace(host, jumps=hops)

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



class CheckFailed(Exception):
    """Carries a host's status and its explanation out of an engine's connection."""

    def __init__(self, found: Diagnosis) -> None:
        super().__init__(found.message)
        self.status = Status(found.failure.value)
        self.message = found.message

    @classmethod
    def of(cls, status: Status, message: str) -> CheckFailed:
        """A failure only the audit names (`protocol_error`), which `Diagnosis` has no kind for."""
        failed = cls(Diagnosis(Failure.ERROR, message))
        failed.status = status
        return failed


@dataclass(frozen=True)
class Connection:
    """A TCP connection to a host, what the peer said first (None: nothing yet), and the check's deadline."""

    host: Host
    sock: socket.socket
    greeting: bytes | None
    deadline: float

    def remaining(self) -> float:
        """Seconds left; a check out of time fails as a timeout rather than wait zero seconds."""
        return _remaining(self.deadline, self.host)


class Session(Protocol):
    """One connection as an engine drives it; every failure is raised as `CheckFailed`."""

    def handshake(self, algorithms: Sequence[str]) -> bytes:
        """The banner and key exchange, offering only these host key algorithms; returns the host key blob."""
        ...

    def authenticate(self, user: str, key: AuditKey) -> bool:
        """One public key login; False when the server refuses the key (the next one may be tried)."""
        ...


class HandshakeEnd(Enum):
    """How a handshake failed, as an engine can tell from its library's exceptions."""

    TIMEOUT = "timeout"
    CLOSED = "closed"  # the peer hung up (or reset the connection)
    BAD_BANNER = "bad banner"  # a banner the library refuses (a NUL, a line too long)
    OTHER = "other"  # no common algorithm, a protocol error


def handshake_failure(
    connection: Connection, end: HandshakeEnd, *, banner_received: bool, detail: str = ""
) -> CheckFailed:
    """Name a failed handshake alike for every engine; a peer that is not an SSH server is named as one.

    :param banner_received: the server's SSH banner had arrived when it failed.
    :param detail: the library's own words, for a failure of no other kind.
    """
    where, greeting = connection.host.where, connection.greeting
    if greeting is not None and not _is_ssh(greeting):
        return CheckFailed.of(Status.PROTOCOL_ERROR, _not_ssh(where, greeting))
    if end is HandshakeEnd.BAD_BANNER:
        return CheckFailed.of(Status.PROTOCOL_ERROR, _not_ssh(where, None))
    if end is HandshakeEnd.TIMEOUT:
        return CheckFailed(diagnosis.handshake_timeout(where))
    if end is HandshakeEnd.CLOSED:
        if banner_received:
            return CheckFailed(diagnosis.closed_during_handshake(where))
        if greeting is None:  # it waited for the client to speak first, then hung up on its banner
            return CheckFailed.of(Status.PROTOCOL_ERROR, _not_ssh(where, None))
        return CheckFailed(diagnosis.closed_before_banner(where))
    return CheckFailed(diagnosis.session_failed(where, detail))


SessionOpener = Callable[[Connection], contextlib.AbstractContextManager[Session]]


def check_host(
    host: Host, deadline: float, *, keys: Mapping[Path, AuditKey], trust: HostTrust, open_session: SessionOpener
) -> HostResult:
    """Check one host with the engine whose sessions `open_session` makes; every failure becomes a result."""
    started = time.monotonic()
    if host.address is None:
        return HostResult(host, Status.NO_ADDRESS, 0.0, "no address to connect to" + _note(host))
    decision = trust.for_host(host)
    try:
        key = _login(trust.with_jumps_checked(host), decision, keys, deadline, open_session)
    except CheckFailed as failed:
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
            host_key_fingerprint=decision.check.offered_sha256,
            host_key_trusted_on_first_use=decision.check.trusted_on_first_use,
        )
    return HostResult(
        host,
        status,
        time.monotonic() - started,
        message + _note(host),
        host_key_fingerprint=decision.check.offered_sha256 or None,
    )


def _login(
    host: Host,
    trust: HostKeyDecision,
    keys: Mapping[Path, AuditKey],
    deadline: float,
    open_session: SessionOpener,
) -> AuditKey:
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
        with _connected(host, deadline) as connection, open_session(connection) as session:
            try:
                blob = session.handshake(algorithms)
            except CheckFailed:
                if mismatch is not None:  # none of the other key types is on offer
                    raise mismatch from None
                raise
            key_type, public_line = _public_line(blob)
            try:
                trust.decide(key_type, public_line)
            except HostKeyMismatch as exc:
                mismatch = mismatch or exc
                untried = [family for family in untried if family != _family(key_type)]
                if trust.preferred is not None or not untried:
                    raise mismatch from None
                log.debug("%s: its %s key is not the pin; asking for another key type", host.name, key_type)
                continue
            tried = []
            for path in host.keys:
                key = keys[path]
                if session.authenticate(host.user, key):
                    return key
                tried.append(key.fingerprint)
            raise CheckFailed(diagnosis.auth_rejected(host.where, host.user, "offered " + ", ".join(tried)))


@contextlib.contextmanager
def _connected(host: Host, deadline: float) -> Iterator[Connection]:
    """A TCP connection (or a channel through the host's jump hosts) and what the peer said first; closed on exit."""
    if host.jumps:
        with _through_jumps(host, deadline) as sock:
            yield Connection(host, sock, _greeting(sock, host, deadline), deadline)
        return
    sock = _connect(host, deadline)
    try:
        yield Connection(host, sock, _greeting(sock, host, deadline), deadline)
    finally:
        sock.close()


@contextlib.contextmanager
def _through_jumps(host: Host, deadline: float) -> Iterator[socket.socket]:
    """A socket whose bytes a channel through the jump hosts carries to the host; the last hop resolves its name.

    Both engines drive it as a TCP socket (libssh2 needs a file descriptor). The hops log in
    with their own keys, else the host's first; within a run (`recovery.ssh.jump.shared_logins`)
    the checks share their logins to the hops. A hop's failure, named after the hop, is the
    host's result (`check_host` names the `VerifyError`).
    """
    from recovery.ssh.jump import tunnel

    own_key = str(host.keys[0])
    hops = tuple(hop if hop.private_key_path else replace(hop, private_key_path=own_key) for hop in host.jumps)
    with tunnel(hops, (host.address or "", host.port), None, timeout=_remaining(deadline, host)) as sock:
        yield sock


# How long to wait for the server's banner before the SSH library sends the client's.
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
        raise CheckFailed.of(status, exc.message) from exc
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
        raise CheckFailed.of(Status.DNS_ERROR, f"host name {address!r} resolves to no address")
    raise CheckFailed(diagnosis.socket_failure(error, address, host.port)) from error


def _greeting(sock: socket.socket, host: Host, deadline: float) -> bytes | None:
    """The first bytes the peer sends unasked, left in the socket for the library; None if it waits for the client.

    :raises CheckFailed: the peer hung up before saying anything (sshd over its MaxStartups does).
    """
    sock.settimeout(min(_GREETING_WAIT, _remaining(deadline, host) / 2))
    try:
        data = sock.recv(_GREETING_BYTES, socket.MSG_PEEK)
    except TimeoutError:
        return None
    except OSError as exc:
        raise CheckFailed(diagnosis.socket_failure(exc, host.address or "", host.port)) from exc
    if not data:
        raise CheckFailed(diagnosis.closed_before_banner(host.where))
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


def _public_line(blob: bytes) -> tuple[str, str]:
    """The server's host key as (type, OpenSSH public key line); the type is read from the blob itself.

    Read from the blob, an RSA key is `ssh-rsa` whichever signature algorithm was agreed, in both engines.
    """
    length = int.from_bytes(blob[:4], "big")
    key_type = blob[4 : 4 + length].decode("ascii", errors="replace")
    return key_type, f"{key_type} {base64.b64encode(blob).decode('ascii')}"


def _remaining(deadline: float, host: Host) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise CheckFailed(Diagnosis(Failure.TIMEOUT, f"{host.where} did not complete the check in time"))
    return left


def _note(host: Host) -> str:
    return f" ({host.note})" if host.note else ""
