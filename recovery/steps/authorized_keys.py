"""authorized_keys.install: the guest-side change, typed into the console."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from recovery.engine import checks
from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.engine.templating import Unknown
from recovery.errors import GuestCommandError, JournalError, KeyGenerationError
from recovery.safety.redact import Secret
from recovery.ssh.jump import check_jump, check_jump_lists, check_jump_pins

if TYPE_CHECKING:
    from recovery.channels.dialogue import CommandResult
    from recovery.guest import GuestScript, RemoveReport, RemoveSpec
    from recovery.ssh.key_files import KeySources
    from recovery.ssh.keys import KeyPair
    from recovery.ssh.verifier import SSHTarget


def _download_url(value: Secret) -> str | None:
    if not value.reveal().startswith(("http://", "https://")):
        return f"{value} is not an http:// or https:// URL the VM could download from"
    return None


@dataclass(frozen=True)
class InstallParams:
    key: str = doc("the public key line to add", check=checks.public_key)
    url: Secret | None = doc("download the key from this URL instead of typing it (publish.* output)", default=None,
                             check=_download_url)
    sha256: str | None = doc("expected sha256 of the key line plus newline (publish.* output)", default=None)
    timeout: float | None = doc("seconds for the command to finish (default: console.command_timeout)", default=None)
    facts: bool | Literal["compact"] | None = doc(
        "true: the command prints facts for the report; false: a command less than half as long without them, for a "
        "console that shows no text; compact: the short command plus the facts a report needs (backup, added, "
        "checksum, exit) where the console shows text (a VNC screen that is read), none where it does not; "
        "default: whether the console shows text", default=None)
    as_user: str | None = doc(
        "run the command as this user, where the console's shell is another user's (root: runuser; a sudoer: "
        "sudo -n), so what it creates is the user's; default: as the console's user", default=None,
        check=checks.login_name)
    lock_password: str | None = doc(
        "with as_user, also lock this user's password (the one cloud.set_password set) in the same command, after "
        "the install whatever its result: one round trip less than cloud.lock_password typing it alone. Only where "
        "the console shows text, so the lock's result can be read (else cloud.lock_password types it)",
        default=None, check=checks.login_name)


def _script(
    params: InstallParams, nonce: str, *, facts: bool | Literal["compact"], run_tag: str | None = None,
    lock: str | None = None,
) -> tuple[list[str | Secret], str]:
    from recovery.guest import build_install_script, heredoc_delimiter, run_as
    from recovery.steps.publish import key_bytes

    expected = params.sha256 or hashlib.sha256(key_bytes(params.key)).hexdigest()
    script = build_install_script(
        params.key, sha256=expected, nonce=nonce, url=params.url, facts=facts, run_tag=run_tag
    )
    if params.as_user:
        script = run_as(script, params.as_user, lock=lock)
    return list(script.lines), heredoc_delimiter(nonce)


# A dry run has no key yet: show the real script around a stand-in key of the same shape.
_STAND_IN_BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(32)
PREVIEW_KEY = f"ssh-ed25519 {base64.b64encode(_STAND_IN_BLOB).decode()} new-key-from-an-earlier-step"
PREVIEW_URL = Secret("https://published.invalid/new-key", "<URL from the publish step>")


def preview_key(key: str) -> str:
    """`key` where it is a public key already, else the stand-in of its shape (made by an earlier step)."""
    return key if checks.public_key(key) is None else PREVIEW_KEY


def preview(params: InstallParams) -> list[str]:
    """The lines that would be typed, masked. The nonce, and a key or lock user not known yet, differ on a real run."""
    key = preview_key(params.key)
    from recovery.guest import plain_user

    lock = params.lock_password
    if lock is not None and not plain_user(lock):
        lock = "root"  # named by cloud.set_password at run time (os_admin_user, else root)
    url = params.url
    if url is not None and not url.reveal().startswith(("http://", "https://")):
        url = PREVIEW_URL
    from recovery.channels.dialogue import heredoc_command

    stand_in = InstallParams(key=key, url=url, sha256=None if key != params.key else params.sha256,
                             as_user=params.as_user)
    nonce = "0" * 8
    lines, delimiter = _script(stand_in, nonce, facts=True if params.facts is None else params.facts, lock=lock)
    return [str(line) for line in heredoc_command(lines, delimiter=delimiter, nonce=nonce)]


def _keep_typed(ctx: StepContext, lines: list[str]) -> None:
    """What was typed (masked) goes into the journal, and the report links it: ~90 lines do not belong in a ticket."""
    name = f"typed-{ctx.step_id or 'install'}.txt"
    try:
        ctx.journal.write_text(name, "\n".join(lines) + "\n")
    except JournalError as exc:  # the VM has changed already: the run goes on, and says what is missing
        ctx.report.notes.append(f"what was typed could not be kept in the journal: {exc}")
        return
    path = str(ctx.journal.path(name))
    if path not in ctx.report.typed:  # a step that types several scripts rewrites its one file
        ctx.report.typed.append(path)


@step(
    "authorized_keys.install",
    params=InstallParams,
    outputs={
        "added": "true if the key was appended, false if it was already there",
        "backup": "path of the backup of authorized_keys on the VM, or null",
        "before_sha256": "sha256 of authorized_keys before (or 'absent')",
        "after_sha256": "sha256 of authorized_keys after",
        "password_lock": "with lock_password, the lock's status in the same command (recovery.guest.LockExitCode: "
                         "0 locked), or null when it was not asked for or not read (cloud.lock_password types it then)",
    },
    repeatable=True,  # idempotent on the VM: the key is appended only if absent
    preview=preview,
)
def install(ctx: StepContext, params: InstallParams) -> Outputs:
    """Append the key to ~/.ssh/authorized_keys without losing a byte of what is there."""
    from recovery.guest import explain_exit, parse_lock_status, parse_report

    session = ctx.require_console()
    nonce = secrets.token_hex(4)
    facts: bool | Literal["compact"] = session.channel.has_output if params.facts is None else params.facts
    if facts == "compact" and not session.channel.has_output:
        facts = False  # nobody could read them
    # A lock typed blind would be typed again by cloud.lock_password: only where its status can be read.
    lock = params.lock_password if params.as_user and session.channel.has_output else None
    try:
        lines, delimiter = _script(params, nonce, facts=facts, run_tag=ctx.run_id, lock=lock)  # one backup per run
    except ValueError as exc:  # a URL or checksum that cannot be typed safely
        raise GuestCommandError(f"cannot build the command to type into the console: {exc}") from exc
    timeout = min(params.timeout or ctx.config.console.command_timeout, ctx.remaining())
    ctx.waiting_for("the install command to finish and print its marker")
    result = session.run_script(lines, delimiter=delimiter, nonce=nonce, timeout=timeout)
    _keep_typed(ctx, session.typed)
    session.typed.clear()
    from recovery.steps.console import screenshot

    screenshot(ctx, "after-install")  # a console with pixels (VNC) only: its evidence
    lock_status = None
    if lock is not None and result.status is not None:
        from recovery.steps.cloud import password_lock_seen

        lock_status = parse_lock_status(result.output, nonce)
        password_lock_seen(ctx, lock, lock_status)  # before a failed install's error: the lock happened
    if result.status not in (None, 0):
        raise GuestCommandError(
            f"the command typed into the VM failed (exit {result.status}): {explain_exit(result.status)}",
            transcript_tail=session.tail(),
        )
    if result.status is None or facts is False:  # the script checks itself; the SSH login proves it
        ctx.report.vm_changes.append(
            "typed the key install command; its result was not read back (a VNC screen in a font no reader "
            "knows: typed blind): proven by the SSH login"
            if result.status is None
            else "the key install command exited 0 (no facts asked for): proven by the SSH login"
        )
        return {"added": None, "backup": None, "before_sha256": None, "after_sha256": None,
                "password_lock": lock_status}
    facts_seen = parse_report(result.output, nonce)
    if facts is True:  # the compact facts have no snapshots
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
        "password_lock": lock_status,
    }


# --- authorized_keys.remove ------------------------------------------------------------------------
# The guest-side rules live in recovery.guest (build_remove_script); this step picks the channel.


def _key_lines(value: str | None) -> str | None:
    from recovery.guest import key_blob

    for line in (value or "").splitlines():
        if line.strip():
            try:
                key_blob(line)
            except KeyGenerationError as exc:
                return str(exc)
    return None


def _fingerprint_list(value: str | None) -> str | None:
    from recovery.guest import normalize_fingerprint

    try:
        for item in (value or "").split(","):
            if item.strip():
                normalize_fingerprint(item)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class RemoveParams:
    keys: str | None = doc(
        "public key lines to remove, one per line: matched by the key itself, on any VM (busybox included)",
        default=None, check=_key_lines)
    fingerprints: str | None = doc(
        "SHA256:... or MD5 fingerprints to remove, comma-separated; the VM needs ssh-keygen for these (give keys "
        "where you can)", default=None, check=_fingerprint_list)
    lines: str | None = doc("exact authorized_keys lines to remove, one per line", default=None)
    comments: str | None = doc("remove the keys whose comment is exactly one of these, one per line", default=None)
    exclusive: bool = doc("keep ONLY the keys matched above and remove every other key", default=False)
    protect: str | None = doc(
        "public key lines the run proved to log in: the last of them is never removed (the SSH key used by "
        "via: ssh is protected anyway)", default=None, check=_key_lines)
    force: bool = doc("remove even the last key proven to log in", default=False)
    user: str | None = doc(
        "whose authorized_keys, when the channel runs as root (agent, boot loader, ssh as root); default: the "
        "logged-in user", default=None)
    via: Literal["console", "ssh"] = doc(
        "console: typed into the open console (serial or VNC); ssh: run over SSH with a key that works",
        default="console")
    host: str | None = doc("via ssh: SSH host name or address", default=None)
    port: int = doc("via ssh: SSH port", default=22, check=checks.port)
    ssh_user: str | None = doc("via ssh: the user to log in as (default: user)", default=None)
    private_key_path: str | None = doc("via ssh: a private key that logs in", default=None)
    passphrase: Secret | None = doc("via ssh: the private key's passphrase, if any", default=None)
    host_key_fingerprint: str | None = doc(
        "via ssh: pinned host key, SHA256:... or MD5; several separated by commas", default=None,
        check=checks.host_key_pins)
    trust_first_use: bool = doc("via ssh: accept an unpinned host key (recorded in the report)", default=False)
    jump: str | None = doc("via ssh: jump hosts, as ssh -J: user@host:port[,user@host:port]", default=None,
                           check=check_jump)
    jump_keys: str | None = doc("via ssh: jump host private keys, comma-separated in order (default: private_key_path)",
                                default=None)
    jump_host_keys: str | None = doc("via ssh: jump host key pins, comma-separated in order", default=None,
                                     check=check_jump_pins)
    timeout: float | None = doc("seconds for the command to finish (default: console.command_timeout)", default=None)
    facts: bool | None = doc(
        "false: no facts printed, for a console that shows no text (VNC); default: whether the channel shows text",
        default=None)


def _remove_check(values: Mapping[str, object], config: Config) -> list[str]:
    """Pre-flight across parameters: something to match, and what an SSH run needs."""
    if any(isinstance(value, Unknown) for value in values.values()):
        return []
    problems = []
    if not any(values.get(name) for name in ("keys", "fingerprints", "lines", "comments")):
        problems.append("nothing to remove: give keys, fingerprints, lines or comments")
    if values.get("via") == "ssh":
        if not values.get("host"):
            problems.append("via ssh needs host")
        if not values.get("private_key_path"):
            problems.append("via ssh needs private_key_path, a key that logs in")
        if not values.get("ssh_user") and not values.get("user"):
            problems.append("via ssh needs ssh_user (or user)")
        if not values.get("host_key_fingerprint") and not values.get("trust_first_use"):
            from recovery.steps.ssh import NO_PIN

            problems.append(NO_PIN)
        problems += check_jump_lists(values)
    return problems


def _split(value: str | None, separator: str | None = None) -> tuple[str, ...]:
    items = (value or "").split(separator) if separator else (value or "").splitlines()
    return tuple(item.strip() for item in items if item.strip())


def _remove_spec(params: RemoveParams, ctx: StepContext, login_blob: str | None) -> RemoveSpec:
    from recovery.guest import RemoveSpec, blob_fingerprints, key_blob

    blobs = tuple(key_blob(line) for line in _split(params.keys))
    protect = [key_blob(line) for line in _split(params.protect)]
    if login_blob is not None:
        protect.append(login_blob)
    proven = ctx.report.proof.get("key_fingerprint") if ctx.report.proof else None
    if not params.force and not params.exclusive and proven in {blob_fingerprints(blob)[0] for blob in blobs}:
        raise GuestCommandError(
            f"refusing to remove {proven}: it is the key this run proved to log in (ssh.verify); say force: true "
            "if that is really meant"
        )
    try:
        return RemoveSpec(
            blobs=blobs, fingerprints=_split(params.fingerprints, ","), lines=_split(params.lines),
            comments=_split(params.comments), exclusive=params.exclusive, protect=tuple(protect),
            force=params.force, user=params.user,
        )
    except ValueError as exc:
        raise GuestCommandError(f"cannot build the key removal command: {exc}") from exc


@step(
    "authorized_keys.remove",
    params=RemoveParams,
    outputs={
        "status": "removed, nothing-to-remove or absent (no authorized_keys), or null on a blind console",
        "removed": "SHA256 fingerprints of the key lines removed, comma-separated",
        "kept": "SHA256 fingerprints of the key lines kept, comma-separated",
        "backup": "path of the backup of authorized_keys on the VM, or null",
    },
    repeatable=True,  # removing what is gone already is a no-op
    check=_remove_check,
)
def remove(ctx: StepContext, params: RemoveParams) -> Outputs:
    """Remove keys (a stolen key), backup first, every other byte kept.

    From every file sshd reads the user's keys from (AuthorizedKeysFile: authorized_keys2,
    /etc/ssh/authorized_keys/%u), over SSH and on a console that shows text alike: a key left in one
    of them still logs in. A blind console can only be given ~/.ssh/authorized_keys: where sshd reads
    keys from cannot be read back there.
    """
    from recovery.guest import build_remove_script, heredoc_delimiter, key_blob

    timeout = min(params.timeout or ctx.config.console.command_timeout, ctx.remaining())
    if params.via == "ssh":
        from recovery.ssh.remote import remote_shell

        login_user = params.ssh_user or params.user or ""
        target, key = _ssh_login(params, login_user)
        spec = _remove_spec(params, ctx, key_blob(key.public_line) if params.user in (None, login_user) else None)
        ctx.waiting_for(f"the key removal over SSH at {params.host}:{params.port}")
        login_timeout = min(timeout, ctx.config.ssh.timeout)
        with remote_shell(target, key, passphrase=params.passphrase, timeout=login_timeout) as shell:

            def over_ssh(spec: RemoveSpec, nonce: str) -> tuple[int | None, str]:
                result = shell.run_script(build_remove_script(spec, nonce=nonce), timeout=timeout)
                return result.status, result.output

            def report_over_ssh(script: GuestScript) -> str:
                return shell.run_script(script, timeout=timeout).output

            sources = _sshd_key_sources(report_over_ssh, params.user or login_user)
            return _remove_with(ctx, over_ssh, spec, f"over SSH at {params.host}:{params.port}",
                                lambda output: output.splitlines()[-20:], sources)
    session = ctx.require_console()
    facts = params.facts if params.facts is not None else session.channel.has_output
    kept: list[str] = []  # every script this step typed, in order: one file in the journal

    def run_typed(script: GuestScript, waiting_for: str) -> CommandResult:
        ctx.waiting_for(waiting_for)
        try:
            return session.run_script(list(script.lines), delimiter=heredoc_delimiter(script.nonce),
                                      nonce=script.nonce, timeout=timeout)
        finally:
            kept.extend(session.typed)
            session.typed.clear()
            _keep_typed(ctx, kept)

    def typed(spec: RemoveSpec, nonce: str) -> tuple[int | None, str]:
        result = run_typed(build_remove_script(spec, nonce=nonce, facts=facts),
                           "the key removal command to finish and print its marker")
        return result.status, result.output

    spec = _remove_spec(params, ctx, None)
    if facts:
        def report_typed(script: GuestScript) -> str:
            return run_typed(script, "the report of where sshd reads the user's keys").output

        sources = _sshd_key_sources(report_typed, params.user or session.identity(timeout))
        return _remove_with(ctx, typed, spec, "typed into the VM", lambda output: session.tail(), sources)
    status, _ = typed(spec, secrets.token_hex(4))  # blind: the script checks itself; a login that must fail proves it
    if status not in (None, 0):
        from recovery.guest import explain_remove_exit

        raise GuestCommandError(
            f"the key removal command typed into the VM failed (exit {status}): {explain_remove_exit(status)}",
            transcript_tail=session.tail(),
        )
    ctx.report.vm_changes.append(
        "typed the key removal command; its result was not read back (blind console): prove it with a login "
        "that must fail"
    )
    return {"status": None, "removed": None, "kept": None, "backup": None}


RunRemoval = Callable[["RemoveSpec", str], tuple[int | None, str]]


def _sshd_key_sources(run: Callable[[GuestScript], str], user: str) -> KeySources:
    """Every file sshd reads `user`'s keys from (`recovery.ssh.key_files`); `run` runs the report script."""
    from recovery.guest import build_key_files_script, parse_key_files_report
    from recovery.ssh import key_files

    nonce = secrets.token_hex(4)
    output = run(build_key_files_script([user], nonce=nonce))
    try:
        return key_files.for_user(parse_key_files_report(output, nonce), user)
    except ValueError as exc:
        raise GuestCommandError(f"cannot tell where sshd reads {user}'s keys: {exc}") from exc


def _remove_with(ctx: StepContext, run: RunRemoval, spec: RemoveSpec, where: str,
                 tail: Callable[[str], list[str]], sources: KeySources | None = None) -> Outputs:
    """Remove from ~/.ssh/authorized_keys, or from every file in `sources` (each its own backup and read-back)."""
    import dataclasses

    from recovery.guest import explain_remove_exit, parse_remove_report

    reports: list[RemoveReport] = []
    for path in sources.files if sources is not None else (None,):
        file_spec = _protect_proven(ctx, run, dataclasses.replace(spec, file=path))
        nonce = secrets.token_hex(4)
        status, output = run(file_spec, nonce)
        if status != 0:
            raise GuestCommandError(
                f"the key removal {where}{f' from {path}' if path else ''} failed (exit {status}): "
                + (explain_remove_exit(status) if status is not None else "no status came back")
                + "".join(f"; already done: {report.file} {report.status}" for report in reports),
                transcript_tail=tail(output),
            )
        reports.append(parse_remove_report(output, nonce))
    return _removal_outputs(ctx, reports, sources)


def _protect_proven(ctx: StepContext, run: RunRemoval, spec: RemoveSpec) -> RemoveSpec:
    """Add the key ssh.verify proved (known by its fingerprint only) to the keys the script protects.

    A dry run lists every key line with its blob; the proven key's blob then guards it whatever matched
    it (a comment, a line, a fingerprint, exclusive). Skipped with force, or when nothing was proven.
    """
    import dataclasses

    from recovery.guest import parse_remove_report

    proven = ctx.report.proof.get("key_fingerprint") if ctx.report.proof else None
    if not proven or spec.force:
        return spec
    nonce = secrets.token_hex(4)
    status, output = run(dataclasses.replace(spec, dry_run=True), nonce)
    if status != 0:
        return spec  # the change itself fails the same way, and says why
    scan = parse_remove_report(output, nonce)
    blobs = [key.blob for key in (*scan.removed, *scan.kept) if key.sha256 == proven]
    return dataclasses.replace(spec, protect=tuple(dict.fromkeys((*spec.protect, *blobs))))


def _removal_outputs(ctx: StepContext, reports: Sequence[RemoveReport], sources: KeySources | None) -> Outputs:
    """One set of outputs for every file read: "removed" if any file changed, "absent" if none exists."""
    present = [report for report in reports if report.status != "absent"] or list(reports[:1])
    for report in present:
        if report.backup:
            ctx.report.vm_changes.append(f"backed up {report.file} to {report.backup}")
        ctx.report.vm_changes.append(
            f"removed {len(report.removed)} key line(s) from {report.file}: "
            + (", ".join(sorted({key.sha256 for key in report.removed})) or "none matched")
            if report.status == "removed"
            else f"no key line matched in {report.file} ({report.status}): nothing changed"
        )
    statuses = {report.status for report in present}
    status = next((word for word in ("removed", "nothing-to-remove") if word in statuses), present[0].status)
    summary: dict[str, object] = {
        "file": ", ".join(report.file or "?" for report in present),
        "status": status,
        "backup": ", ".join(report.backup for report in present if report.backup) or None,
        "removed": [f"{key.sha256} {key.comment}".rstrip() for report in present for key in report.removed],
        "kept": [f"{key.sha256} {key.comment}".rstrip() for report in present for key in report.kept],
    }
    if sources is not None:
        summary["files"] = [report.summary() for report in present]
        summary["sshd"] = sources.summary()
        if sources.command:
            ctx.report.vm_changes.append(
                f"keys also come from AuthorizedKeysCommand {sources.command}: revoke the key there")
    ctx.report.authorized_keys["removal"] = summary
    return {
        "status": status,
        "removed": ",".join(key.sha256 for report in present for key in report.removed),
        "kept": ",".join(key.sha256 for report in present for key in report.kept),
        "backup": summary["backup"],
    }


# --- authorized_keys.install_ssh --------------------------------------------------------------------
# The install script of authorized_keys.install, run over SSH with a key that still works: for a key
# rotation where the VM is still reachable (playbooks/replace-stolen-key.yaml).


@dataclass(frozen=True)
class InstallSSHParams:
    key: str = doc("the public key line to add", check=checks.public_key)
    host: str = doc("SSH host name or address")
    user: str = doc("the user to log in as; the key goes into this user's authorized_keys", check=checks.login_name)
    private_key_path: str = doc("a private key that logs in now (the one being replaced may do)")
    port: int = doc("SSH port", default=22, check=checks.port)
    passphrase: Secret | None = doc("the private key's passphrase, if any", default=None)
    host_key_fingerprint: str | None = doc(
        "pinned host key, SHA256:... or MD5; several separated by commas", default=None, check=checks.host_key_pins)
    trust_first_use: bool = doc("accept an unpinned host key (recorded in the report)", default=False)
    jump: str | None = doc("jump hosts, as ssh -J: user@host:port[,user@host:port]", default=None, check=check_jump)
    jump_keys: str | None = doc("jump host private keys, comma-separated in order (default: private_key_path)",
                                default=None)
    jump_host_keys: str | None = doc("jump host key pins, comma-separated in order", default=None,
                                     check=check_jump_pins)
    timeout: float | None = doc("seconds for the command to finish (default: console.command_timeout)", default=None)


def _install_ssh_check(values: Mapping[str, object], config: Config) -> list[str]:
    from recovery.steps.ssh import _pinned_or_trusted

    return _pinned_or_trusted(values, config) + check_jump_lists(values)


@step(
    "authorized_keys.install_ssh",
    params=InstallSSHParams,
    outputs={
        "added": "true if the key was appended, false if it was already there",
        "backup": "path of the backup of authorized_keys on the VM, or null",
    },
    repeatable=True,  # idempotent: the key is appended only if absent
    check=_install_ssh_check,
)
def install_ssh(ctx: StepContext, params: InstallSSHParams) -> Outputs:
    """Append the key to ~/.ssh/authorized_keys over SSH, with a key that still logs in."""
    from recovery.guest import build_install_script, explain_exit, parse_report
    from recovery.ssh.remote import remote_shell
    from recovery.steps.publish import key_bytes

    target, key = _ssh_login(params, params.user)
    nonce = secrets.token_hex(4)
    script = build_install_script(params.key, sha256=hashlib.sha256(key_bytes(params.key)).hexdigest(), nonce=nonce)
    timeout = min(params.timeout or ctx.config.console.command_timeout, ctx.remaining())
    ctx.waiting_for(f"the key install over SSH at {params.host}:{params.port}")
    with remote_shell(target, key, passphrase=params.passphrase, timeout=min(timeout, ctx.config.ssh.timeout)) as shell:
        result = shell.run_script(script, timeout=timeout)
    if result.status != 0:
        raise GuestCommandError(
            f"the key install over SSH at {params.host}:{params.port} failed (exit {result.status}): "
            f"{explain_exit(result.status)}",
            transcript_tail=result.output.splitlines()[-20:],
        )
    facts = parse_report(result.output, nonce)
    ctx.report.authorized_keys["install"] = {"before": facts.before_summary(), "after": facts.after_summary()}
    if facts.backup:
        ctx.report.vm_changes.append(f"backed up authorized_keys to {facts.backup}")
    ctx.report.vm_changes.append(
        "appended the new key to ~/.ssh/authorized_keys over SSH" if facts.added
        else "the new key was already in authorized_keys"
    )
    return {"added": facts.added, "backup": facts.backup}


def _ssh_login(params: InstallSSHParams | RemoveParams, login_user: str) -> tuple[SSHTarget, KeyPair]:
    """The SSH target (jump hosts included) and the working key a `via: ssh` step logs in with."""
    from recovery.errors import HostKeyUnknown, StepError
    from recovery.ssh.jump import parse_jumps
    from recovery.ssh.keys import load_keypair
    from recovery.ssh.verifier import SSHTarget
    from recovery.steps.ssh import NO_PIN

    if not params.host or not params.private_key_path or not login_user:
        raise StepError("an SSH step needs host, private_key_path and a user")
    if not params.host_key_fingerprint and not params.trust_first_use:
        raise HostKeyUnknown(f"{params.host}:{params.port}: {NO_PIN}")
    try:
        hops = parse_jumps(params.jump or "", keys=params.jump_keys or "", host_keys=params.jump_host_keys or "",
                           default_user=login_user, trust_first_use=params.trust_first_use)
    except ValueError as exc:
        raise StepError(str(exc)) from exc
    key = load_keypair(Path(params.private_key_path), params.passphrase)
    return SSHTarget(host=params.host, port=params.port, user=login_user,
                     host_key_fingerprint=params.host_key_fingerprint, trust_first_use=params.trust_first_use,
                     jumps=hops), key
