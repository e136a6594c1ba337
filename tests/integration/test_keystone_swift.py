"""SwiftPublisher through Keystone, the way a user's cloud works: a password clouds.yaml.

The tempauth tests hand openstacksdk a token and a storage URL. Here openstacksdk gets
only an auth URL and a password, authenticates against a real Keystone, and finds Swift
in the service catalog; the Swift proxy checks the token with authtoken + keystoneauth.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from recovery.publishers.swift import SwiftPublisher
from tests.cloud.keystone_fixture import KeystoneServer, running_keystone, running_swift_with_keystone
from tests.cloud.swift_fixture import SwiftCluster

# openstacksdk 4.22 warns about InfluxDB on every connect (see test_swift_publisher.py).
pytestmark = pytest.mark.filterwarnings("ignore:Support for InfluxDB requires:PendingDeprecationWarning")

KEY_LINE = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0bqZ8Y1jW3oQ recovery-keystone-test\n"


@pytest.fixture(scope="module")
def keystone() -> Iterator[KeystoneServer]:
    with running_keystone() as server:
        yield server


@pytest.fixture(scope="module")
def swift(keystone: KeystoneServer) -> Iterator[SwiftCluster]:
    with running_swift_with_keystone(keystone) as cluster:
        yield cluster


def http_status(url: str) -> str:
    """The status curl sees for a GET of `url`, as text ("200", "401", ...)."""
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, timeout=30
    )
    return result.stdout.decode()


def test_a_password_clouds_yaml_publishes_and_withdraws(
    keystone: KeystoneServer, swift: SwiftCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id = keystone.add_member("demo", "tester", "tester-secret")
    clouds = keystone.write_clouds_yaml(tmp_path / "clouds.yaml", "keystone-test", "tester", "tester-secret", "demo")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    with SwiftPublisher(cloud="keystone-test") as publisher:
        item = publisher.publish("k.pub", KEY_LINE, timedelta(minutes=5))
        url = item.url.reveal()
        assert url.startswith(f"{swift.proxy_url}/v1/AUTH_{project_id}/recovery-keys/")  # found in the catalog
        fetched = subprocess.run(["curl", "-fsS", url], capture_output=True, timeout=30, check=True)
        assert fetched.stdout == KEY_LINE
        assert http_status(url.split("?")[0]) == "401"  # without the signature, keystoneauth refuses
        publisher.withdraw(item)
    assert http_status(url) in ("401", "404")
