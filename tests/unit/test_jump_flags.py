"""A fleet command's jump flags, and the jump hosts' keys decided as the VMs' are."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.errors import UsageError
from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender
from recovery.ssh.jump import JumpHop, hops_from_flags, with_host_keys
from recovery.ssh.keys import fingerprint_sha256

PIN = "SHA256:" + "A" * 43
KEY_ONE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINtVjkJUVDUd+Fbp0qgMhRtJ8ZPi8GIvzL+uYs4XT/Ur"
KEY_TWO = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFr4v3rQoxC4W+qt1kYByHdWZOT5LOBteAVke3TU2ez0"
SHA_ONE, SHA_TWO = fingerprint_sha256(KEY_ONE), fingerprint_sha256(KEY_TWO)


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


def test_an_unpinned_hop_takes_known_hosts_keys_else_is_trusted_only_with_accept_new(tmp_path: Path) -> None:
    pinned, vouched, unknown = JumpHop("a", 22, "u", host_key_fingerprint=PIN), JumpHop("b", 22, "u"), \
        JumpHop("c", 2222, "u")
    path = tmp_path / "known_hosts"
    path.write_text(f"b {KEY_ONE}\nb {KEY_TWO}\n")
    known = KnownHosts.load(path)
    record = KnownHostsAppender(path)

    strict = with_host_keys((pinned, vouched, unknown), known, accept_new=False)
    lenient = with_host_keys((pinned, vouched, unknown), known, accept_new=True, record=record)
    record.close()

    assert [(hop.host_key_fingerprint, hop.trust_first_use) for hop in strict] == [
        (PIN, False), (f"{SHA_ONE},{SHA_TWO}", False), (None, False)]
    assert [(hop.host_key_fingerprint, hop.trust_first_use) for hop in lenient] == [
        (PIN, False), (f"{SHA_ONE},{SHA_TWO}", False), (None, True)]
    assert [hop.record for hop in lenient] == [None, None, record]  # only a key accepted as new is recorded
    assert with_host_keys((unknown,), None, accept_new=True)[0].trust_first_use is True


def test_revoked_keys_go_with_every_hop_pinned_or_not(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"@revoked a {KEY_ONE}\n@revoked [c]:2222 {KEY_TWO}\n")
    pinned, unknown = JumpHop("a", 22, "u", host_key_fingerprint=PIN), JumpHop("c", 2222, "u")

    hops = with_host_keys((pinned, unknown), KnownHosts.load(path), accept_new=True)

    assert [(hop.revoked_host_keys, hop.host_key_fingerprint, hop.trust_first_use) for hop in hops] == [
        ((SHA_ONE,), PIN, False), ((SHA_TWO,), None, True)]
