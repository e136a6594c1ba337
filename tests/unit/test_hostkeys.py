"""Host key trust: several pins, and OpenSSH known_hosts as ssh itself reads it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from pathlib import Path

import pytest

from recovery.errors import HostKeyMismatch, HostKeyUnknown, UsageError, VerifyError
from recovery.ssh.hostkeys import Advice, HostKeyCheck, KnownHosts
from recovery.ssh.keys import fingerprint_md5, fingerprint_sha256

# Real public keys, made with ssh-keygen for these tests.
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINtVjkJUVDUd+Fbp0qgMhRtJ8ZPi8GIvzL+uYs4XT/Ur"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFr4v3rQoxC4W+qt1kYByHdWZOT5LOBteAVke3TU2ez0"
KEY_E = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPhAoXJN73FGVKUaHzSs0A5YPXAt99ejSp"
    "K47UXMrGxL/aFOqltjM8df2ywN6oW9iSfa/G2kWKbQqu3YD+daQLo="
)
SHA_A, SHA_B, SHA_E = (fingerprint_sha256(key) for key in (KEY_A, KEY_B, KEY_E))


def hashed(name: str, salt: bytes = b"0123456789abcdefghij") -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def known(tmp_path: Path, text: str) -> KnownHosts:
    path = tmp_path / "known_hosts"
    path.write_text(text)
    return KnownHosts.load(path)


def test_any_of_several_pins_is_accepted_in_either_form() -> None:
    HostKeyCheck("h:22", [SHA_B, SHA_A]).check("ssh-ed25519", KEY_A)
    HostKeyCheck("h:22", ["MD5:" + fingerprint_md5(KEY_A).upper()]).check("ssh-ed25519", KEY_A)


def test_a_mismatch_names_the_source_and_every_pin() -> None:
    check = HostKeyCheck("h:22", [SHA_B, SHA_E], pinned_by="known_hosts (line 3, 4)")

    with pytest.raises(HostKeyMismatch) as caught:
        check.check("ssh-ed25519", KEY_A)

    assert f"does not match known_hosts (line 3, 4): expected {SHA_B} or {SHA_E}" in str(caught.value)
    assert check.offered_sha256 == SHA_A


def test_an_unknown_key_is_refused_with_the_callers_advice() -> None:
    advice = Advice(pin="host_key: {fingerprint}", trust="--accept-new")

    with pytest.raises(HostKeyUnknown) as caught:
        HostKeyCheck("h:22", advice=advice).check("ssh-ed25519", KEY_A)

    assert f"host_key: {SHA_A}" in str(caught.value)
    assert "(--accept-new)" in str(caught.value)


def test_first_use_is_trusted_only_when_asked_and_only_without_pins() -> None:
    trusting = HostKeyCheck("h:22", trust_first_use=True)
    trusting.check("ssh-ed25519", KEY_A)
    assert trusting.trusted_on_first_use is True

    with pytest.raises(HostKeyMismatch):
        HostKeyCheck("h:22", [SHA_B], trust_first_use=True).check("ssh-ed25519", KEY_A)


def test_a_revoked_key_is_refused_first_pinned_or_trusted_on_first_use() -> None:
    refusal = rf"offered host key ssh-ed25519 {re.escape(SHA_A)}, which .* @revoked"
    for check in (HostKeyCheck("h:22", [SHA_A], revoked=[SHA_A]),
                  HostKeyCheck("h:22", trust_first_use=True, revoked=[SHA_A])):
        with pytest.raises(HostKeyMismatch, match=refusal):
            check.check("ssh-ed25519", KEY_A)
        assert check.trusted_on_first_use is False
    another = HostKeyCheck("h:22", trust_first_use=True, revoked=[SHA_A])
    another.check("ssh-ed25519", KEY_B)
    assert another.trusted_on_first_use is True


def test_a_malformed_pin_fails_at_once() -> None:
    with pytest.raises(VerifyError, match="neither 'SHA256:<base64>' nor MD5"):
        HostKeyCheck("h:22", ["SHA256:short"])


def test_known_hosts_plain_port_and_hashed_names(tmp_path: Path) -> None:
    hosts = known(
        tmp_path,
        f"# a comment\n\nweb-1,10.0.0.1 {KEY_A}\n[web-1]:2222 {KEY_B}\n{hashed('[db-1]:2200')} {KEY_E}\n"
        f"{hashed('db-1')} {KEY_A} comment words\n",
    )

    assert [key.fingerprint for key in hosts.lookup("web-1", 22)] == [SHA_A]
    assert [key.fingerprint for key in hosts.lookup("10.0.0.1", 22)] == [SHA_A]
    assert [key.fingerprint for key in hosts.lookup("WEB-1", 2222)] == [SHA_B]
    assert [(key.key_type, key.line) for key in hosts.lookup("db-1", 2200)] == [("ecdsa-sha2-nistp256", 5)]
    assert [key.fingerprint for key in hosts.lookup("db-1", 22)] == [SHA_A]
    assert hosts.lookup("web-1", 2200) == []
    assert hosts.lookup("web-2", 22) == []


def test_known_hosts_wildcards_negation_and_markers(tmp_path: Path) -> None:
    hosts = known(
        tmp_path,
        f"*.prod.example,!bastion.prod.example {KEY_A}\n"
        f"[10.0.?.5]:22?? {KEY_B}\n"
        f"@cert-authority *.prod.example {KEY_E}\n"
        f"@revoked * {KEY_B}\n",
    )

    assert [key.fingerprint for key in hosts.lookup("web.prod.example", 22)] == [SHA_A, SHA_B]
    assert [key.revoked for key in hosts.lookup("web.prod.example", 22)] == [False, True]
    assert hosts.lookup("bastion.prod.example", 22)[0].revoked is True  # only the @revoked line
    assert [key.fingerprint for key in hosts.lookup("10.0.1.5", 2222)] == [SHA_B, SHA_B]
    assert all(key.key_type != "ecdsa-sha2-nistp256" for key in hosts.lookup("web.prod.example", 22))


def test_known_hosts_skips_damaged_lines_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        damaged = f"web-1\nweb-1 ssh-ed25519 not-base64!\n|1|bad|hash {KEY_A}\n@future x {KEY_A}\n"
        hosts = known(tmp_path, damaged + f"ok {KEY_A}\n")

    assert [key.line for key in hosts.lookup("ok", 22)] == [5]
    assert [record.getMessage().split(": ")[0].rsplit(":", 1)[1] for record in caplog.records] == ["1", "2", "3", "4"]


def test_an_unreadable_known_hosts_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read known hosts file"):
        KnownHosts.load(tmp_path / "missing")
