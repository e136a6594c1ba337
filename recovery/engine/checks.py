"""Checks of single parameter values, declared next to step parameters (`doc(..., check=...)`).

Each returns a problem in words, or None. The pre-flight calls them with known,
well-typed values only, before anything is changed, so a typo in `-e ssh_port=`
is a usage error at once instead of a failure after the key was appended.
"""

from __future__ import annotations

import unicodedata

from recovery.errors import KeyGenerationError, VerifyError

RSA_SIZES = (2048, 3072, 4096)


def port(value: int) -> str | None:
    if not 1 <= value <= 65535:
        return f"{value} is not a TCP port (1-65535)"
    return None


def login_name(value: str) -> str | None:
    """A user name that a login prompt and OpenSSH will take as typed: non-empty, one word, printable."""
    if not value:
        return "is empty: give the VM user's login name (e.g. ubuntu, debian, centos)"
    if any(unicodedata.category(c).startswith("C") or c.isspace() for c in value):
        return f"{value!r} has a space or a control character; a login name has neither"
    if value.startswith("-"):
        return f"{value!r} starts with '-', which login and ssh would take for an option"
    return None


def public_key(value: str) -> str | None:
    """One OpenSSH public key line (`ssh-ed25519 AAAA... comment`), as the VM's sshd will read it."""
    from recovery.ssh.keys import parse_public_line

    try:
        parse_public_line(value)
    except KeyGenerationError as exc:
        return str(exc)
    return None


def host_key_pins(value: str | None) -> str | None:
    """One or more pins separated by commas, each `SHA256:<base64>` or MD5 colon hex."""
    from recovery.ssh.hostkeys import parse_pin

    for pin in (value or "").split(","):
        if not pin.strip() and value:
            return f"{value!r} has an empty fingerprint between commas"
        try:
            parse_pin(pin) if pin.strip() else None
        except VerifyError as exc:
            return str(exc)
    return None


def rsa_bits(value: int) -> str | None:
    if value not in RSA_SIZES:
        return f"{value} bits is not an RSA size we make (choose {', '.join(map(str, RSA_SIZES))})"
    return None
