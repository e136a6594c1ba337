"""Jump host inputs: `jump`, `jump_keys`, `jump_host_keys` as the playbooks take them."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.ssh.jump import JumpHop, check_jump_inputs, parse_jumps

PIN_A = "SHA256:" + "a" * 43
PIN_B = "SHA256:" + "b" * 43


def test_one_hop_with_defaults() -> None:
    assert parse_jumps("ops@bastion.example") == (JumpHop("bastion.example", 22, "ops"),)


def test_two_hops_each_with_its_key_and_pin() -> None:
    hops = parse_jumps("ops@10.0.0.1:2222, admin@[2001:db8::1]:22", keys="/k/one,/k/two",
                       host_keys=f"{PIN_A},{PIN_B}")
    assert hops == (
        JumpHop("10.0.0.1", 2222, "ops", "/k/one", PIN_A),
        JumpHop("2001:db8::1", 22, "admin", "/k/two", PIN_B),
    )
    assert hops[0].where == "ops@10.0.0.1:2222"


def test_one_key_and_pin_for_every_hop() -> None:
    hops = parse_jumps("a@h1,b@h2", keys="/k", host_keys=PIN_A)
    assert [(hop.private_key_path, hop.host_key_fingerprint) for hop in hops] == [("/k", PIN_A)] * 2


def test_a_hop_without_user_takes_the_default() -> None:
    assert parse_jumps("bastion:2200", default_user="ubuntu")[0].user == "ubuntu"


def test_no_jump_is_no_hop() -> None:
    assert parse_jumps("") == ()


@pytest.mark.parametrize(
    ("jump", "keys", "message"),
    [
        ("ops@bad host", "", "is not user@host:port"),
        ("bastion", "", "names no user"),
        ("ops@h:70000", "", "is not a TCP port"),
        ("a@h1,b@h2,c@h3", "/k1,/k2", "2 values for 3 jump hosts"),
        ("", "/k1", "jump names no jump host"),
    ],
)
def test_malformed_inputs_say_what_is_wrong(jump: str, keys: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_jumps(jump, keys=keys)


def test_preflight_check(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("x")
    assert check_jump_inputs("ops@h", str(key), PIN_A) is None
    assert "does not exist" in (check_jump_inputs("ops@h", str(tmp_path / "missing")) or "")
    assert "jump host ops@h:22: host key" in (check_jump_inputs("ops@h", "", "SHA256:nope") or "")
    assert check_jump_inputs("bastion") is None  # a hop without user@ logs in as the VM user


def test_the_steps_preflight_names_disagreeing_lists(tmp_path: Path) -> None:
    from recovery.engine.config import Config
    from recovery.steps.authorized_keys import _remove_check
    from recovery.steps.ssh import _verify_checks

    values = {"host_key_fingerprint": PIN_A, "jump": "a@h1,b@h2,c@h3", "jump_host_keys": f"{PIN_A},{PIN_B}"}
    assert _verify_checks(values, Config()) == [
        "jump_host_keys has 2 values for 3 jump hosts: give one per hop, in order"
    ]
    removal = {"via": "ssh", "keys": None, "fingerprints": PIN_A, "host": "vm", "ssh_user": "u",
               "private_key_path": "/k", "trust_first_use": True, "jump": "a@h1", "jump_keys": str(tmp_path / "no")}
    assert _remove_check(removal, Config()) == [f"jump host a@h1:22: key file {tmp_path / 'no'} does not exist"]
