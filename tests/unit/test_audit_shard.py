"""--shard I/N: every host in exactly one shard, the same one on every machine and run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recovery.audit.model import Host
from recovery.audit.shard import Shard, parse_shard
from recovery.errors import UsageError

FLEET = [Host(f"vm-{n:04d}", f"10.0.{n // 256}.{n % 256}", 22, "ops", (Path("/k"),)) for n in range(1000)]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16])
def test_shards_cover_the_fleet_exactly_once(count: int) -> None:
    parts = [Shard(index, count).select(FLEET) for index in range(count)]

    names = [host.name for part in parts for host in part]
    assert sorted(names) == [host.name for host in FLEET]
    assert len(set(names)) == len(FLEET)
    # Roughly even: SHA-256 spreads names; no shard gets twice its share.
    assert max(len(part) for part in parts) < 2 * len(FLEET) / count


def test_a_hosts_shard_depends_only_on_its_name() -> None:
    shard = Shard(1, 4)
    reordered = list(reversed(FLEET))
    grown = [*FLEET, Host("new-vm", "10.9.9.9", 22, "ops", (Path("/k"),))]

    chosen = {host.name for host in shard.select(FLEET)}

    assert {host.name for host in shard.select(reordered)} == chosen
    assert {host.name for host in shard.select(grown)} - {"new-vm"} == chosen


def test_the_split_is_the_same_in_another_process() -> None:
    """Not Python's per-process hash(): a second machine (another PYTHONHASHSEED) agrees."""
    code = (
        "from recovery.audit.shard import Shard; "
        "print(','.join(n for n in (f'vm-{i:04d}' for i in range(1000)) if Shard(2, 5).owns(n)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "12345"}
    )

    assert other.stdout.strip().split(",") == [host.name for host in Shard(2, 5).select(FLEET)]


@pytest.mark.parametrize(("text", "shard"), [("0/1", Shard(0, 1)), ("3/4", Shard(3, 4)), (" 0/16 ", Shard(0, 16))])
def test_parse_shard(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(shard) == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [("4/4", "must be below N"), ("1/0", "at least 1"), ("1", "expected I/N"), ("-1/4", "expected I/N")],
)
def test_bad_shards_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_shard(text)
