"""agent.install: the key installed through the VM's guest agent, with no console at all.

The same install script the consoles type (`recovery.guest.build_install_script`) runs as
the user (`recovery.guest.as_user_argv`: setpriv from the user's /etc/passwd line, else
`runuser -u USER -- /bin/sh`; the script on stdin through `guest-exec`), so the
files end up owned by the user and the facts come back in the captured output exactly as on
a serial console. Nothing is typed, nothing is rebooted, no password is touched.

Where the agent blocks `guest-exec` (RHEL-family guests), the agent's own
`guest-ssh-add-authorized-keys` adds the key instead. qemu-ga 7.2 writes that file without a
final newline, so a later plain `>>` append would glue two keys into one broken line: the
newline is added through `guest-file-*` where the agent allows it, and the report says so
where it does not.
"""

from __future__ import annotations

import hashlib
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from recovery.agent import GuestAgent
from recovery.engine import checks
from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.engine.templating import Unknown
from recovery.errors import AgentError, GuestCommandError, KeyGenerationError
from recovery.safety.redact import Secret, Text, scrub_all

NO_AGENT = (
    "no guest agent to talk to: give -e agent=unix:///path/to/qga.sock (QEMU's agent socket), "
    "libvirt://[URI/]DOMAIN or proxmox://HOST/NODE/VMID (or set RECOVERY_AGENT)"
)

PROXMOX_NEEDS_CREDENTIAL = (
    "with.token: a proxmox:// agent needs an API token (USER@REALM!NAME=SECRET): set RECOVERY_AGENT_TOKEN or "
    "pass --secret agent_token=@FILE"
)


def _agent_url(value: Text) -> str | None:
    from recovery.agent import agent_url_problem

    return agent_url_problem(value) if value else None  # an empty one: the step's check says it, once


def _agent_given(values: Mapping[str, object], config: Config) -> list[str]:
    from recovery.safety.redact import reveal

    agent, token = values.get("agent"), values.get("token")
    if isinstance(agent, Unknown):
        return []
    if not agent:
        return [NO_AGENT]
    if token is None and isinstance(agent, (str, Secret)) and reveal(agent).startswith("proxmox://"):
        return [PROXMOX_NEEDS_CREDENTIAL]
    return []


@dataclass(frozen=True)
class AgentInstallParams:
    # Null is accepted here so that a missing URL gets the message above, not a type error.
    agent: Text | None = doc(
        "the VM's guest agent: unix:///path/to/qga.sock, libvirt://[URI/]DOMAIN or proxmox://HOST[:PORT]/NODE/VMID",
        check=_agent_url)
    user: str = doc("the VM user whose authorized_keys gets the key", check=checks.login_name)
    key: str = doc("the public key line to add", check=checks.public_key)
    token: Secret | None = doc("Proxmox API token USER@REALM!NAME=SECRET (from secrets.*); the other agents ignore it",
                               default=None)
    timeout: float | None = doc("seconds for the script to finish (default: console.command_timeout)",
                                default=None)
    facts: bool = doc(
        "false: the script reports no facts (7 fewer processes: ~0.6 s less on an emulated guest); its exit "
        "status, which the agent returns, still says whether the key went in", default=True)


def preview(params: AgentInstallParams) -> list[str]:
    """The command the agent would run and the script on its stdin; the nonce and key differ on a real run."""
    from recovery.agent import describe_agent
    from recovery.guest import USER_PATH, as_user_argv, build_install_script
    from recovery.safety.redact import reveal
    from recovery.steps.authorized_keys import preview_key

    key = preview_key(params.key)
    script = build_install_script(key, sha256=hashlib.sha256(f"{key}\n".encode()).hexdigest(), nonce="0" * 8,
                                  facts=params.facts)
    where = describe_agent(reveal(params.agent)) if params.agent else "<agent>"
    return [f"guest-exec through {where}: {shlex.join(as_user_argv(params.user))} <<script", USER_PATH,
            *script.masked().splitlines()]


@step(
    "agent.install",
    params=AgentInstallParams,
    outputs={
        "added": "true if the key was appended, false if it was already there",
        "backup": "path of the backup of authorized_keys on the VM, or null",
        "before_sha256": "sha256 of authorized_keys before (or 'absent'); null on the guest-ssh route",
        "after_sha256": "sha256 of authorized_keys after; null on the guest-ssh route",
        "method": "guest-exec (the install script) or guest-ssh-add-authorized-keys (where guest-exec is blocked)",
    },
    repeatable=True,  # idempotent on the VM: the key is added only if absent
    preview=preview,
    check=_agent_given,
)
def install(ctx: StepContext, params: AgentInstallParams) -> Outputs:
    """Append the key to the user's authorized_keys through the VM's guest agent."""
    from recovery.agent import agent_for, describe_agent
    from recovery.guest import USER_PATH, as_user_argv, build_install_script, explain_exit, parse_report
    from recovery.safety.redact import reveal

    if not params.agent:
        raise AgentError(NO_AGENT)
    where = describe_agent(reveal(params.agent))
    agent = agent_for(params.agent, token=params.token)
    ctx.defer(f"closed the guest agent {where}", agent.close)
    timeout = min(params.timeout or ctx.config.console.command_timeout, ctx.remaining())
    nonce = secrets.token_hex(4)
    digest = hashlib.sha256(f"{params.key}\n".encode()).hexdigest()
    script = build_install_script(params.key, sha256=digest, nonce=nonce, facts=params.facts, run_tag=ctx.run_id)
    argv = as_user_argv(params.user)
    try:
        stdin = f"{USER_PATH}\n{script.raw()}".encode()
        result = ctx.overlap(lambda: agent.exec(argv, stdin=stdin, timeout=timeout))
    except AgentError as exc:
        if not (exc.blocked and exc.command == "guest-exec"):
            raise
        ctx.journal.event("agent_exec_blocked", agent=where, error=str(exc))
        return _add_through_ssh_command(ctx, agent, params, where, timeout, blocked=str(exc))
    output = result.stdout.decode("utf-8", "replace")
    errors = scrub_all(result.stderr.decode("utf-8", "replace").splitlines())
    ctx.journal.event("agent_exec", agent=where, argv=argv, exit_code=result.exit_code, signal=result.signal,
                      stdout=scrub_all(output.splitlines()), stderr=errors)
    if not params.facts:
        return _without_facts(ctx, params, result.exit_code, where, errors)
    try:
        facts = parse_report(output, nonce)
    except GuestCommandError as exc:
        said = "; ".join(errors[-3:]) or "nothing on stderr"
        raise GuestCommandError(
            f"the guest agent of {where} ran /bin/sh as {params.user} (through setpriv, runuser or su; the whole "
            "command is in the journal), but the install script reported nothing "
            f"(exit {result.exit_code}, stderr: {said}): is {params.user!r} a user on the VM, and does it "
            "have /bin/sh, and setpriv or runuser?", transcript_tail=errors,
        ) from exc
    if result.exit_code != 0:
        raise GuestCommandError(
            f"the install script run through the guest agent of {where} failed (exit {result.exit_code}): "
            f"{explain_exit(result.exit_code) if result.exit_code is not None else 'killed by a signal'}",
            transcript_tail=[*scrub_all(output.splitlines()), *errors],
        )
    ctx.report.notes.append(
        f"route: the guest agent ({where}) ran the install script as {params.user} through guest-exec; "
        "nothing was typed, nothing rebooted, no password touched")
    ctx.report.authorized_keys = {"before": facts.before_summary(), "after": facts.after_summary()}
    if (sshd := facts.sshd_summary()) is not None:
        ctx.report.authorized_keys["sshd"] = sshd
    if facts.ssh_dir_created:
        ctx.report.vm_changes.append("created ~/.ssh (0700)")
    if facts.backup:
        ctx.report.vm_changes.append(f"backed up authorized_keys to {facts.backup}")
    if facts.newline_added:
        ctx.report.vm_changes.append("added the missing final newline to authorized_keys")
    ctx.report.vm_changes.append(
        "appended the new key to ~/.ssh/authorized_keys" if facts.added
        else "the new key was already in authorized_keys")
    ctx.report.vm_changes.append(f"key checksum on the VM: {facts.checksum}")
    return {
        "added": facts.added,
        "backup": facts.backup,
        "before_sha256": facts.before_sha256,
        "after_sha256": facts.after_sha256,
        "method": "guest-exec",
    }


def _without_facts(
    ctx: StepContext, params: AgentInstallParams, exit_code: int | None, where: str, errors: list[str]
) -> Outputs:
    """The script's exit status alone: the agent returns it, unlike a console that shows no text."""
    from recovery.guest import explain_exit

    if exit_code != 0:
        said = "; ".join(errors[-3:]) or "nothing on stderr"
        raise GuestCommandError(
            f"the install script run through the guest agent of {where} failed (exit {exit_code}, stderr: {said}): "
            f"{explain_exit(exit_code) if exit_code is not None else 'killed by a signal'}", transcript_tail=errors)
    ctx.report.notes.append(
        f"route: the guest agent ({where}) ran the install script as {params.user} through guest-exec, without "
        "facts; nothing was typed, nothing rebooted, no password touched")
    ctx.report.vm_changes.append("the key install script exited 0 (no facts asked for): proven by the SSH login")
    return {"added": None, "backup": None, "before_sha256": None, "after_sha256": None, "method": "guest-exec"}


def _add_through_ssh_command(
    ctx: StepContext, guest: GuestAgent, params: AgentInstallParams, where: str, timeout: float, *, blocked: str
) -> Outputs:
    """guest-ssh-add-authorized-keys where guest-exec is blocked, read back, and the final newline fixed."""
    before = guest.get_authorized_keys(params.user, timeout=timeout)
    present = params.key in before
    if not present:
        guest.add_authorized_keys(params.user, [params.key], timeout=timeout)
    after = guest.get_authorized_keys(params.user, timeout=timeout)
    if params.key not in after:
        raise AgentError(
            f"the guest agent of {where} accepted the key for {params.user}, but guest-ssh-get-authorized-keys "
            "does not show it: the agent wrote elsewhere than it reads, or another writer replaced the file",
            command="guest-ssh-get-authorized-keys")
    lost = [key for key in before if key not in after]
    if lost:
        raise AgentError(
            f"the guest agent of {where} dropped {len(lost)} key(s) from {params.user}'s authorized_keys while "
            "adding the new one; restore them from the VM's backups", command="guest-ssh-add-authorized-keys")
    newline = guest.append_newline_if_missing(params.user, timeout=timeout)
    ctx.report.notes.append(
        f"route: the guest agent ({where}) blocks guest-exec ({blocked}); the key went in through "
        "guest-ssh-add-authorized-keys; nothing was typed, nothing rebooted, no password touched")
    ctx.report.authorized_keys = {"before": _summary(before), "after": _summary(after)}
    ctx.report.vm_changes.append(
        "the new key was already in authorized_keys" if present
        else "added the new key with guest-ssh-add-authorized-keys (qemu-ga writes the file with the user's "
             "owner and modes)")
    if newline is True:
        ctx.report.vm_changes.append("added the final newline qemu-ga leaves out, through guest-file-*")
    elif newline is None:
        ctx.report.notes.append(
            "authorized_keys may now end without a newline (qemu-ga writes it so) and the agent blocks "
            "guest-file-*: a later plain `echo KEY >> authorized_keys` would glue two keys together; "
            "recovery's own install script adds the newline first")
    return {"added": not present, "backup": None, "before_sha256": None, "after_sha256": None,
            "method": "guest-ssh-add-authorized-keys"}


def _summary(keys: list[str]) -> dict[str, object]:
    """The report's authorized_keys snapshot from the key lines the agent read (no checksum, no modes)."""
    from recovery.ssh.keys import fingerprint_sha256

    prints = []
    for line in keys:
        try:
            prints.append(f"{fingerprint_sha256(line)} {line.split(' ', 2)[2] if line.count(' ') >= 2 else ''}".strip())
        except KeyGenerationError:
            prints.append("(a line that is not a key)")
    return {"sha256": "not read (guest-ssh route)", "lines": len(keys), "mode": None, "dir_mode": None,
            "keys": prints}
