"""authorized_keys.install: the guest-side change, typed into the console."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from recovery.context import StepContext
from recovery.errors import GuestCommandError, KeyGenerationError
from recovery.redact import Secret
from recovery.registry import Outputs, doc, step


@dataclass(frozen=True)
class InstallParams:
    key: str = doc("the public key line to add")
    url: Secret | None = doc("download the key from this URL instead of typing it (publish.* output)", default=None)
    sha256: str | None = doc("expected sha256 of the key line plus newline (publish.* output)", default=None)
    timeout: float | None = doc("seconds for the command to finish (default: console.command_timeout)", default=None)


def _script(params: InstallParams, nonce: str) -> tuple[list[str | Secret], str]:
    from recovery.guest import build_install_script, heredoc_delimiter
    from recovery.steps.publish import key_bytes

    expected = params.sha256 or hashlib.sha256(key_bytes(params.key)).hexdigest()
    script = build_install_script(params.key, sha256=expected, nonce=nonce, url=params.url)
    return list(script.lines), heredoc_delimiter(nonce)


# A dry run has no key yet: show the real script around a stand-in key of the same shape.
_STAND_IN_BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(32)
PREVIEW_KEY = f"ssh-ed25519 {base64.b64encode(_STAND_IN_BLOB).decode()} new-key-from-an-earlier-step"
PREVIEW_URL = Secret("https://published.invalid/new-key", "<URL from the publish step>")


def preview(params: InstallParams) -> list[str]:
    """The lines that would be typed, masked. The nonce, and a key not yet made, differ on a real run."""
    from recovery.keys import parse_public_line

    try:
        parse_public_line(params.key)
        key = params.key
    except KeyGenerationError:
        key = PREVIEW_KEY
    url = params.url
    if url is not None and not url.reveal().startswith(("http://", "https://")):
        url = PREVIEW_URL
    from recovery.console import heredoc_command

    stand_in = InstallParams(key=key, url=url, sha256=None if key != params.key else params.sha256)
    nonce = "0" * 8
    lines, delimiter = _script(stand_in, nonce)
    return [str(line) for line in heredoc_command(lines, delimiter=delimiter, nonce=nonce)]


@step(
    "authorized_keys.install",
    params=InstallParams,
    outputs={
        "added": "true if the key was appended, false if it was already there",
        "backup": "path of the backup of authorized_keys on the VM, or null",
        "before_sha256": "sha256 of authorized_keys before (or 'absent')",
        "after_sha256": "sha256 of authorized_keys after",
    },
    repeatable=True,  # idempotent on the VM: the key is appended only if absent
    preview=preview,
)
def install(ctx: StepContext, params: InstallParams) -> Outputs:
    """Append the key to ~/.ssh/authorized_keys without losing a byte of what is there."""
    from recovery.guest import explain_exit, parse_report

    session = ctx.require_console()
    nonce = secrets.token_hex(4)
    try:
        lines, delimiter = _script(params, nonce)
    except ValueError as exc:  # a URL or checksum that cannot be typed safely
        raise GuestCommandError(f"cannot build the command to type into the console: {exc}") from exc
    timeout = min(params.timeout or ctx.config.console.command_timeout, ctx.remaining())
    result = session.run_script(lines, delimiter=delimiter, nonce=nonce, timeout=timeout)
    ctx.report.typed.extend(session.typed)
    session.typed.clear()
    if result.status is None:  # a blind console (VNC): the script checks itself; SSH proves it
        from recovery.steps.console import screenshot

        screenshot(ctx, "after-install")
        ctx.report.vm_changes.append("typed the key install command; its result was not read back (VNC): "
                                     "proven by the SSH login")
        return {"added": None, "backup": None, "before_sha256": None, "after_sha256": None}
    facts = parse_report(result.output, nonce)
    if result.status != 0:
        raise GuestCommandError(
            f"the command typed into the VM failed (exit {result.status}): {explain_exit(result.status)}",
            transcript_tail=session.tail(),
        )
    ctx.report.authorized_keys = {"before": facts.before_summary(), "after": facts.after_summary()}
    if facts.ssh_dir_created:
        ctx.report.vm_changes.append("created ~/.ssh (0700)")
    if facts.backup:
        ctx.report.vm_changes.append(f"backed up authorized_keys to {facts.backup}")
    ctx.report.vm_changes.append(
        "appended the new key to ~/.ssh/authorized_keys"
        if facts.added
        else "the new key was already in authorized_keys"
    )
    ctx.report.vm_changes.append(f"key checksum on the VM: {facts.checksum}")
    return {
        "added": facts.added,
        "backup": facts.backup,
        "before_sha256": facts.before_sha256,
        "after_sha256": facts.after_sha256,
    }
