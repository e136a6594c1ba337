"""cloud.*: find the VM, get its console URL and host key, manage Nova key pairs.

Every step here talks to the cloud named by --cloud, OS_CLOUD, the config or an openrc,
through `recovery.cloud` (the only module that imports openstack). They are all
safe to retry on a transient cloud error (5xx, 409, a reset connection).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from recovery.cloud import NO_CLOUD, cloud_to_use, guest_agent_enabled
from recovery.engine import checks
from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step


def cloud_named(values: Mapping[str, object], config: Config) -> list[str]:
    """Pre-flight of every step that talks to the cloud: `StepContext.require_cloud` finds one, and it is configured."""
    name = cloud_to_use(config.cloud.name)
    if name is None:
        return [f"this step talks to a cloud, but {NO_CLOUD}"]
    from recovery.cloud import check_config

    problem = check_config(name)
    return [problem] if problem else []


@dataclass(frozen=True)
class FindParams:
    server: str = doc("server name or ID")
    network: str | None = doc("network whose fixed address to use when there is no floating one", default=None)


@step(
    "cloud.find_server",
    params=FindParams,
    outputs={
        "id": "server ID",
        "name": "server name",
        "status": "server status (ACTIVE)",
        "ssh_host": "the address to verify SSH on: floating first, else fixed",
    },
    repeatable=True,
    retryable=True,
    changes=False,  # a lookup: the pre-flight may use what it finds
    check=cloud_named,
)
def find_server(ctx: StepContext, params: FindParams) -> Outputs:
    """Find the server by name or ID (an ambiguous name is an error listing the candidates)."""
    cloud = ctx.require_cloud()
    server = cloud.find_server(params.server)
    host = cloud.ssh_address(server, params.network)
    where = cloud_to_use(ctx.config.cloud.name)
    ctx.report.notes.append(f"server {server.name} ({server.id}) found in cloud {where}; SSH at {host}")
    return {"id": server.id, "name": server.name, "status": server.status, "ssh_host": host}


@dataclass(frozen=True)
class ConsoleURLParams:
    server: str = doc("server ID (cloud.find_server output)")
    kind: Literal["serial", "novnc"] = doc("console type", default="serial")


@step(
    "cloud.console_url",
    params=ConsoleURLParams,
    outputs={"url": "the console URL (a secret: the token is in it)"},
    repeatable=True,  # tokens expire (10 minutes by default): a resumed run asks for a fresh one
    retryable=True,
    changes=False,  # a lookup: the pre-flight may use what it finds
    check=cloud_named,
)
def console_url(ctx: StepContext, params: ConsoleURLParams) -> Outputs:
    """Ask Nova for a console URL (remote-consoles API, legacy actions on old clouds)."""
    cloud = ctx.require_cloud()
    return {"url": cloud.console_url(cloud.find_server(params.server), params.kind)}


@dataclass(frozen=True)
class HostKeyParams:
    server: str = doc("server ID (cloud.find_server output)")


@step(
    "cloud.host_key",
    params=HostKeyParams,
    outputs={"fingerprint": "the host key fingerprints from the console log, comma-separated, or null if none"},
    repeatable=True,
    retryable=True,
    changes=False,  # a lookup: the pre-flight may use what it finds
    check=cloud_named,
)
def host_key(ctx: StepContext, params: HostKeyParams) -> Outputs:
    """Read the SSH host key fingerprints cloud-init printed to the console log, to pin the verification."""
    cloud = ctx.require_cloud()
    fingerprints = cloud.host_key_fingerprints(cloud.find_server(params.server))
    if not fingerprints:
        ctx.report.notes.append("the console log has no cloud-init host key block: nothing to pin from the cloud")
        return {"fingerprint": None}
    ctx.report.notes.append(f"host keys {', '.join(fingerprints)} read from the cloud-init block of the console log")
    return {"fingerprint": ",".join(fingerprints)}


@dataclass(frozen=True)
class ImportParams:
    name: str = doc("key pair name in Nova")
    public_key: str = doc("the public key line (keys.generate output)")
    replace: bool = doc("delete a key pair of the same name first", default=False)


@step(
    "cloud.import_keypair",
    params=ImportParams,
    outputs={"name": "key pair name", "fingerprint": "fingerprint Nova computed"},
    repeatable=False,  # a second import of the same name is a conflict; --resume keeps the first
    retryable=True,
    check=cloud_named,
)
def import_keypair(ctx: StepContext, params: ImportParams) -> Outputs:
    """Import the public key into Nova as a key pair (Nova no longer generates keys: 2.92)."""
    cloud = ctx.require_cloud()
    if params.replace:
        cloud.delete_keypair(params.name, missing_ok=True)
    info = cloud.import_keypair(params.name, params.public_key)
    ctx.report.notes.append(f"imported key pair {info.name} into Nova ({info.fingerprint})")
    return {"name": info.name, "fingerprint": info.fingerprint}


@dataclass(frozen=True)
class DeleteParams:
    name: str = doc("key pair name in Nova")
    missing_ok: bool = doc("a key pair that is already gone is not an error", default=False)


@step(
    "cloud.delete_keypair",
    params=DeleteParams,
    outputs={"name": "the key pair deleted"},
    repeatable=False,
    retryable=True,
    check=cloud_named,
)
def delete_keypair(ctx: StepContext, params: DeleteParams) -> Outputs:
    """Delete a key pair from Nova (only when a playbook asks for it)."""
    ctx.require_cloud().delete_keypair(params.name, missing_ok=params.missing_ok)
    ctx.report.notes.append(f"deleted key pair {params.name} from Nova")
    return {"name": params.name}


# --- the password-set route: a password set through the guest agent, then the console ---------------------
# VK Cloud's own lost-key procedure. `cloud.set_password` sets a fresh random password with Nova's
# changePassword (the hypervisor hands it to the guest agent, which sets it for the image's
# os_admin_user, else root, unlocking the account), before anything else changes; the console login
# uses it; `cloud.lock_password` locks it again on the console before the logout. Whatever happens in
# between (a failed install, Ctrl-C), the password does not stay usable: `set_password` defers a second
# changePassword to a random value nobody keeps, which the lock step calls off once the console locked it.


def _server_given(values: Mapping[str, object], config: Config) -> list[str]:
    """Pre-flight: the password is set through the cloud, so a server in a cloud is needed."""
    if values.get("server") is None:
        return ["set_password=true sets the console password through the cloud: give --cloud and -e server=NAME"]
    return cloud_named(values, config)


class _PasswordLeftUsable:
    """The deferred safety net: a second changePassword to a random value nobody keeps, unless called off."""

    def __init__(self, ctx: StepContext, server_id: str, user: str) -> None:
        self.ctx, self.server_id, self.user = ctx, server_id, user
        self.settled = False

    def __call__(self) -> None:
        """Raises CloudError when Nova could not set it (three tries): the report then says a password may be left."""
        if self.settled:
            return
        import time

        from recovery.errors import CloudError, CloudUnavailable
        from recovery.safety.redact import Secret

        cloud = self.ctx.require_cloud()
        server = cloud.find_server(self.server_id)
        for attempt in range(3):  # a guest agent busy for a moment (501) must not leave the password usable
            try:
                cloud.set_password(server, Secret(secrets.token_urlsafe(32), "<discarded password>"))
                break
            except CloudError as exc:
                if attempt == 2 or not (exc.status_code == 501 or isinstance(exc, CloudUnavailable)):
                    raise CloudError(f"the password set for {self.user} through the guest agent may still be "
                                     f"usable (lock it: `passwd -l {self.user}`): {exc}") from exc
                time.sleep(2)
        self.settled = True
        self.ctx.report.vm_changes.append(
            f"the password set for {self.user} was not locked on the console: set it again, through the guest agent, "
            "to a random value nobody keeps (no usable password is left)")


@dataclass(frozen=True)
class SetPasswordParams:
    server: str | None = doc("server ID (cloud.find_server output)")
    user: str | None = doc("the user Nova sets the password for (default: the image's os_admin_user, else root); "
                           "give it for a server booted from a volume whose image properties cannot be read",
                           default=None, check=checks.login_name)


@step(
    "cloud.set_password",
    params=SetPasswordParams,
    outputs={
        "user": "the user whose password was set: the console login (os_admin_user, else root)",
        "password": "the password (a secret: never shown, never journaled)",
    },
    repeatable=True,  # a resumed run sets a fresh one
    check=_server_given,
)
def set_password(ctx: StepContext, params: SetPasswordParams) -> Outputs:
    """Set a fresh random console password through the guest agent (Nova changePassword), for the image's admin user."""
    from recovery.errors import CloudError, NotPossible, StepError
    from recovery.safety.redact import Secret, register

    cloud = ctx.require_cloud()
    if params.server is None:
        raise StepError(_server_given({}, ctx.config)[0])
    server = cloud.find_server(params.server)
    properties = cloud.image_properties(server)
    if properties is None:
        ctx.report.notes.append(
            f"server {server.name} has no image properties to read (its image deleted since, or a boot volume "
            "without a copy of them): asked Nova to set the password anyway, for os_admin_user as Nova knows it, "
            "else root")
    elif not guest_agent_enabled(properties):
        raise NotPossible(
            f"server {server.name} ({server.id}): its image does not enable the QEMU guest agent (image property "
            f"hw_qemu_guest_agent is {properties.get('hw_qemu_guest_agent', 'not set')!r}), so Nova cannot set a "
            "password: set hw_qemu_guest_agent=True on the image (`openstack image set --property "
            "hw_qemu_guest_agent=True IMAGE`) and hard-reboot the server, or use a console password instead; "
            "nothing was changed")
    user = params.user or (properties or {}).get("os_admin_user") or "root"
    password = Secret(secrets.token_urlsafe(18), "<password set through the guest agent>")
    register(password.reveal())
    safety_net = _PasswordLeftUsable(ctx, server.id, user)
    ctx.defer(f"made sure no password set for {user} is left usable", safety_net)
    ctx.waiting_for("Nova to set the password through the guest agent")
    try:
        cloud.set_password(server, password)
    except CloudError as exc:
        if exc.status_code in (409, 501):
            safety_net.settled = True  # Nova set nothing
        raise
    ctx.report.vm_changes.append(
        f"set a random password for {user} through the guest agent (Nova changePassword), for the console login")
    source = ("given" if params.user else "the image's os_admin_user" if (properties or {}).get("os_admin_user")
              else "root, the default")
    ctx.report.notes.append(f"route: a password set through the guest agent, then the console, as {user} ({source})")
    return {"user": user, "password": password}


def _nets(ctx: StepContext) -> list[_PasswordLeftUsable]:
    return [c.action for c in ctx.shared.cleanups if isinstance(c.action, _PasswordLeftUsable)]


def password_lock_seen(ctx: StepContext, user: str, status: int | None) -> None:
    """What the lock typed in the install's own command did (authorized_keys.install with lock_password).

    Locked: the safety net is called off, as cloud.lock_password does, also when the install then fails.
    Not locked: the net stays, and cloud.lock_password (or the cleanup after a failure) sets the password
    again to a value nobody keeps. No status seen (None): cloud.lock_password types the lock alone.
    """
    if status is not None:
        _lock_reported(ctx, user, status)


def _lock_reported(ctx: StepContext, user: str, status: int | None) -> bool:
    """Report a lock's status (None: not read); locked, call off the safety net. Whether it locked."""
    from recovery.guest import LockExitCode, explain_lock_exit

    if status == LockExitCode.OK:
        for net in _nets(ctx):
            net.settled = True
        ctx.report.vm_changes.append(f"locked the password of {user} again on the console (passwd -l): "
                                     "no usable password is left")
        return True
    why = "its result could not be read (a console with no text)" if status is None else explain_lock_exit(status)
    ctx.report.notes.append(f"the password of {user} was not locked on the console: {why}")
    return False


@dataclass(frozen=True)
class LockPasswordParams:
    server: str | None = doc("server ID (cloud.find_server output)")
    user: str = doc("the user whose password cloud.set_password set", check=checks.login_name)
    timeout: float | None = doc("seconds for the lock command (default: console.command_timeout)", default=None)
    status: int | None = doc(
        "the lock's status when the key install's command ran it already (authorized_keys.install's password_lock "
        "output): then nothing is typed; null: the lock is typed here", default=None)


@step(
    "cloud.lock_password",
    params=LockPasswordParams,
    outputs={"method": "passwd -l (locked on the console) or changePassword (set again to a value nobody keeps)"},
    repeatable=True,
    check=_server_given,
)
def lock_password(ctx: StepContext, params: LockPasswordParams) -> Outputs:
    """Lock the password cloud.set_password set, on the console before logout; else make it unusable through Nova."""
    from recovery.guest import LockExitCode, build_lock_script, heredoc_delimiter

    if params.status == LockExitCode.OK:  # locked in the install's command, and reported there
        return {"method": "passwd -l"}
    if params.status is not None:  # tried there and not possible: the note is in the report already
        return _unusable_otherwise(ctx, params)
    session = ctx.require_console()
    nonce = secrets.token_hex(4)
    script = build_lock_script(params.user, nonce=nonce)
    ctx.waiting_for("the password lock command to finish")
    result = session.run_script(list(script.lines), delimiter=heredoc_delimiter(nonce), nonce=nonce,
                                timeout=min(params.timeout or ctx.config.console.command_timeout, ctx.remaining()))
    session.typed.clear()
    if _lock_reported(ctx, params.user, result.status):
        return {"method": "passwd -l"}
    return _unusable_otherwise(ctx, params)


def _unusable_otherwise(ctx: StepContext, params: LockPasswordParams) -> Outputs:
    """Not locked on the console: set it again through the guest agent, to a value nobody keeps."""
    for net in _nets(ctx) or [_PasswordLeftUsable(ctx, params.server or "", params.user)]:
        net()
    return {"method": "changePassword"}
