"""Whether a server's host key is the one expected: pins, known_hosts files, trust on first use.

One decision, shared by the verifier (one pinned login after a recovery) and the
audit (a fleet, pinned by its inventory or an OpenSSH known_hosts file):

- with pins, the offered key must match one of them, else `HostKeyMismatch`;
- without pins, it is refused (`HostKeyUnknown`, whose message shows the key to
  pin) unless the caller explicitly trusts the first key it sees.

The check is kept free of any SSH library: each driver hands it the offered key
as an OpenSSH public key line. `KnownHosts` reads the OpenSSH format (hashed
names, `[host]:port`, wildcards, negation, `@revoked`) with the standard library;
`KnownHostsAppender` adds the keys an audit accepts on first use, as ssh's
`StrictHostKeyChecking=accept-new` does.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import functools
import hashlib
import hmac
import logging
import os
import re
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recovery.errors import HostKeyMismatch, HostKeyUnknown, KeyGenerationError, UsageError, VerifyError
from recovery.safety import readers
from recovery.ssh.keys import fingerprint_md5, fingerprint_sha256

__all__ = [
    "VERIFIER_ADVICE",
    "Advice",
    "HostKeyCheck",
    "KnownHosts",
    "KnownHostsAppender",
    "KnownKey",
    "RecordedKey",
    "known_hosts_name",
    "parse_pin",
]

log = logging.getLogger(__name__)

_SHA256_PIN = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_MD5_PIN = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){15}")
_HASHED_PREFIX = "|1|"


def parse_pin(text: str | None) -> str | None:
    """Normalise a pin to `SHA256:<43 chars>` or `MD5:<lowercase hex>`; None stays None.

    :raises VerifyError: the text is neither form.
    """
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


@dataclass(frozen=True)
class Advice:
    """How the caller's user pins a key or accepts a new one, worded into `HostKeyUnknown`.

    `pin` is formatted with `fingerprint=`; `trust` names the explicit opt-in.
    """

    pin: str
    trust: str


VERIFIER_ADVICE = Advice(pin="host_key_fingerprint: {fingerprint}", trust="--trust-first-key")


class HostKeyCheck:
    """Decides whether the server's host key is acceptable, and remembers what was offered.

    :param where: `host:port`, for messages.
    :param pins: acceptable fingerprints (SHA256 or MD5 forms, mixed); normalised
        here, so a malformed pin fails before any connection is made.
    :param trust_first_use: accept any key when there are no pins. A pin always wins.
    :param advice: how the user pins or trusts, for the message of an unknown key.
    :param pinned_by: what the pins came from, for the message of a mismatch.
    :param revoked: `SHA256:` fingerprints never accepted, pinned or not (a known_hosts
        file's `@revoked` keys), checked first, as ssh does.
    :raises VerifyError: a pin is malformed.
    """

    def __init__(
        self,
        where: str,
        pins: Sequence[str] = (),
        *,
        trust_first_use: bool = False,
        advice: Advice = VERIFIER_ADVICE,
        pinned_by: str = "the pin",
        revoked: Sequence[str] = (),
    ) -> None:
        self.where = where
        self.revoked = frozenset(revoked)
        self.pins = [pin for pin in map(parse_pin, pins) if pin is not None]
        self.trust_first_use = trust_first_use
        self.advice = advice
        self.pinned_by = pinned_by
        self.offered_sha256 = ""
        self.offered_type = ""
        self.offered_line = ""  # `type base64` of the offered key: what `KnownHostsAppender.add` records
        self.trusted_on_first_use = False

    def check(self, key_type: str, public_line: str) -> None:
        """Accept the offered key or raise; called once per connection.

        :raises HostKeyUnknown: no pins, and first use is not trusted.
        :raises HostKeyMismatch: the key is revoked, or matches none of the pins.
        """
        sha256 = fingerprint_sha256(public_line)
        md5 = "MD5:" + fingerprint_md5(public_line)
        self.offered_sha256, self.offered_type, self.offered_line = sha256, key_type, public_line
        if sha256 in self.revoked:
            raise HostKeyMismatch(
                f"{self.where} offered host key {key_type} {sha256}, which the known_hosts file marks @revoked: "
                "never accepted"
            )
        if not self.pins:
            if not self.trust_first_use:
                raise HostKeyUnknown(
                    f"{self.where} offered host key {key_type} {sha256} ({md5}) and no host "
                    "key fingerprint is pinned. Compare it with the 'BEGIN SSH HOST KEY "
                    "FINGERPRINTS' block of the VM's console log, then pin it "
                    f"({self.advice.pin.format(fingerprint=sha256)}), or accept the first key "
                    f"explicitly ({self.advice.trust})"
                )
            self.trusted_on_first_use = True
            return
        if sha256 in self.pins or md5 in self.pins:
            return
        offered = sha256 if self.pins[0].startswith("SHA256:") else md5
        raise HostKeyMismatch(
            f"host key of {self.where} does not match {self.pinned_by}: expected {' or '.join(self.pins)}, "
            f"server offered {key_type} {offered}"
            + ("" if offered == sha256 else f" ({sha256})")
            + ". The VM may have new host keys, or something is intercepting the "
            "connection; check the console log's fingerprints before changing the pin"
        )


@dataclass(frozen=True)
class KnownKey:
    """One key a known_hosts file lists for a host: its type, `SHA256:` fingerprint and line."""

    key_type: str
    fingerprint: str
    line: int
    revoked: bool = False


def known_hosts_name(host: str, port: int) -> str:
    """The name ssh files a host under: the bare name on port 22, else `[host]:port`; lowercase."""
    return host.lower() if port == 22 else f"[{host.lower()}]:{port}"


@dataclass(frozen=True)
class _Entry:
    """A known_hosts line ready for lookups: its host patterns compiled, or its hashed name."""

    key: KnownKey
    names: tuple[str, ...] = ()  # when every pattern is a plain name: looked up in a dict
    patterns: tuple[tuple[bool, re.Pattern[str]], ...] = ()  # (negated, pattern) otherwise
    hashed: tuple[bytes, bytes] | None = None  # (salt, HMAC-SHA1 of the name) for a hashed line

    def matches(self, name: str) -> bool:
        """ssh's rule for patterns: some pattern matches and no negated (`!`) one does."""
        matched = False
        for negated, pattern in self.patterns:
            if pattern.fullmatch(name):
                if negated:
                    return False
                matched = True
        return matched


class KnownHosts:
    """An OpenSSH known_hosts file, read once and looked up by host and port.

    Lines marked `@cert-authority` are skipped (host certificates are not
    checked here, so they vouch for nothing); `@revoked` keys are never
    accepted. Lines that do not parse are skipped with a warning, as ssh does.

    Cost of one `lookup`: a dict lookup for plain names, one HMAC-SHA1 per
    distinct salt among hashed lines, and one match per wildcard line; never a
    scan of the plain lines. A file written by `ssh-keygen -H` or
    `HashKnownHosts yes` has a fresh salt on every line, so there one lookup is
    one HMAC per hashed line (microseconds each): a caller checking many hosts under a
    deadline does its lookups up front (`recovery.audit.engine.HostTrust.prepare`).
    """

    def __init__(self, path: Path, entries: Sequence[_Entry]) -> None:
        self.path = path
        # Plain names (the usual case, and what ssh writes with HashKnownHosts off) are
        # indexed, so a fleet of thousands is not a scan of thousands of lines per host.
        self._by_name: dict[str, list[_Entry]] = {}
        # Hashed names by salt, then by digest: one HMAC per salt, whatever the lines sharing it.
        self._by_salt: dict[bytes, dict[bytes, list[_Entry]]] = {}
        self._hmacs: list[tuple[_Sha1Pads, dict[bytes, list[_Entry]]]] = []
        self._patterns: list[_Entry] = []
        for entry in entries:
            for name in entry.names:
                self._by_name.setdefault(name, []).append(entry)
            if entry.hashed is not None:
                salt, digest = entry.hashed
                self._by_salt.setdefault(salt, {}).setdefault(digest, []).append(entry)
            elif entry.patterns:
                self._patterns.append(entry)
        self._hmacs = [(_Sha1Pads(salt), digests) for salt, digests in self._by_salt.items()]

    @property
    def hashes_names(self) -> bool:
        """Whether the file hides its host names (hashed lines, no plain ones): new lines should too."""
        return bool(self._by_salt) and not self._by_name

    @classmethod
    def load(cls, path: Path, *, missing_ok: bool = False) -> KnownHosts:
        """Read `path`; with `missing_ok`, a file that does not exist yet is an empty one.

        :raises readers.InputFileError: the file cannot be read (missing, a device or pipe gone silent, too big).
        """
        if missing_ok and not path.exists():
            text = ""
        else:
            data = readers.read_bytes(path, what="known hosts file", limit=readers.KNOWN_HOSTS_LIMIT)
            # A byte that is not UTF-8 (a Latin-1 comment) spoils only its own line, skipped as ssh would.
            text = data.decode("utf-8", errors="replace")
        entries = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            entry = _parse_line(line, number)
            if entry is None:
                log.warning("%s:%d: not a known_hosts line; skipped", path, number)
            elif entry:
                entries.append(entry)
        return cls(path, entries)

    def lookup(self, host: str, port: int) -> list[KnownKey]:
        """Every key listed for `host` on `port`, revoked ones included (marked), in file order.

        As ssh does, a host on port 22 is looked up by its bare name and any
        other port as `[host]:port`; names compare case-insensitively.
        """
        name = known_hosts_name(host, port)
        found = list(self._by_name.get(name, ()))
        encoded = name.encode()
        for pads, digests in self._hmacs:
            found += digests.get(pads.hmac(encoded), ())
        found += [entry for entry in self._patterns if entry.matches(name)]
        return sorted((entry.key for entry in found), key=lambda key: key.line)


def _parse_line(line: str, number: int) -> _Entry | Literal[False] | None:
    """One entry; False for a line to skip quietly (a certificate authority); None when malformed."""
    fields = line.split()
    revoked = False
    if fields[0].startswith("@"):
        if fields[0] == "@cert-authority":
            return False
        if fields[0] != "@revoked":
            return None
        revoked, fields = True, fields[1:]
    if len(fields) < 3:
        return None
    hosts, key_type, blob = fields[0], fields[1], fields[2]
    try:
        fingerprint = fingerprint_sha256(f"{key_type} {blob}")
    except KeyGenerationError:
        return None
    key = KnownKey(key_type, fingerprint, number, revoked)
    if hosts.startswith(_HASHED_PREFIX):
        try:
            salt_text, digest_text = hosts[len(_HASHED_PREFIX) :].split("|", 1)
            hashed = (base64.b64decode(salt_text, validate=True), base64.b64decode(digest_text, validate=True))
        except (ValueError, binascii.Error):
            return None
        return _Entry(key, hashed=hashed)
    written = hosts.lower().split(",")
    if not any(char in hosts for char in "*?!"):
        return _Entry(key, names=tuple(written))
    return _Entry(key, patterns=tuple((text.startswith("!"), _wildcard(text.removeprefix("!"))) for text in written))


def _wildcard(pattern: str) -> re.Pattern[str]:
    """ssh's host patterns know only `*` and `?`; brackets are literal (`[host]:2222`)."""
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."))


class KnownHostsAppender:
    """Adds host keys accepted on first use to a known_hosts file, as ssh's `accept-new` does.

    The file is opened when this is built, so an audit that cannot record what
    it accepts stops before its first connection. Each line is appended under
    an exclusive `flock` (and a thread lock: a flock is shared by the threads
    of one process), so concurrent audits and this audit's own workers never
    interleave lines, and a file whose last line lacks its newline is not
    glued to the new one. Existing lines are never changed: a key that differs
    from a known one is a mismatch, decided before anything is recorded.

    A file that hides its names (`hashed`) gets hashed lines, as ssh writes
    them with `HashKnownHosts yes`. `added` lists what this run recorded, VMs
    and jump hosts alike, for the report; closing says it once on stderr, as
    ssh's "Permanently added" does (once, not per host: a fleet's first audit
    adds hundreds).

    :raises UsageError: the file cannot be created or written, or its mode
        gives no one write permission (a file made read-only on purpose,
        which root could otherwise write through).
    """

    def __init__(self, path: Path, *, hashed: bool = False) -> None:
        self.path = path
        self.hashed = hashed
        self._lock = threading.Lock()
        self._added: dict[tuple[str, str], RecordedKey] = {}
        # Read and write: the last byte is read to see whether the file ends its last line.
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        try:
            self._fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise UsageError(self._refusal(exc.strerror or str(exc))) from exc
        info = os.fstat(self._fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "not a regular file"
        elif not info.st_mode & 0o222:
            problem = f"it is read-only (mode {stat.S_IMODE(info.st_mode):04o})"
        if problem is not None:
            os.close(self._fd)
            raise UsageError(self._refusal(problem))

    def _refusal(self, reason: str) -> str:
        return (
            f"--known-hosts {self.path}: --accept-new records the host keys it accepts there, and cannot write "
            f"it: {reason}. Make it writable, or drop --accept-new to check against it read-only"
        )

    def add(self, host: str, port: int, public_line: str) -> None:
        """Append `host`'s key (type and base64 of `public_line`); once per host and key per run.

        :raises VerifyError: the line could not be written (disk full, the file system gone read-only).
        """
        name = known_hosts_name(host, port)
        key = " ".join(public_line.split()[:2])
        with self._lock:
            if (name, key) in self._added:
                return
            line = f"{self._hashed(name) if self.hashed else name} {key}\n".encode()
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                try:
                    size = os.fstat(self._fd).st_size
                    if size and os.pread(self._fd, 1, size - 1) != b"\n":
                        line = b"\n" + line
                    _write_all(self._fd, line)
                finally:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            except OSError as exc:
                raise VerifyError(
                    f"accepted the new host key of {name} but could not add it to {self.path}: "
                    f"{exc.strerror or exc}"
                ) from exc
            recorded = RecordedKey(name, key.split()[0], fingerprint_sha256(key))
            self._added[(name, key)] = recorded
            log.info("%s: added the host key of %s", self.path, recorded)

    @property
    def added(self) -> tuple[RecordedKey, ...]:
        """The keys this run appended, in the order they were."""
        with self._lock:
            return tuple(self._added.values())

    @staticmethod
    def _hashed(name: str) -> str:
        salt = os.urandom(20)  # HMAC-SHA1's block of salt, as ssh uses
        digest = hmac.digest(salt, name.encode(), "sha1")
        return f"{_HASHED_PREFIX}{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"

    def close(self) -> None:
        os.close(self._fd)
        if added := self.added:
            shown = ", ".join(map(str, added[:_NAMED]))
            more = f" and {len(added) - _NAMED} more" if len(added) > _NAMED else ""
            log.warning("permanently added %d new host key(s) to %s (--accept-new): %s%s",
                        len(added), self.path, shown, more)


# How many keys the closing warning names; the report lists them all.
_NAMED = 5


@dataclass(frozen=True)
class RecordedKey:
    """A host key `--accept-new` appended to known_hosts: the name it is filed under, its type and fingerprint."""

    name: str  # as known_hosts files it: `host`, or `[host]:port` off port 22
    key_type: str
    fingerprint: str

    def __str__(self) -> str:
        return f"{self.name} {self.key_type} {self.fingerprint}"


class _Sha1Pads:
    """HMAC-SHA1 keyed by one salt, its inner and outer pads hashed once (RFC 2104).

    A hashed known_hosts file from `ssh-keygen -H` has a salt per line, so a
    fleet's lookups are hosts x lines HMACs; with the pads prehashed each costs
    two block compressions instead of four and no key setup: about a third of
    `hmac.digest`'s time.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, salt: bytes) -> None:
        # SHA-1 because OpenSSH's format is HMAC-SHA1; it only matches names, it protects nothing here.
        sha1 = functools.partial(hashlib.sha1, usedforsecurity=False)
        key = (sha1(salt).digest() if len(salt) > _SHA1_BLOCK else salt).ljust(_SHA1_BLOCK, b"\0")
        self._inner = sha1(bytes(byte ^ 0x36 for byte in key))
        self._outer = sha1(bytes(byte ^ 0x5C for byte in key))

    def hmac(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_SHA1_BLOCK = 64


def _write_all(fd: int, data: bytes) -> None:
    """One `write` is one append with O_APPEND; a short write (a full disk) is an error, not half a line."""
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(errno.ENOSPC, f"wrote {written} of {len(data)} bytes")
