"""Recoveries of a VM found by name in a real (test) cloud: Nova's API and serial proxy, Swift, S3.

The VM is the lab; Nova's fake driver points its serial console at the lab's serial
port, so the console goes through Nova's own websocket proxy. The public key goes
through a real Swift TempURL or a real S3 presigned URL (Swift's s3api), and the
object must be gone afterwards, after a failure too.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from recovery import lab
from tests.cloud.nova_fixture import NovaCloud, NovaServerSpec, running_nova
from tests.cloud.swift_fixture import SwiftCluster, running_swift
from tests.e2e.conftest import PLAYBOOK, ROOT, Result, host_key_fingerprints, recovery
from tests.e2e.test_recovery import key_lines, report_of

pytestmark = pytest.mark.lab

CLOUD = "testcloud"
BUCKET = "recovery-s3-keys"


@dataclass(frozen=True)
class CloudBed:
    lab: lab.LabInfo
    nova: NovaCloud
    swift: SwiftCluster
    directory: Path

    def env(self) -> dict[str, str]:
        return {
            "OS_CLIENT_CONFIG_FILE": str(self.directory / "clouds.yaml"),
            "RECOVERY_CONSOLE_PASSWORD": self.lab.console_password().reveal(),
            "RECOVERY_KEYS_DIR": str(self.directory / "keys"),
            "AWS_ACCESS_KEY_ID": self.swift.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.swift.s3_secret_key,
        }

    def run(self, *args: str, playbook: Path = PLAYBOOK, password: str | None = None) -> Result:
        env = self.env()
        if password is not None:
            env["RECOVERY_CONSOLE_PASSWORD"] = password
        return recovery(
            "run", str(playbook), "--cloud", CLOUD, "--config", str(self.directory / "config.yaml"),
            "--journal", str(self.directory / "runs"), *args, env=env,
        )

    def report(self, result: Result) -> dict:
        return report_of(self.directory, result)

    def objects(self, container: str) -> list[str]:
        request = urllib.request.Request(
            f"{self.swift.storage_url}/{container}?format=json", headers={"X-Auth-Token": self.swift.token()}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return [item["name"] for item in json.loads(body or b"[]")]


def _cloud_init_log(info: lab.LabInfo) -> str:
    return (
        "[   12.3] cloud-init[612]: Cloud-init v. 23.4 running 'modules:final'\n"
        "ci-info: no authorized SSH keys fingerprints found for user ubuntu.\n"
        + host_key_fingerprints(info)
    )


@pytest.fixture(scope="module")
def cloud() -> Iterator[CloudBed]:
    directory = Path(tempfile.mkdtemp(prefix="rcv-cloud-e2e-"))
    directory.chmod(0o755)
    info = lab.up(directory / "lab")
    try:
        (directory / "console.log").write_text(_cloud_init_log(info))
        servers = [
            NovaServerSpec("web-1", fixed_ip="10.0.0.5", floating_ip="127.0.0.1"),
            NovaServerSpec("dup", fixed_ip="10.0.0.6"),
            NovaServerSpec("dup", fixed_ip="10.0.0.7"),
        ]
        with running_swift() as swift, running_nova(
            (info.ssh_host, info.serial_port), directory / "console.log", servers
        ) as nova:
            nova.clouds_yaml(directory / "clouds.yaml", CLOUD, **swift.object_store_settings())
            config = {"publish": {"s3": {"endpoint": swift.s3_endpoint, "region": swift.s3_region, "bucket": BUCKET}}}
            (directory / "config.yaml").write_text(yaml.safe_dump(config))
            request = urllib.request.Request(
                f"{swift.storage_url}/{BUCKET}", method="PUT", headers={"X-Auth-Token": swift.token()}
            )
            urllib.request.urlopen(request, timeout=10).close()
            yield CloudBed(info, nova, swift, directory)
    finally:
        lab.down(directory / "lab")
        shutil.rmtree(directory, ignore_errors=True)


def _by_name(cloud: CloudBed, *extra: str) -> tuple[str, ...]:
    return ("-e", "server=web-1", "-e", f"user={cloud.lab.user}", "-e", f"ssh_port={cloud.lab.ssh_port}", *extra)


def test_a_vm_found_by_name_is_recovered_through_novas_proxy_and_a_swift_temp_url(cloud: CloudBed) -> None:
    result = cloud.run(*_by_name(cloud, "-e", "publish=swift"))
    assert result.code == 0, result.stderr
    report = cloud.report(result)
    assert report["proof"]["remote_user"] == cloud.lab.user
    assert report["proof"]["host_key_trust"] == "pinned"
    assert report["proof"]["host_key_fingerprint"] == cloud.lab.host_key_fingerprint
    assert len(report["published"]) == 1
    assert len(report["withdrawn"]) == 1
    assert cloud.objects("recovery-keys") == []
    new_key = report["keys"][0]["public_key"]
    assert key_lines(cloud.lab).count(new_key) == 1
    transcript = (cloud.directory / "runs" / result.run_id / "transcript.log").read_text()
    assert "source=wget" in transcript
    everything = transcript + result.stdout + result.stderr
    assert "temp_url_sig=***" in everything
    assert re.search(r"temp_url_sig=(?!\*\*\*)", everything) is None, "an unmasked TempURL signature leaked"


def test_s3_presigned_url_recovery_deletes_the_object(cloud: CloudBed) -> None:
    result = cloud.run(*_by_name(cloud, "-e", "publish=s3"))
    assert result.code == 0, result.stderr
    report = cloud.report(result)
    assert len(report["withdrawn"]) == 1
    assert cloud.objects(BUCKET) == []
    assert re.search(r"X-Amz-Signature=(?!\*\*\*)", result.stdout + result.stderr) is None


def test_the_published_object_is_deleted_even_when_a_later_step_fails(cloud: CloudBed) -> None:
    result = cloud.run(*_by_name(cloud, "-e", "publish=swift"), password="wrong-password")
    assert result.code == 1
    report = cloud.report(result)
    assert report["failed_step"] == "login"
    assert len(report["withdrawn"]) == 1
    assert cloud.objects("recovery-keys") == []


def test_the_new_key_can_be_imported_into_nova_and_rotated(cloud: CloudBed) -> None:
    result = cloud.run(*_by_name(cloud, "-e", "keypair_name=ops-recovered"))
    assert result.code == 0, result.stderr
    report = cloud.report(result)
    md5 = report["keys"][0]["md5"]
    assert f"imported key pair ops-recovered into Nova ({md5})" in report["notes"]
    rotate = ROOT / "playbooks" / "rotate-keypair.yaml"
    rotated = cloud.run("-e", "name=ops-rotated", "-e", "old_name=ops-recovered", playbook=rotate)
    assert rotated.code == 0, rotated.stderr
    notes = cloud.report(rotated)["notes"]
    assert "deleted key pair ops-recovered from Nova" in notes
    again = cloud.run("-e", "name=ops-other", "-e", "old_name=ops-recovered", playbook=rotate)
    assert again.code == 1
    assert "ops-recovered" in again.stderr


@pytest.mark.parametrize(("server", "message"), [("dup", "servers are named"), ("no-such-vm", "no server is named")])
def test_a_missing_or_ambiguous_server_is_a_clear_error(cloud: CloudBed, server: str, message: str) -> None:
    result = cloud.run("-e", f"server={server}", "-e", f"user={cloud.lab.user}")
    assert result.code == 1
    assert message in result.stderr.lower()
    assert cloud.report(result)["failed_step"] == "find"


def test_an_unknown_cloud_name_is_a_usage_error(cloud: CloudBed) -> None:
    env = cloud.env()
    result = recovery("run", str(PLAYBOOK), "--cloud", "nope", "-e", "server=web-1", "-e", "user=x",
                      "--journal", str(cloud.directory / "runs"), env=env)
    assert result.code == 2, result.stderr
    assert "nope" in result.stderr
    assert "nothing was changed" in result.stderr  # the pre-flight reads clouds.yaml before any step


def test_auto_publishing_picks_swift_when_the_cloud_has_object_storage(cloud: CloudBed) -> None:
    result = cloud.run(*_by_name(cloud, "-e", "publish=auto"))
    assert result.code == 0, result.stderr
    report = cloud.report(result)
    assert "publish method auto chose swift" in report["notes"]
    assert cloud.objects("recovery-keys") == []
