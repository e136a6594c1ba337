"""Keystone, the way a user's cloud works: a password clouds.yaml, or a sourced openrc file.

The tempauth tests hand openstacksdk a token and a storage URL. Here openstacksdk gets
only an auth URL and a password, authenticates against a real Keystone, and finds Swift
in the service catalog; the Swift proxy checks the token with authtoken + keystoneauth.
A whole run (the CLI, with the test Nova as its compute endpoint) shows that Nova and
Swift share one login and that every call carries the run's global request ID.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import pytest

from recovery import __version__
from recovery.cloud import ENVVARS_CLOUD, cloud_to_use, connect
from recovery.engine.config import Config
from recovery.publishers.swift import SwiftPublisher
from recovery.steps.cloud import cloud_named
from tests.cloud.keystone_fixture import REGION, KeystoneServer, running_keystone, running_swift_with_keystone
from tests.cloud.nova_fixture import NovaCloud, NovaServerSpec, running_nova
from tests.cloud.recording_proxy import recording_proxy
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


@pytest.fixture(scope="module")
def project_id(keystone: KeystoneServer) -> str:
    """The project of the ordinary member every test logs in as (tester in demo)."""
    return keystone.add_member("demo", "tester", "tester-secret")


def openrc(auth_url: str) -> dict[str, str]:
    """What `source demo-openrc.sh`, as a cloud's dashboard hands it out, sets: no OS_CLOUD."""
    return {
        "OS_AUTH_URL": auth_url,
        "OS_USERNAME": "tester",
        "OS_PASSWORD": "tester-secret",
        "OS_PROJECT_NAME": "demo",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_ID": "default",
        "OS_REGION_NAME": REGION,
        "OS_INTERFACE": "public",
        "OS_IDENTITY_API_VERSION": "3",
    }


def without_openstack_variables(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """`environ` without a developer's own OS_* variables, and with no clouds.yaml of theirs first in line."""
    clean = {name: value for name, value in environ.items() if not name.startswith("OS_")}
    clean["OS_CLIENT_CONFIG_FILE"] = str(tmp_path / "no-clouds.yaml")
    return clean


def http_status(url: str) -> str:
    """The status curl sees for a GET of `url`, as text ("200", "401", ...)."""
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, timeout=30
    )
    return result.stdout.decode()


def test_a_password_clouds_yaml_publishes_and_withdraws(
    keystone: KeystoneServer, swift: SwiftCluster, project_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_an_openrc_environment_without_os_cloud_is_the_envvars_cloud(
    keystone: KeystoneServer, swift: SwiftCluster, project_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith("OS_")]:
        monkeypatch.delenv(name)
    for name, value in (without_openstack_variables({}, tmp_path) | openrc(keystone.url)).items():
        monkeypatch.setenv(name, value)
    assert cloud_to_use(None) == ENVVARS_CLOUD
    assert cloud_named({}, Config()) == []  # the pre-flight of every cloud step accepts it
    with connect(None) as cloud:
        assert cloud.has_object_store()  # the catalog Keystone gave the openrc's user
        with SwiftPublisher(connection=cloud.connection) as publisher:
            item = publisher.publish("k.pub", KEY_LINE, timedelta(minutes=5))
            assert item.url.reveal().startswith(f"{swift.proxy_url}/v1/AUTH_{project_id}/recovery-keys/")
            publisher.withdraw(item)


PLAYBOOK = """\
name: cloud-calls
description: Find the server and publish a new public key through Swift, as a recovery does.
inputs:
  server:
    type: string
steps:
  - id: key
    uses: keys.generate
    with:
      comment: cloud-calls
  - id: find
    uses: cloud.find_server
    with:
      server: "{{ inputs.server }}"
  - id: publish
    uses: publish.swift
    with:
      key: "{{ steps.key.outputs.public_key }}"
"""


@pytest.fixture(scope="module")
def nova() -> Iterator[NovaCloud]:
    """The test Nova, as the compute endpoint of the openrc user (it takes any token, Keystone's too)."""
    with running_nova(None, None, [NovaServerSpec("web-1", "10.0.0.5", floating_ip="127.0.0.1")]) as cloud:
        yield cloud


def recovery(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI, as a user runs it in a shell where an openrc file was sourced."""
    return subprocess.run(
        [sys.executable, "-m", "recovery", *args], env=env, capture_output=True, text=True, timeout=300
    )


def openrc_shell(auth_url: str, nova: NovaCloud, tmp_path: Path) -> dict[str, str]:
    env = without_openstack_variables(dict(os.environ), tmp_path) | openrc(auth_url)
    return env | {"OS_COMPUTE_ENDPOINT_OVERRIDE": nova.compute_url, "RECOVERY_KEYS_DIR": str(tmp_path / "keys")}


def test_a_run_logs_in_once_for_nova_and_swift_and_every_call_carries_its_request_id(
    keystone: KeystoneServer, swift: SwiftCluster, nova: NovaCloud, project_id: str, tmp_path: Path
) -> None:
    playbook = tmp_path / "cloud-calls.yaml"
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    runs = tmp_path / "runs"
    # The run's auth URL is a recording proxy: Keystone's own log does not say whose token it issued.
    with recording_proxy(keystone.url) as identity:
        env = openrc_shell(identity.url, nova, tmp_path)
        result = recovery(env, "run", str(playbook), "--journal", str(runs), "-e", "server=web-1")
        assert result.returncode == 0, result.stderr
    nova_requests = nova.api_requests()

    (run_dir,) = (report.parent for report in runs.glob("*/report.json"))
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    request_id = report["global_request_id"]
    assert re.fullmatch(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", request_id)
    assert request_id in (run_dir / "report.md").read_text(encoding="utf-8")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {"cloud": ENVVARS_CLOUD, "global_request_id": request_id} in [
        {key: event.get(key) for key in ("cloud", "global_request_id")}
        for event in events
        if event["event"] == "cloud_connected"
    ]
    assert report["published"]  # Swift was used,
    assert report["withdrawn"]  # and cleaned up

    # One login for the whole run: Nova's lookup and Swift's upload and cleanup share the token.
    assert identity.count("POST", "/v3/auth/tokens") == 1
    # Keystone saw the run's request ID on that login, and logs it (oslo.log's [global_request_id ...]).
    assert all(seen.headers.get("X-Openstack-Request-Id") == request_id for seen in identity.requests)
    assert f"[{request_id} req-" in (keystone.root / "keystone.log").read_text(encoding="utf-8")

    # Nova saw the run's request ID and the tool's name and version on every call the run made.
    ours = [seen for seen in nova_requests if "recovery/" in (seen["user_agent"] or "")]
    assert any(seen["path"].endswith("/servers/detail") for seen in ours), nova_requests
    assert all(seen["global_request_id"] == request_id for seen in ours), ours
    assert all(seen["user_agent"].startswith(f"recovery/{__version__} ") for seen in ours), ours

    # So did Swift: its access log has the ID, next to the run's User-Agent, on the upload and the delete.
    tagged = [unquote(line) for line in swift.log_path.read_text(encoding="utf-8").splitlines() if request_id in line]
    assert any(" PUT /v1/AUTH_" in line for line in tagged), tagged
    assert any(" DELETE /v1/AUTH_" in line for line in tagged), tagged
    assert all(f"recovery/{__version__}" in line for line in tagged), tagged


def test_audit_cloud_without_a_name_audits_the_openrc_cloud(
    keystone: KeystoneServer, nova: NovaCloud, project_id: str, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    env = openrc_shell(keystone.url, nova, tmp_path)
    result = recovery(
        env, "audit", "--cloud", "--user", "nobody", "--key", str(key), "--timeout", "2", "--format", "json"
    )
    assert result.returncode in (0, 1), result.stderr  # whatever 127.0.0.1:22 answers, the cloud was listed
    (host,) = json.loads(result.stdout)["hosts"]
    assert host["name"] == "web-1"
