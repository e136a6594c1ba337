"""`recovery audit --cloud --check-console` against a real Nova: is each server's guest agent enabled?

The images are made the way a user makes them, through Nova's own API: a
snapshot of a booted server (`createImage` with `hw_qemu_guest_agent` and
`os_admin_user` as its metadata, which the test Glance keeps as image
properties), servers booted from it and from the stock image (which has no
such property), and one image deleted after its server booted. The servers are
on no network (`networks: none`), so each is `no_address` and no SSH check
waits: what is tested is the cloud's answer, read from Nova's image API.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery.cli.main import main
from recovery.ssh.keys import generate_keypair
from tests.cloud.nova_fixture import NovaCloud, NovaServerSpec, running_nova

pytestmark = [
    pytest.mark.lab,
    # openstacksdk 4.x warns about its own internals on every connection and request.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

CLOUD = "nova-agent"
STOCK_IMAGE = "155d900f-4e14-4e4c-a73d-069cbf4541e6"  # the test Glance's first image: no agent property
# createImage answers with the image's ID from 2.45; networks "none" needs 2.37.
MICROVERSION = "2.45"
# Nova's image API was removed from the compute API at 2.36.
IMAGE_API_MICROVERSION = "2.35"
BOOT_TIMEOUT = 120.0  # loose: a 2-core machine shared with other tests


def nova_call(nova: NovaCloud, method: str, path: str, body: Any = None, version: str = MICROVERSION) -> Any:
    """One compute API request (the test Nova takes the identity from headers it adds itself)."""
    request = urllib.request.Request(
        nova.compute_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "X-OpenStack-Nova-API-Version": version},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read()
    return json.loads(text) if text else None


def settled(nova: NovaCloud, server_id: str) -> None:
    """Wait until the server is ACTIVE with no task running (a snapshot is one: Nova refuses a second with 409)."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        server = nova_call(nova, "GET", f"/servers/{server_id}")["server"]
        status, task = server["status"], server.get("OS-EXT-STS:task_state")
        if status == "ACTIVE" and task is None:
            return
        if status == "ERROR" or time.monotonic() > deadline:
            pytest.fail(f"{server['name']} is {status} ({task}), not ACTIVE; the test Nova's log ends:\n"
                        + nova.log_tail())
        time.sleep(0.1)


def boot(nova: NovaCloud, name: str, image_id: str) -> None:
    server = nova_call(nova, "POST", "/servers", {"server": {"name": name, "imageRef": image_id, "flavorRef": "1",
                                                             "networks": "none"}})["server"]
    settled(nova, server["id"])


def snapshot(nova: NovaCloud, server_id: str, name: str, properties: dict[str, str]) -> str:
    body = {"createImage": {"name": name, "metadata": properties}}
    image_id = str(nova_call(nova, "POST", f"/servers/{server_id}/action", body)["image_id"])
    settled(nova, server_id)
    return image_id


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="rcv-audit-agent-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def nova(workdir: Path) -> Iterator[NovaCloud]:
    clouds_file = workdir / "clouds.yaml"
    with pytest.MonkeyPatch.context() as patch, running_nova(None, None, [NovaServerSpec("src", "10.0.0.5")]) as cloud:
        patch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_file))
        patch.delenv("OS_CLOUD", raising=False)
        cloud.clouds_yaml(clouds_file, CLOUD)
        yield cloud


def test_the_audit_says_per_server_whether_its_image_enables_the_guest_agent(
    workdir: Path, nova: NovaCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    source = nova.server_id("src")
    agent_image = snapshot(nova, source, "agent", {"hw_qemu_guest_agent": "True", "os_admin_user": "debian"})
    doomed_image = snapshot(nova, source, "doomed", {"hw_qemu_guest_agent": "True"})
    for name, image in (("vm-agent-1", agent_image), ("vm-agent-2", agent_image), ("vm-plain", STOCK_IMAGE),
                        ("vm-gone", doomed_image)):
        boot(nova, name, image)
    nova_call(nova, "DELETE", f"/images/{doomed_image}", version=IMAGE_API_MICROVERSION)
    key = generate_keypair(workdir / "audit", comment="audit")
    before = len(nova.api_requests())

    code = main(["audit", "--cloud", CLOUD, "--server-filter", "^vm-", "--check-console", "--key",
                 str(key.private_path), "--user", "ops", "--format", "json"])
    report = json.loads(capsys.readouterr().out)

    agents = {host["name"]: host["guest_agent"] for host in report["hosts"]}
    assert code == 1  # no server has an address: each is no_address
    assert agents["vm-agent-1"] == {"enabled": True, "admin_user": "debian", "source": f"image {agent_image}",
                                    "reason": None}
    assert agents["vm-agent-2"] == agents["vm-agent-1"]
    assert agents["vm-plain"] == {"enabled": False, "admin_user": None, "source": f"image {STOCK_IMAGE}",
                                  "reason": None}
    assert agents["vm-gone"]["enabled"] is None
    assert agents["vm-gone"]["reason"] == (
        f"image {doomed_image} is gone (deleted, or no longer shared with this project)"
    )
    # Two servers share the agent image: it is read once.
    image_reads = sorted(item["path"] for item in nova.api_requests()[before:] if "/images/" in item["path"])
    assert image_reads == sorted(f"/v2.1/images/{image}" for image in (agent_image, STOCK_IMAGE, doomed_image))
