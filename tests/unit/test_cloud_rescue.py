"""OpenStackCloud's rescue-mode calls, on a stand-in for openstacksdk's compute proxy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from recovery.cloud import OpenStackCloud, Server
from recovery.errors import CloudError

SERVER_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


class Compute:
    def __init__(self, status: str) -> None:
        self.status = status
        self.calls: list[tuple[object, ...]] = []

    def get_server(self, server_id: str) -> SimpleNamespace:
        return SimpleNamespace(id=server_id, name="web-1", status=self.status, addresses={}, image={"id": "i"})

    def rescue_server(self, server_id: str, image: str) -> None:
        self.calls.append(("rescue", server_id, image))

    def unrescue_server(self, server_id: str) -> None:
        self.calls.append(("unrescue", server_id))


def _cloud(status: str) -> tuple[OpenStackCloud, Compute]:
    compute = Compute(status)
    return OpenStackCloud(SimpleNamespace(compute=compute), "c"), compute  # type: ignore[arg-type]


def test_a_server_left_in_rescue_is_refused_with_the_command_that_brings_it_back() -> None:
    cloud, _ = _cloud("RESCUE")
    with pytest.raises(CloudError, match=rf"is in RESCUE.*openstack server unrescue {SERVER_ID}"):
        cloud.find_server(SERVER_ID)


def test_server_state_answers_whatever_the_status_and_rescue_calls_reach_nova() -> None:
    cloud, compute = _cloud("RESCUE")
    server = cloud.server_state(SERVER_ID)
    assert server.status == "RESCUE"
    cloud.rescue(Server(SERVER_ID, "web-1", "ACTIVE", {}), "img-1")
    cloud.unrescue(server)
    assert compute.calls == [("rescue", SERVER_ID, "img-1"), ("unrescue", SERVER_ID)]
