"""recovery.cloud's pure parts: the cloud-init host key block, and which address to SSH to."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recovery.cloud import Server, parse_host_key_fingerprints, select_ssh_address
from recovery.errors import CloudError

ED25519 = "SHA256:vQxW9mYqzj0bU6n0mfb5k1c0Hq2Yk1x0FQeQ3bZ7l5I"
ECDSA = "SHA256:Jm3b0pQ9c2m2W8L1k7bq9Zy3v6G3s5mJ0Q2yC1o4n8E"
RSA = "SHA256:4c0Y1m8m7nUeQh5K2b9n1J4x7r0vT3l6Z8k2p5s9q1A"
MD5_HEX = "3f:a2:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd"


def _block(*lines: str, prefix: str = "") -> str:
    body = [f"{prefix}-----BEGIN SSH HOST KEY FINGERPRINTS-----", *(prefix + line for line in lines)]
    return "\n".join([*body, f"{prefix}-----END SSH HOST KEY FINGERPRINTS-----"]) + "\n"


# -- the fingerprint block -------------------------------------------------------------


def test_fingerprints_come_ed25519_first_whatever_the_order_printed() -> None:
    log = _block(
        f"3072 {RSA} root@vm (RSA)",
        f"256 {ECDSA} root@vm (ECDSA)",
        f"256 {ED25519} root@vm (ED25519)",
    )
    assert parse_host_key_fingerprints(log) == [ED25519, ECDSA, RSA]


def test_a_syslog_prefix_and_carriage_returns_are_tolerated() -> None:
    """What a serial console actually carries: `<14>Mar  1 12:00:00 ec2: ` in front, CRLF line ends."""
    log = _block(f"256 {ED25519} root@vm (ED25519)", f"3072 {RSA} root@vm (RSA)", prefix="<14>Mar  1 12:00:00 ec2: ")
    assert parse_host_key_fingerprints(log.replace("\n", "\r\n")) == [ED25519, RSA]


def test_md5_forms_are_normalised_with_a_prefix() -> None:
    log = _block(
        f"2048 MD5:{MD5_HEX.upper()} root@vm (RSA)",
        f"1024 {MD5_HEX.replace('3f', '4e')} /etc/ssh/ssh_host_dsa_key.pub (DSA)",
    )
    assert parse_host_key_fingerprints(log) == ["MD5:" + MD5_HEX, "MD5:" + MD5_HEX.replace("3f", "4e")]


def test_the_last_block_wins() -> None:
    """A rebuilt or re-imaged VM prints a new block on its next boot."""
    old = _block(f"256 {ECDSA} root@old (ED25519)")
    new = _block(f"256 {ED25519} root@new (ED25519)")
    assert parse_host_key_fingerprints("boot 1\n" + old + "boot 2\n" + new) == [ED25519]


def test_lines_outside_the_block_are_ignored() -> None:
    log = f"256 {RSA} root@vm (ED25519)\n" + _block(f"256 {ED25519} root@vm (ED25519)") + f"256 {ECDSA} x (ECDSA)\n"
    assert parse_host_key_fingerprints(log) == [ED25519]


def test_a_block_cut_off_by_the_end_of_the_log_keeps_what_it_has() -> None:
    log = f"-----BEGIN SSH HOST KEY FINGERPRINTS-----\n256 {ED25519} root@vm (ED25519)\n3072 {RSA}"
    assert parse_host_key_fingerprints(log) == [ED25519]


def test_padding_and_duplicates_and_unknown_types() -> None:
    log = _block(
        f"256 {ED25519}= root@vm (ED25519)",
        f"256 {ED25519} root@vm (ED25519)",
        f"521 {ECDSA} root@vm (SK-ECDSA)",
        f"3072 {RSA} root@vm (RSA)",
        "no fingerprint on this line",
    )
    assert parse_host_key_fingerprints(log) == [ED25519, RSA, ECDSA]


def test_no_block_means_no_fingerprints() -> None:
    assert parse_host_key_fingerprints("") == []
    assert parse_host_key_fingerprints(f"256 {ED25519} root@vm (ED25519)\nlogin: ") == []


# -- the SSH address ---------------------------------------------------------------------


def _entry(addr: str, kind: str = "fixed", version: int = 4) -> dict[str, object]:
    return {"addr": addr, "version": version, "OS-EXT-IPS:type": kind}


def _server(**addresses: list[dict[str, object]]) -> Server:
    return Server(id="b5a3c8e2-0000-4000-8000-000000000001", name="web-1", status="ACTIVE", addresses=addresses)


def test_a_floating_ip_comes_first() -> None:
    server = _server(private=[_entry("10.0.0.5"), _entry("203.0.113.7", "floating")])
    assert select_ssh_address(server) == "203.0.113.7"
    assert select_ssh_address(server, "private") == "203.0.113.7"


def test_a_floating_ip_on_the_named_network_beats_another() -> None:
    server = _server(
        a=[_entry("10.0.0.5"), _entry("203.0.113.7", "floating")],
        b=[_entry("10.1.0.5"), _entry("203.0.113.8", "floating")],
    )
    assert select_ssh_address(server, "b") == "203.0.113.8"


def test_the_fixed_address_on_the_named_network() -> None:
    server = _server(db=[_entry("10.1.0.9")], private=[_entry("10.0.0.5"), _entry("fd00::5", version=6)])
    assert select_ssh_address(server, "private") == "10.0.0.5"
    assert select_ssh_address(server, "db") == "10.1.0.9"


def test_a_public_fixed_address_beats_private_ones() -> None:
    server = _server(private=[_entry("10.0.0.5")], ext_net=[_entry("185.22.233.10")])
    assert select_ssh_address(server) == "185.22.233.10"


def test_the_only_fixed_address_ipv4_before_ipv6() -> None:
    assert select_ssh_address(_server(private=[_entry("fd00::5", version=6), _entry("10.0.0.5")])) == "10.0.0.5"
    assert select_ssh_address(_server(v6=[_entry("fd00::5", version=6)])) == "fd00::5"


def test_several_private_addresses_need_a_network() -> None:
    server = _server(a=[_entry("10.0.0.5")], b=[_entry("10.1.0.5")])
    with pytest.raises(CloudError, match=r"several private addresses \(a: 10.0.0.5; b: 10.1.0.5\).*which network"):
        select_ssh_address(server, cloud="prod")


def test_an_unknown_network_lists_the_servers_networks() -> None:
    with pytest.raises(CloudError, match=r"cloud 'prod': server 'web-1' \(.*\) is not on network 'x'; its networks: a"):
        select_ssh_address(_server(a=[_entry("10.0.0.5")]), "x", cloud="prod")


def test_no_address_at_all() -> None:
    with pytest.raises(CloudError, match="has no IP address; give ssh_host explicitly"):
        select_ssh_address(_server())


# -- cost ----------------------------------------------------------------------------------


def test_the_cli_and_this_module_do_not_import_openstack() -> None:
    """`import openstack` costs ~0.35 s; only a cloud call may pay it."""
    code = "import sys, recovery.cli.main, recovery.cloud; print('openstack' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
