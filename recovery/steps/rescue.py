"""rescue.*: Nova rescue mode, for a VM nobody can log in to: the key goes in from a rescue system.

`rescue.find_image` finds the rescue image by ID or unique name before anything changes;
`rescue.enter` reboots the server into a rescue image (`allow_reboot` is required: the pre-flight
refuses a run without it before anything changes) and gives its serial console URL;
`rescue.find_root` asks the rescue system which disk is the server's root (`recovery.rootdisk`:
never the rescue system's own, whatever the labels say); `rescue.install_key` mounts it and
installs the key (`recovery.guest.build_mounted_install_script`); `rescue.leave` logs out of the
rescue console, unrescues, waits for ACTIVE and, given an address, for sshd's banner. A playbook
declares `rescue.leave` twice: as the step after the install, and as the cleanup of
`rescue.enter`, so a failure or Ctrl-C anywhere after the rescue still brings the server back
(`rescue.leave` does nothing to a server that is not in RESCUE).
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from recovery.cloud import Server
from recovery.engine import checks
from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.engine.templating import Unknown
from recovery.errors import CloudError, GuestCommandError, StepError
from recovery.steps.cloud import cloud_named

POLL = 1.0
NO_REBOOT = (
    "rescue mode reboots the server (into the rescue image, then back to its own disk): give "
    "-e allow_reboot=true to allow it"
)
NO_IMAGE = (
    "no rescue image: give -e rescue_image=IMAGE (its ID, or its name when no other image has it), "
    "an image whose console login you know (its password as the secret rescue_password)"
)


def _given(image: object) -> list[str]:
    """The image parameter is given (a value not known yet is checked when it is)."""
    if isinstance(image, Unknown) or (isinstance(image, str) and image.strip()):
        return []
    return [NO_IMAGE]


def _enter_checks(values: Mapping[str, object], config: Config) -> list[str]:
    allow = values.get("allow_reboot")
    problems = [NO_REBOOT] if not isinstance(allow, Unknown) and allow is not True else []
    return problems + _given(values.get("image")) + cloud_named(values, config)


def _image_checks(values: Mapping[str, object], config: Config) -> list[str]:
    return _given(values.get("image")) + cloud_named(values, config)


@dataclass(frozen=True)
class ImageParams:
    image: str = doc("the rescue image's ID, or its name when no other image has it")


@step(
    "rescue.find_image",
    params=ImageParams,
    outputs={"id": "the rescue image's ID", "name": "its name"},
    repeatable=True,
    retryable=True,
    changes=False,  # a lookup, before anything changes: a name nobody has, or several have, stops the run there
    check=_image_checks,
)
def find_image(ctx: StepContext, params: ImageParams) -> Outputs:
    """Find the rescue image as the openstack CLI does: by ID, else by a name only one image has."""
    given = params.image.strip()
    image = ctx.require_cloud().find_image(given)
    named = "" if given == image.id else f" (named {given!r})"
    ctx.report.notes.append(f"rescue image {image.id}{named}, {image.status or 'status unknown'}")
    return {"id": image.id, "name": image.name}


@dataclass(frozen=True)
class EnterParams:
    server: str = doc("server ID (cloud.find_server output)")
    image: str = doc("the rescue image's ID (rescue.find_image output): one whose console login is known")
    allow_reboot: bool = doc("must be true: the server is rebooted into the rescue image and back", default=False)


def _wait_status(ctx: StepContext, server_id: str, wanted: str, what: str) -> Server:
    """Poll until the server's status is `wanted`; ERROR, or the step's deadline, is a failure."""
    cloud = ctx.require_cloud()
    ctx.waiting_for(what)
    while True:
        server = cloud.server_state(server_id)
        if server.status == wanted:
            return server
        if server.status == "ERROR":
            raise CloudError(f"server {server_id} went to ERROR while waiting for {wanted}: look at its fault "
                             f"(`openstack server show {server_id}`)")
        if ctx.remaining() <= POLL:
            raise StepError(f"server {server_id} is still {server.status}, not {wanted}, at the step's timeout")
        time.sleep(POLL)


@step(
    "rescue.enter",
    params=EnterParams,
    outputs={"console_url": "the rescue system's serial console URL (a secret: the token is in it)",
             "status": "RESCUE"},
    repeatable=True,  # a resumed run finds the server in RESCUE already and only asks for a fresh URL
    check=_enter_checks,
)
def enter(ctx: StepContext, params: EnterParams) -> Outputs:
    """Reboot the server into the rescue image (Nova rescue) and open the way to its console."""
    if not params.allow_reboot:
        raise StepError(NO_REBOOT)
    cloud = ctx.require_cloud()
    server = cloud.server_state(params.server)
    if server.status == "RESCUE":
        ctx.report.notes.append(f"server {server.name} was in RESCUE already: its rescue system is used as it is")
    else:
        began = time.monotonic()
        cloud.rescue(server, params.image.strip())
        ctx.report.vm_changes.append(f"rebooted server {server.name} into rescue image {params.image.strip()}")
        server = _wait_status(ctx, server.id, "RESCUE", "Nova to put the server in RESCUE")
        ctx.report.notes.append(f"server {server.name} in RESCUE after {time.monotonic() - began:.1f} s")
    return {"console_url": cloud.console_url(server, "serial"), "status": server.status}


@dataclass(frozen=True)
class WaitParams:
    timeout: float | None = doc("seconds for the rescue system to boot (default: the step's timeout)", default=None)


@step(
    "rescue.wait_console",
    params=WaitParams,
    outputs={"seconds": "how long the rescue system took to show a prompt"},
    repeatable=True,
)
def wait_console(ctx: StepContext, params: WaitParams) -> Outputs:
    """Wait for the rescue system to boot: a login or shell prompt on its console, Enter pressed now and then.

    Nova answers RESCUE when the rescue machine starts, not when its system is up; a login
    attempt before that would find no prompt.
    """
    from recovery.channels.dialogue import LOGIN_PROMPT, SHELL_PROMPT
    from recovery.errors import ChannelTimeout

    session = ctx.require_console()
    began = time.monotonic()
    deadline = began + min(params.timeout or ctx.remaining(), ctx.remaining())
    ctx.waiting_for("the rescue system to boot: a prompt on its console")
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ChannelTimeout(
                f"the rescue system showed no login prompt on its serial console in {time.monotonic() - began:.0f} s: "
                "does the rescue image run a getty on the serial port (ttyS0)?", transcript_tail=session.tail())
        try:
            session.expect({}, min(left, 10.0), prompts={"login prompt": LOGIN_PROMPT, "shell prompt": SHELL_PROMPT})
        except ChannelTimeout:
            session.send("\r", show="<Enter>")
            continue
        seconds = round(time.monotonic() - began, 1)
        ctx.report.notes.append(f"the rescue system's console showed a prompt after {seconds} s")
        return {"seconds": seconds}


@dataclass(frozen=True)
class FindParams:
    device: str | None = doc("the server's root device as the rescue system names it (/dev/vdb1); default: found",
                             default=None)
    timeout: float | None = doc("seconds for the probe (default: console.command_timeout)", default=None)


@step(
    "rescue.find_root",
    params=FindParams,
    outputs={"device": "the server's root device on the rescue system", "reason": "why that one",
             "rescue_disks": "the rescue system's own disks, left out"},
    repeatable=True,
)
def find_root(ctx: StepContext, params: FindParams) -> Outputs:
    """Find the server's own root disk from the rescue system (never the rescue disk, whatever its label)."""
    from recovery.guest import heredoc_delimiter
    from recovery.rootdisk import choose, parse_probe, probe_script

    session = ctx.require_console()
    nonce = secrets.token_hex(4)
    ctx.waiting_for("the disk probe on the rescue console")
    timeout = min(params.timeout or ctx.config.console.command_timeout, ctx.remaining())
    lines: list[str] = probe_script(nonce)
    result = session.run_script(list(lines), delimiter=heredoc_delimiter(nonce), nonce=nonce, timeout=timeout)
    session.typed.clear()
    if result.status not in (None, 0):
        raise GuestCommandError(f"the disk probe failed on the rescue console (exit {result.status})",
                                transcript_tail=session.tail())
    choice = choose(parse_probe(result.output, nonce), params.device)
    ctx.report.notes.append(f"the server's root on the rescue system: {choice.reason}")
    return {"device": choice.device.path, "reason": choice.reason, "rescue_disks": ",".join(choice.rescue_disks)}


@dataclass(frozen=True)
class InstallParams:
    key: str = doc("the public key line to add", check=checks.public_key)
    user: str = doc("the server's user whose authorized_keys gets the key", check=checks.login_name)
    device: str = doc("the server's root device (rescue.find_root output)")
    timeout: float | None = doc("seconds for the command (default: console.command_timeout)", default=None)


def _preview_install(params: InstallParams) -> list[str]:
    """The lines that would be typed; a key or device not known yet is shown by a stand-in of its shape."""
    import hashlib

    from recovery.channels.dialogue import heredoc_command
    from recovery.guest import build_mounted_install_script, heredoc_delimiter
    from recovery.steps.authorized_keys import preview_key

    key = preview_key(params.key)
    device = params.device if params.device.startswith("/dev/") else "/dev/vdb1"
    nonce = "0" * 8
    script = build_mounted_install_script(key, sha256=hashlib.sha256(f"{key}\n".encode()).hexdigest(), nonce=nonce,
                                          device=device, user=params.user)
    return [str(line) for line in heredoc_command(list(script.lines), delimiter=heredoc_delimiter(nonce), nonce=nonce)]


@step(
    "rescue.install_key",
    params=InstallParams,
    outputs={"uid": "the user's uid in the server's /etc/passwd", "gid": "their gid",
             "added": "true if the key was appended, false if it was already there",
             "backup": "the backup of authorized_keys on the server's disk, or null"},
    repeatable=True,  # appended only if absent; one backup per run
    preview=_preview_install,
)
def install_key(ctx: StepContext, params: InstallParams) -> Outputs:
    """Mount the server's root, add the key for the user (owner from its /etc/passwd), unmount."""
    import hashlib

    from recovery.guest import build_mounted_install_script, explain_mounted_exit, heredoc_delimiter, parse_report
    from recovery.steps.authorized_keys import _keep_typed

    session = ctx.require_console()
    nonce = secrets.token_hex(4)
    digest = hashlib.sha256(f"{params.key}\n".encode()).hexdigest()
    try:
        script = build_mounted_install_script(params.key, sha256=digest, nonce=nonce, device=params.device,
                                              user=params.user, run_tag=ctx.run_id)
    except ValueError as exc:
        raise GuestCommandError(f"cannot build the command to type into the rescue console: {exc}") from exc
    timeout = min(params.timeout or ctx.config.console.command_timeout, ctx.remaining())
    ctx.waiting_for("the install on the mounted disk to finish and print its marker")
    result = session.run_script(list(script.lines), delimiter=heredoc_delimiter(nonce), nonce=nonce, timeout=timeout)
    _keep_typed(ctx, session.typed)
    session.typed.clear()
    report = parse_report(result.output, nonce) if result.status is not None else None
    facts = dict(report.facts) if report else {}
    if facts.get("unmounted") == "no":
        ctx.report.notes.append(f"{params.device} could not be unmounted on the rescue system: unrescue reboots "
                                "away from it (the install synced first)")
    if result.status != 0:
        code = result.status if result.status is not None else -1
        raise GuestCommandError(
            f"the install on the server's disk {params.device} failed (exit {code}): {explain_mounted_exit(code)}",
            transcript_tail=session.tail(),
        )
    assert report is not None
    ctx.report.authorized_keys = {"before": report.before_summary(), "after": report.after_summary()}
    uid, gid = facts.get("uid"), facts.get("gid")
    ctx.report.vm_changes.append(f"mounted the server's disk {params.device} on the rescue system")
    if report.ssh_dir_created:
        ctx.report.vm_changes.append(f"created {facts.get('home')}/.ssh (0700, {uid}:{gid})")
    if report.backup:
        on_server = report.backup.removeprefix(f"/mnt/recovery-{nonce}")
        ctx.report.vm_changes.append(f"backed up authorized_keys to {on_server} (on the server's disk)")
    ctx.report.vm_changes.append(
        f"appended the new key to {facts.get('home')}/.ssh/authorized_keys (owner {uid}:{gid} from the server's "
        "/etc/passwd)" if report.added else "the new key was already in authorized_keys")
    if report.selinux == "relabel-scheduled":
        ctx.report.vm_changes.append("SELinux is on: created /.autorelabel (the next boot relabels the disk)")
    ctx.report.vm_changes.append(f"synced and unmounted {params.device}")
    return {"uid": uid, "gid": gid, "added": report.added, "backup": report.backup}


@dataclass(frozen=True)
class LeaveParams:
    server: str = doc("server ID (cloud.find_server output)")
    ssh_host: str | None = doc("wait for sshd's banner here once ACTIVE (the server's own system is up)",
                               default=None)
    ssh_port: int = doc("SSH port", default=22, check=checks.port)


@step(
    "rescue.leave",
    params=LeaveParams,
    outputs={"status": "the server's status afterwards", "unrescued": "true if this step unrescued it"},
    repeatable=True,
    retryable=True,
    check=cloud_named,
)
def leave(ctx: StepContext, params: LeaveParams) -> Outputs:
    """Log out of the rescue console, unrescue (if in RESCUE), wait for ACTIVE and for sshd."""
    if ctx.shared.console is not None:
        session, ctx.shared.console = ctx.shared.console, None
        try:
            session.logout()
        except StepError as exc:  # the rescue system goes away with the unrescue either way
            ctx.report.notes.append(f"logging out of the rescue console failed ({exc}); the unrescue ends it")
        session.channel.close()
    cloud = ctx.require_cloud()
    server = cloud.server_state(params.server)
    deadline = time.monotonic() + min(ctx.remaining(), 120.0)
    while server.status not in ("RESCUE", "ACTIVE", "ERROR") and time.monotonic() < deadline:
        time.sleep(POLL)  # a rescue still under way (Ctrl-C right after asking) ends first
        server = cloud.server_state(params.server)
    unrescued = False
    if server.status == "RESCUE":
        began = time.monotonic()
        cloud.unrescue(server)
        unrescued = True
        ctx.report.vm_changes.append(f"unrescued server {server.name}: it boots from its own disk again")
        server = _wait_status(ctx, server.id, "ACTIVE", "Nova to make the server ACTIVE again")
        if params.ssh_host:
            _wait_banner(ctx, params.ssh_host, params.ssh_port)
        ctx.report.notes.append(f"server {server.name} back from rescue in {time.monotonic() - began:.1f} s")
    return {"status": server.status, "unrescued": unrescued}


def _wait_banner(ctx: StepContext, host: str, port: int) -> None:
    """Until sshd greets on host:port: the server's own system has booted."""
    ctx.waiting_for(f"the server to boot: sshd's banner at {host}:{port}")
    while True:
        try:
            with socket.create_connection((host, port), timeout=3) as sock:
                sock.settimeout(5)
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if ctx.remaining() <= POLL:
            raise StepError(f"the server did not answer SSH at {host}:{port} after the unrescue, by the step's "
                            "timeout: look at its console log (`openstack console log show`)")
        time.sleep(POLL)
