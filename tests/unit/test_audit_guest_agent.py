"""`--check-console`'s guest agent column against a fake cloud: images, volumes, unreadable ones, one lookup each."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from recovery.audit.cloud_inventory import ConsoleProbe, cloud_hosts, guest_agent
from recovery.audit.model import AuditReport, ConsoleAccess, GuestAgent, Host, HostResult, Status
from recovery.audit.render import render
from recovery.cloud import BootVolume, OpenStackCloud, Server, _server
from recovery.errors import CloudError, CloudUnavailable
from tests.unit.test_audit_cloud_inventory import FakeCloud

KEYS = (Path("/keys/audit"),)
AGENT = {"hw_qemu_guest_agent": "True", "os_admin_user": "ubuntu", "os_distro": "ubuntu"}
PLAIN = {"os_distro": "cirros"}


def server(name: str, image_id: str = "") -> Server:
    return Server(f"id-{name}", name, "ACTIVE", {"private": [{"addr": "10.0.0.1", "version": 4}]}, image_id=image_id)


class ImageCloud(FakeCloud):
    """A FakeCloud with images and boot volumes; every image lookup and volume listing counted."""

    def __init__(
        self,
        servers: list[Server],
        images: dict[str, dict[str, str] | CloudError],
        volumes: dict[str, BootVolume] | CloudError | None = None,
        delay: float = 0.0,
    ) -> None:
        super().__init__(servers, consoles={item.name: ("serial",) for item in servers})
        self.images = images
        self.volumes = volumes if volumes is not None else {}
        self.delay = delay
        self.image_lookups: list[str] = []
        self.volume_listings = 0
        self._lock = threading.Lock()

    def image_metadata(self, image_id: str) -> dict[str, str]:
        with self._lock:
            self.image_lookups.append(image_id)
        time.sleep(self.delay)  # long enough for other threads to ask for the same image meanwhile
        answer = self.images.get(image_id, CloudError(f"image {image_id}: Image not found.", status_code=404))
        if isinstance(answer, CloudError):
            raise answer
        return dict(answer)

    def boot_volumes(self) -> dict[str, BootVolume]:
        with self._lock:
            self.volume_listings += 1
        time.sleep(self.delay)
        if isinstance(self.volumes, CloudError):
            raise self.volumes
        return dict(self.volumes)


def agents(cloud: ImageCloud, threads: int = 1) -> dict[str, GuestAgent | None]:
    hosts, servers = cloud_hosts(cloud, user="u", keys=KEYS)
    probe = ConsoleProbe(cloud, servers)
    with ThreadPoolExecutor(threads) as pool:
        found = dict(zip([host.name for host in hosts], pool.map(probe.probe, hosts), strict=True))
    return {name: access.guest_agent for name, access in found.items()}


def test_the_image_says_yes_with_its_admin_user_or_no() -> None:
    cloud = ImageCloud([server("web-1", "img-agent"), server("db-1", "img-plain")],
                       {"img-agent": AGENT, "img-plain": PLAIN})

    found = agents(cloud)

    assert found["web-1"] == GuestAgent(True, "ubuntu", "image img-agent")
    assert found["db-1"] == GuestAgent(False, None, "image img-plain")
    assert cloud.volume_listings == 0  # no server booted from a volume: no volume listing


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("True", True), ("yes", True), ("1", True), (" on ", True), ("false", False), ("no", False), ("maybe", False)],
)
def test_the_property_is_read_as_nova_reads_it(value: str, enabled: bool) -> None:
    assert guest_agent({"hw_qemu_guest_agent": value}, "image x").enabled is enabled


def test_a_volume_booted_server_reads_its_boot_volume_s_image_properties() -> None:
    fleet = [server("vol-agent"), server("vol-plain"), server("vol-blank"), server("vol-missing")]
    volumes = {
        "id-vol-agent": BootVolume("v1", {"hw_qemu_guest_agent": "True", "os_admin_user": "debian"}),
        "id-vol-plain": BootVolume("v2", {"os_distro": "debian"}),
        "id-vol-blank": BootVolume("v3", None),
    }
    cloud = ImageCloud(fleet, {}, volumes)

    found = agents(cloud, threads=4)

    assert found["vol-agent"] == GuestAgent(True, "debian", "volume v1")
    assert found["vol-plain"] == GuestAgent(False, None, "volume v2")
    assert found["vol-blank"] == GuestAgent(
        None, None, "volume v3", "boot volume v3 carries no image properties (no volume_image_metadata)"
    )
    assert found["vol-missing"] == GuestAgent(
        None, reason="booted from a volume, and no bootable volume is attached to it"
    )
    assert (cloud.volume_listings, cloud.image_lookups) == (1, [])  # one listing for all four


def test_a_cloud_without_a_volume_service_leaves_volume_booted_servers_unknown_with_why() -> None:
    refusal = CloudError("cloud 'c': list volumes: public endpoint for block-storage service not found")
    cloud = ImageCloud([server("vol-1"), server("vol-2"), server("web-1", "img-agent")], {"img-agent": AGENT}, refusal)

    found = agents(cloud)

    assert found["vol-1"] == GuestAgent(
        None, reason=f"booted from a volume, and the volumes could not be listed: {refusal}"
    )
    assert found["vol-2"] == found["vol-1"]
    assert found["web-1"] == GuestAgent(True, "ubuntu", "image img-agent")
    assert cloud.volume_listings == 1  # the failure is the answer for every volume-booted server


def test_a_deleted_or_unreadable_image_is_unknown_with_the_reason() -> None:
    busy = CloudUnavailable("cloud 'c': read the properties of image img-busy: Service Unavailable", status_code=503)
    cloud = ImageCloud([server("gone-1", "img-gone"), server("busy-1", "img-busy")], {"img-busy": busy})

    found = agents(cloud)

    assert found["gone-1"] == GuestAgent(
        None, None, "image img-gone", "image img-gone is gone (deleted, or no longer shared with this project)"
    )
    assert found["busy-1"] is not None
    assert found["busy-1"].enabled is None
    assert found["busy-1"].reason == f"image img-busy could not be read: {busy}"


def test_each_image_is_looked_up_once_however_many_servers_and_threads_share_it() -> None:
    images = {"img-a": AGENT, "img-b": PLAIN, "img-gone": CloudError("not found", status_code=404)}
    fleet = [server(f"vm-{index:03}", sorted(images)[index % 3]) for index in range(200)]
    cloud = ImageCloud(fleet, {name: value for name, value in images.items() if name != "img-gone"}, delay=0.05)

    found = agents(cloud, threads=50)

    assert sorted(cloud.image_lookups) == ["img-a", "img-b", "img-gone"]
    assert sum(1 for agent in found.values() if agent is not None and agent.enabled) == 67
    assert sum(1 for agent in found.values() if agent is not None and agent.enabled is None) == 66


def test_every_format_says_yes_no_or_unknown_per_server() -> None:
    agents_by_name = {
        "yes-1": GuestAgent(True, "debian", "volume v1"),
        "no-1": GuestAgent(False, None, "image img-b"),
        "unknown-1": GuestAgent(None, reason="booted from a volume, and no bootable volume is attached to it"),
    }
    report = AuditReport(
        results=tuple(
            HostResult(Host(name, "10.0.0.1", 22, "u", KEYS), Status.TIMEOUT, 5.0, "10.0.0.1:22 did not answer in time",
                       console=ConsoleAccess(("serial",), guest_agent=agent))
            for name, agent in agents_by_name.items()
        ),
        started_at=datetime(2026, 12, 6, tzinfo=UTC),
        seconds=5.0,
    )

    table = render(report, "table").splitlines()
    hosts = {item["name"]: item["guest_agent"] for item in json.loads(render(report, "json"))["hosts"]}
    prometheus = [line for line in render(report, "prometheus").splitlines() if line.startswith("recovery_guest")]

    assert table[0].split() == ["NAME", "ADDRESS", "STATUS", "SECONDS", "CONSOLE", "AGENT", "DETAIL"]
    assert [line.split()[5] for line in table[1:4]] == ["yes", "no", "unknown"]
    assert "(debian)" in table[1]
    assert table[3].endswith("; guest agent unknown: booted from a volume, and no bootable volume is attached to it")
    assert hosts["yes-1"] == {"enabled": True, "admin_user": "debian", "source": "volume v1", "reason": None}
    assert hosts["no-1"]["enabled"] is False
    assert (hosts["unknown-1"]["enabled"], hosts["unknown-1"]["source"]) == (None, None)
    assert prometheus == [  # no sample for unknown: absent is not "no"
        'recovery_guest_agent_enabled{server="yes-1"} 1',
        'recovery_guest_agent_enabled{server="no-1"} 0',
    ]


# -- recovery.cloud: what the listings give ---------------------------------------------------


def test_the_listing_s_image_id_is_kept_and_a_volume_booted_server_has_none() -> None:
    from openstack.compute.v2.server import Server as SDKServer

    booted = SDKServer.existing(id="s1", name="a", status="ACTIVE", image={"id": "img-1", "links": []})
    from_volume = SDKServer.existing(id="s2", name="b", status="ACTIVE", image="")

    assert (_server(booted).image_id, _server(from_volume).image_id) == ("img-1", "")


def test_boot_volumes_are_the_bootable_volume_on_each_server_s_first_device() -> None:
    def volume(volume_id: str, bootable: bool, metadata: dict[str, str] | None, *attached: tuple[str, str]) -> object:
        attachments = [{"server_id": server_id, "device": device} for server_id, device in attached]
        return SimpleNamespace(id=volume_id, is_bootable=bootable, volume_image_metadata=metadata,
                               attachments=attachments)

    listing = [
        volume("data", True, {"hw_qemu_guest_agent": "no"}, ("s1", "/dev/vdb")),
        volume("root", True, {"hw_qemu_guest_agent": "True"}, ("s1", "/dev/vda")),
        volume("scratch", False, None, ("s2", "/dev/vda")),
        volume("blank", True, {}, ("s3", "/dev/vda")),
        volume("spare", True, {"hw_qemu_guest_agent": "True"}),
    ]
    connection = SimpleNamespace(block_storage=SimpleNamespace(volumes=lambda details: iter(listing)))
    cloud = OpenStackCloud(connection, "c")  # type: ignore[arg-type]

    assert cloud.boot_volumes() == {
        "s1": BootVolume("root", {"hw_qemu_guest_agent": "True"}),
        "s3": BootVolume("blank", None),
    }
