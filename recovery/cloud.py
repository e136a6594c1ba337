"""The cloud boundary: Nova servers, consoles, console logs and key pairs through openstacksdk.

This is the only module in `recovery` that imports openstack, and it does so inside
functions: `import openstack` costs about 0.35 s, which `recovery --help` and every
run without a cloud step should not pay.

Every openstacksdk and keystoneauth exception is translated in one place,
`_translated`, into our own errors, so nothing above this module sees one:

- 401/403: `CloudError` saying the credentials were refused (retrying cannot help);
- 5xx, 409, 429, a refused, reset or timed-out connection: `CloudUnavailable`, which
  the runner retries with backoff (except a 409 on a key pair import, which is a
  name clash, not a busy cloud);
- anything else: `CloudError`.

A compute API that gives no version document (keystoneauth then hides why) is
asked once more, directly, to tell "down" (transient) from "misconfigured" (not).

Each message names the cloud and what was being done (the server, the key pair),
and carries the HTTP status and the `x-openstack-request-id` an operator quotes
to the cloud's support.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, quote, urlsplit

from recovery.errors import CloudError, CloudUnavailable, ConfigError
from recovery.safety.redact import Secret, masked_url, register

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = [
    "CONSOLE_KINDS",
    "ENVVARS_CLOUD",
    "NO_CLOUD",
    "BootVolume",
    "Cloud",
    "Image",
    "KeyPairInfo",
    "OpenStackCloud",
    "Server",
    "check_config",
    "cloud_to_use",
    "connect",
    "global_request_id",
    "parse_host_key_fingerprints",
    "select_ssh_address",
]

# kind -> (protocol, type) for POST /servers/{id}/remote-consoles; the type alone
# names the legacy action's console (os-getSerialConsole, os-getVNCConsole).
CONSOLE_KINDS: dict[str, tuple[str, str]] = {
    "serial": ("serial", "serial"),
    "novnc": ("vnc", "novnc"),
}
# Asked for, one by one, only to tell the operator what the cloud offers when the
# console they wanted is not enabled.
_PROBED_CONSOLES: dict[str, tuple[str, str]] = {**CONSOLE_KINDS, "spice-html5": ("spice", "spice-html5")}
# The remote-consoles API appeared in compute microversion 2.6; the os-get*Console
# actions were removed in it.
_REMOTE_CONSOLES_MICROVERSION = "2.6"
# Seconds per HTTP request unless clouds.yaml sets api_timeout: without one, a
# cloud that accepts the connection and never answers would hang the run.
_API_TIMEOUT = 60.0
_TRANSIENT_STATUSES = frozenset({409, 429})
# Characters that would make Nova's regex name filter fail or match less than the
# exact name; a name with none of them is sent as a (superset) filter.
_REGEX_SPECIAL = frozenset("\\[](){}*+?^$|")
_UUID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
# openstacksdk's name for the cloud it builds from the OS_* variables of a sourced openrc
# file (OS_CLOUD_NAME renames it).
ENVVARS_CLOUD = "envvars"
NO_CLOUD = (
    "none is named: pass --cloud NAME (a clouds.yaml entry) or set OS_CLOUD, or source the cloud's "
    "openrc file (OS_AUTH_URL and the other OS_* variables)"
)
# Sent as the User-Agent's first product, so the cloud's logs say who called.
_APP_NAME = "recovery"
# keystoneauth's spelling: the session's extra headers must not add a second, differently cased one.
_REQUEST_ID_HEADER = "X-Openstack-Request-Id"
# Global request IDs are derived from run IDs in this namespace (any fixed UUID would do).
_RUN_NAMESPACE = uuid.UUID("8f3c2a4e-5b1d-4c6e-9a7f-2d0b1e3c4a5f")

_BLOCK_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
_BLOCK_END = "-----END SSH HOST KEY FINGERPRINTS-----"
# One line of cloud-init's block, possibly behind a syslog prefix ("ec2: "):
#   256 SHA256:AbC...xyz root@vm (ED25519)
#   2048 MD5:aa:bb:...:ff root@vm (RSA)
#   2048 aa:bb:...:ff /etc/ssh/ssh_host_rsa_key.pub (RSA)      (OpenSSH before 6.8)
_FINGERPRINT_LINE = re.compile(
    r"(?:^|\s)\d+\s+"
    r"(?P<fp>SHA256:[A-Za-z0-9+/]{43}=?|(?:MD5:)?[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){15})"
    r"(?:\s.*)?\((?P<type>[A-Za-z0-9-]+)\)\s*$"
)
# Ed25519 first: the type every current OpenSSH client prefers, so the one the
# verifier will be offered.
_KEY_TYPE_ORDER = {"ED25519": 0, "ECDSA": 1, "RSA": 2, "DSA": 3}


@dataclass(frozen=True)
class Server:
    """A Nova server as the steps need it; `addresses` is Nova's own map, network name -> entries.

    `image_id` is the image it was booted from, as Nova lists it: "" for a server
    booted from a volume, whose image properties are the volume's (`BootVolume`).
    """

    id: str
    name: str
    status: str
    addresses: dict[str, list[dict[str, object]]]
    image_id: str = ""


@dataclass(frozen=True)
class Image:
    """A Glance image as Nova lists it: its ID, name and status (ACTIVE, SAVING...)."""

    id: str
    name: str
    status: str


@dataclass(frozen=True)
class BootVolume:
    """The volume a server boots from: Cinder's copy of its image's properties, None when it has none."""

    id: str
    image_metadata: dict[str, str] | None


@dataclass(frozen=True)
class KeyPairInfo:
    """A Nova key pair: `fingerprint` is Nova's MD5 colon hex, `type` the key's algorithm (`ssh-ed25519`).

    `public_key` is the key line as Nova lists it, so that a key known only by its SHA256
    fingerprint can be matched too ("" when the answer had none).
    """

    name: str
    fingerprint: str
    type: str
    public_key: str = ""


# Nova reads `hw_qemu_guest_agent` as oslo's bool_from_string does: these are true, any other value false.
_TRUE = frozenset(("1", "t", "true", "on", "y", "yes"))


def guest_agent_enabled(properties: Mapping[str, str]) -> bool:
    """Whether image properties give the server a QEMU guest agent channel, read as Nova reads them."""
    return properties.get("hw_qemu_guest_agent", "").strip().lower() in _TRUE


class Cloud(Protocol):
    """What the steps ask of a cloud. `OpenStackCloud` is the real one; tests may pass their own."""

    def find_server(self, name_or_id: str) -> Server: ...
    def ssh_address(self, server: Server, network: str | None = None) -> str: ...
    def has_object_store(self) -> bool: ...
    def console_url(self, server: Server, kind: str) -> Secret: ...
    def console_log(self, server: Server, lines: int | None = None) -> str: ...
    def host_key_fingerprints(self, server: Server) -> list[str]: ...
    def image_properties(self, server: Server) -> dict[str, str] | None: ...
    def find_image(self, name_or_id: str) -> Image: ...
    def set_password(self, server: Server, password: Secret) -> None: ...
    def import_keypair(self, name: str, public_key: str) -> KeyPairInfo: ...
    def delete_keypair(self, name: str, *, missing_ok: bool = False) -> None: ...
    def list_keypairs(self) -> list[KeyPairInfo]: ...
    def list_servers(self) -> list[Server]: ...
    def server_state(self, server_id: str) -> Server: ...
    def rescue(self, server: Server, image: str) -> None: ...
    def unrescue(self, server: Server) -> None: ...
    def hard_reboot(self, server_id: str) -> None: ...
    def close(self) -> None: ...
    @property
    def connection(self) -> Connection:
        """The openstacksdk connection, for drivers of the cloud's other services (Swift): one login."""
        ...


def cloud_to_use(name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The cloud to talk to, or None when nothing names one: the one rule every caller follows.

    `name` (from --cloud or the config) wins; then OS_CLOUD; then, when an openrc
    file was sourced (OS_AUTH_URL is set), the cloud openstacksdk builds from the
    OS_* variables, `envvars`. Nothing else: openstacksdk would also pick the only
    entry of a clouds.yaml unasked, and a recovery must not touch a cloud nobody named.
    """
    env = os.environ if environ is None else environ
    if name:
        return name
    if env.get("OS_CLOUD"):
        return env["OS_CLOUD"]
    if env.get("OS_AUTH_URL"):
        return env.get("OS_CLOUD_NAME") or ENVVARS_CLOUD
    return None


def global_request_id(run_id: str) -> str:
    """The X-OpenStack-Request-ID every call of run `run_id` carries, resumed attempts included.

    Nova, Keystone and Swift log it next to their own request IDs, so an operator
    given the run's report can find all its calls. The form `req-<uuid>` is the only
    one oslo.middleware accepts (it drops any other).
    """
    return f"req-{uuid.uuid5(_RUN_NAMESPACE, run_id)}"


def connect(cloud_name: str | None, *, request_id: str | None = None) -> OpenStackCloud:
    """Open a cloud from clouds.yaml (and secure.yaml), or from an openrc's OS_* variables.

    Nothing is sent over the network here: authentication happens on the first call,
    once per connection (every service of the cloud shares its token).

    Args:
        cloud_name: the clouds.yaml entry; None means `cloud_to_use`'s rule.
        request_id: the global request ID to send with every call (`global_request_id`).

    Returns:
        The open cloud; close it (or use it as a context manager) when done.

    Raises:
        ConfigError: no cloud is named; a clouds.yaml cannot be parsed; the cloud is not
            in any clouds.yaml (the message lists the ones that are, and where they were
            found); or its entry is invalid.
    """
    name = cloud_to_use(cloud_name)
    if name is None:
        raise ConfigError(f"no cloud to connect to: {NO_CLOUD}")
    import openstack.config
    import openstack.connection
    from openstack import exceptions as sdk

    from recovery import __version__

    problem = _unparsable_config()
    if problem:
        raise ConfigError(problem)
    try:
        region = openstack.config.get_cloud_region(cloud=name, app_name=_APP_NAME, app_version=__version__)
        if region.config.get("api_timeout") is None:
            region.config["api_timeout"] = _API_TIMEOUT
        if request_id:
            # The connection sends it with API calls only; on the session it also goes with
            # the Keystone login and version discovery, so Keystone's log has the run too.
            region.get_session().additional_headers[_REQUEST_ID_HEADER] = request_id
    except sdk.ConfigException as exc:
        raise ConfigError(_config_problem(name, exc)) from exc
    return OpenStackCloud(openstack.connection.Connection(config=region, global_request_id=request_id), name)


def check_config(cloud_name: str) -> str | None:
    """Why `connect(cloud_name)` would fail before sending anything, or None; reads clouds.yaml only."""
    import openstack.config
    from openstack import exceptions as sdk

    problem = _unparsable_config()
    if problem:
        return problem
    try:
        openstack.config.get_cloud_region(cloud=cloud_name)
    except sdk.ConfigException as exc:
        return _config_problem(cloud_name, exc)
    return None


def _unparsable_config() -> str | None:
    """The clouds.yaml or secure.yaml openstacksdk would read first, if it cannot be parsed.

    openstacksdk logs a warning, skips such a file and reads the next one, or none:
    the user then hears "cloud not found" about a file they can see has the cloud,
    or gets another file's cloud of the same name.
    """
    import yaml
    from openstack.config import loader

    for override, files in (
        ("OS_CLIENT_CONFIG_FILE", loader.CONFIG_FILES),
        ("OS_CLIENT_SECURE_FILE", loader.SECURE_FILES),
    ):
        chosen = os.environ.get(override)
        for path in [chosen, *files] if chosen else files:
            try:
                with open(path, "rb") as handle:
                    text = handle.read()  # bytes: an encoding problem is a parse problem, reported below
            except OSError:
                continue  # missing or unreadable: openstacksdk looks further too
            try:
                if path.endswith("json"):
                    json.loads(text)
                else:
                    yaml.safe_load(text)
            except (ValueError, yaml.YAMLError) as exc:
                return (
                    f"{path} cannot be parsed ({_parse_problem(exc)}), so openstacksdk would skip it: "
                    "fix the file, or point OS_CLIENT_CONFIG_FILE at another one"
                )
            break  # the file openstacksdk reads: the later ones are not looked at
    return None


def _parse_problem(exc: Exception) -> str:
    """`line 3, column 1: found character '\\t' ...`: where in the file, and what, without the parser's prose."""
    import yaml

    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return " ".join(str(exc).split())


def _config_problem(cloud_name: str | None, exc: Exception) -> str:
    """Say which clouds exist and where they came from: the user evidently expected another."""
    from openstack.config import loader

    try:
        config = loader.OpenStackConfig()
        names = sorted(name for name in config.get_cloud_names() if name != ENVVARS_CLOUD)
        where = config.config_filename
    except Exception:
        # The configuration that just failed may well fail again; say what we know.
        names, where = [], None
    if cloud_name == ENVVARS_CLOUD and not os.environ.get("OS_AUTH_URL"):
        return (
            f"cloud {ENVVARS_CLOUD!r} is the one openstacksdk builds from the OS_* variables of an openrc "
            "file, and OS_AUTH_URL is not set: source the cloud's openrc file first"
        )
    if cloud_name and cloud_name != ENVVARS_CLOUD and cloud_name not in names:
        if not where:
            return (
                f"cloud {cloud_name!r} is not configured: no clouds.yaml was found (searched "
                f"{', '.join(loader.CONFIG_FILES)}; OS_CLIENT_CONFIG_FILE may name another file)"
            )
        return f"cloud {cloud_name!r} is not in {where}; the clouds there: {', '.join(names) or 'none'}"
    wanted = repr(cloud_name) if cloud_name else "from OS_CLOUD or the OS_* variables"
    return f"cloud {wanted}: {str(exc).rstrip('.')} (clouds.yaml: {where or 'none found'})"


class OpenStackCloud:
    """A cloud reached through an openstacksdk `Connection`, with every error translated to ours.

    Use as a context manager, or call `close()`: it owns the connection's HTTP session.
    """

    def __init__(self, connection: Connection, name: str) -> None:
        """Wrap an open connection; `name` is how messages refer to the cloud."""
        self._conn = connection
        self.name = name

    def __enter__(self) -> OpenStackCloud:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection's HTTP session. Safe to call twice."""
        self._conn.close()

    @property
    def connection(self) -> Connection:
        """The connection itself, still owned by this object: its token serves every service."""
        return self._conn

    # -- servers ---------------------------------------------------------------------

    def find_server(self, name_or_id: str) -> Server:
        """The one ACTIVE server with this ID or exact name.

        An ID is looked up directly; a name (or an ID that is not a server's) is
        matched exactly against the project's servers.

        Raises:
            CloudError: no such server; several servers have the name (the message
                lists each one's ID, status and addresses); or it is not ACTIVE (its
                console and SSH need it running).
            CloudUnavailable: the cloud did not answer, or answered 5xx/409.
        """
        server = self._server_by_id(name_or_id) if _UUID.fullmatch(name_or_id) else None
        if server is None:
            candidates = self._servers_named(name_or_id)
            if not candidates:
                raise CloudError(f"cloud {self.name!r}: no server is named {name_or_id!r} or has that ID")
            if len(candidates) > 1:
                listing = "\n".join(f"  {s.id}  {s.status}  {_describe_addresses(s)}" for s in candidates)
                raise CloudError(
                    f"cloud {self.name!r}: {len(candidates)} servers are named {name_or_id!r}; "
                    f"give the ID of the one to recover:\n{listing}"
                )
            server = candidates[0]
        if server.status == "RESCUE":
            raise CloudError(
                f"cloud {self.name!r}: server {server.name!r} ({server.id}) is in RESCUE, booted from a rescue "
                "image (an earlier rescue run cut off, or someone's rescue under way?): bring it back with "
                f"`openstack server unrescue {server.id}`, then run again"
            )
        if server.status != "ACTIVE":
            raise CloudError(
                f"cloud {self.name!r}: server {server.name!r} ({server.id}) is {server.status}, not ACTIVE: "
                "its console and SSH need it running (start it, e.g. `openstack server start "
                f"{server.id}`, then run again)"
            )
        return server

    def _server_by_id(self, server_id: str) -> Server | None:
        """The server with this ID, or None when there is none (then the caller tries it as a name)."""
        try:
            with self._translated(f"get server {server_id}"):
                raw = self._conn.compute.get_server(server_id)
        except CloudError as exc:
            if exc.status_code == 404:
                return None  # a server may also be *named* like a UUID
            raise
        return _server(raw)

    def _servers_named(self, name: str) -> list[Server]:
        # Nova's `name` filter is a regular expression (web-1 also matches web-10), so
        # it only narrows the listing; the exact match is ours.
        with self._translated(f"list servers named {name!r}"):
            if _REGEX_SPECIAL & set(name):
                raws = list(self._conn.compute.servers(details=True))
            else:
                raws = list(self._conn.compute.servers(details=True, name=name))
        return [server for server in map(_server, raws) if server.name == name]

    def ssh_address(self, server: Server, network: str | None = None) -> str:
        """The address to reach the server's sshd on; see `select_ssh_address`."""
        return select_ssh_address(server, network, cloud=self.name)

    def has_object_store(self) -> bool:
        """Whether the cloud has object storage (Swift): an endpoint override, or one in the catalog.

        For `publish: auto`. openstacksdk answers False, not an error, when the
        catalog cannot be read; the next cloud call then reports why.

        Raises:
            CloudError, CloudUnavailable: as for any call.
        """
        with self._translated("look for object storage in the service catalog"):
            return bool(self._conn.has_service("object-store"))

    # -- rescue mode -------------------------------------------------------------------

    def server_state(self, server_id: str) -> Server:
        """The server as it is now, whatever its status (RESCUE, a task under way): for waits.

        Raises:
            CloudError: no server has this ID (deleted meanwhile?).
        """
        server = self._server_by_id(server_id)
        if server is None:
            raise CloudError(f"cloud {self.name!r}: server {server_id} is gone")
        return server

    def rescue(self, server: Server, image: str) -> None:
        """Ask Nova to reboot the server into `image` (an image ID), its own disk attached next to it.

        Nova's generated `adminPass` is not asked for and not kept: cloud images ignore it; the
        rescue image's own console login is used. Returns once Nova accepted; wait for RESCUE.
        """
        with self._translated(f"rescue server {server.id} with image {image}"):
            self._conn.compute.rescue_server(server.id, image=image)

    def unrescue(self, server: Server) -> None:
        """Ask Nova to boot the server from its own disk again; wait for ACTIVE."""
        with self._translated(f"unrescue server {server.id}"):
            self._conn.compute.unrescue_server(server.id)

    def hard_reboot(self, server_id: str) -> None:
        """Ask Nova to power-cycle the server (the boot loader route's reset). Nova marks it HARD_REBOOT before
        it answers; the hypervisor resets it a moment later, and it is ACTIVE again once it did."""
        with self._translated(f"hard-reboot server {server_id}"):
            self._conn.compute.reboot_server(server_id, "HARD")

    # -- consoles --------------------------------------------------------------------

    def console_url(self, server: Server, kind: str) -> Secret:
        """A fresh console URL for the server; the token in it expires (600 s by default).

        Uses `POST /servers/{id}/remote-consoles` where the cloud supports compute
        microversion 2.6, and the legacy `os-getSerialConsole`/`os-getVNCConsole`
        actions only where it does not.

        Args:
            server: from `find_server`.
            kind: "serial" (a websocket carrying raw TTY bytes) or "novnc".

        Returns:
            The URL as a Secret whose label masks the token.

        Raises:
            ConfigError: `kind` is neither "serial" nor "novnc".
            CloudError: the cloud does not offer this console (the message says which
                console types it does offer, found by asking for each).
            CloudUnavailable: the cloud did not answer, answered 5xx, or 409 (the
                server is not ready for a console yet).
        """
        if kind not in CONSOLE_KINDS:
            raise ConfigError(f"console kind {kind!r} is not one of: {', '.join(CONSOLE_KINDS)}")
        try:
            url = self._console(server, kind)
        except CloudError as exc:
            if isinstance(exc, CloudUnavailable) or exc.status_code not in (400, 501):
                raise
            offered = [other for other in _PROBED_CONSOLES if other != kind and self._offers(server, other)]
            raise _amended(
                exc,
                f"This cloud offers: {', '.join(offered)}"
                if offered
                else f"This cloud offers none of: {', '.join(_PROBED_CONSOLES)}",
            ) from exc
        _register_query_values(url)
        return Secret(url, label=masked_url(url))

    def _console(self, server: Server, kind: str) -> str:
        from openstack import utils

        protocol, console_type = _PROBED_CONSOLES[kind]
        with self._translated(f"get a {kind} console for server {server.name!r} ({server.id})"):
            if utils.supports_microversion(self._conn.compute, _REMOTE_CONSOLES_MICROVERSION):
                console = self._conn.compute.create_server_remote_console(
                    server.id, protocol=protocol, type=console_type
                )
                url = console.url
            else:
                legacy = self._conn.compute.get_server_console_url(server.id, console_type) or {}
                url = legacy.get("url")
        if not url:
            raise CloudError(f"cloud {self.name!r}: Nova returned no {kind} console URL for server {server.name!r}")
        return str(url)

    def _offers(self, server: Server, kind: str) -> bool:
        """Whether the cloud hands out a console of this kind; asked only to explain a refusal."""
        try:
            self._console(server, kind)
        except CloudError:
            return False
        return True

    def console_log(self, server: Server, lines: int | None = None) -> str:
        """The server's console output (Nova's `os-getConsoleOutput`): its last `lines` lines, or all.

        Raises:
            CloudError, CloudUnavailable: as for any call.
        """
        with self._translated(f"read the console log of server {server.name!r} ({server.id})"):
            output = self._conn.compute.get_server_console_output(server.id, length=lines)
        return str(output.get("output") or "")

    def host_key_fingerprints(self, server: Server) -> list[str]:
        """The SSH host key fingerprints cloud-init printed to the console log, Ed25519 first.

        The whole log is read: the block is printed once per boot, and a long-running
        VM may have printed much since. [] when there is no block.

        Raises:
            CloudError, CloudUnavailable: as for any call.
        """
        return parse_host_key_fingerprints(self.console_log(server))

    # -- the password-set route ------------------------------------------------------

    def image_properties(self, server: Server) -> dict[str, str] | None:
        """The properties Nova booted the server with, or None when there are none to read.

        The image's (`image_metadata`); for a server booted from a volume (VK Cloud's default), its
        boot volume's copy of them (Cinder's volume_image_metadata). None for an image deleted since,
        a volume without a copy, or a cloud without a volume service to ask.

        Raises:
            CloudError, CloudUnavailable: as for any call.
        """
        if server.image_id:
            try:
                return self.image_metadata(server.image_id)
            except CloudError as exc:
                if isinstance(exc, CloudUnavailable) or exc.status_code != 404:
                    raise
                return None
        try:
            boot = self.boot_volumes().get(server.id)
        except CloudError as exc:
            if isinstance(exc, CloudUnavailable) or exc.status_code is not None:
                raise
            return None  # no volume service in the catalog
        return boot.image_metadata if boot else None

    def set_password(self, server: Server, password: Secret) -> None:
        """Nova's `changePassword`: the hypervisor sets it in the guest through its agent.

        libvirt sets it for the image's `os_admin_user`, else root, with the agent's
        `guest-set-user-password` (which also unlocks a locked account). The password goes in the
        request body only; it is registered so that no log shows it.

        Raises:
            CloudError: 409, the image does not enable the guest agent (or the server is busy: the
                message says which), or 501, the agent did not answer; neither is retried here.
            CloudUnavailable: the cloud did not answer, or answered 5xx.
        """
        register(password.reveal())
        try:
            with self._translated(f"set a password on server {server.name!r} ({server.id}) through its guest agent"):
                self._conn.compute.change_server_password(server.id, password.reveal())
        except CloudError as exc:
            detail = str(exc.args[0]).lower()
            if exc.status_code == 409 and "agent" in detail:
                raise _amended(exc, (
                    "The image does not enable the QEMU guest agent: set the image property "
                    "hw_qemu_guest_agent=True (`openstack image set --property hw_qemu_guest_agent=True IMAGE`; "
                    "for a server booted from a volume, on the volume: `openstack volume set --image-property "
                    "hw_qemu_guest_agent=True VOLUME`), then hard-reboot the server so it gets the agent channel, "
                    "or use a console password instead of set_password"), transient=False) from exc
            if exc.status_code == 409:
                raise _amended(exc, "Nova refused the password change in the server's current state "
                               "(another task running?); wait for it and run again", transient=False) from exc
            if exc.status_code == 501:
                raise _amended(exc, (
                    "The guest agent channel is there but the agent did not answer: qemu-guest-agent is not "
                    "installed or not running in the VM (or the VM is still booting); nothing was changed. "
                    "Use a console password instead of set_password, or the boot loader route"),
                    transient=False) from exc
            raise

    # -- key pairs -------------------------------------------------------------------

    def import_keypair(self, name: str, public_key: str) -> KeyPairInfo:
        """Import a public key as a Nova key pair (Nova generates none since microversion 2.92).

        Raises:
            CloudError: a key pair of that name exists (409, not worth retrying), or
                the cloud refused the key; for a key other than ssh-rsa the message
                says that some clouds accept only ssh-rsa and how to generate one.
            CloudUnavailable: the cloud did not answer, or answered 5xx.
        """
        key_type = public_key.split(None, 1)[0] if public_key.strip() else ""
        try:
            with self._translated(f"import key pair {name!r}"):
                raw = self._conn.compute.create_keypair(name=name, public_key=public_key.strip())
        except CloudError as exc:
            if exc.status_code == 409:
                # Nova's 409 here is a name clash, not a busy server: retrying cannot help.
                raise _amended(exc, "Delete it first or choose another name", transient=False) from exc
            if exc.status_code == 400 and key_type != "ssh-rsa":
                raise _amended(
                    exc, "Some clouds accept only ssh-rsa key pairs: generate the key with key_type: rsa"
                ) from exc
            raise
        return _keypair(raw, public_key)

    def delete_keypair(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete a Nova key pair.

        Raises:
            CloudError: there is no such key pair (HTTP 404), unless `missing_ok`.
            CloudUnavailable: the cloud did not answer, or answered 5xx/409.
        """
        try:
            with self._translated(f"delete key pair {name!r}"):
                self._conn.compute.delete_keypair(name, ignore_missing=False)
        except CloudError as exc:
            if not (missing_ok and exc.status_code == 404):
                raise

    def list_servers(self) -> list[Server]:
        """Every server of the project, with its addresses (the fleet audit's cloud inventory).

        Raises:
            CloudError, CloudUnavailable: as for any call.
        """
        with self._translated("list servers"):
            raws = list(self._conn.compute.servers(details=True))
        return [_server(raw) for raw in raws]

    # -- images ----------------------------------------------------------------------

    def image_metadata(self, image_id: str) -> dict[str, str]:
        """An image's properties (`hw_qemu_guest_agent`, `os_admin_user`...), as Nova sees them.

        Read through Nova's image API (microversion 2.1, still served to older clients):
        the compute endpoint is the one every caller already has, whatever the catalog
        says of Glance, and Nova's view is the one a boot or a `changePassword` uses.

        Raises:
            CloudError: the image is gone or not visible to the project (HTTP 404), or
                any other refusal.
            CloudUnavailable: the cloud did not answer, or answered 5xx.
        """
        from openstack import exceptions as sdk

        with self._translated(f"read the properties of image {image_id}"):
            response = self._conn.compute.get(f"/images/{image_id}", microversion="2.1")
            sdk.raise_from_response(response)
            metadata = (response.json().get("image") or {}).get("metadata") or {}
        return {str(name): str(value) for name, value in metadata.items()}

    def find_image(self, name_or_id: str) -> Image:
        """The image with this ID, else the one image with this exact name, as the openstack CLI finds one.

        Through Nova's image API (microversion 2.1), as `image_metadata`: the images a rescue or a
        boot can use. Nova's `name` filter narrows the listing; the exact match is ours.

        Raises:
            CloudError: no image has this ID or name, or several have the name (the message lists
                each one's ID and status).
            CloudUnavailable: the cloud did not answer, or answered 5xx.
        """
        from openstack import exceptions as sdk

        if _UUID.fullmatch(name_or_id):
            try:
                with self._translated(f"get image {name_or_id}"):
                    response = self._conn.compute.get(f"/images/{quote(name_or_id)}", microversion="2.1")
                    sdk.raise_from_response(response)
                    return _image(response.json().get("image") or {})
            except CloudError as exc:
                if exc.status_code != 404:
                    raise  # else an image may also be *named* like a UUID
        with self._translated(f"list images named {name_or_id!r}"):
            response = self._conn.compute.get(f"/images/detail?name={quote(name_or_id, safe='')}",
                                              microversion="2.1")
            sdk.raise_from_response(response)
            raws = response.json().get("images") or []
        images = [image for image in map(_image, raws) if image.name == name_or_id]
        if not images:
            raise CloudError(f"cloud {self.name!r}: no image is named {name_or_id!r} or has that ID "
                             "(`openstack image list` shows the project's images)")
        if len(images) > 1:
            listing = "\n".join(f"  {image.id}  {image.status}" for image in images)
            raise CloudError(f"cloud {self.name!r}: {len(images)} images are named {name_or_id!r}; "
                             f"give the ID of the one to use:\n{listing}")
        return images[0]

    def boot_volumes(self) -> dict[str, BootVolume]:
        """The boot volume of each server that has one attached, by server ID: one volume listing.

        A server's boot volume is its bootable volume on the first device (`/dev/vda`
        before `/dev/vdb`): the one Nova read the image properties from.

        Raises:
            CloudError: the cloud has no volume service in its catalog, or refused.
            CloudUnavailable: the cloud did not answer, or answered 5xx.
        """
        with self._translated("list volumes"):
            volumes = list(self._conn.block_storage.volumes(details=True))
        first: dict[str, tuple[str, BootVolume]] = {}
        for volume in volumes:
            if not volume.is_bootable:
                continue
            metadata = volume.volume_image_metadata
            boot = BootVolume(
                str(volume.id),
                {str(name): str(value) for name, value in metadata.items()} if metadata else None,
            )
            for attachment in volume.attachments or []:
                server_id, device = str(attachment.get("server_id")), str(attachment.get("device") or "")
                if server_id not in first or device < first[server_id][0]:
                    first[server_id] = (device, boot)
        return {server_id: boot for server_id, (_, boot) in first.items()}

    def list_keypairs(self) -> list[KeyPairInfo]:
        """The user's Nova key pairs, with Nova's fingerprints.

        Raises:
            CloudError, CloudUnavailable: as for any call.
        """
        with self._translated("list key pairs"):
            raws = list(self._conn.compute.keypairs())
        return [_keypair(raw, str(raw.public_key or "")) for raw in raws]

    # -- errors ------------------------------------------------------------------------

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn any openstacksdk/keystoneauth exception raised inside into a CloudError."""
        from keystoneauth1 import exceptions as ksa
        from openstack import exceptions as sdk

        where = f"cloud {self.name!r}: {action}"
        try:
            yield
        except sdk.HttpException as exc:
            raise _http_error(where, exc.status_code, exc.request_id, exc.details or exc.message) from exc
        except ksa.HttpError as exc:
            raise _http_error(where, exc.http_status, exc.request_id, exc.details or exc.message) from exc
        except ksa.SSLError as exc:
            raise CloudError(f"{where}: TLS failed ({exc}); check the cloud's cacert in clouds.yaml") from exc
        except ksa.ConnectionError as exc:
            raise CloudUnavailable(f"{where}: the cloud could not be reached: {exc}") from exc
        except ksa.DiscoveryFailure as exc:
            # keystoneauth hides why it found no version document; ask the endpoint once.
            raise self._diagnose_discovery(where, exc) from exc
        except ksa.EndpointNotFound as exc:
            raise CloudError(f"{where}: {exc} (is the service in this cloud's catalog, in this region?)") from exc
        except ksa.AuthPluginException as exc:
            raise CloudError(f"{where}: the credentials in clouds.yaml are incomplete or invalid: {exc}") from exc
        except ksa.AuthorizationFailure as exc:
            raise CloudError(f"{where}: the cloud refused the credentials: {exc}") from exc
        except (sdk.SDKException, ksa.ClientException) as exc:
            raise CloudError(f"{where}: {exc}") from exc

    def _diagnose_discovery(self, where: str, failure: Exception) -> CloudError:
        """Tell a compute API that is down (transient) from one that is misconfigured (not)."""
        from keystoneauth1 import exceptions as ksa

        url = self._conn.config.get_endpoint("compute") or _url_in(str(failure))
        if not url:
            return CloudUnavailable(f"{where}: the compute API did not answer version discovery: {failure}")
        try:
            response = self._conn.session.get(url, authenticated=False, raise_exc=False, connect_retries=0)
        except ksa.SSLError as exc:
            return CloudError(f"{where}: TLS failed at {url} ({exc}); check the cloud's cacert in clouds.yaml")
        except ksa.ConnectionError as exc:
            return CloudUnavailable(f"{where}: the compute API at {url} could not be reached: {exc}")
        status = int(response.status_code)
        request_id = response.headers.get("x-openstack-request-id")
        if status >= 500 or status in _TRANSIENT_STATUSES:
            return CloudUnavailable(
                f"{where}: the compute API at {url} failed", status_code=status, request_id=request_id
            )
        return CloudError(
            f"{where}: no compute API version document at {url}; is the endpoint right?",
            status_code=status,
            request_id=request_id,
        )


def select_ssh_address(server: Server, network: str | None = None, *, cloud: str = "") -> str:
    """The address to reach the server's sshd on.

    In order: a floating IP (on `network` first, if named); else the fixed
    address on `network`; else a public (globally routable) fixed address; else
    the server's only fixed address. IPv4 before IPv6 at each step.

    Raises:
        CloudError: the server has no address, `network` is not one of its
            networks, or it has several private addresses and no network was named.
    """
    where = f"server {server.name!r} ({server.id})"
    if cloud:
        where = f"cloud {cloud!r}: {where}"
    entries = [(net, entry) for net, items in server.addresses.items() for entry in items if entry.get("addr")]
    if not entries:
        raise CloudError(f"{where} has no IP address; give ssh_host explicitly")
    if network is not None and network not in server.addresses:
        raise CloudError(f"{where} is not on network {network!r}; its networks: {', '.join(server.addresses)}")

    def pick(candidates: list[tuple[str, dict[str, object]]]) -> str | None:
        ordered = sorted(candidates, key=lambda item: _ip_version(item[1]) != 4)
        return str(ordered[0][1]["addr"]) if ordered else None

    floating = [(net, e) for net, e in entries if e.get("OS-EXT-IPS:type") == "floating"]
    fixed = [(net, e) for net, e in entries if e.get("OS-EXT-IPS:type") != "floating"]
    choice = (
        pick([(net, e) for net, e in floating if net == network])
        or pick(floating)
        or (pick([(net, e) for net, e in fixed if net == network]) if network else None)
        or pick([(net, e) for net, e in fixed if _is_global(e)])
    )
    if choice:
        return choice
    for version in (4, 6):
        of_version = [(net, e) for net, e in fixed if _ip_version(e) == version]
        if len(of_version) == 1:
            return str(of_version[0][1]["addr"])
        if of_version:
            raise CloudError(
                f"{where} has several private addresses ({_describe_addresses(server)}) and no floating IP: "
                "say which network to use, or give ssh_host explicitly"
            )
    raise CloudError(f"{where} has no usable address ({_describe_addresses(server)}); give ssh_host explicitly")


def parse_host_key_fingerprints(console_text: str) -> list[str]:
    """The fingerprints in the last cloud-init `BEGIN SSH HOST KEY FINGERPRINTS` block of a console log.

    The last block wins: each boot prints one, and a rebuilt VM has new keys.
    A block cut off at the end of the log still yields the lines it has.

    Returns:
        `SHA256:<base64>` or `MD5:<lowercase colon hex>` (both older forms, with
        and without the `MD5:` prefix, are normalised to it), Ed25519 first, then
        ECDSA, RSA, DSA and the rest; [] when the log has no block.
    """
    lines = console_text.replace("\r", "").split("\n")
    starts = [i for i, line in enumerate(lines) if _BLOCK_BEGIN in line]
    if not starts:
        return []
    found: list[tuple[int, str]] = []
    for line in lines[starts[-1] + 1 :]:
        if _BLOCK_END in line:
            break
        match = _FINGERPRINT_LINE.search(line)
        if not match:
            continue
        fingerprint = match["fp"]
        if fingerprint.startswith("SHA256:"):
            fingerprint = fingerprint.rstrip("=")
        else:
            fingerprint = "MD5:" + fingerprint.removeprefix("MD5:").lower()
        rank = _KEY_TYPE_ORDER.get(match["type"].upper(), len(_KEY_TYPE_ORDER))
        if all(fingerprint != seen for _, seen in found):
            found.append((rank, fingerprint))
    return [fingerprint for _, fingerprint in sorted(found, key=lambda item: item[0])]


def _server(raw: Any) -> Server:
    addresses = {str(net): [dict(entry) for entry in entries] for net, entries in (raw.addresses or {}).items()}
    # Nova lists `"image": ""` for a server booted from a volume; openstacksdk makes that an Image without an ID.
    image_id = str(getattr(raw.image, "id", None) or "")
    return Server(id=str(raw.id), name=str(raw.name), status=str(raw.status), addresses=addresses, image_id=image_id)


def _image(raw: Mapping[str, Any]) -> Image:
    return Image(id=str(raw.get("id") or ""), name=str(raw.get("name") or ""), status=str(raw.get("status") or ""))


def _keypair(raw: Any, public_key: str) -> KeyPairInfo:
    fields = public_key.split(None, 1)
    key_type = fields[0] if fields else str(raw.type or "")
    return KeyPairInfo(
        name=str(raw.name), fingerprint=str(raw.fingerprint or ""), type=key_type, public_key=public_key.strip()
    )


def _http_error(where: str, status: int | None, request_id: str | None, detail: str) -> CloudError:
    """Our error for an HTTP error answer, transient or not by its status."""
    if status in (401, 403):
        return CloudError(
            f"{where}: the cloud refused the credentials ({detail}); check clouds.yaml/secure.yaml "
            "and the user's roles in this project",
            status_code=status,
            request_id=request_id,
        )
    if status is not None and (status >= 500 or status in _TRANSIENT_STATUSES):
        return CloudUnavailable(f"{where}: {detail}", status_code=status, request_id=request_id)
    return CloudError(f"{where}: {detail}", status_code=status, request_id=request_id)


def _amended(exc: CloudError, advice: str, *, transient: bool | None = None) -> CloudError:
    """`exc` with advice added to its message; same status and request ID, same class unless `transient` says."""
    text = str(exc.args[0])
    if exc.status_code or exc.request_id:
        text = text.rsplit(" (", 1)[0]  # CloudError appended " (HTTP ..., request ...)"; it will again
    unavailable = isinstance(exc, CloudUnavailable) if transient is None else transient
    cls = CloudUnavailable if unavailable else CloudError
    return cls(f"{text.rstrip('.')}. {advice}", status_code=exc.status_code, request_id=exc.request_id)


def _register_query_values(url: str) -> None:
    """Register the token alone as a secret too, not only the whole URL.

    A channel may log the websocket path or the bare token; noVNC URLs nest it
    (`?path=%3Ftoken%3D...`), so nested query values count as well.
    """
    for _, value in parse_qsl(urlsplit(url).query):
        register(value)
        for _, nested in parse_qsl(value.partition("?")[2]):
            register(nested)


def _url_in(text: str) -> str | None:
    match = re.search(r"https?://[^\s,]+", text)
    return match.group(0) if match else None


def _ip_version(entry: dict[str, object]) -> int:
    version = entry.get("version")
    if isinstance(version, int):
        return version
    try:
        return ipaddress.ip_address(str(entry.get("addr"))).version
    except ValueError:
        return 0


def _is_global(entry: dict[str, object]) -> bool:
    try:
        return ipaddress.ip_address(str(entry.get("addr"))).is_global
    except ValueError:
        return False


def _describe_addresses(server: Server) -> str:
    """`private: 10.0.0.5, 203.0.113.7 (floating); db: 10.1.0.9`, for messages that list servers."""

    def one(entry: dict[str, object]) -> str:
        floating = entry.get("OS-EXT-IPS:type") == "floating"
        return f"{entry.get('addr')}{' (floating)' if floating else ''}"

    parts = [f"{net}: {', '.join(map(one, entries))}" for net, entries in server.addresses.items()]
    return "; ".join(parts) if parts else "no addresses"
