"""A real OpenStack Keystone on 127.0.0.1, and a Swift proxy that trusts its tokens.

Why: with tempauth, openstacksdk is handed a token and a storage URL; real clouds give
it a password and a Keystone URL, and it finds object storage in the service catalog.
This fixture gives tests that path: an ordinary password clouds.yaml entry.

Keystone is Debian's (`python3-keystone`; `ensure_keystone.sh` installs it), run by the
system python3 from a temp dir of its own: sqlite database in WAL mode (in the default
rollback journal, keystone reports "database is locked" under openstacksdk's lookups),
fernet token and credential keys, `keystone-manage bootstrap` for the admin user and
region, and `keystone-wsgi-public` as the server. The Swift side is `running_swift`
with `swift/proxy-server-keystone.conf.in` (authtoken + keystoneauth, which the Swift
venv's `keystonemiddleware` provides).

Users (domain Default, region RegionOne): admin / ADMIN_PASSWORD, admin of project admin
and the proxy's service user; tests add ordinary members with `add_member`, and such a
member owns the Swift account AUTH_<project id> (keystoneauth's operator_roles).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from recovery.lab.processes import free_port
from tests.cloud.swift_fixture import SwiftCluster, _Process, running_swift

HERE = Path(__file__).resolve().parent
ENSURE = HERE / "ensure_keystone.sh"
HOST = "127.0.0.1"
REGION = "RegionOne"
ADMIN_PASSWORD = "admin-secret"
READY_WITHIN = 60.0  # seconds; the server is up 2-4 s after start on our 2-core machines, more under load

KEYSTONE_CONF = """\
[DEFAULT]
log_file = {root}/keystone.log
[database]
connection = sqlite:///{root}/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = {root}/fernet-keys
[credential]
key_repository = {root}/credential-keys
[identity]
# bcrypt's default 12 rounds cost ~0.3 s per password check: too slow for tests
password_hash_rounds = 4
"""


class KeystoneFixtureError(RuntimeError):
    """Keystone could not be set up; the message says what to install or read."""


@dataclass
class KeystoneServer:
    """A running Keystone and what a test needs to reach it."""

    url: str  # http://127.0.0.1:PORT/v3
    root: Path
    _process: _Process = field(repr=False)

    def rss_bytes(self) -> int:
        return self._process.rss_bytes()

    def restart(self) -> None:
        """Stop the server and start it again on the same port and database."""
        self._process.stop()
        self._process.start()
        _wait_ready(self._process, self.url)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One identity API call as admin (a fresh token each time: calls are few)."""
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-Auth-Token": self._admin_token()},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def _admin_token(self) -> str:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}},
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        request = urllib.request.Request(
            self.url + "/auth/tokens",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            token: str = response.headers["X-Subject-Token"]
            return token

    def add_member(self, project: str, user: str, password: str) -> str:
        """Create `project` and `user`, give the user the member role on it; return the project ID."""
        created = self.api("POST", "/projects", {"project": {"name": project, "domain_id": "default"}})
        project_id: str = created["project"]["id"]
        user_body = {
            "user": {"name": user, "password": password, "domain_id": "default", "default_project_id": project_id}
        }
        user_id = self.api("POST", "/users", user_body)["user"]["id"]
        role_id = self.api("GET", "/roles?name=member")["roles"][0]["id"]
        self.api("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")
        return project_id

    def add_object_store(self, proxy_url: str) -> None:
        """Put Swift in the catalog, as clouds do: one public endpoint per project's account."""
        service = self.api("POST", "/services", {"service": {"type": "object-store", "name": "swift"}})["service"]
        endpoint = {
            "service_id": service["id"],
            "interface": "public",
            "region_id": REGION,
            "url": proxy_url + "/v1/AUTH_%(project_id)s",
        }
        self.api("POST", "/endpoints", {"endpoint": endpoint})

    def swift_proxy_values(self) -> dict[str, object]:
        """What `swift/proxy-server-keystone.conf.in` needs: where Keystone is, the service user."""
        return {"keystone_url": self.url, "keystone_admin": "admin", "keystone_password": ADMIN_PASSWORD}

    def write_clouds_yaml(self, path: Path, cloud: str, user: str, password: str, project: str) -> Path:
        """A clouds.yaml with one ordinary password entry, as a cloud's dashboard hands it out."""
        entry = {
            "auth": {
                "auth_url": self.url,
                "username": user,
                "password": password,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": REGION,
            "identity_api_version": 3,
        }
        path.write_text(yaml.safe_dump({"clouds": {cloud: entry}}), encoding="utf-8")
        path.chmod(0o600)
        return path


def _keystone_manage(root: Path, *args: str) -> None:
    result = subprocess.run(
        ["keystone-manage", "--config-file", str(root / "keystone.conf"), *args],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise KeystoneFixtureError(f"keystone-manage {args[0]} failed:\n{result.stdout}{result.stderr}")


def _wait_ready(process: _Process, url: str) -> None:
    for attempt in Retrying(
        stop=stop_after_delay(READY_WITHIN),
        wait=wait_fixed(0.2),
        retry=retry_if_exception_type(OSError),
        reraise=True,
    ):
        with attempt:
            process.check_alive()
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()


@contextmanager
def running_keystone() -> Iterator[KeystoneServer]:
    """Bootstrap a Keystone in a temp dir and serve it; stop it (by PID) and remove everything on exit.

    Raises:
        KeystoneFixtureError: Debian's keystone is missing, or setting it up failed.
    """
    if shutil.which("keystone-manage") is None or shutil.which("keystone-wsgi-public") is None:
        raise KeystoneFixtureError(f"Debian's keystone is missing: run {ENSURE} as root")
    root = Path(tempfile.mkdtemp(prefix="rcv-keystone-"))
    port = free_port()
    url = f"http://{HOST}:{port}/v3"
    user, group = os.getuid(), os.getgid()
    # env(1) execs the server, so the PID we stop is keystone's own
    environment = [f"OS_KEYSTONE_CONFIG_DIR={root}", "OS_KEYSTONE_CONFIG_FILES=keystone.conf"]
    process = _Process(
        "keystone",
        ["env", *environment, "keystone-wsgi-public", "--host", HOST, "--port", str(port)],
        port,
        root / "keystone.out",
    )
    try:
        (root / "keystone.conf").write_text(KEYSTONE_CONF.format(root=root), encoding="utf-8")
        _keystone_manage(root, "db_sync")
        with closing(sqlite3.connect(root / "keystone.db")) as db:  # WAL is a property of the file: set once
            db.execute("PRAGMA journal_mode=WAL")
        owner = ["--keystone-user", str(user), "--keystone-group", str(group)]
        _keystone_manage(root, "fernet_setup", *owner)
        _keystone_manage(root, "credential_setup", *owner)
        _keystone_manage(
            root,
            "bootstrap",
            "--bootstrap-password",
            ADMIN_PASSWORD,
            "--bootstrap-region-id",
            REGION,
            "--bootstrap-public-url",
            url,
            "--bootstrap-internal-url",
            url,
            "--bootstrap-admin-url",
            url,
        )
        process.start()
        _wait_ready(process, url)
        yield KeystoneServer(url=url, root=root, _process=process)
    finally:
        process.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running_swift_with_keystone(keystone: KeystoneServer) -> Iterator[SwiftCluster]:
    """`running_swift` behind `keystone`, registered in its catalog as object-store."""
    with running_swift(
        proxy_template="proxy-server-keystone.conf.in", proxy_values=keystone.swift_proxy_values()
    ) as swift:
        keystone.add_object_store(swift.proxy_url)
        yield swift


def measure() -> None:
    """Print bootstrap and restart times and RSS: `python -m tests.cloud.keystone_fixture`."""
    started = time.monotonic()
    with running_keystone() as keystone:
        print(
            f"cold bootstrap + ready in {time.monotonic() - started:.1f} s; RSS {keystone.rss_bytes() / 2**20:.1f} MiB"
        )
        started = time.monotonic()
        keystone.restart()
        print(f"restart on the existing database in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    measure()
