"""`recovery revoke --cloud` against the real test Nova, whose one server has a real sshd at its floating address.

The server's sshd listens on port 22 of a loopback address of this module's own (`127.x.y.z`,
root only), as in test_audit_cloud.py, and serves a lab user of its own, so the host half is a
real removal with proof. The key pairs are real Nova key pairs: one holding the stolen key (two,
where matching by SHA256 alone is shown), one holding another key, and what remains in Nova is
read back through the API after each run. The clouds that fail are a closed port (unreachable)
and a compute API over real HTTP that answers 401 (credentials refused).
"""

from __future__ import annotations

import io
import json
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.cloud import OpenStackCloud, connect
from recovery.ssh.keys import KeyPair, generate_keypair
from tests.cloud.nova_fixture import NovaServerSpec, running_nova
from tests.integration.sshd_fixture import SSHServer, running_sshd
from tests.integration.sshd_fleet import extra_sshd

pytestmark = [
    pytest.mark.lab,
    # openstacksdk 4.x warns about its own internals on every connection and request.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

CLOUD = "nova-revoke"
DOWN_CLOUD = "nova-revoke-down"
REFUSING_CLOUD = "nova-revoke-refusing"
REQUEST_ID = "req-0f0f0f0f-1111-2222-3333-444444444444"
# A loopback address no other test uses, so that its port 22 is free.
ADDRESS = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@dataclass(frozen=True)
class World:
    lab: SSHServer  # the VM's user, home and authorized_keys
    nova: OpenStackCloud
    admin: KeyPair
    stolen: KeyPair
    other: KeyPair
    known_hosts: Path

    @property
    def authorized_keys(self) -> Path:
        return self.lab.home / ".ssh" / "authorized_keys"

    def seed(self, *keypairs: tuple[str, KeyPair]) -> None:
        """The VM's authorized_keys holding the stolen key; Nova holding exactly `keypairs`."""
        self.authorized_keys.write_text(f"{self.admin.public_line}\n{self.stolen.public_line}\n"
                                        f"{self.other.public_line}\n")
        for item in self.nova.list_keypairs():
            self.nova.delete_keypair(item.name)
        for name, key in keypairs:
            self.nova.import_keypair(name, key.public_line)

    def keypairs_left(self) -> set[str]:
        return {item.name for item in self.nova.list_keypairs()}


class _RefusingCompute(BaseHTTPRequestHandler):
    """A compute API whose version document is fine and which answers every call 401, as for an expired token."""

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v2.1":
            link = {"rel": "self", "href": f"http://{self.headers['Host']}/v2.1/"}  # keystoneauth checks it
            version = {"id": "v2.1", "status": "CURRENT", "version": "2.95", "min_version": "2.1", "links": [link]}
            self._answer(200, json.dumps({"version": version}).encode())
        else:
            self._answer(401, b'{"error": {"code": 401, "message": "The request you have made requires '
                              b'authentication."}}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-openstack-request-id", REQUEST_ID)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def refusing_compute() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingCompute)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def world(closed: int) -> Iterator[World]:
    directory = Path(tempfile.mkdtemp(prefix="rcv-revoke-cloud-"))
    try:
        with pytest.MonkeyPatch.context() as patch, running_sshd() as lab, \
                extra_sshd(directory / "vm", lab.user, address=ADDRESS, port_numbers=(22,), name="vm") as vm, \
                running_nova(("127.0.0.1", closed), None,
                             [NovaServerSpec("web-1", "10.0.0.5", floating_ip=ADDRESS)]) as nova, \
                refusing_compute() as refusing_port:
            clouds_file = directory / "clouds.yaml"
            patch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_file))
            patch.delenv("OS_CLOUD", raising=False)
            nova.clouds_yaml(clouds_file, CLOUD)
            nova.clouds_yaml(clouds_file, DOWN_CLOUD, compute_endpoint_override=f"http://127.0.0.1:{closed}/v2.1")
            nova.clouds_yaml(clouds_file, REFUSING_CLOUD,
                             compute_endpoint_override=f"http://127.0.0.1:{refusing_port}/v2.1")
            known_hosts = directory / "known_hosts"
            known_hosts.write_text(f"{ADDRESS} {' '.join(vm.host_keys['ed25519'].split()[:2])}\n")
            with connect(CLOUD) as cloud:
                yield World(lab, cloud, generate_keypair(directory / "admin", comment="admin"),
                            generate_keypair(directory / "stolen", comment="stolen@laptop"),
                            generate_keypair(directory / "other", comment="other@ops"), known_hosts)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def revoke(world: World, capsys: pytest.CaptureFixture[str], *extra: str,
           stolen: tuple[str, str] | None = None) -> tuple[int, dict[str, object], str]:
    """Run revoke on the cloud with stdin not a terminal; (exit code, JSON report, stderr)."""
    what = stolen or ("--public-key", str(world.stolen.public_path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(""))
        code = main(["revoke", *what, "--cloud", CLOUD, "--user", world.lab.user, "--key",
                     str(world.admin.private_path), "--known-hosts", str(world.known_hosts), "--timeout", "20",
                     "--format", "json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def keypair_statuses(report: dict[str, object]) -> dict[str, str]:
    keypairs = report["keypairs"]
    assert isinstance(keypairs, list)
    return {item["name"]: item["status"] for item in keypairs}


def host_statuses(report: dict[str, object]) -> dict[str, tuple[str, str]]:
    hosts = report["hosts"]
    assert isinstance(hosts, list)
    return {host["name"]: (host["address"], host["status"]) for host in hosts}


def test_dry_run_lists_the_matching_key_pairs_and_deletes_nothing(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.seed(("alice-laptop", world.stolen), ("ops", world.other))
    before = world.authorized_keys.read_bytes()

    code, report, _ = revoke(world, capsys, "--dry-run", "--yes")

    assert code == 1
    assert host_statuses(report) == {"web-1": (f"{ADDRESS}:22", "holds_key")}
    assert keypair_statuses(report) == {"alice-laptop": "would_delete"}
    assert world.keypairs_left() == {"alice-laptop", "ops"}
    assert world.authorized_keys.read_bytes() == before


def test_without_yes_and_without_a_terminal_the_key_pairs_are_kept_and_the_run_is_not_clean(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.seed(("alice-laptop", world.stolen), ("ops", world.other))

    code, report, _ = revoke(world, capsys)

    assert code == 1
    assert host_statuses(report) == {"web-1": (f"{ADDRESS}:22", "removed")}  # the hosts are done regardless
    assert keypair_statuses(report) == {"alice-laptop": "not_confirmed"}
    assert report["summary"] == {"hosts": 1, "clean": 1, "not_clean": 0, "changed": 1,
                                 "keypairs_deleted": 0, "keypairs_kept": 1}
    assert world.keypairs_left() == {"alice-laptop", "ops"}
    assert world.stolen.public_line not in world.authorized_keys.read_text()


def test_with_yes_the_matching_key_pairs_are_deleted_and_the_stolen_key_proven_rejected(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.seed(("alice-laptop", world.stolen), ("ops", world.other))

    code, report, _ = revoke(world, capsys, "--yes", "--stolen-key", str(world.stolen.private_path))

    assert code == 0, report
    hosts = report["hosts"]
    assert isinstance(hosts, list)
    assert (hosts[0]["status"], hosts[0]["proof"]) == ("removed", "auth_rejected")
    assert keypair_statuses(report) == {"alice-laptop": "deleted"}
    assert world.keypairs_left() == {"ops"}
    assert world.authorized_keys.read_text() == f"{world.admin.public_line}\n{world.other.public_line}\n"


def test_a_sha256_fingerprint_finds_key_pairs_nova_lists_by_md5(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.seed(("alice-laptop", world.stolen), ("alice-old", world.stolen), ("ops", world.other))
    nova_fingerprints = {item.fingerprint for item in world.nova.list_keypairs() if item.name != "ops"}
    assert nova_fingerprints == {world.stolen.md5}  # what Nova shows: MD5 hex, no SHA256 anywhere

    code, report, _ = revoke(world, capsys, "--yes", stolen=("--fingerprint", world.stolen.sha256))

    assert code == 0, report
    assert keypair_statuses(report) == {"alice-laptop": "deleted", "alice-old": "deleted"}
    assert world.keypairs_left() == {"ops"}


@pytest.mark.parametrize(("cloud", "wording"), [
    (DOWN_CLOUD, "could not be reached"),
    (REFUSING_CLOUD, f"the cloud refused the credentials (The request you have made requires authentication.); "
                     f"check clouds.yaml/secure.yaml and the user's roles in this project (HTTP 401, request "
                     f"{REQUEST_ID})"),
])
def test_a_cloud_unreachable_or_refusing_the_credentials_is_one_paragraph_and_exit_1(
    world: World, capsys: pytest.CaptureFixture[str], cloud: str, wording: str
) -> None:
    world.seed(("alice-laptop", world.stolen))
    before = world.authorized_keys.read_bytes()

    code = main(["revoke", "--public-key", str(world.stolen.public_path), "--cloud", cloud, "--user",
                 world.lab.user, "--key", str(world.admin.private_path), "--yes"])
    captured = capsys.readouterr()

    assert code == 1
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"error: cloud {cloud!r}: list servers:")
    assert wording in line
    assert line.endswith("Nothing was changed: no host was contacted and no key pair deleted")
    assert world.authorized_keys.read_bytes() == before
    assert world.keypairs_left() == {"alice-laptop"}
