"""ParamikoVerifier against a real sshd on 127.0.0.1 (see sshd_fixture.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.errors import (
    AuthRejected,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    VerifyError,
)
from recovery.safety.redact import Secret
from recovery.ssh.keys import KeyPair, generate_keypair
from recovery.ssh.verifier import ParamikoVerifier, SSHTarget
from tests.integration.sshd_fixture import HOST, SSHServer

PASSPHRASE = "correct horse battery staple"
WRONG_PIN = "SHA256:" + "A" * 43


@pytest.fixture
def key(tmp_path: Path, sshd: SSHServer) -> KeyPair:
    """A fresh Ed25519 key the server accepts."""
    pair = generate_keypair(tmp_path / "id_ed25519", comment="recovery-test")
    sshd.authorize(pair.public_line)
    return pair


@pytest.fixture
def offline_key(tmp_path: Path) -> KeyPair:
    """A key for tests that never reach an sshd (and so need none running)."""
    return generate_keypair(tmp_path / "id_offline")


def target(sshd: SSHServer, pin: str | None = None, *, tofu: bool = False) -> SSHTarget:
    return SSHTarget(sshd.host, sshd.port, sshd.user, pin, trust_first_use=tofu)


def test_pinned_sha256_logs_in_with_the_new_key(sshd: SSHServer, key: KeyPair) -> None:
    result = ParamikoVerifier().verify(target(sshd, sshd.host_key_sha256), key)

    assert result.remote_user == sshd.user
    assert result.host_key_fingerprint == sshd.host_key_sha256
    assert result.host_key_type == "ssh-ed25519"
    assert result.trusted_on_first_use is False
    assert result.key_fingerprint == key.sha256
    assert 0 < result.seconds < 10
    # sshd names the key that logged in: proof it was ours, not some other credential.
    assert f"Accepted publickey for {sshd.user} " in sshd.log_text()
    assert f"ED25519 {key.sha256}" in sshd.log_text()


@pytest.mark.parametrize("form", ["with prefix", "without prefix", "upper case"])
def test_pinned_md5_logs_in(sshd: SSHServer, key: KeyPair, form: str) -> None:
    pin = {
        "with prefix": sshd.host_key_md5,
        "without prefix": sshd.host_key_md5.removeprefix("MD5:"),
        "upper case": sshd.host_key_md5.removeprefix("MD5:").upper(),
    }[form]

    result = ParamikoVerifier().verify(target(sshd, pin), key)

    assert result.remote_user == sshd.user
    assert result.host_key_fingerprint == sshd.host_key_sha256


@pytest.mark.parametrize(
    ("key_type", "private_format", "passphrase"),
    [("ed25519", "openssh", PASSPHRASE), ("rsa", "openssh", None), ("rsa", "pem", PASSPHRASE)],
)
def test_every_key_flavour_logs_in(
    sshd: SSHServer, tmp_path: Path, key_type: str, private_format: str, passphrase: str | None
) -> None:
    secret = Secret(passphrase) if passphrase else None
    pair = generate_keypair(
        tmp_path / "id",
        key_type=key_type,
        bits=2048,
        private_format=private_format,
        passphrase=secret,
    )
    sshd.authorize(pair.public_line)

    result = ParamikoVerifier().verify(target(sshd, sshd.host_key_sha256), pair, passphrase=secret)

    assert result.remote_user == sshd.user
    assert result.key_fingerprint == pair.sha256


def test_one_of_several_pins_is_enough(sshd: SSHServer, key: KeyPair) -> None:
    """cloud-init prints one fingerprint per host key type; the server offers one of them."""
    result = ParamikoVerifier().verify(target(sshd, f"{WRONG_PIN}, {sshd.host_key_sha256}"), key)

    assert result.host_key_fingerprint == sshd.host_key_sha256
    assert result.trusted_on_first_use is False


def test_wrong_pin_is_a_mismatch_showing_both_keys(sshd: SSHServer, key: KeyPair) -> None:
    with pytest.raises(HostKeyMismatch) as caught:
        ParamikoVerifier().verify(target(sshd, WRONG_PIN), key)

    assert WRONG_PIN in str(caught.value)
    assert sshd.host_key_sha256 in str(caught.value)


def test_wrong_md5_pin_shows_the_offered_md5(sshd: SSHServer, key: KeyPair) -> None:
    with pytest.raises(HostKeyMismatch) as caught:
        ParamikoVerifier().verify(target(sshd, "00:" * 15 + "00"), key)

    assert sshd.host_key_md5 in str(caught.value)


def test_no_pin_without_trust_shows_how_to_pin(sshd: SSHServer, key: KeyPair) -> None:
    with pytest.raises(HostKeyUnknown) as caught:
        ParamikoVerifier().verify(target(sshd), key)

    assert f"host_key_fingerprint: {sshd.host_key_sha256}" in str(caught.value)
    assert "--trust-first-key" in str(caught.value)


def test_trust_first_use_accepts_and_says_so(sshd: SSHServer, key: KeyPair) -> None:
    result = ParamikoVerifier().verify(target(sshd, tofu=True), key)

    assert result.trusted_on_first_use is True
    assert result.host_key_fingerprint == sshd.host_key_sha256


def test_a_pin_wins_over_trust_first_use(sshd: SSHServer, key: KeyPair) -> None:
    with pytest.raises(HostKeyMismatch):
        ParamikoVerifier().verify(target(sshd, WRONG_PIN, tofu=True), key)


def test_unauthorized_key_is_rejected(sshd: SSHServer, tmp_path: Path) -> None:
    stranger = generate_keypair(tmp_path / "stranger")

    with pytest.raises(AuthRejected):
        ParamikoVerifier().verify(target(sshd, sshd.host_key_sha256), stranger)


def test_wrong_passphrase_is_reported_without_the_passphrase(
    sshd: SSHServer, tmp_path: Path
) -> None:
    pair = generate_keypair(tmp_path / "id", passphrase=Secret(PASSPHRASE))
    sshd.authorize(pair.public_line)
    wrong = "not the passphrase at all"

    with pytest.raises(VerifyError, match="wrong passphrase") as caught:
        ParamikoVerifier().verify(
            target(sshd, sshd.host_key_sha256), pair, passphrase=Secret(wrong)
        )

    assert wrong not in str(caught.value)
    assert PASSPHRASE not in str(caught.value)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting gets an immediate RST."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


def test_closed_port_is_refused(offline_key: KeyPair, closed_port: int) -> None:
    with pytest.raises(ConnectionRefused):
        ParamikoVerifier().verify(SSHTarget(HOST, closed_port, "nobody", WRONG_PIN), offline_key)


@pytest.fixture
def tarpit() -> Iterator[int]:
    """A port that completes the TCP handshake (the kernel's backlog) and never speaks."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_silent_peer_times_out_instead_of_hanging(offline_key: KeyPair, tarpit: int) -> None:
    timeout = 1.0
    started = time.monotonic()

    with pytest.raises(ConnectTimeout):
        ParamikoVerifier().verify(
            SSHTarget(HOST, tarpit, "nobody", WRONG_PIN), offline_key, timeout=timeout
        )

    # A hang would never end; the bound is loose so that a busy 2-core machine does not fail it.
    assert time.monotonic() - started < 10 * timeout


def test_unresolvable_host_says_dns(offline_key: KeyPair) -> None:
    with pytest.raises(VerifyError, match="cannot resolve host name") as caught:
        ParamikoVerifier().verify(
            SSHTarget("no-such-host.invalid", 22, "nobody", WRONG_PIN), offline_key
        )

    assert type(caught.value) is VerifyError


@pytest.mark.parametrize("pin", ["SHA256:short", "MD5:zz", "ab:cd", "ssh-ed25519 AAAA"])
def test_malformed_pin_fails_before_connecting(
    offline_key: KeyPair, closed_port: int, pin: str
) -> None:
    with pytest.raises(VerifyError, match="neither 'SHA256:<base64>' nor MD5") as caught:
        ParamikoVerifier().verify(SSHTarget(HOST, closed_port, "nobody", pin), offline_key)

    assert type(caught.value) is VerifyError
