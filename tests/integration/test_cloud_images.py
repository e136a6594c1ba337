"""The rescue image by ID or by name, as the openstack CLI finds one, against a real Nova and its Glance double.

The test Glance (Nova's own fixture) holds several images named ``fakeimage123456``, one ``fakeimage6``
and one ``fakeimage7``: a name only one image has, and a name five share. Before, the rescue
playbook handed whatever it was given to Nova's rescue, which refuses a name (400); now a name is
resolved to its image's ID before anything changes, and an ambiguous or unknown one stops the run there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.cloud import Image, OpenStackCloud, connect
from recovery.errors import CloudError
from tests.cloud.nova_fixture import NovaCloud, NovaServerSpec, running_nova

pytestmark = [
    pytest.mark.lab,
    # openstacksdk 4.x warns about its own internals on every connection and request.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "restore-access-rescue.yaml"
CLOUD = "nova-images"
UNIQUE = "70a599e0-31e7-49b7-b260-868f441e862b"  # fakeimage7
SHARED = ("155d900f-4e14-4e4c-a73d-069cbf4541e6", "a2459075-d96c-40d5-893e-577ff92e721c",
          "76fa36fc-c930-4bf3-8c8a-ea2a2420deb6", "cedef40a-ed67-4d10-800e-17455edce175",
          "c905cedb-7281-47e4-8a62-f26bc5fc4c77")  # named fakeimage123456, as are its encryption variants
PIN = "SHA256:" + "A" * 43


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="rcv-cloud-images-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def nova(workdir: Path) -> Iterator[NovaCloud]:
    clouds_file = workdir / "clouds.yaml"
    spec = NovaServerSpec("web-1", "10.0.0.5", floating_ip="127.0.0.1")
    with pytest.MonkeyPatch.context() as patch, running_nova(None, None, [spec]) as cloud:
        patch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_file))
        patch.delenv("OS_CLOUD", raising=False)
        cloud.clouds_yaml(clouds_file, CLOUD)
        yield cloud


@pytest.fixture(scope="module")
def cloud(nova: NovaCloud) -> Iterator[OpenStackCloud]:
    with connect(CLOUD) as opened:
        yield opened


def test_an_id_is_found_as_it_is(cloud: OpenStackCloud) -> None:
    assert cloud.find_image(UNIQUE) == Image(UNIQUE, "fakeimage7", "ACTIVE")


def test_a_name_only_one_image_has_is_that_images_id(cloud: OpenStackCloud) -> None:
    assert cloud.find_image("fakeimage7").id == UNIQUE


def test_a_name_several_images_have_is_refused_listing_their_ids(cloud: OpenStackCloud) -> None:
    with pytest.raises(CloudError, match=r"\d+ images are named 'fakeimage123456'; give the ID") as caught:
        cloud.find_image("fakeimage123456")
    for image_id in SHARED:
        assert f"  {image_id}  ACTIVE" in str(caught.value)


@pytest.mark.parametrize("given", ["no-such-image", str(uuid.UUID(int=7)), "fakeimage"])
def test_a_name_or_id_no_image_has_is_refused(cloud: OpenStackCloud, given: str) -> None:
    with pytest.raises(CloudError, match=rf"no image is named '{given}' or has that ID"):
        cloud.find_image(given)


def run(nova: NovaCloud, workdir: Path, name: str, image: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    directory = workdir / name
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(workdir / "clouds.yaml"), "RECOVERY_RESCUE_PASSWORD": "pw-123456",
           "RECOVERY_KEYS_DIR": str(directory / "keys")}
    completed = subprocess.run(
        [sys.executable, "-m", "recovery", "run", str(PLAYBOOK), "--cloud", CLOUD, "--journal", str(directory / "runs"),
         "-e", "server=web-1", "-e", "user=debian", "-e", f"host_key_fingerprint={PIN}", "-e", f"rescue_image={image}",
         "-e", "allow_reboot=true"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT, check=False,
    )
    return completed, directory


def rescues(nova: NovaCloud) -> int:
    return sum(1 for r in nova.api_requests() if r["method"] == "POST" and r["path"].endswith("/action"))


def test_an_ambiguous_name_stops_the_rescue_run_before_anything_changes(nova: NovaCloud, workdir: Path) -> None:
    before = rescues(nova)

    completed, directory = run(nova, workdir, "ambiguous", "fakeimage123456")

    assert completed.returncode == 1, completed.stderr
    assert "step rescue_image" in completed.stderr
    assert all(image_id in completed.stderr for image_id in SHARED), completed.stderr
    assert rescues(nova) == before  # no rescue, no unrescue
    assert not any((directory / "keys").rglob("id_*"))  # not even a key generated


def test_the_rescue_run_takes_a_name_and_rescues_with_its_id(nova: NovaCloud, workdir: Path) -> None:
    """The test Nova here has no serial console: the run fails after the rescue, and the cleanup unrescues."""
    completed, directory = run(nova, workdir, "named", "fakeimage7")

    [report_path] = (directory / "runs").glob("*/report.json")
    report = json.loads(report_path.read_text())
    assert f"rescue image {UNIQUE} (named 'fakeimage7'), ACTIVE" in report["notes"], report["notes"]
    assert any(change.endswith(f"into rescue image {UNIQUE}") for change in report["vm_changes"]), report
    # Nova took the ID: the run got as far as the serial console, which this cloud lacks.
    assert completed.returncode == 1
    assert "serial" in completed.stderr, completed.stderr
