"""The cloud as the inventory: every server of the project, its SSH address picked as a recovery picks it.

`--cloud NAME` lists the servers (optionally those whose name matches
`--server-filter`), and each becomes a host whose address is what
`recovery.cloud` chooses for a recovery (floating first, then the fixed address
on `--network`, then a public one), so the audit checks the address a recovery
would use. A server with no usable address is the `no_address` result, not an
error: it is exactly what an audit should report.

`--check-console` asks the cloud, per server, for a serial and a noVNC console
URL. A URL that is issued means the console could be opened for a recovery;
the URL itself (its token is a credential) is dropped at once, never logged.
It also reads, per server, whether the guest agent is enabled: the image property
`hw_qemu_guest_agent` (and `os_admin_user`, the account a `changePassword`
sets), from the server's image, or for a server booted from a volume from the
volume's copy of them. A fleet shares a handful of images: each is read once,
and the volumes are listed once, however many servers and threads ask.

The cloud is reached through `FleetCloud`, a narrow protocol that
`recovery.cloud.OpenStackCloud` implements; the tests use a fake.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from recovery.audit.model import CONSOLE_KINDS, ConsoleAccess, GuestAgent, Host
from recovery.cloud import guest_agent_enabled
from recovery.errors import CloudError, UsageError

if TYPE_CHECKING:
    from recovery.cloud import BootVolume, Server
    from recovery.safety.redact import Secret

__all__ = ["ConsoleProbe", "FleetCloud", "cloud_hosts", "compile_filter", "guest_agent"]

# Console URLs are API calls that create tokens: a few at a time, not one per SSH worker.
_CONSOLE_CONCURRENCY = 4

_K = TypeVar("_K")
_V = TypeVar("_V")


class FleetCloud(Protocol):
    """What the audit asks of a cloud."""

    def list_servers(self) -> list[Server]:
        """Every server of the project, with its addresses; CloudError on failure."""
        ...

    def ssh_address(self, server: Server, network: str | None = None) -> str:
        """The address a recovery would use; CloudError when the server has none usable."""
        ...

    def console_url(self, server: Server, kind: str) -> Secret:
        """A fresh console URL of `kind` ("serial" or "novnc"); CloudError when not offered."""
        ...

    def image_metadata(self, image_id: str) -> dict[str, str]:
        """An image's properties; CloudError (404) when it is gone or not visible."""
        ...

    def boot_volumes(self) -> dict[str, BootVolume]:
        """Each volume-booted server's boot volume, by server ID; CloudError when volumes cannot be listed."""
        ...

    def close(self) -> None: ...


def compile_filter(pattern: str | None) -> re.Pattern[str] | None:
    """`--server-filter`: a regular expression searched for in each server name.

    :raises UsageError: the expression does not compile.
    """
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--server-filter {pattern!r}: not a regular expression ({exc})") from exc


def cloud_hosts(
    cloud: FleetCloud,
    *,
    user: str,
    keys: Sequence[Path],
    server_filter: re.Pattern[str] | None = None,
    network: str | None = None,
    empty_ok: bool = False,
) -> tuple[list[Host], dict[str, Server]]:
    """The cloud's servers as hosts, sorted by name, and each host's server for later console checks.

    A name that several servers share (Nova allows it) gets the server ID
    appended, so every row of a report is one VM. A server that is not ACTIVE
    is still checked, with its status noted, because a stopped VM is also one
    that cannot be reached.

    :raises CloudError: listing the servers failed.
    :raises UsageError: the filter matched none of the servers, which is more
        likely a mistyped filter than an empty fleet; or the cloud lists no
        servers at all, unless `empty_ok` (revoke still has key pairs to delete).
    """
    servers = cloud.list_servers()
    chosen = sorted(
        (server for server in servers if server_filter is None or server_filter.search(server.name)),
        key=lambda server: (server.name, server.id),
    )
    if not servers and empty_ok:
        return [], {}
    if not servers:
        raise UsageError("the cloud lists no servers: nothing to audit")
    if not chosen:
        assert server_filter is not None
        raise UsageError(
            f"the cloud lists {len(servers)} servers, and no name matches --server-filter {server_filter.pattern!r}"
        )
    counts = Counter(server.name for server in chosen)
    hosts: list[Host] = []
    by_name: dict[str, Server] = {}
    for server in chosen:
        name = server.name if counts[server.name] == 1 else f"{server.name} ({server.id})"
        try:
            address: str | None = cloud.ssh_address(server, network)
            note = "" if server.status == "ACTIVE" else f"server is {server.status}"
        except CloudError as exc:  # ssh_address reads the listed addresses, no API call: none is usable
            address, note = None, str(exc)
        hosts.append(Host(name, address, 22, user, tuple(keys), server_id=server.id, note=note))
        by_name[name] = server
    return hosts, by_name


def guest_agent(properties: Mapping[str, str], source: str) -> GuestAgent:
    """What image properties say of the guest agent, read as Nova reads them; `source` names where they are."""
    return GuestAgent(guest_agent_enabled(properties), properties.get("os_admin_user") or None, source)


class _Once(Generic[_K, _V]):
    """Each key's answer fetched once, however many threads ask at the same time; a CloudError is an answer too."""

    def __init__(self, fetch: Callable[[_K], _V]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._slots: dict[_K, tuple[threading.Lock, list[_V | CloudError]]] = {}

    def get(self, key: _K) -> _V | CloudError:
        with self._lock:
            lock, answer = self._slots.setdefault(key, (threading.Lock(), []))
        with lock:  # a second thread asking for the same key waits for the first one's answer
            if not answer:
                try:
                    answer.append(self._fetch(key))
                except CloudError as exc:
                    answer.append(exc)
        return answer[0]


class ConsoleProbe:
    """Asks the cloud which consoles it would open for a server, and whether its guest agent is enabled.

    Safe to call from many threads.
    """

    def __init__(self, cloud: FleetCloud, servers: dict[str, Server]) -> None:
        self.cloud = cloud
        self.servers = servers
        self._slots = threading.Semaphore(_CONSOLE_CONCURRENCY)
        self._images: _Once[str, dict[str, str]] = _Once(self._image_metadata)
        self._volumes: _Once[None, dict[str, BootVolume]] = _Once(self._boot_volumes)

    def probe(self, host: Host) -> ConsoleAccess:
        """Every console kind the cloud issues a URL for, the reasons for the others, and the guest agent."""
        server = self.servers[host.name]
        available, problems = [], []
        for kind in CONSOLE_KINDS:
            try:
                with self._slots:
                    self.cloud.console_url(server, kind)
            except CloudError as exc:
                problems.append(f"{kind}: {exc}")
            else:
                available.append(kind)
        return ConsoleAccess(tuple(available), tuple(problems), self._guest_agent(server))

    def _guest_agent(self, server: Server) -> GuestAgent:
        """From the server's image, or its boot volume's copy of the image properties; unknown, with why, if neither."""
        if server.image_id:
            source = f"image {server.image_id}"
            properties = self._images.get(server.image_id)
            if isinstance(properties, CloudError):
                if properties.status_code == 404:
                    reason = f"image {server.image_id} is gone (deleted, or no longer shared with this project)"
                else:
                    reason = f"image {server.image_id} could not be read: {properties}"
                return GuestAgent(None, source=source, reason=reason)
            return guest_agent(properties, source)
        volumes = self._volumes.get(None)
        if isinstance(volumes, CloudError):
            return GuestAgent(None, reason=f"booted from a volume, and the volumes could not be listed: {volumes}")
        boot = volumes.get(server.id)
        if boot is None:
            return GuestAgent(None, reason="booted from a volume, and no bootable volume is attached to it")
        source = f"volume {boot.id}"
        if boot.image_metadata is None:
            reason = f"boot volume {boot.id} carries no image properties (no volume_image_metadata)"
            return GuestAgent(None, source=source, reason=reason)
        return guest_agent(boot.image_metadata, source)

    def _image_metadata(self, image_id: str) -> dict[str, str]:
        with self._slots:
            return self.cloud.image_metadata(image_id)

    def _boot_volumes(self, _: None) -> dict[str, BootVolume]:
        with self._slots:
            return self.cloud.boot_volumes()
