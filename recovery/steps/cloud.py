"""cloud.*: find the VM, get its console URL and host key, manage Nova key pairs.

Every step here talks to the cloud named by --cloud, OS_CLOUD, the config or an openrc,
through `recovery.cloud` (the only module that imports openstack). They are all
safe to retry on a transient cloud error (5xx, 409, a reset connection).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from recovery.cloud import NO_CLOUD, cloud_to_use
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
