"""recovery.ssh.keys checked against OpenSSH's own ssh-keygen, the reference for every format."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from recovery.errors import KeyGenerationError
from recovery.safety.redact import Secret
from recovery.ssh.keys import (
    KeyPair,
    fingerprint_md5,
    fingerprint_sha256,
    generate_keypair,
    load_keypair,
    parse_public_line,
)

PASSPHRASE = "tr0ub4dor&3 with spaces"
FLAVOURS = [
    pytest.param("ed25519", "openssh", None, id="ed25519-openssh"),
    pytest.param("ed25519", "openssh", PASSPHRASE, id="ed25519-openssh-encrypted"),
    pytest.param("rsa", "openssh", PASSPHRASE, id="rsa-openssh-encrypted"),
    pytest.param("rsa", "pem", None, id="rsa-pem"),
    pytest.param("rsa", "pem", PASSPHRASE, id="rsa-pem-encrypted"),
]
# Fingerprints come from the public half, so encryption (slow: bcrypt KDF) adds nothing there.
SHAPES = [
    pytest.param("ed25519", "openssh", None, id="ed25519-openssh"),
    pytest.param("rsa", "openssh", None, id="rsa-openssh"),
    pytest.param("rsa", "pem", None, id="rsa-pem"),
]


def run_keygen(*argv: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("ssh-keygen") is None:
        pytest.fail("ssh-keygen not found: apt-get install -y openssh-client")
    return subprocess.run(["ssh-keygen", *argv], capture_output=True, text=True, check=False)


def keygen(*argv: str) -> str:
    result = run_keygen(*argv)
    assert result.returncode == 0, result.stderr
    return result.stdout


def make(tmp_path: Path, key_type: str, private_format: str, passphrase: str | None) -> KeyPair:
    return generate_keypair(
        tmp_path / "keys" / "id",
        key_type=key_type,
        bits=2048,
        private_format=private_format,
        passphrase=Secret(passphrase) if passphrase else None,
        comment="recovery@test",
    )


@pytest.mark.parametrize(("key_type", "private_format", "passphrase"), SHAPES)
def test_fingerprints_and_size_match_ssh_keygen(
    tmp_path: Path, key_type: str, private_format: str, passphrase: str | None
) -> None:
    pair = make(tmp_path, key_type, private_format, passphrase)

    bits, sha256, *_ = keygen("-lf", str(pair.public_path)).split()
    _, md5, *_ = keygen("-E", "md5", "-lf", str(pair.public_path)).split()

    assert pair.sha256 == sha256
    assert pair.md5 == md5.removeprefix("MD5:")
    assert pair.bits == int(bits)
    assert fingerprint_sha256(pair.public_line) == sha256
    assert fingerprint_md5(pair.public_line) == pair.md5


@pytest.mark.parametrize(("key_type", "private_format", "passphrase"), FLAVOURS)
def test_ssh_keygen_reads_the_private_key_back(
    tmp_path: Path, key_type: str, private_format: str, passphrase: str | None
) -> None:
    pair = make(tmp_path, key_type, private_format, passphrase)

    derived = keygen("-y", "-P", passphrase or "", "-f", str(pair.private_path)).split()

    # The comment lives in the .pub file only: cryptography writes none into the private key.
    assert derived[:2] == pair.public_line.split()[:2]
    assert pair.public_line.endswith(" recovery@test")
    assert pair.public_path.read_text() == pair.public_line + "\n"


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE])
def test_pem_is_what_ssh_keygen_m_pem_writes(tmp_path: Path, passphrase: str | None) -> None:
    pair = make(tmp_path, "rsa", "pem", passphrase)

    text = pair.private_path.read_text()

    assert text.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert ("Proc-Type: 4,ENCRYPTED" in text) == (passphrase is not None)
    assert pair.private_format == "pem"


def test_a_wrong_passphrase_does_not_open_the_key(tmp_path: Path) -> None:
    pair = make(tmp_path, "ed25519", "openssh", PASSPHRASE)

    result = run_keygen("-y", "-P", "wrong", "-f", str(pair.private_path))

    assert result.returncode != 0


def test_files_get_ssh_keygen_modes_and_a_private_parent(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)  # a strict umask must not narrow the .pub below 0644
    try:
        pair = generate_keypair(tmp_path / "new" / "dir" / "id")
    finally:
        os.umask(old_umask)

    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.public_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(pair.private_path.parent.stat().st_mode) == 0o700
    assert pair.public_path == tmp_path / "new" / "dir" / "id.pub"


def test_ed25519_defaults(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "id")

    assert (pair.key_type, pair.bits, pair.private_format) == ("ed25519", 256, "openssh")
    assert pair.public_line.startswith("ssh-ed25519 AAAA")
    assert pair.private_path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


# 4096 takes the same path and ~1 s to generate; 3072 is checked as the default.
@pytest.mark.parametrize(("kwargs", "bits"), [({"bits": 2048}, 2048), ({}, 3072)])
def test_rsa_sizes(tmp_path: Path, kwargs: dict[str, Any], bits: int) -> None:
    pair = generate_keypair(tmp_path / "id", key_type="rsa", **kwargs)

    assert pair.bits == bits
    assert keygen("-lf", str(pair.public_path)).split()[0] == str(bits)


def test_existing_private_key_is_never_overwritten(tmp_path: Path) -> None:
    existing = tmp_path / "id"
    existing.write_text("the key the VM already trusts")

    with pytest.raises(KeyGenerationError, match="already exists") as caught:
        generate_keypair(existing)

    assert str(existing) in str(caught.value)
    assert existing.read_text() == "the key the VM already trusts"
    assert not (tmp_path / "id.pub").exists()


def test_existing_public_key_aborts_without_leaving_half_a_pair(tmp_path: Path) -> None:
    (tmp_path / "id.pub").write_text("someone else's key\n")

    with pytest.raises(KeyGenerationError, match="already exists") as caught:
        generate_keypair(tmp_path / "id")

    assert str(tmp_path / "id.pub") in str(caught.value)
    assert not (tmp_path / "id").exists()
    assert (tmp_path / "id.pub").read_text() == "someone else's key\n"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key_type": "dsa"}, "unsupported key type 'dsa'; allowed: ed25519, rsa"),
        ({"key_type": "ecdsa"}, "allowed: ed25519, rsa"),
        (
            {"key_type": "rsa", "bits": 1024},
            "unsupported RSA key size 1024; allowed: 2048, 3072, 4096",
        ),
        ({"key_type": "rsa", "bits": 8192}, "allowed: 2048, 3072, 4096"),
        (
            {"private_format": "pkcs8"},
            "unsupported private key format 'pkcs8'; allowed: openssh, pem",
        ),
        ({"private_format": "pem"}, "'pem' holds RSA keys only"),
        ({"comment": "two\nlines"}, "single line"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(KeyGenerationError, match=re.escape(message)):
        generate_keypair(tmp_path / "id", **kwargs)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("key_type", "private_format", "passphrase"), FLAVOURS)
def test_load_returns_what_generate_made(
    tmp_path: Path, key_type: str, private_format: str, passphrase: str | None
) -> None:
    pair = make(tmp_path, key_type, private_format, passphrase)

    assert load_keypair(pair.private_path, Secret(passphrase) if passphrase else None) == pair


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-t", "ed25519"], ("ed25519", 256, "openssh")),
        (["-t", "rsa", "-b", "2048"], ("rsa", 2048, "openssh")),
        (["-t", "rsa", "-b", "2048", "-m", "pem"], ("rsa", 2048, "pem")),
    ],
)
def test_load_reads_keys_made_by_ssh_keygen(
    tmp_path: Path, argv: list[str], expected: tuple[str, int, str]
) -> None:
    private_path = tmp_path / "id"
    keygen("-q", *argv, "-N", PASSPHRASE, "-C", "made by ssh-keygen", "-f", str(private_path))

    pair = load_keypair(private_path, Secret(PASSPHRASE))

    assert (pair.key_type, pair.bits, pair.private_format) == expected
    assert pair.sha256 == keygen("-lf", str(private_path) + ".pub").split()[1]
    assert pair.public_line.endswith(" made by ssh-keygen")


@pytest.mark.parametrize(
    ("generated_with", "loaded_with", "message"),
    [
        pytest.param(PASSPHRASE, "wrong", "wrong passphrase", id="wrong"),
        pytest.param(PASSPHRASE, None, "is encrypted: a passphrase is needed", id="missing"),
        pytest.param(
            None, "unexpected", "is not encrypted, but a passphrase was given", id="unneeded"
        ),
    ],
)
@pytest.mark.parametrize("private_format", ["openssh", "pem"])
def test_load_explains_passphrase_problems_without_showing_them(
    tmp_path: Path,
    private_format: str,
    generated_with: str | None,
    loaded_with: str | None,
    message: str,
) -> None:
    pair = make(tmp_path, "rsa", private_format, generated_with)

    with pytest.raises(KeyGenerationError, match=message) as caught:
        load_keypair(pair.private_path, Secret(loaded_with) if loaded_with else None)

    assert PASSPHRASE not in str(caught.value)
    assert "unexpected" not in str(caught.value)


def test_load_refuses_a_pub_file_from_another_key(tmp_path: Path) -> None:
    first = generate_keypair(tmp_path / "first")
    second = generate_keypair(tmp_path / "second")
    second.public_path.write_text(first.public_line + "\n")

    with pytest.raises(KeyGenerationError, match="does not belong to"):
        load_keypair(second.private_path, None)


def test_load_refuses_a_private_key_others_can_read(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "id")
    pair.private_path.chmod(0o644)

    with pytest.raises(KeyGenerationError, match="chmod 600"):
        load_keypair(pair.private_path, None)


def test_load_needs_the_pub_file(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "id")
    pair.public_path.unlink()

    with pytest.raises(KeyGenerationError, match=r"cannot read .*id\.pub"):
        load_keypair(pair.private_path, None)


def test_load_rejects_a_file_that_is_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "id"
    path.write_text("hello\n")
    path.chmod(0o600)

    with pytest.raises(KeyGenerationError, match="neither an OpenSSH nor a PEM RSA"):
        load_keypair(path, None)


def test_parse_public_line_splits_type_blob_and_comment(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "id", comment="user@host with spaces")

    key_type, blob, comment = parse_public_line(pair.public_line + "\n")

    assert key_type == "ssh-ed25519"
    assert blob[:15] == b"\x00\x00\x00\x0bssh-ed25519"
    assert comment == "user@host with spaces"
    assert parse_public_line(" ".join(pair.public_line.split()[:2]))[2] == ""


ED25519_B64 = "AAAAC3NzaC1lZDI1NTE5AAAAINZmRiDCvVjN/ZmSx/zioySiNZixe5FQ7MXdFxNiBfRM"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "expected 'TYPE BASE64 \\[COMMENT\\]', got 0 field"),
        ("ssh-ed25519", "got 1 field"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        (f"ssh-rsa {ED25519_B64}", "says 'ssh-rsa' but its key data is of type 'ssh-ed25519'"),
        ("ssh-ed25519 AAAA", "not an SSH public key blob"),
        (f"ssh-ed25519 {ED25519_B64}\nssh-ed25519 {ED25519_B64}", "single line"),
    ],
)
def test_parse_public_line_rejects_malformed_lines(line: str, message: str) -> None:
    with pytest.raises(KeyGenerationError, match=message):
        parse_public_line(line)


def test_fingerprint_of_a_known_key() -> None:
    # Values printed by `ssh-keygen -lf` and `ssh-keygen -E md5 -lf` for this line.
    line = f"ssh-ed25519 {ED25519_B64} me@x"

    assert fingerprint_sha256(line) == "SHA256:CzV+fGEXttJ3k/l1BcPrCd9wbmpTZG0UbSlZ2t0xjZc"
    assert fingerprint_md5(line) == "6b:db:8b:e2:44:0a:d4:52:56:70:0a:19:41:1b:94:bc"


def test_load_takes_a_key_another_user_owns_and_lets_us_read(tmp_path: Path) -> None:
    # As ssh does: only a key the running user owns must be private to it (a Secret mounted 0440
    # for a runAsNonRoot pod is owned by root, and ssh uses it).
    pair = generate_keypair(tmp_path / "id")
    pair.private_path.chmod(0o644)
    os.chown(pair.private_path, 65534, 65534)  # nobody; the tests run as root, who can still read it

    assert load_keypair(pair.private_path, None).sha256 == pair.sha256
