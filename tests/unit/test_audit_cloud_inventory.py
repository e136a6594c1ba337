"""The cloud inventory against a fake cloud implementing `FleetCloud`: addresses, filters, consoles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recovery.audit.cloud_inventory import ConsoleProbe, cloud_hosts, compile_filter
from recovery.audit.model import CONSOLE_KINDS, Host
from recovery.cloud import CONSOLE_KINDS as CLOUD_CONSOLE_KINDS
from recovery.cloud import BootVolume, Server, select_ssh_address
from recovery.errors import CloudError, UsageError
from recovery.safety.redact import Secret

KEYS = (Path("/keys/audit"),)


def server(name: str, *addresses: tuple[str, str, str], status: str = "ACTIVE", server_id: str = "") -> Server:
    """addresses: (network, address, "fixed" or "floating")."""
    nets: dict[str, list[dict[str, object]]] = {}
    for net, addr, kind in addresses:
        nets.setdefault(net, []).append({"addr": addr, "version": 6 if ":" in addr else 4, "OS-EXT-IPS:type": kind})
    return Server(id=server_id or f"id-{name}", name=name, status=status, addresses=nets)


class FakeCloud:
    """Servers in memory; consoles offered per server; every console request recorded."""

    def __init__(self, servers: list[Server], consoles: dict[str, tuple[str, ...]] | None = None) -> None:
        self.servers = servers
        self.consoles = consoles or {}
        self.asked: list[tuple[str, str]] = []
        self.closed = False

    def list_servers(self) -> list[Server]:
        return list(self.servers)

    def ssh_address(self, server: Server, network: str | None = None) -> str:
        return select_ssh_address(server, network, cloud="fake")

    def console_url(self, server: Server, kind: str) -> Secret:
        self.asked.append((server.name, kind))
        if kind not in self.consoles.get(server.name, ()):
            raise CloudError(f"no {kind} console for {server.name}", status_code=400)
        return Secret(f"ws://console.example/?token=secret-{server.name}")

    def image_metadata(self, image_id: str) -> dict[str, str]:
        raise CloudError(f"image {image_id}: Image not found.", status_code=404)

    def boot_volumes(self) -> dict[str, BootVolume]:
        return {}  # these servers have no image (Server.image_id ""), and no volume either

    def close(self) -> None:
        self.closed = True


FLEET = [
    server("web-2", ("private", "10.0.0.2", "fixed"), ("private", "203.0.113.2", "floating")),
    server("web-1", ("private", "10.0.0.1", "fixed")),
    server("db-1", ("private", "10.0.1.1", "fixed"), ("backup", "10.0.2.1", "fixed")),
    server("building", status="BUILD"),
    server("stopped", ("private", "10.0.0.9", "fixed"), status="SHUTOFF"),
]


def test_servers_become_hosts_with_the_address_a_recovery_would_use() -> None:
    hosts, servers = cloud_hosts(FakeCloud(FLEET), user="ubuntu", keys=KEYS)

    by_name = {host.name: host for host in hosts}
    assert [host.name for host in hosts] == ["building", "db-1", "stopped", "web-1", "web-2"]
    assert by_name["web-2"] == Host("web-2", "203.0.113.2", 22, "ubuntu", KEYS, server_id="id-web-2")
    assert by_name["web-1"].address == "10.0.0.1"
    # No address, or no way to choose one: no_address, with the cloud's reason as the note.
    assert by_name["building"].address is None
    assert "has no IP address" in by_name["building"].note
    assert by_name["db-1"].address is None
    assert "several private addresses" in by_name["db-1"].note
    assert by_name["stopped"].note == "server is SHUTOFF"
    assert servers["web-1"] is FLEET[1]


def test_network_picks_among_private_addresses() -> None:
    only_db = compile_filter("^db")

    hosts, _ = cloud_hosts(FakeCloud(FLEET), user="ubuntu", keys=KEYS, server_filter=only_db, network="backup")

    assert [(host.name, host.address) for host in hosts] == [("db-1", "10.0.2.1")]


def test_servers_sharing_a_name_stay_apart() -> None:
    twins = [
        server("app", ("n", "10.0.0.1", "fixed"), server_id="b2"),
        server("app", ("n", "10.0.0.2", "fixed"), server_id="a1"),
    ]

    hosts, servers = cloud_hosts(FakeCloud(twins), user="u", keys=KEYS)

    assert [host.name for host in hosts] == ["app (a1)", "app (b2)"]
    assert servers["app (b2)"].id == "b2"


def test_a_filter_that_matches_nothing_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=re.escape("lists 5 servers, and no name matches --server-filter '^web-9'")):
        cloud_hosts(FakeCloud(FLEET), user="u", keys=KEYS, server_filter=compile_filter("^web-9"))


def test_a_bad_filter_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a regular expression"):
        compile_filter("web-[")


def test_console_probe_reports_what_can_be_opened_and_drops_the_url() -> None:
    cloud = FakeCloud(FLEET, consoles={"web-1": ("serial", "novnc"), "web-2": ("novnc",)})
    hosts, servers = cloud_hosts(cloud, user="u", keys=KEYS, server_filter=compile_filter("^web"))
    probe = ConsoleProbe(cloud, servers)

    access = {host.name: probe.probe(host) for host in hosts}

    assert (access["web-1"].available, access["web-1"].problems) == (("serial", "novnc"), ())
    assert access["web-2"].available == ("novnc",)
    assert access["web-2"].problems == ("serial: no serial console for web-2 (HTTP 400)",)
    assert sorted(cloud.asked) == [("web-1", "novnc"), ("web-1", "serial"), ("web-2", "novnc"), ("web-2", "serial")]
    assert "secret-" not in repr(access)


def test_the_audit_asks_for_exactly_the_consoles_the_cloud_driver_opens() -> None:
    """The audit writes the kinds out (importing recovery.cloud would slow every audit's start)."""
    assert tuple(CLOUD_CONSOLE_KINDS) == CONSOLE_KINDS
