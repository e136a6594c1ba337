"""`recovery audit --cloud` against a real Nova whose server has a real sshd at its floating address.

A cloud's servers are audited on port 22, so the VM's sshd listens on port 22
of a loopback address of this module's own (`127.x.y.z`, root only), never
127.0.0.1:22, where the machine may run its own sshd: the test proves a
successful audit rather than relying on nothing listening there. Nova's
serial consoles lead to a closed port; `--check-console` only asks Nova for a
URL, it never opens one.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.ssh.keys import KeyPair
from tests.cloud.nova_fixture import NovaCloud, NovaServerSpec, running_nova
from tests.integration.sshd_fixture import SSHServer
from tests.integration.sshd_fleet import ExtraSSHD, extra_sshd

pytestmark = [
    pytest.mark.lab,
    # openstacksdk 4.x warns about its own internals on every connection and request.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

CLOUD = "nova-audit"
# A loopback address no other test uses, so that its port 22 is free.
ADDRESS = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="rcv-audit-cloud-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def vm_sshd(workdir: Path, sshd: SSHServer) -> Iterator[ExtraSSHD]:
    """The VM's sshd: the lab user's authorized_keys, host keys of its own, on ADDRESS:22."""
    with extra_sshd(workdir / "vm", sshd.user, address=ADDRESS, port_numbers=(22,), name="vm") as server:
        yield server


@pytest.fixture(scope="module")
def nova(workdir: Path, closed: int, vm_sshd: ExtraSSHD) -> Iterator[NovaCloud]:
    servers = [NovaServerSpec("web-1", "10.0.0.5", floating_ip=ADDRESS), NovaServerSpec("db-1", "10.0.0.6")]
    clouds_file = workdir / "clouds.yaml"
    with pytest.MonkeyPatch.context() as patch, running_nova(("127.0.0.1", closed), None, servers) as cloud:
        patch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_file))
        patch.delenv("OS_CLOUD", raising=False)
        cloud.clouds_yaml(clouds_file, CLOUD)
        yield cloud


def test_a_cloud_audit_logs_in_to_the_server_and_records_its_host_key(
    tmp_path: Path,
    nova: NovaCloud,
    vm_sshd: ExtraSSHD,
    sshd: SSHServer,
    audit_key: KeyPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    known_hosts = tmp_path / "known_hosts"
    audit = [
        "audit", "--cloud", CLOUD, "--server-filter", "^web-1$", "--key", str(audit_key.private_path),
        "--user", sshd.user, "--known-hosts", str(known_hosts), "--timeout", "10", "--format", "json",
    ]

    first = main([*audit, "--accept-new", "--check-console"])
    first_report = json.loads(capsys.readouterr().out)
    second = main(audit)
    second_report = json.loads(capsys.readouterr().out)

    assert first == 0, first_report
    [web] = first_report["hosts"]
    assert (web["name"], web["host"], web["port"], web["status"]) == ("web-1", ADDRESS, 22, "ok")
    assert web["key"] == audit_key.sha256
    assert web["host_key"] == vm_sshd.fingerprint("ed25519")
    assert web["host_key_trusted_on_first_use"] is True
    assert "serial" in web["console"]["available"]
    assert known_hosts.read_text() == f"{ADDRESS} {' '.join(vm_sshd.host_keys['ed25519'].split()[:2])}\n"
    assert second == 0, second_report  # the recorded key vouches for the server now
    assert second_report["hosts"][0]["host_key_trusted_on_first_use"] is False
