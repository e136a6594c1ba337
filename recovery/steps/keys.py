"""keys.generate: a new key pair on the operator's machine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recovery.engine import checks
from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.safety.redact import Secret


def _path_free(values: Mapping[str, object], config: Config) -> list[str]:
    """A key is never written over another: refuse a taken path before anything else happens."""
    path = values.get("path")
    if isinstance(path, str) and path and Path(path).expanduser().exists():
        return [f"with.path: {Path(path).expanduser()} already exists; choose another key_path or move that file"]
    return []


@dataclass(frozen=True)
class GenerateParams:
    type: Literal["ed25519", "rsa"] = doc("key type; some clouds import only rsa", default="ed25519")
    bits: int = doc("RSA size: 2048, 3072 or 4096 (ignored for ed25519)", default=3072, check=checks.rsa_bits)
    format: Literal["openssh", "pem"] = doc(
        "private key format; pem is what ssh-keygen -m pem writes (RSA only)", default="openssh"
    )
    passphrase: Secret | None = doc("encrypt the private key with this secret", default=None)
    path: str | None = doc("private key path; default: <keys.dir>/<run id>/id_<type>", default=None)
    comment: str = doc("comment at the end of the public key line", default="")


@step(
    "keys.generate",
    params=GenerateParams,
    outputs={
        "private_key_path": "path of the new private key (0600)",
        "public_key_path": "path of the public key",
        "public_key": "the public key line, as it goes into authorized_keys",
        "key_type": "ed25519 or rsa",
        "sha256": "SHA256 fingerprint, as ssh-keygen -l prints it",
        "md5": "MD5 fingerprint, as Nova shows it",
    },
    repeatable=False,  # a second run would make a second key; --resume keeps the first
    check=_path_free,
)
def generate(ctx: StepContext, params: GenerateParams) -> Outputs:
    """Generate a new key pair locally (private key 0600, never logged)."""
    from recovery.ssh.keys import generate_keypair

    # Absolute, so the report (and the ssh -i line it shows) works from any directory.
    path = (Path(params.path).expanduser() if params.path else ctx.config.keys.dir / ctx.run_id / f"id_{params.type}")
    path = path.absolute()
    comment = params.comment or f"recovery-{ctx.run_id}"
    pair = generate_keypair(
        path,
        key_type=params.type,
        bits=params.bits,
        private_format=params.format,
        passphrase=params.passphrase,
        comment=comment,
    )
    outputs: Outputs = {
        "private_key_path": str(pair.private_path),
        "public_key_path": str(pair.public_path),
        "public_key": pair.public_line,
        "key_type": pair.key_type,
        "sha256": pair.sha256,
        "md5": pair.md5,
    }
    ctx.report.keys.append({**outputs, "bits": pair.bits, "format": pair.private_format})
    return outputs
