"""Why an SSH login check failed: named and worded once, whichever SSH library made the check.

The verifier (paramiko, one login at the end of a recovery) and the audit
(libssh2, or paramiko where ssh2-python is missing; thousands of logins at once) meet the same failures: a refused port,
a peer that accepts TCP and never speaks, a name that does not resolve, a
rejected key, a host key that is unknown or has changed. Each library reports
them with exceptions of its own; each driver translates those into a
`Diagnosis` built here, so an operator reads the same words from both, the
audit can name the failure (`Failure`), and the verifier raises the
`VerifyError` subclass that goes with it (`Diagnosis.error`). Where the recovery saw
how the VM's sshd looks for keys (the install script reports it), a rejected key names a
cause from that instead of guessing (`key_lookup`).

Only the standard library is imported: the audit and `recovery --help` pay nothing.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from recovery.errors import (
    AuthRejected,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    VerifyError,
)

__all__ = [
    "Diagnosis",
    "Failure",
    "auth_rejected",
    "auth_timeout",
    "closed_before_banner",
    "closed_during_handshake",
    "from_error",
    "handshake_timeout",
    "key_lookup",
    "refused",
    "rejected_by_key_lookup",
    "session_failed",
    "socket_failure",
]


class Failure(StrEnum):
    """The kinds of failure; their values are the audit's result names (a contract)."""

    AUTH_REJECTED = "auth_rejected"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    HOST_KEY_CHANGED = "host_key_changed"
    HOST_KEY_UNKNOWN = "host_key_unknown"
    DNS_ERROR = "dns_error"
    ERROR = "error"


# A name that does not resolve has no class of its own in the error tree: the
# verifier reports it as a plain VerifyError, which its callers do not retry.
_ERROR_CLASSES: dict[Failure, type[VerifyError]] = {
    Failure.AUTH_REJECTED: AuthRejected,
    Failure.REFUSED: ConnectionRefused,
    Failure.TIMEOUT: ConnectTimeout,
    Failure.HOST_KEY_CHANGED: HostKeyMismatch,
    Failure.HOST_KEY_UNKNOWN: HostKeyUnknown,
    Failure.DNS_ERROR: VerifyError,
    Failure.ERROR: VerifyError,
}


@dataclass(frozen=True)
class Diagnosis:
    """One failed check: what kind of failure, and the sentence that explains it."""

    failure: Failure
    message: str

    def error(self) -> VerifyError:
        """The exception the verifier raises for this failure (raise it `from` the library's)."""
        return _ERROR_CLASSES[self.failure](self.message)


def from_error(exc: VerifyError) -> Diagnosis:
    """Name a failure that our own code raised, e.g. the host key check's `HostKeyMismatch`.

    The most specific class wins; a plain `VerifyError` (an unreadable key, a
    malformed pin) is `Failure.ERROR`.
    """
    for failure, cls in _ERROR_CLASSES.items():
        if cls is not VerifyError and isinstance(exc, cls):
            return Diagnosis(failure, str(exc))
    return Diagnosis(Failure.ERROR, str(exc))


def socket_failure(exc: OSError, host: str, port: int) -> Diagnosis:
    """Name a failure to resolve `host` or to open a TCP connection to it.

    Order matters: `socket.gaierror`, `ConnectionRefusedError` and
    `TimeoutError` (which `socket.timeout` is) are all `OSError`s.
    """
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return Diagnosis(
            Failure.DNS_ERROR, f"cannot resolve host name {host!r} (DNS lookup failed: {exc.strerror})"
        )
    if isinstance(exc, ConnectionRefusedError):
        return refused(where)
    if isinstance(exc, TimeoutError):
        return Diagnosis(Failure.TIMEOUT, f"{where} did not answer in time")
    return Diagnosis(Failure.ERROR, f"connection to {where} failed: {exc.strerror or exc}")


def refused(where: str) -> Diagnosis:
    """Nothing listens on the port: the kernel answered the SYN with a reset."""
    return Diagnosis(Failure.REFUSED, f"{where} refused the connection (is sshd up?)")


_UNKNOWN_CAUSE = "; the key may not be in authorized_keys (yet), or sshd refuses the file's ownership or modes"


def auth_rejected(where: str, user: str, detail: str) -> Diagnosis:
    """The server refused every key offered for `user`."""
    return Diagnosis(Failure.AUTH_REJECTED, f"{where} rejected the key for user {user!r} ({detail}){_UNKNOWN_CAUSE}")


# How sshd_config names the file the install script writes (%h is the home directory, relative
# paths start there).
_INSTALLED_FILE = frozenset({".ssh/authorized_keys", "%h/.ssh/authorized_keys", "~/.ssh/authorized_keys"})


def key_lookup(sshd: Mapping[str, str] | None) -> str | None:
    """Why sshd cannot see a key installed in ~/.ssh/authorized_keys, or None if it reads that file.

    Args:
        sshd: where the VM's sshd looks for keys, as the install script saw it
            (`recovery.guest.InstallReport.sshd_summary`); None where it could not see.
    """
    if not sshd:
        return None
    files = sshd.get("authorized_keys_file", "default")
    if files == "default" or _INSTALLED_FILE & set(files.split()):
        return None
    command = sshd.get("authorized_keys_command", "default")
    source = "sshd -T on the VM" if sshd.get("read_from") == "sshd-T" else "the VM's sshd_config"
    cause = (
        "sshd reads no authorized_keys file at all (AuthorizedKeysFile none"
        if files.lower() == "none"
        else f"sshd reads keys from {files}, not from ~/.ssh/authorized_keys where the key was installed "
        "(AuthorizedKeysFile"
    )
    cause += f", says {source})"
    if command not in ("default", "none"):
        cause += (
            f"; it also asks AuthorizedKeysCommand {command} (with SSSD, sss_ssh_authorizedkeys serves the "
            "keys stored in the directory: add the key there)"
        )
    return cause


def rejected_by_key_lookup(error: AuthRejected, sshd: Mapping[str, str] | None) -> AuthRejected | None:
    """`error` (from `auth_rejected`) naming the cause `key_lookup` found instead of guessing; None if none.

    A key rejected by a server that never reads the file it went into is not a question of modes.
    """
    cause = key_lookup(sshd)
    if cause is None:
        return None
    return AuthRejected(f"{str(error).removesuffix(_UNKNOWN_CAUSE)}: {cause}")


def auth_timeout(where: str) -> Diagnosis:
    """Authentication started but did not finish in time."""
    return Diagnosis(Failure.TIMEOUT, f"{where} did not finish authentication in time")


def handshake_timeout(where: str) -> Diagnosis:
    """TCP connected, but no SSH banner or key exchange followed in time (a tarpit, a hung sshd)."""
    return Diagnosis(
        Failure.TIMEOUT,
        f"{where} accepted the connection but did not complete the SSH handshake in time "
        "(sshd still starting, or not an SSH server?)",
    )


def closed_before_banner(where: str) -> Diagnosis:
    """The peer hung up, or said something that is not SSH, before its banner."""
    return Diagnosis(
        Failure.REFUSED,
        f"{where} closed the connection before sending its SSH banner "
        "(sshd starting, or over its MaxStartups limit?)",
    )


def closed_during_handshake(where: str) -> Diagnosis:
    """The peer hung up after its banner, during the key exchange."""
    return Diagnosis(
        Failure.REFUSED,
        f"{where} closed the connection during the SSH handshake "
        "(sshd starting, or over its MaxStartups limit?)",
    )


def session_failed(where: str, detail: str) -> Diagnosis:
    """Anything else the SSH library reported: no common algorithm, a protocol error."""
    return Diagnosis(Failure.ERROR, f"SSH session with {where} failed: {detail}")
