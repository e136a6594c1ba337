"""authorized_keys.install: the guest-side change, typed into the console."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from recovery.context import StepContext
from recovery.errors import GuestCommandError, JournalError, KeyGenerationError
from recovery.redact import Secret
from recovery.registry import Outputs, doc, step


def _public_key(value: str) -> str | None:
    from recovery.keys import parse_public_line

    try:
        parse_public_line(value)
    except KeyGenerationError as exc:
        return str(exc)
    return None


def _download_url(value: Secret) -> str | None:
    if not value.reveal().startswith(("http://", "https://")):
        return f"{value} is not an http:// or https:// URL the VM could download from"
    return None


@dataclass(frozen=True)
class InstallParams:
    key: str = doc("the public key line to add", check=_public_key)
    url: Secret | None = doc("download the key from this URL instead of typing it (publish.* output)", default=None,
                             check=_download_url)
    sha256: str | None = doc("expected sha256 of the key line plus newline (publish.* output)", default=None)
    timeout: float | None = doc("seconds for the command to finish (default: console.command_timeout)", default=None)
    facts: bool | None = doc(
        "true: the command prints facts for the report; false: a command less than half as long without them, for a "
        "console that shows no text (VNC); default: whether the console shows text", default=None)


def _script(
    params: InstallParams, nonce: str, *, facts: bool, run_tag: str | None = None
) -> tuple[list[str | Secret], str]:
    from recovery.guest import build_install_script, heredoc_delimiter
    from recovery.steps.publish import key_bytes

    expected = params.sha256 or hashlib.sha256(key_bytes(params.key)).hexdigest()
    script = build_install_script(
        params.key, sha256=expected, nonce=nonce, url=params.url, facts=facts, run_tag=run_tag
    )
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
    lines, delimiter = _script(stand_in, nonce, facts=params.facts is not False)
    return [str(line) for line in heredoc_command(lines, delimiter=delimiter, nonce=nonce)]


def _keep_typed(ctx: StepContext, lines: list[str]) -> None:
    """What was typed (masked) goes into the journal, and the report links it: ~90 lines do not belong in a ticket."""
    name = f"typed-{ctx.step_id or 'install'}.txt"
    try:
        ctx.journal.write_text(name, "\n".join(lines) + "\n")
    except JournalError as exc:  # the VM has changed already: the run goes on, and says what is missing
        ctx.report.notes.append(f"what was typed could not be kept in the journal: {exc}")
        return
    ctx.report.typed.append(str(ctx.journal.path(name)))


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
    facts = params.facts if params.facts is not None else session.channel.has_output
    try:
        lines, delimiter = _script(params, nonce, facts=facts, run_tag=ctx.run_id)  # one backup per run
    except ValueError as exc:  # a URL or checksum that cannot be typed safely
        raise GuestCommandError(f"cannot build the command to type into the console: {exc}") from exc
    timeout = min(params.timeout or ctx.config.console.command_timeout, ctx.remaining())
    ctx.waiting_for("the install command to finish and print its marker")
    result = session.run_script(lines, delimiter=delimiter, nonce=nonce, timeout=timeout)
    _keep_typed(ctx, session.typed)
    session.typed.clear()
    if result.status not in (None, 0):
        raise GuestCommandError(
            f"the command typed into the VM failed (exit {result.status}): {explain_exit(result.status)}",
            transcript_tail=session.tail(),
        )
    if result.status is None or not facts:  # the script checks itself; the SSH login proves it
        from recovery.steps.console import screenshot

        screenshot(ctx, "after-install")
        ctx.report.vm_changes.append(
            "typed the key install command; its result was not read back (VNC): proven by the SSH login"
            if result.status is None
            else "the key install command exited 0 (no facts asked for): proven by the SSH login"
        )
        return {"added": None, "backup": None, "before_sha256": None, "after_sha256": None}
    facts_seen = parse_report(result.output, nonce)
    ctx.report.authorized_keys = {"before": facts_seen.before_summary(), "after": facts_seen.after_summary()}
    if (sshd := facts_seen.sshd_summary()) is not None:
        ctx.report.authorized_keys["sshd"] = sshd  # ssh.verify names a key sshd never reads (diagnosis.key_lookup)
    if facts_seen.ssh_dir_created:
        ctx.report.vm_changes.append("created ~/.ssh (0700)")
    if facts_seen.backup:
        ctx.report.vm_changes.append(f"backed up authorized_keys to {facts_seen.backup}")
    ctx.report.vm_changes.append(
        "appended the new key to ~/.ssh/authorized_keys"
        if facts_seen.added
        else "the new key was already in authorized_keys"
    )
    ctx.report.vm_changes.append(f"key checksum on the VM: {facts_seen.checksum}")
    return {
        "added": facts_seen.added,
        "backup": facts_seen.backup,
        "before_sha256": facts_seen.before_sha256,
        "after_sha256": facts_seen.after_sha256,
    }
