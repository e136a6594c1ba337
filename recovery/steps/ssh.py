"""ssh.verify: the proof that the new key logs in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recovery.engine import checks
from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.engine.templating import Unknown
from recovery.errors import AuthRejected, HostKeyUnknown, StepError
from recovery.safety.redact import Secret
from recovery.ssh.jump import JumpHop, check_jump, check_jump_lists, check_jump_pins, parse_jumps

NO_HOST = "no SSH address to verify: give -e ssh_host=..., or -e server=NAME with --cloud"
NO_PIN = (
    "no host key to check the VM against: give host_key_fingerprint (from the console or the cloud-init "
    "console log), or -e server=NAME with --cloud to read it from the console log, or set trust_first_use "
    "(it will be recorded in the report)"
)


def _host(value: str) -> str | None:
    return NO_HOST if not value.strip() else None


def _pinned_or_trusted(values: Mapping[str, object], config: Config) -> list[str]:
    pin, trust = values.get("host_key_fingerprint"), values.get("trust_first_use")
    if isinstance(pin, Unknown) or isinstance(trust, Unknown):
        return []
    return [NO_PIN] if not pin and not trust else []


def _verify_checks(values: Mapping[str, object], config: Config) -> list[str]:
    return _pinned_or_trusted(values, config) + check_jump_lists(values)


@dataclass(frozen=True)
class VerifyParams:
    host: str = doc("SSH host name or address", check=_host)
    user: str = doc("user to log in as", check=checks.login_name)
    private_key_path: str = doc("the new private key (keys.generate output)")
    port: int = doc("SSH port", default=22, check=checks.port)
    passphrase: Secret | None = doc("the private key's passphrase, if any", default=None)
    host_key_fingerprint: str | None = doc(
        "pinned host key, SHA256:... or MD5 hex; several separated by commas (one per key type)", default=None,
        check=checks.host_key_pins)
    trust_first_use: bool = doc("accept an unpinned host key (recorded in the report)", default=False)
    timeout: float | None = doc("connect/banner/auth timeout (default: ssh.timeout)", default=None)
    jump: str | None = doc(
        "jump hosts (bastions) on the way, as ssh -J: user@host:port[,user@host:port], first hop first",
        default=None, check=check_jump)
    jump_keys: str | None = doc(
        "private keys for the jump hosts, comma-separated in the same order (one for all; default: the new key)",
        default=None)
    jump_host_keys: str | None = doc(
        "host key pins of the jump hosts (SHA256:... or MD5), comma-separated in the same order", default=None,
        check=check_jump_pins)


def _hops(params: VerifyParams) -> tuple[JumpHop, ...]:
    try:
        return parse_jumps(params.jump or "", keys=params.jump_keys or "", host_keys=params.jump_host_keys or "",
                           default_user=params.user, trust_first_use=params.trust_first_use)
    except ValueError as exc:
        raise StepError(str(exc)) from exc


@step(
    "ssh.verify",
    params=VerifyParams,
    outputs={
        "remote_user": "what `id -un` printed on the VM",
        "host_key_fingerprint": "SHA256 fingerprint of the host key seen",
        "host_key_trust": "pinned or trusted-on-first-use",
    },
    repeatable=True,
    retryable=True,  # sshd may be restarting, or reading the file we just wrote
    changes=False,
    check=_verify_checks,
    warm=("paramiko",),
)
def verify(ctx: StepContext, params: VerifyParams) -> Outputs:
    """Log in over SSH with the new key and run `id -un`."""
    from recovery.ssh.diagnosis import rejected_by_key_lookup
    from recovery.ssh.keys import load_keypair
    from recovery.ssh.verifier import ParamikoVerifier, SSHTarget

    if not params.host:
        raise StepError(NO_HOST)
    if not params.host_key_fingerprint and not params.trust_first_use:
        raise HostKeyUnknown(f"{params.host}:{params.port}: {NO_PIN}")
    key = load_keypair(Path(params.private_key_path), params.passphrase)
    target = SSHTarget(
        host=params.host,
        port=params.port,
        user=params.user,
        host_key_fingerprint=params.host_key_fingerprint,
        trust_first_use=params.trust_first_use,
        jumps=_hops(params),
    )
    timeout = min(params.timeout or ctx.config.ssh.timeout, max(ctx.remaining(), 0.5))
    ctx.waiting_for(f"an SSH login with the new key at {params.host}:{params.port}")
    try:
        result = ParamikoVerifier().verify(target, key, passphrase=params.passphrase, timeout=timeout)
    except AuthRejected as exc:
        named = rejected_by_key_lookup(exc, ctx.report.authorized_keys.get("sshd"))
        if named is None:
            raise
        raise named from exc
    trust = "trusted on first use" if result.trusted_on_first_use else "pinned"
    if result.trusted_on_first_use:
        ctx.report.notes.append(f"host key {result.host_key_fingerprint} was trusted on first use, not pinned")
    ctx.report.proof = {
        "host": params.host,
        "port": params.port,
        "remote_user": result.remote_user,
        "key_fingerprint": result.key_fingerprint,
        "host_key_fingerprint": result.host_key_fingerprint,
        "host_key_type": result.host_key_type,
        "host_key_trust": trust,
        "seconds": round(result.seconds, 3),
        **({"jumps": [hop.where for hop in target.jumps]} if target.jumps else {}),
    }
    return {
        "remote_user": result.remote_user,
        "host_key_fingerprint": result.host_key_fingerprint,
        "host_key_trust": trust,
    }


@dataclass(frozen=True)
class RejectedParams:
    host: str = doc("SSH host name or address", check=_host)
    user: str = doc("user to try to log in as", check=checks.login_name)
    private_key_path: str = doc("the key that must no longer log in (a stolen or retired key)")
    port: int = doc("SSH port", default=22, check=checks.port)
    passphrase: Secret | None = doc("the private key's passphrase, if any", default=None)
    host_key_fingerprint: str | None = doc(
        "pinned host key, SHA256:... or MD5 hex; several separated by commas", default=None,
        check=checks.host_key_pins)
    trust_first_use: bool = doc("accept an unpinned host key (recorded in the report)", default=False)
    timeout: float | None = doc("connect/banner/auth timeout (default: ssh.timeout)", default=None)
    jump: str | None = doc("jump hosts, as ssh -J: user@host:port[,user@host:port]", default=None, check=check_jump)
    jump_keys: str | None = doc("jump host private keys, comma-separated in order", default=None)
    jump_host_keys: str | None = doc("jump host key pins, comma-separated in order", default=None,
                                     check=check_jump_pins)


@step(
    "ssh.rejected",
    params=RejectedParams,
    outputs={"result": "auth_rejected: the server refused the key (the only success)"},
    repeatable=True,
    retryable=False,  # a login that succeeds is an answer, not a hiccup
    changes=False,
    check=_verify_checks,
    warm=("paramiko",),
)
def rejected(ctx: StepContext, params: RejectedParams) -> Outputs:
    """Prove a key no longer logs in: the server must refuse it (auth_rejected), with its host key checked."""
    from recovery.ssh.keys import load_keypair
    from recovery.ssh.verifier import ParamikoVerifier, SSHTarget

    if not params.host_key_fingerprint and not params.trust_first_use:
        raise HostKeyUnknown(f"{params.host}:{params.port}: {NO_PIN}")
    try:
        hops = parse_jumps(params.jump or "", keys=params.jump_keys or "", host_keys=params.jump_host_keys or "",
                           default_user=params.user, trust_first_use=params.trust_first_use)
    except ValueError as exc:
        raise StepError(str(exc)) from exc
    key = load_keypair(Path(params.private_key_path), params.passphrase)
    target = SSHTarget(host=params.host, port=params.port, user=params.user,
                       host_key_fingerprint=params.host_key_fingerprint, trust_first_use=params.trust_first_use,
                       jumps=hops)
    timeout = min(params.timeout or ctx.config.ssh.timeout, max(ctx.remaining(), 0.5))
    ctx.waiting_for(f"an SSH login with the retired key at {params.host}:{params.port}, which must be refused")
    try:
        result = ParamikoVerifier().verify(target, key, passphrase=params.passphrase, timeout=timeout)
    except AuthRejected:
        ctx.report.notes.append(
            f"the retired key {key.sha256} is refused by {params.host}:{params.port} (auth_rejected)"
        )
        return {"result": "auth_rejected"}
    raise StepError(
        f"the key {key.sha256} still logs in to {params.host}:{params.port} as {result.remote_user}: sshd reads keys "
        "from more than ~/.ssh/authorized_keys (AuthorizedKeysFile, AuthorizedKeysCommand, a certificate authority)"
    )
