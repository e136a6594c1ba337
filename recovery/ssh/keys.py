"""SSH key pairs: generate, load, fingerprint.

paramiko cannot generate Ed25519 keys, so `cryptography` does the work. Files
are written the way `ssh-keygen` leaves them: the private key 0600 and created
with O_EXCL (an existing key is never overwritten, so a second run cannot
destroy the key a first run already injected), the public key beside it as
`<path>.pub`, 0644.

Fingerprints are computed from the public blob with hashlib, in the two forms
an operator meets: `SHA256:...` as `ssh-keygen -l` prints it, and the MD5
colon-hex form Nova shows for key pairs and older consoles print for host keys.

`cryptography` is imported inside the functions that need it, so importing this
module (as `recovery --help` does through the steps) stays cheap.

Every failure here raises `KeyGenerationError`, including a malformed public
key line, so callers above the drivers never handle a bare ValueError.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recovery.errors import KeyGenerationError
from recovery.safety.files import make_dirs

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from recovery.safety.redact import Secret

    PrivateKey = Ed25519PrivateKey | RSAPrivateKey

__all__ = [
    "KEY_TYPES",
    "PRIVATE_FORMATS",
    "RSA_BITS",
    "KeyPair",
    "fingerprint_md5",
    "fingerprint_sha256",
    "generate_keypair",
    "load_keypair",
    "parse_public_line",
]

KEY_TYPES = ("ed25519", "rsa")
RSA_BITS = (2048, 3072, 4096)
PRIVATE_FORMATS = ("openssh", "pem")

_ED25519_BITS = 256  # what `ssh-keygen -l` reports for every Ed25519 key
_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644
_DIR_MODE = 0o700
_OPENSSH_HEADER = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_PEM_RSA_HEADER = b"-----BEGIN RSA PRIVATE KEY-----"


@dataclass(frozen=True)
class KeyPair:
    """A key pair on disk, described by what is safe to log: paths and fingerprints.

    `public_line` is the `authorized_keys` line (`ssh-ed25519 AAAA... comment`);
    `sha256` is `SHA256:<base64, no padding>` and `md5` is colon hex without a
    prefix, so either can be compared with what `ssh-keygen -l` or Nova prints.
    """

    private_path: Path
    public_path: Path
    public_line: str
    key_type: str
    bits: int
    sha256: str
    md5: str
    private_format: str


def parse_public_line(line: str) -> tuple[str, bytes, str]:
    """Split an OpenSSH public key line into its type, binary blob and comment.

    The blob's own type string must agree with the first field, which catches a
    line spliced from two keys or damaged while being copied off a console.

    :param line: `TYPE BASE64 [COMMENT]`, as in a `.pub` file or `authorized_keys`
        (without options in front).
    :returns: `(type, blob, comment)`; the comment is `""` when absent.
    :raises KeyGenerationError: the line is not a well-formed public key.
    """
    text = line.strip()
    if "\n" in text or "\r" in text:
        raise KeyGenerationError("a public key line must be a single line")
    fields = text.split(None, 2)
    if len(fields) < 2:
        raise KeyGenerationError(
            "not an OpenSSH public key line: expected 'TYPE BASE64 [COMMENT]', "
            f"got {len(fields)} field(s)"
        )
    key_type, encoded = fields[0], fields[1]
    comment = fields[2] if len(fields) == 3 else ""
    try:
        blob = base64.b64decode(encoded, validate=True)
    except ValueError as exc:  # binascii.Error, or text that is not ASCII (a known_hosts line with a stray byte)
        raise KeyGenerationError(
            f"public key of type {key_type!r}: the key data is not valid base64"
        ) from exc
    embedded = _blob_type(blob)
    if embedded != key_type:
        raise KeyGenerationError(
            f"public key line says {key_type!r} but its key data is "
            + (f"of type {embedded!r}" if embedded else "not an SSH public key blob")
        )
    return key_type, blob, comment


def fingerprint_sha256(public_line: str) -> str:
    """The fingerprint `ssh-keygen -lf` prints by default, e.g. `SHA256:nThb...`.

    :param public_line: an OpenSSH public key line.
    :returns: `SHA256:` and the unpadded base64 of the blob's SHA-256 digest.
    :raises KeyGenerationError: the line is malformed.
    """
    _, blob, _ = parse_public_line(public_line)
    return _sha256_of_blob(blob)


def fingerprint_md5(public_line: str) -> str:
    """The MD5 fingerprint as Nova shows it, e.g. `3f:a2:...` (no `MD5:` prefix).

    :param public_line: an OpenSSH public key line.
    :returns: sixteen lowercase hex pairs joined by colons.
    :raises KeyGenerationError: the line is malformed.
    """
    _, blob, _ = parse_public_line(public_line)
    return _md5_of_blob(blob)


def generate_keypair(
    private_path: Path,
    *,
    key_type: str = "ed25519",
    bits: int = 3072,
    private_format: str = "openssh",
    passphrase: Secret | None = None,
    comment: str = "",
) -> KeyPair:
    """Create a new key pair at `private_path` and `<private_path>.pub`.

    Nothing is overwritten: if either file exists the call fails and leaves
    the disk as it found it, because the existing key may be the one a VM
    already trusts.

    :param private_path: where the private key goes; missing directories on
        the way (`~/.ssh`, `~/.ssh/recovery`) are created 0700 whatever the umask.
    :param key_type: `"ed25519"` or `"rsa"`.
    :param bits: RSA modulus size, one of 2048, 3072, 4096; ignored for
        Ed25519, whose size is fixed at 256.
    :param private_format: `"openssh"` (the `ssh-keygen` default) or `"pem"`
        (`ssh-keygen -m pem`, "BEGIN RSA PRIVATE KEY", for older tools that
        read only that); PEM is offered for RSA keys only.
    :param passphrase: encrypts the private key when given and non-empty.
    :param comment: appended to the public line; one line of text.
    :returns: the new `KeyPair`.
    :raises KeyGenerationError: an unsupported type, size or format, a comment
        with a line break, a file that already exists, or a write failure.
    """
    _check_choice("key type", key_type, KEY_TYPES)
    _check_choice("private key format", private_format, PRIVATE_FORMATS)
    if key_type == "rsa" and bits not in RSA_BITS:
        raise KeyGenerationError(
            f"unsupported RSA key size {bits}; allowed: {', '.join(map(str, RSA_BITS))}"
        )
    if private_format == "pem" and key_type != "rsa":
        raise KeyGenerationError(
            f"private key format 'pem' holds RSA keys only here ('BEGIN RSA PRIVATE KEY'); "
            f"use private_format='openssh' for {key_type} keys"
        )
    if "\n" in comment or "\r" in comment:
        raise KeyGenerationError("the key comment must be a single line")

    key = _new_private_key(key_type, bits)
    private_bytes = _encode_private(key, private_format, passphrase)
    public_line = _public_line(key, comment)
    public_path = _public_path(private_path)

    try:
        make_dirs(private_path.parent, _DIR_MODE)
    except OSError as exc:
        raise KeyGenerationError(
            f"cannot create key directory {private_path.parent}: {exc.strerror}"
        ) from exc
    _write_new(private_path, private_bytes, _PRIVATE_MODE)
    try:
        _write_new(public_path, (public_line + "\n").encode(), _PUBLIC_MODE)
    except BaseException:
        # Half a key pair is worse than none: a resumed run would fail on it.
        private_path.unlink(missing_ok=True)
        raise
    return _describe(private_path, public_path, public_line, key, private_format)


def load_keypair(private_path: Path, passphrase: Secret | None) -> KeyPair:
    """Read a key pair written earlier (by `generate_keypair` or `ssh-keygen`).

    Used when a run resumes: the public key may already be on the VM, so the
    pair must be reused as it is, and its two halves must belong together.

    :param private_path: the private key; `<private_path>.pub` must sit beside it.
    :param passphrase: the passphrase the private key was encrypted with, if any.
    :returns: the `KeyPair` the files describe, comment taken from the `.pub` file.
    :raises KeyGenerationError: a file is missing or unreadable, the private key
        is ours and readable by group or others (ssh itself refuses such a key), the
        passphrase is wrong or missing, the key is neither Ed25519 nor RSA, or
        the `.pub` file holds a different key.
    """
    from cryptography.hazmat.primitives import serialization

    public_path = _public_path(private_path)
    data = _read(private_path)
    _check_protected(private_path)
    if data.lstrip().startswith(_OPENSSH_HEADER):
        private_format = "openssh"
    elif data.lstrip().startswith(_PEM_RSA_HEADER):
        private_format = "pem"
    else:
        raise KeyGenerationError(f"{private_path} is neither an OpenSSH nor a PEM RSA private key")
    password = passphrase.reveal().encode() if passphrase else None
    try:
        key = (
            serialization.load_ssh_private_key(data, password)
            if private_format == "openssh"
            else serialization.load_pem_private_key(data, password)
        )
    except TypeError as exc:  # cryptography's way of saying "encrypted or not"
        problem = (
            "is not encrypted, but a passphrase was given"
            if password
            else "is encrypted: a passphrase is needed"
        )
        raise KeyGenerationError(f"private key {private_path} {problem}") from exc
    except ValueError as exc:
        problem = "wrong passphrase, or the file is corrupt" if password else "the file is corrupt"
        raise KeyGenerationError(f"cannot read private key {private_path}: {problem}") from exc
    private_key = _supported(key, private_path)

    stored_line = _read(public_path).decode("utf-8", errors="replace").strip()
    stored_type, stored_blob, _ = parse_public_line(stored_line)
    derived_type, derived_blob, _ = parse_public_line(_public_line(private_key, ""))
    if (stored_type, stored_blob) != (derived_type, derived_blob):
        raise KeyGenerationError(
            f"{public_path} ({_sha256_of_blob(stored_blob)}) does not belong to "
            f"{private_path} ({_sha256_of_blob(derived_blob)})"
        )
    return _describe(private_path, public_path, stored_line, private_key, private_format)


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise KeyGenerationError(f"unsupported {what} {value!r}; allowed: {', '.join(allowed)}")


def _new_private_key(key_type: str, bits: int) -> PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _encode_private(key: PrivateKey, private_format: str, passphrase: Secret | None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.reveal().encode())
        if passphrase
        else serialization.NoEncryption()
    )
    layout = (
        serialization.PrivateFormat.OpenSSH
        if private_format == "openssh"
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(serialization.Encoding.PEM, layout, encryption)


def _public_line(key: PrivateKey, comment: str) -> str:
    from cryptography.hazmat.primitives import serialization

    line = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    return f"{line} {comment}" if comment else line


def _supported(key: object, path: Path) -> PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        return key
    raise KeyGenerationError(
        f"{path} holds a {type(key).__name__}; only Ed25519 and RSA keys are supported"
    )


def _describe(
    private_path: Path, public_path: Path, public_line: str, key: PrivateKey, private_format: str
) -> KeyPair:
    from cryptography.hazmat.primitives.asymmetric import rsa

    _, blob, _ = parse_public_line(public_line)
    rsa_key = key if isinstance(key, rsa.RSAPrivateKey) else None
    return KeyPair(
        private_path=private_path,
        public_path=public_path,
        public_line=public_line,
        key_type="ed25519" if rsa_key is None else "rsa",
        bits=_ED25519_BITS if rsa_key is None else rsa_key.key_size,
        sha256=_sha256_of_blob(blob),
        md5=_md5_of_blob(blob),
        private_format=private_format,
    )


def _public_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` exclusively with exactly `mode`, write `data` and sync it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, mode)
    except FileExistsError as exc:
        raise KeyGenerationError(
            f"{path} already exists; refusing to overwrite a key file "
            "(move it away, or choose another path)"
        ) from exc
    except OSError as exc:
        raise KeyGenerationError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        # The umask may have narrowed `mode`; a .pub must end up 0644 regardless.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        # A resumed run trusts this file, so it must not be left empty by a crash.
        os.fsync(fd)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise KeyGenerationError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _check_protected(private_path: Path) -> None:
    """Refuse a key of ours that others may read, exactly where ssh refuses it.

    OpenSSH (sshkey_perm_ok) checks only a key the running user owns: a key that
    another user owns and lets this one read (a Kubernetes Secret mounted 0440 for a
    runAsNonRoot pod, a key shared by a group) is theirs to protect, and ssh uses it.
    """
    info = private_path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == os.getuid() and mode & 0o077:
        raise KeyGenerationError(
            f"private key {private_path} has mode {mode:04o}: it must not be readable by "
            f"group or others (ssh refuses such keys); run chmod 600 on it"
        )


def _read(path: Path) -> bytes:
    """A key file: a regular file (or a symlink to one) of at most 64 KiB; never a pipe or a device."""
    from recovery.safety.readers import SECRET_LIMIT, InputFileError, read_bytes

    try:
        return read_bytes(path, what="key file", limit=SECRET_LIMIT, pipes=False)
    except InputFileError as exc:
        raise KeyGenerationError(str(exc)) from exc


def _blob_type(blob: bytes) -> str | None:
    """The type name an SSH public key blob starts with (a uint32-length string)."""
    if len(blob) < 4:
        return None
    length = int.from_bytes(blob[:4], "big")
    name = blob[4 : 4 + length]
    if length == 0 or len(name) != length or not name.isascii():
        return None
    return name.decode("ascii")


def _sha256_of_blob(blob: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def _md5_of_blob(blob: bytes) -> str:
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
