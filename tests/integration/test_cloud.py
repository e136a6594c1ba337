"""recovery.cloud against a real Nova: real HTTP, real openstacksdk, Nova's own console proxy.

One Nova (tests/cloud/nova_server.py, in its own venv and process) serves the whole
module; its serial consoles lead to a real lab's serial line, so the console URL
Nova hands out, followed through Nova's websocket proxy, shows the lab's login
prompt. A second Nova, capped at microversion 2.5 and accepting only ssh-rsa key
pairs, stands in for an old cloud; it is started only for the tests that use it.
A few faults Nova will not produce on demand (a refused or reset connection, a
503, a 401) come from sockets and a tiny HTTP server in this file.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import websocket

from recovery import lab
from recovery.cloud import OpenStackCloud, Server, connect
from recovery.errors import CloudError, CloudUnavailable, ConfigError
from recovery.lab.processes import free_port
from recovery.power import NovaPower
from recovery.safety.redact import Secret, scrub
from recovery.ssh.keys import fingerprint_md5, generate_keypair
from tests.cloud.nova_fixture import NovaCloud, NovaServerSpec, running_nova

pytestmark = [
    pytest.mark.lab,
    # openstacksdk 4.x warns about its own internals on every connection and request
    # (InfluxDB "support", a service_type argument it passes itself); hidden outside tests.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

CLOUD = "nova-test"
OLD_CLOUD = "nova-old"
RSA_MD5 = "MD5:" + ":".join(f"{b:02x}" for b in range(16))
SERVERS = [
    NovaServerSpec("web-1", "10.0.0.5", floating_ip="127.0.0.1"),
    NovaServerSpec("dup", "10.0.0.6"),
    NovaServerSpec("dup", "10.0.0.7"),
    NovaServerSpec("stopped", "10.0.0.8", status="SHUTOFF"),
    NovaServerSpec("reboot-me", "10.0.0.10"),  # the boot loader route's reset; no other test looks at it
]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Under /tmp and 0755: the lab user must pass through it to its home."""
    directory = Path(tempfile.mkdtemp(prefix="rcv-cloud-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def vm(workdir: Path) -> Iterator[lab.LabInfo]:
    """The lab plays the VM: its serial line is what Nova's serial console leads to."""
    info = lab.up(workdir / "lab")
    yield info
    lab.down(workdir / "lab")


@pytest.fixture(scope="module")
def console_log(workdir: Path, vm: lab.LabInfo) -> Path:
    """A boot log with cloud-init's fingerprint block, naming the lab's real host key."""
    path = workdir / "console.log"
    path.write_text(
        "[    0.000000] Linux version 6.1.0-18-amd64\n"
        "ci-info: no authorized SSH keys fingerprints found for user ubuntu.\n"
        "<14>Mar  1 12:00:00 ec2: \n"
        "<14>Mar  1 12:00:00 ec2: #############################################################\n"
        "<14>Mar  1 12:00:00 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        f"<14>Mar  1 12:00:00 ec2: 2048 {RSA_MD5} root@vm (RSA)\n"
        f"<14>Mar  1 12:00:00 ec2: 256 {vm.host_key_fingerprint} root@vm (ED25519)\n"
        "<14>Mar  1 12:00:00 ec2: -----END SSH HOST KEY FINGERPRINTS-----\n"
        "<14>Mar  1 12:00:00 ec2: #############################################################\n"
        "\r\nvm login: \n"
    )
    return path


@pytest.fixture(scope="module")
def clouds_file(workdir: Path) -> Iterator[Path]:
    """openstacksdk finds clouds.yaml through OS_CLIENT_CONFIG_FILE, as a user's would be found."""
    path = workdir / "clouds.yaml"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
        patch.delenv("OS_CLOUD", raising=False)
        yield path


@pytest.fixture(scope="module")
def nova(vm: lab.LabInfo, console_log: Path, clouds_file: Path) -> Iterator[NovaCloud]:
    with running_nova(("127.0.0.1", vm.serial_port), console_log, SERVERS) as cloud:
        cloud.clouds_yaml(clouds_file, CLOUD)
        yield cloud


@pytest.fixture(scope="module")
def old_nova(vm: lab.LabInfo, clouds_file: Path) -> Iterator[NovaCloud]:
    with running_nova(
        ("127.0.0.1", vm.serial_port),
        None,
        [NovaServerSpec("web-1", "10.0.0.5", floating_ip="127.0.0.1")],
        # Any TCP service will do to prove the VNC proxy path: the bytes are not looked at.
        vnc_target=("127.0.0.1", vm.serial_port),
        keypair_types=["ssh-rsa"],
        max_microversion="2.5",
    ) as cloud:
        cloud.clouds_yaml(clouds_file, OLD_CLOUD)
        yield cloud


@pytest.fixture(scope="module")
def cloud(nova: NovaCloud) -> Iterator[OpenStackCloud]:
    with connect(CLOUD) as opened:
        yield opened


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


# -- the boot loader route's reset -------------------------------------------------------


def test_novas_hard_reboot_is_the_boot_routes_reset(cloud: OpenStackCloud, nova: NovaCloud) -> None:
    server_id = nova.server_id("reboot-me")
    before = len(nova.api_requests())

    NovaPower(cloud, server_id).reset(timeout=30)

    actions = [r for r in nova.api_requests()[before:] if r["method"] == "POST" and r["path"].endswith("/action")]
    assert [r["path"].rsplit("/servers/", 1)[1] for r in actions] == [f"{server_id}/action"]
    deadline = time.monotonic() + 30
    while (status := cloud.server_state(server_id).status) != "ACTIVE":  # the fake hypervisor resets at once
        assert status == "HARD_REBOOT", status
        assert time.monotonic() < deadline, "Nova's hard reboot never ended"
        time.sleep(0.2)


def test_a_hard_reboot_nova_refuses_is_a_cloud_error_naming_the_server(cloud: OpenStackCloud) -> None:
    missing = "0b0e5b9e-0000-4000-8000-000000000000"
    with pytest.raises(CloudError, match=rf"hard-reboot server {missing}: .*404"):
        NovaPower(cloud, missing).reset(timeout=5)


# -- finding servers -------------------------------------------------------------------


def test_find_server_by_name(cloud: OpenStackCloud, nova: NovaCloud) -> None:
    server = cloud.find_server("web-1")
    assert server.id == nova.server_id("web-1")
    assert (server.name, server.status) == ("web-1", "ACTIVE")
    assert {entry["addr"] for entry in server.addresses["private"]} == {"10.0.0.5", "127.0.0.1"}


def test_find_server_by_id(cloud: OpenStackCloud, nova: NovaCloud) -> None:
    server_id = nova.servers["dup"][1]
    server = cloud.find_server(server_id)
    assert (server.id, server.name) == (server_id, "dup")


def test_an_ambiguous_name_lists_every_candidate(cloud: OpenStackCloud, nova: NovaCloud) -> None:
    with pytest.raises(CloudError) as caught:
        cloud.find_server("dup")
    message = str(caught.value)
    assert f"cloud {CLOUD!r}" in message
    assert "2 servers are named 'dup'" in message
    for server_id, address in zip(nova.servers["dup"], ("10.0.0.6", "10.0.0.7"), strict=True):
        assert f"{server_id}  ACTIVE  private: {address}" in message
    assert not isinstance(caught.value, CloudUnavailable)


def test_a_name_is_matched_exactly(cloud: OpenStackCloud) -> None:
    """Nova's name filter is a regex: 'web' matches 'web-1' there, but is not its name."""
    with pytest.raises(CloudError, match=r"no server is named 'web' or has that ID"):
        cloud.find_server("web")


def test_a_missing_server_names_cloud_and_server(cloud: OpenStackCloud) -> None:
    with pytest.raises(CloudError, match=rf"cloud '{CLOUD}': no server is named 'nope' or has that ID"):
        cloud.find_server("nope")
    with pytest.raises(CloudError, match="no server is named '00000000-0000-0000-0000-000000000000'"):
        cloud.find_server("00000000-0000-0000-0000-000000000000")


def test_a_stopped_server_is_refused_with_its_status(cloud: OpenStackCloud, nova: NovaCloud) -> None:
    with pytest.raises(CloudError) as caught:
        cloud.find_server("stopped")
    assert f"server 'stopped' ({nova.server_id('stopped')}) is SHUTOFF, not ACTIVE" in str(caught.value)


def test_ssh_address_prefers_the_floating_ip(cloud: OpenStackCloud, nova: NovaCloud) -> None:
    web = cloud.find_server("web-1")
    assert cloud.ssh_address(web) == "127.0.0.1"
    assert cloud.ssh_address(web, "private") == "127.0.0.1"
    dup = cloud.find_server(nova.servers["dup"][0])
    assert cloud.ssh_address(dup) == "10.0.0.6"
    assert cloud.ssh_address(dup, "private") == "10.0.0.6"
    with pytest.raises(CloudError, match="is not on network 'public'; its networks: private"):
        cloud.ssh_address(dup, "public")


def test_has_object_store_follows_the_catalog_or_an_override(
    cloud: OpenStackCloud, clouds_file: Path, nova: NovaCloud
) -> None:
    assert cloud.has_object_store() is False
    nova.clouds_yaml(clouds_file, "with-swift", object_store_endpoint_override="http://127.0.0.1:9/v1/AUTH_test")
    with connect("with-swift") as with_swift:
        assert with_swift.has_object_store() is True
    with_swift.close()  # a second close is harmless


# -- consoles ----------------------------------------------------------------------------


def _read_until(ws: websocket.WebSocket, wanted: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    seen = b""
    while wanted not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {wanted!r} within {timeout} s; got {seen!r}")
        ws.settimeout(remaining)
        frame = ws.recv()
        seen += frame if isinstance(frame, bytes) else frame.encode()
    return seen


def test_serial_console_url_leads_through_novas_proxy_to_the_vm(cloud: OpenStackCloud, nova: NovaCloud) -> None:
    url = cloud.console_url(cloud.find_server("web-1"), "serial")
    assert isinstance(url, Secret)
    assert url.reveal().startswith(f"ws://127.0.0.1:{nova.serial_proxy_port}/?token=")
    assert str(url) == f"ws://127.0.0.1:{nova.serial_proxy_port}/?token=***"
    ws = websocket.create_connection(url.reveal(), subprotocols=["binary"], timeout=10)
    try:
        ws.send_binary(b"\r")
        assert b"login: " in _read_until(ws, b"login: ", 10)
    finally:
        ws.close()


def test_a_forged_console_token_is_refused_by_novas_proxy(nova: NovaCloud) -> None:
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{nova.serial_proxy_port}/?token=forged", subprotocols=["binary"], timeout=10
    )
    try:
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            ws.recv()
    finally:
        ws.close()


def test_a_console_the_cloud_does_not_offer_says_what_it_offers(cloud: OpenStackCloud) -> None:
    """This Nova has VNC disabled: Nova answers 400, and we say serial is there instead."""
    with pytest.raises(CloudError) as caught:
        cloud.console_url(cloud.find_server("web-1"), "novnc")
    message = str(caught.value)
    assert "get a novnc console for server 'web-1'" in message
    assert "This cloud offers: serial" in message
    assert caught.value.status_code == 400
    assert (caught.value.request_id or "").startswith("req-")
    assert not isinstance(caught.value, CloudUnavailable)


def test_an_unknown_console_kind_is_a_usage_error(cloud: OpenStackCloud) -> None:
    with pytest.raises(ConfigError, match="console kind 'rdp' is not one of: serial, novnc"):
        cloud.console_url(cloud.find_server("web-1"), "rdp")


def test_console_log_and_host_key_fingerprints(cloud: OpenStackCloud, vm: lab.LabInfo) -> None:
    server = cloud.find_server("web-1")
    assert "-----BEGIN SSH HOST KEY FINGERPRINTS-----" in cloud.console_log(server)
    tail = cloud.console_log(server, 3)  # Nova counts the empty line after the last newline
    assert "vm login:" in tail
    assert "BEGIN SSH HOST KEY" not in tail
    assert cloud.host_key_fingerprints(server) == [vm.host_key_fingerprint, RSA_MD5]


# -- key pairs -------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
def test_import_list_and_delete_a_keypair(cloud: OpenStackCloud, keys_dir: Path, key_type: str) -> None:
    pair = generate_keypair(keys_dir / "id", key_type=key_type, comment="recovery-test")
    name = f"recovery-{key_type}"
    info = cloud.import_keypair(name, pair.public_line)
    assert (info.name, info.fingerprint) == (name, fingerprint_md5(pair.public_line))
    assert info.type == pair.public_line.split()[0]
    assert info in cloud.list_keypairs()
    cloud.delete_keypair(name)
    assert name not in {listed.name for listed in cloud.list_keypairs()}


def test_importing_a_name_twice_is_not_retried(cloud: OpenStackCloud, keys_dir: Path) -> None:
    pair = generate_keypair(keys_dir / "id", key_type="ed25519")
    cloud.import_keypair("recovery-twice", pair.public_line)
    try:
        with pytest.raises(CloudError) as caught:
            cloud.import_keypair("recovery-twice", pair.public_line)
        assert caught.value.status_code == 409
        assert not isinstance(caught.value, CloudUnavailable)
        assert "Delete it first or choose another name" in str(caught.value)
    finally:
        cloud.delete_keypair("recovery-twice")


def test_deleting_a_missing_keypair(cloud: OpenStackCloud) -> None:
    with pytest.raises(CloudError) as caught:
        cloud.delete_keypair("recovery-never-was")
    assert caught.value.status_code == 404
    assert f"cloud {CLOUD!r}: delete key pair 'recovery-never-was'" in str(caught.value)
    cloud.delete_keypair("recovery-never-was", missing_ok=True)


# -- an old cloud ------------------------------------------------------------------------


def test_an_old_cloud_gets_its_console_through_the_legacy_action(old_nova: NovaCloud) -> None:
    with connect(OLD_CLOUD) as old:
        url = old.console_url(old.find_server("web-1"), "serial")
    assert url.reveal().startswith(f"ws://127.0.0.1:{old_nova.serial_proxy_port}/?token=")
    ws = websocket.create_connection(url.reveal(), subprotocols=["binary"], timeout=10)
    try:
        ws.send_binary(b"\r")
        _read_until(ws, b"login: ", 10)
    finally:
        ws.close()


def test_an_old_cloud_gets_a_novnc_url_whose_token_opens_novas_proxy(old_nova: NovaCloud) -> None:
    """The noVNC URL nests the token (`?path=%3Ftoken%3D...`); the websocket takes it as `?token=`."""
    with connect(OLD_CLOUD) as old:
        url = old.console_url(old.find_server("web-1"), "novnc")
    assert url.reveal().startswith(f"http://127.0.0.1:{old_nova.novnc_proxy_port}/vnc_auto.html?path=")
    assert str(url) == f"http://127.0.0.1:{old_nova.novnc_proxy_port}/vnc_auto.html?path=***"
    token = parse_qs(urlsplit(parse_qs(urlsplit(url.reveal()).query)["path"][0]).query)["token"][0]
    assert scrub(f"token {token} in a log line") == "token *** in a log line"
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{old_nova.novnc_proxy_port}/?token={token}", subprotocols=["binary"], timeout=10
    )
    try:
        ws.send_binary(b"\r")
        _read_until(ws, b"login: ", 10)
    finally:
        ws.close()


def test_a_cloud_that_takes_only_rsa_says_so(old_nova: NovaCloud, keys_dir: Path) -> None:
    with connect(OLD_CLOUD) as old:
        ed25519 = generate_keypair(keys_dir / "ed", key_type="ed25519")
        with pytest.raises(CloudError) as caught:
            old.import_keypair("recovery-ed", ed25519.public_line)
        assert caught.value.status_code == 400
        assert "Some clouds accept only ssh-rsa key pairs: generate the key with key_type: rsa" in str(caught.value)
        rsa = generate_keypair(keys_dir / "rsa", key_type="rsa")
        assert old.import_keypair("recovery-rsa", rsa.public_line).type == "ssh-rsa"
        old.delete_keypair("recovery-rsa")


# -- faults -------------------------------------------------------------------------------


def _some_server() -> Server:
    return Server(id="4a00b327-5f39-4121-90ee-5893f0bbe302", name="web-1", status="ACTIVE", addresses={})


def test_a_cloud_that_refuses_connections_is_unavailable(clouds_file: Path, nova: NovaCloud) -> None:
    port = free_port()  # nothing listens there any more: connection refused
    nova.clouds_yaml(clouds_file, "refused", compute_endpoint_override=f"http://127.0.0.1:{port}/v2.1")
    with connect("refused") as down, pytest.raises(CloudUnavailable) as caught:
        down.find_server("web-1")
    assert "cloud 'refused': list servers named 'web-1'" in str(caught.value)
    assert "could not be reached" in str(caught.value)


@pytest.fixture
def resetting_port() -> Iterator[int]:
    """A TCP port that accepts each connection and resets it (SO_LINGER 0), as a crashing proxy would."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.recv(1024)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_a_reset_connection_is_unavailable(clouds_file: Path, nova: NovaCloud, resetting_port: int) -> None:
    nova.clouds_yaml(clouds_file, "resetting", compute_endpoint_override=f"http://127.0.0.1:{resetting_port}/v2.1")
    with connect("resetting") as down, pytest.raises(CloudUnavailable, match="cloud 'resetting'"):
        down.console_log(_some_server())


class _FailingCompute(BaseHTTPRequestHandler):
    """A compute API that discovers fine and then fails every call with `status`."""

    status = 503

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v2.1":
            # keystoneauth needs the self link to trust the document.
            self_link = f"http://{self.headers['Host']}/v2.1/"
            version = {
                "id": "v2.1",
                "status": "CURRENT",
                "version": "2.95",
                "min_version": "2.1",
                "links": [{"rel": "self", "href": self_link}],
            }
            self._answer(200, json.dumps({"version": version}).encode())
        else:
            self._answer(self.status, b'{"computeFault": {"code": %d, "message": "try later"}}' % self.status)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-openstack-request-id", "req-0f0f0f0f-1111-2222-3333-444444444444")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_compute() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingCompute)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "transient", "wording"),
    [
        (503, True, "try later"),
        (500, True, "try later"),
        (401, False, "refused the credentials"),
        (403, False, "refused the credentials"),
    ],
)
def test_http_failures_carry_status_and_request_id(
    clouds_file: Path, nova: NovaCloud, failing_compute: ThreadingHTTPServer, status: int, transient: bool, wording: str
) -> None:
    _FailingCompute.status = status
    port = failing_compute.server_address[1]
    nova.clouds_yaml(clouds_file, "failing", compute_endpoint_override=f"http://127.0.0.1:{port}/v2.1")
    with connect("failing") as failing, pytest.raises(CloudError) as caught:
        failing.find_server("web-1")
    assert isinstance(caught.value, CloudUnavailable) is transient
    assert caught.value.status_code == status
    assert caught.value.request_id == "req-0f0f0f0f-1111-2222-3333-444444444444"
    assert wording in str(caught.value)
    assert "cloud 'failing': list servers named 'web-1'" in str(caught.value)


def test_an_unknown_cloud_lists_the_known_ones(clouds_file: Path, nova: NovaCloud) -> None:
    with pytest.raises(ConfigError) as caught:
        connect("no-such-cloud")
    message = str(caught.value)
    assert f"cloud 'no-such-cloud' is not in {clouds_file}; the clouds there: " in message
    assert CLOUD in message.rsplit(": ", 1)[1].split(", ")
