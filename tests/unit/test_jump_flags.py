"""A fleet command's jump flags, and the jump hosts' keys decided as the VMs' are."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.errors import UsageError
from recovery.ssh.jump import JumpHop, hops_from_flags, with_host_keys

PIN = "SHA256:" + "A" * 43


def test_flags_parse_into_hops_each_with_its_key_and_pin(tmp_path: Path) -> None:
    key = tmp_path / "bastion"
    key.write_text("key\n")

    hops = hops_from_flags("ops@b1:2222,root@b2", str(key), PIN)

    assert hops == (JumpHop("b1", 2222, "ops", str(key), PIN), JumpHop("b2", 22, "root", str(key), PIN))
    assert hops_from_flags(None, None, None) == ()


@pytest.mark.parametrize(
    ("jump", "keys", "pins", "message"),
    [
        ("", "k", "", "--jump-keys and --jump-host-keys need --jump"),
        ("bastion", "", "", "--jump: jump host 'bastion' names no user: write user@bastion"),
        ("a@b", "/nonexistent/key", "", "--jump: jump host a@b:22: key file /nonexistent/key does not exist"),
        ("a@b,c@d", "", f"{PIN},{PIN},{PIN}", "--jump: jump_host_keys has 3 values for 2 jump hosts"),
    ],
)
def test_bad_flags_are_usage_errors(jump: str, keys: str, pins: str, message: str) -> None:
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(")):
        hops_from_flags(jump, keys, pins)


def test_an_unpinned_hop_takes_known_hosts_keys_else_is_trusted_only_with_accept_new() -> None:
    pinned, vouched, unknown = JumpHop("a", 22, "u", host_key_fingerprint=PIN), JumpHop("b", 22, "u"), \
        JumpHop("c", 2222, "u")
    known = {("b", 22): ["SHA256:one", "SHA256:two"]}

    def lookup(host: str, port: int) -> list[str]:
        return known.get((host, port), [])

    strict = with_host_keys((pinned, vouched, unknown), lookup, accept_new=False)
    lenient = with_host_keys((pinned, vouched, unknown), lookup, accept_new=True)

    assert [(hop.host_key_fingerprint, hop.trust_first_use) for hop in strict] == [
        (PIN, False), ("SHA256:one,SHA256:two", False), (None, False)]
    assert [(hop.host_key_fingerprint, hop.trust_first_use) for hop in lenient] == [
        (PIN, False), ("SHA256:one,SHA256:two", False), (None, True)]
