"""The inventory's `jump`, `jump_keys` and `jump_host_keys`: per host, from `defaults:`, or the flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.audit.inventory import HostDefaults, parse_inventory
from recovery.errors import UsageError
from recovery.ssh.jump import JumpHop, parse_jumps

PIN_A = "SHA256:" + "A" * 43
PIN_B = "SHA256:" + "B" * 43


def hosts_of(text: str, base: Path, fallback: HostDefaults | None = None) -> dict[str, tuple[JumpHop, ...]]:
    hosts = parse_inventory(text, "inv.yaml", base=base, fallback=fallback or HostDefaults())
    return {host.name: host.jumps for host in hosts}


def keys(base: Path, *names: str) -> None:
    for name in names:
        (base / name).write_text("key\n")


def test_defaults_jump_serves_every_host_and_a_host_may_name_its_own_or_none(tmp_path: Path) -> None:
    keys(tmp_path, "bastion", "inner")
    text = f"""
defaults:
  user: ubuntu
  key: k
  jump: ops@bastion.example:2222
  jump_keys: bastion
  jump_host_keys: '{PIN_A}'
hosts:
  - {{name: a, host: 10.0.0.1}}
  - {{name: b, host: 10.0.0.2, jump: ""}}
  - name: c
    host: 10.0.0.3
    jump: [b1, "root@b2:22"]
    jump_keys: [bastion, inner]
    jump_host_keys: ['{PIN_A}', '{PIN_B}']
"""
    found = hosts_of(text, tmp_path)

    assert found["a"] == (JumpHop("bastion.example", 2222, "ops", str(tmp_path / "bastion"), PIN_A),)
    assert found["b"] == ()
    assert found["c"] == (JumpHop("b1", 22, "ubuntu", str(tmp_path / "bastion"), PIN_A),
                          JumpHop("b2", 22, "root", str(tmp_path / "inner"), PIN_B))


def test_text_and_lists_are_the_same_hops(tmp_path: Path) -> None:
    keys(tmp_path, "x", "y")
    as_text = hosts_of(f"hosts:\n  - {{name: a, host: h, user: u, key: k, jump: 'p@b1,q@b2:23', "
                       f"jump_keys: 'x,y', jump_host_keys: '{PIN_A}'}}\n", tmp_path)
    as_lists = hosts_of(f"hosts:\n  - {{name: a, host: h, user: u, key: k, jump: [p@b1, 'q@b2:23'], "
                        f"jump_keys: [x, y], jump_host_keys: ['{PIN_A}']}}\n", tmp_path)

    assert as_text == as_lists
    assert [hop.host_key_fingerprint for hop in as_text["a"]] == [PIN_A, PIN_A]


def test_the_flags_serve_hosts_the_inventory_gives_no_jump(tmp_path: Path) -> None:
    flags = HostDefaults(user="u", keys=(Path("k"),), jumps=parse_jumps("ops@bastion"))
    found = hosts_of("hosts:\n  - {name: a, host: h}\n  - {name: b, host: h, jump: ''}\n"
                     "  - {name: c, host: h, jump: other}\n", tmp_path, flags)

    assert found == {"a": parse_jumps("ops@bastion"), "b": (), "c": (JumpHop("other", 22, "u"),)}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ("jump_keys: x", "inv.yaml:3: hosts[0]: jump_keys without jump: name the jump hosts beside it"),
        ("jump: 'a@b:99999'", "inv.yaml:3: hosts[0]: host 'a': jump host 'a@b:99999': 99999 is not a TCP port"),
        ("jump: 'a@b,c@d', jump_host_keys: ['SHA256:x', 'SHA256:y', 'SHA256:z']",
         "inv.yaml:3: hosts[0]: host 'a': jump_host_keys has 3 values for 2 jump hosts"),
        ("jump: a@b, jump_keys: missing", "inv.yaml:3: hosts[0]: host 'a': jump host a@b:22: key file"),
        ("jump: {a: b}", "inv.yaml:3: hosts[0].jump: expected text (comma-separated, first hop first)"),
        ("jump: a@b, jump_host_keys: nonsense", "inv.yaml:3: hosts[0]: host 'a': jump host a@b:22: host key"),
    ],
)
def test_a_bad_jump_is_a_usage_error_naming_file_and_line(tmp_path: Path, fields: str, problem: str) -> None:
    text = f"hosts:\n\n  - {{name: a, host: h, user: u, key: k, {fields}}}\n"
    with pytest.raises(UsageError) as caught:
        parse_inventory(text, "inv.yaml", base=tmp_path, fallback=HostDefaults())
    assert problem in str(caught.value)


def test_an_ansible_inventorys_hosts_take_the_jump_flags(tmp_path: Path) -> None:
    from recovery.audit.inventory import load_inventory

    path = tmp_path / "hosts.ini"
    path.write_text("[web]\nweb1 ansible_host=10.0.0.1 ansible_user=ops\n")
    flags = HostDefaults(keys=(Path("k"),), jumps=parse_jumps("ops@bastion:2222"))

    [host] = load_inventory(path, flags, None)

    assert host.jumps == (JumpHop("bastion", 2222, "ops"),)
