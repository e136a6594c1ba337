"""Rescue mode (issue 10, route 4) through a real Nova 34 whose fake driver runs real QEMU machines.

tests/cloud/rescue_bed.py: Nova's rescue starts a busybox rescue system booted from a rescue disk
labelled like the server's root (``rootfs``), the server's own disk (an overlay on the Debian agent
image: user ``debian`` with a locked password, sshd) attached second; its serial console goes
through Nova's serial proxy. Unrescue cold-boots the server's disk. The run is proven by an SSH
login with the image's host key pinned; the old key must still log in, and the key file must
belong to the uid/gid of the server's /etc/passwd.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from recovery.lab.processes import free_port
from tests.agentvm.vm import IMAGE
from tests.cloud.nova_fixture import NovaCloud, NovaServerSpec, running_nova
from tests.cloud.rescue_bed import RESCUE_USER, RescueBed, prepare, stop_leftovers
from tests.e2e.conftest import ROOT, Result, recovery

pytestmark = pytest.mark.vm

PLAYBOOK = ROOT / "playbooks" / "restore-access-rescue.yaml"
CLOUD = "rescuecloud"
RESCUE_IMAGE = "a2459075-d96c-40d5-893e-577ff92e721c"  # one of the Glance fixture's images
PASSWORD = "rescue-Passw0rd"


@dataclass(frozen=True)
class Bed:
    rescue: RescueBed
    nova: NovaCloud
    directory: Path

    def env(self, password: str | None) -> dict[str, str]:
        env = {"OS_CLIENT_CONFIG_FILE": str(self.directory / "clouds.yaml"),
               "RECOVERY_KEYS_DIR": str(self.directory / "keys")}
        if password is not None:
            env["RECOVERY_RESCUE_PASSWORD"] = password
        return env

    def run(self, *args: str, password: str | None = PASSWORD, timeout: float = 400) -> Result:
        return recovery("run", str(PLAYBOOK), "--cloud", CLOUD, "--journal", str(self.directory / "runs"),
                        *args, env=self.env(password), timeout=timeout)

    def report(self, result: Result) -> dict:
        return json.loads((self.directory / "runs" / result.run_id / "report.json").read_text())

    def outputs(self, result: Result) -> dict[str, dict]:
        """Each step's outputs, from the run journal's step records."""
        steps = self.directory / "runs" / result.run_id / "steps"
        records = [json.loads(path.read_text()) for path in steps.glob("*.json")]
        return {record["id"]: record["outputs"] for record in records}

    def status(self) -> str:
        url = f"{self.nova.compute_url}/servers/{self.nova.server_id('web-1')}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return str(json.load(response)["server"]["status"])

    def rescue_requests(self) -> list[dict]:
        return [r for r in self.nova.api_requests() if r["method"] == "POST" and r["path"].endswith("/action")]


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    directory = Path(tempfile.mkdtemp(prefix="rcv-rescue-e2e-"))
    rescue = prepare(directory / "machines", ssh_port=free_port(), rescue_serial_port=free_port(), password=PASSWORD)
    try:
        with running_nova(None, None, [NovaServerSpec("web-1", fixed_ip="10.0.0.5", floating_ip="127.0.0.1")],
                          machines=rescue.spec_path) as nova:
            nova.clouds_yaml(directory / "clouds.yaml", CLOUD)
            yield Bed(rescue, nova, directory)
    finally:
        stop_leftovers(rescue.pidfiles)
        shutil.rmtree(directory, ignore_errors=True)


def _args(bed: Bed, *extra: str) -> tuple[str, ...]:
    return ("-e", "server=web-1", "-e", "user=debian", "-e", f"ssh_port={bed.rescue.ssh_port}",
            "-e", f"host_key_fingerprint={bed.rescue.host_key}", "-e", f"rescue_image={RESCUE_IMAGE}",
            "-e", f"rescue_user={RESCUE_USER}", *extra)


def _nothing_changed(bed: Bed, result: Result) -> None:
    assert result.code == 2, result.stderr
    assert bed.rescue_requests() == []
    assert bed.status() == "ACTIVE"
    assert not (bed.directory / "keys").exists() or not any((bed.directory / "keys").rglob("id_*"))


def test_without_allow_reboot_the_run_is_refused_before_anything_changes(bed: Bed) -> None:
    result = bed.run(*_args(bed))
    _nothing_changed(bed, result)
    assert "allow_reboot=true" in result.stderr


def test_without_a_rescue_image_the_run_is_refused_before_anything_changes(bed: Bed) -> None:
    result = bed.run(*_args(bed, "-e", "allow_reboot=true", "-e", "rescue_image="))
    _nothing_changed(bed, result)
    assert "rescue_image=IMAGE (its ID, or its name" in result.stderr


def test_without_the_rescue_password_the_run_is_refused_before_anything_changes(bed: Bed) -> None:
    result = bed.run(*_args(bed, "-e", "allow_reboot=true"), password=None)
    _nothing_changed(bed, result)
    assert "rescue_password" in result.stderr


def test_ctrl_c_while_the_rescue_system_boots_still_unrescues_the_server(bed: Bed) -> None:
    """The unrescue is a cleanup: after Ctrl-C the server is back on its own disk, ACTIVE."""
    before = len(bed.rescue_requests())
    process = subprocess.Popen(
        [sys.executable, "-m", "recovery", "run", str(PLAYBOOK), "--cloud", CLOUD, "--journal",
         str(bed.directory / "runs"), *_args(bed, "-e", "allow_reboot=true")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **bed.env(PASSWORD)},
    )
    seen = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if "] rescue_booted:" in line:  # the server is in RESCUE, its rescue system booting
                break
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=300)
    finally:
        process.kill()
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr[-3000:]
    assert "succeeded unrescue_after_failure" in stderr, stderr[-3000:]
    assert bed.status() == "ACTIVE"
    assert len(bed.rescue_requests()) == before + 2  # the rescue, and the unrescue of the cleanup


def test_rescue_mode_recovers_a_locked_password_vm_on_its_own_disk_and_proves_it_by_ssh(bed: Bed) -> None:
    before = len(bed.rescue_requests())
    started = time.monotonic()
    result = bed.run(*_args(bed, "-e", "allow_reboot=true"))
    seconds = time.monotonic() - started
    assert result.code == 0, result.stderr[-4000:]
    report = bed.report(result)
    assert report["proof"]["remote_user"] == "debian"
    assert report["proof"]["host_key_trust"] == "pinned"
    outputs = bed.outputs(result)
    # Same label on both disks: the rescue system's own root (vda) is left out, the server's (vdb) chosen.
    assert outputs["root_disk"]["device"] == "/dev/vdb", outputs["root_disk"]
    assert outputs["root_disk"]["rescue_disks"] == "vda"
    assert outputs["install"]["added"] is True
    assert outputs["unrescue"]["unrescued"] is True
    assert bed.status() == "ACTIVE"
    assert len(bed.rescue_requests()) == before + 2  # one rescue, one unrescue
    new_key = report["keys"][0]["private_key_path"]
    ids = _ssh(bed, Path(new_key), "id -u; id -g; stat -c '%u:%g %a' ~/.ssh ~/.ssh/authorized_keys; "
                                   "grep -c '' ~/.ssh/authorized_keys")
    uid, gid, ssh_dir, keys_file, count = ids.split("\n")[:5]
    assert ssh_dir == f"{uid}:{gid} 700"
    assert keys_file == f"{uid}:{gid} 600"
    assert int(count) == 2  # the old key kept, the new one added
    assert _ssh(bed, bed.rescue.old_key, "id -un").strip() == "debian"  # the old key still logs in
    print(f"rescue route: {seconds:.1f} s from start to proven login, 2 boots (rescue system, server)")


def _ssh(bed: Bed, key: Path, command: str) -> str:
    """Run `command` as debian with `key`, the image's host key pinned (RejectPolicy)."""
    kind, blob = (IMAGE / "host_ed25519.pub").read_text().split()[:2]
    known = bed.directory / "known_hosts"
    known.write_text(f"[127.0.0.1]:{bed.rescue.ssh_port} {kind} {blob}\n")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(str(known))
    try:
        client.connect("127.0.0.1", port=bed.rescue.ssh_port, username="debian", key_filename=str(key),
                       look_for_keys=False, allow_agent=False, timeout=30, banner_timeout=60)
        _, stdout, _ = client.exec_command(command, timeout=30)
        return stdout.read().decode()
    finally:
        client.close()
