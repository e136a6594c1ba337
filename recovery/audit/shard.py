"""`--shard I/N`: a deterministic split of a fleet among N audits that share nothing.

Cron on several machines, or the N pods of a Kubernetes Indexed Job (I is
`JOB_COMPLETION_INDEX`, counted from 0), each audit their own part. A host's
shard depends only on its name (SHA-256, not Python's per-process `hash`), so:

- every host is in exactly one shard, whatever order the inventory lists them in;
- a host stays in its shard when others are added or removed, so its history
  (its Prometheus series, its report file) stays with one auditor.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from recovery.audit.model import Host
from recovery.errors import UsageError

__all__ = ["Shard", "parse_shard"]

_SHARD = re.compile(r"(\d+)/(\d+)")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (from 0) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        """Whether the host called `name` belongs to this shard."""
        digest = hashlib.sha256(name.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def select(self, hosts: Sequence[Host]) -> list[Host]:
        """This shard's hosts, in their original order."""
        return [host for host in hosts if self.owns(host.name)]


def parse_shard(text: str) -> Shard:
    """Read `I/N` with 0 <= I < N.

    :raises UsageError: anything else, with an example.
    """
    match = _SHARD.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 0/4 for the first of four shards")
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise UsageError(f"--shard {text}: N, the number of shards, must be at least 1")
    if index >= count:
        raise UsageError(f"--shard {text}: I counts from 0, so it must be below N: 0/{count} ... {count - 1}/{count}")
    return Shard(index, count)
