"""The Nova key pairs that hold the stolen key: found by fingerprint, deleted only when confirmed.

Nova gives an ssh key pair's fingerprint as MD5 colon hex (`aa:bb:...`), while the stolen key may
be known by its SHA256 fingerprint alone. So each key pair's own public key (Nova lists it) is
hashed both ways here, and Nova's MD5 is compared too when the list carries no public key.

Deleting a key pair leaves the servers booted with it as they are (the fleet run cleans their
authorized_keys); it stops new servers and rebuilds from getting the key. Unlike a line taken out
of a host (a backup is kept), a deletion cannot be undone from here, hence the one confirmation
of `recovery revoke`: a question naming the key pairs on a terminal, or `--yes`. With neither,
they are kept and the run is not clean. Nova key pairs are per user: only those of the user the
credentials belong to are listed, and so deleted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from recovery.errors import CloudError, KeyGenerationError
from recovery.guest import blob_fingerprints, key_blob, normalize_fingerprint

if TYPE_CHECKING:
    from recovery.cloud import KeyPairInfo
    from recovery.revoke.engine import StolenKey

__all__ = [
    "Ask",
    "KeyPairCloud",
    "KeyPairOutcome",
    "KeyPairStatus",
    "ask_on_terminal",
    "keypair_matches",
    "matching_keypairs",
    "settle_keypairs",
]

# Asked once with every matching key pair; True deletes them all.
Ask = Callable[[Sequence["KeyPairInfo"]], bool]


class KeyPairCloud(Protocol):
    """What revoke asks of a cloud about key pairs; `recovery.cloud.OpenStackCloud` is one."""

    def list_keypairs(self) -> list[KeyPairInfo]:
        """The key pairs of the credentials' user; CloudError on failure."""
        ...

    def delete_keypair(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete one by name; CloudError on failure."""
        ...


class KeyPairStatus(StrEnum):
    """What became of a matching key pair; only `deleted` is clean."""

    DELETED = "deleted"
    WOULD_DELETE = "would_delete"  # --dry-run
    NOT_CONFIRMED = "not_confirmed"  # no --yes and no terminal to ask on
    DECLINED = "declined"  # the answer at the prompt was not yes
    DELETE_FAILED = "delete_failed"  # the cloud refused or failed
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM before it was deleted


@dataclass(frozen=True)
class KeyPairOutcome:
    name: str
    fingerprint: str  # as Nova gives it
    status: KeyPairStatus
    message: str

    @property
    def deleted(self) -> bool:
        return self.status == KeyPairStatus.DELETED


def keypair_matches(keypair: KeyPairInfo, stolen: StolenKey) -> bool:
    """Whether the key pair holds the stolen key: same blob, same SHA256 or same MD5.

    An x509 key pair (a certificate; Nova's fingerprint is then a SHA1) never matches.
    """
    try:
        blob = key_blob(keypair.public_key)
        sha256, md5 = blob_fingerprints(blob)
    except (KeyGenerationError, ValueError):  # no ssh key line, or a blob that is not base64
        pass
    else:
        if blob == stolen.blob or sha256 == stolen.sha256 or md5 == stolen.md5:
            return True
    try:
        nova_md5 = normalize_fingerprint(keypair.fingerprint)
    except ValueError:
        return False
    return bool(stolen.md5) and nova_md5 == stolen.md5


def matching_keypairs(keypairs: Sequence[KeyPairInfo], stolen: StolenKey) -> list[KeyPairInfo]:
    """The key pairs holding the stolen key, by name."""
    return sorted((item for item in keypairs if keypair_matches(item, stolen)), key=lambda item: item.name)


def settle_keypairs(
    cloud: KeyPairCloud,
    matching: Sequence[KeyPairInfo],
    *,
    dry_run: bool,
    yes: bool,
    ask: Ask | None,
) -> list[KeyPairOutcome]:
    """Delete the matching key pairs if confirmed (`yes`, or `ask` says so); say for each what became of it.

    `ask` is None when there is no terminal to ask on: without `yes` nothing is then deleted. A
    failed deletion is reported and the others are still tried. On KeyboardInterrupt (at the
    prompt, or between deletions) the outcomes so far, the rest interrupted, are attached to the
    re-raised exception as ``partial``.
    """
    if not matching:
        return []
    if dry_run:
        return [_outcome(item, KeyPairStatus.WOULD_DELETE, "--dry-run: not deleted") for item in matching]
    outcomes: list[KeyPairOutcome] = []
    try:
        if not yes:
            if ask is None:
                return [
                    _outcome(item, KeyPairStatus.NOT_CONFIRMED,
                             "not deleted: no terminal to confirm on; pass --yes to delete it")
                    for item in matching
                ]
            if not ask(matching):
                return [_outcome(item, KeyPairStatus.DECLINED, "not deleted: declined at the prompt")
                        for item in matching]
        for item in matching:
            outcomes.append(_delete(cloud, item))
    except KeyboardInterrupt as exc:
        done = {outcome.name for outcome in outcomes}
        outcomes += [_outcome(item, KeyPairStatus.INTERRUPTED, "not deleted: interrupted")
                     for item in matching if item.name not in done]
        exc.partial = outcomes  # type: ignore[attr-defined]
        raise
    return outcomes


def _delete(cloud: KeyPairCloud, keypair: KeyPairInfo) -> KeyPairOutcome:
    try:
        cloud.delete_keypair(keypair.name, missing_ok=True)  # gone meanwhile is gone
    except CloudError as exc:
        return _outcome(keypair, KeyPairStatus.DELETE_FAILED, f"not deleted: {exc}")
    return _outcome(keypair, KeyPairStatus.DELETED, "deleted")


def _outcome(keypair: KeyPairInfo, status: KeyPairStatus, message: str) -> KeyPairOutcome:
    return KeyPairOutcome(keypair.name, keypair.fingerprint, status, message)


def ask_on_terminal(cloud_name: str, stolen_name: str) -> Ask:
    """A question on the terminal naming every key pair; anything but y or yes (end of input too) is a no."""
    from recovery.audit.render import printable

    def ask(matching: Sequence[KeyPairInfo]) -> bool:
        # The question goes to stderr: stdout carries the report.
        listed = "".join(f"  {printable(item.name)}  ({item.type or 'ssh'}, {item.fingerprint})\n" for item in matching)
        sys.stderr.write(
            f"\nNova key pairs of cloud {printable(cloud_name)!r} holding {stolen_name}:\n{listed}"
            f"Delete {'it' if len(matching) == 1 else f'these {len(matching)}'}? New servers can then no longer "
            "be booted with the key; the deletion cannot be undone. [y/N] "
        )
        sys.stderr.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    return ask
