"""SwiftPublisher against a real Swift (tempauth, tempurl) on 127.0.0.1.

One cluster serves the module. Tests that change account metadata (Temp-URL keys,
ACLs) each take a fresh account through the reseller admin, so no test sees another's
key; tests that stop a server start it again before they finish.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import openstack
import pytest

from recovery.errors import ConfigError, PublishError, PublishUnavailable
from recovery.publishers import load_publisher_class
from recovery.publishers.swift import Digest, SwiftPublisher, choose_digest, temp_url_signature
from tests.cloud.swift_fixture import SwiftCluster, running_swift

# openstacksdk 4.22 warns about InfluxDB on every connect, configured or not (its loader
# always hands CloudRegion a dict of Nones); pytest runs with filterwarnings = error.
pytestmark = pytest.mark.filterwarnings("ignore:Support for InfluxDB requires:PendingDeprecationWarning")

KEY_LINE = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0bqZ8Y1jW3oQ recovery-test\n"
TTL = timedelta(minutes=5)


@pytest.fixture(scope="module")
def swift() -> Iterator[SwiftCluster]:
    with running_swift() as cluster:
        yield cluster


def connect(storage_url: str, token: str) -> Any:
    """An openstacksdk connection as clouds.yaml makes it for tempauth (admin_token)."""
    return openstack.connect(
        load_yaml_config=False,
        load_envvars=False,
        auth_type="admin_token",
        auth={"endpoint": storage_url, "token": token},
        object_store_endpoint_override=storage_url,
    )


@pytest.fixture
def account(swift: SwiftCluster) -> tuple[str, str]:
    """A fresh account's storage URL and a token that owns it (the reseller admin's)."""
    return swift.fresh_account(), swift.admin_token()


@pytest.fixture
def conn(account: tuple[str, str]) -> Iterator[Any]:
    connection = connect(*account)
    yield connection
    connection.close()


def http(
    method: str, url: str, token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    """One request with urllib: status, headers, body (4xx/5xx are answers, not exceptions)."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    if token:
        request.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def temp_url_keys(url: str, token: str, scope: str = "Account") -> tuple[str | None, str | None]:
    """Both Temp-URL key slots of an account (or a container, scope="Container")."""
    _, headers, _ = http("HEAD", url, token)
    return headers.get(f"X-{scope}-Meta-Temp-URL-Key"), headers.get(f"X-{scope}-Meta-Temp-URL-Key-2")


def query_value(url: str, name: str) -> str:
    return parse_qs(urlsplit(url).query)[name][0]


def object_name(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


def resigned(url: str, signature: str) -> str:
    """`url` with its signature replaced and everything else kept."""
    query = f"temp_url_sig={quote_plus(signature)}&temp_url_expires={query_value(url, 'temp_url_expires')}"
    return urlsplit(url)._replace(query=query).geturl()


def signed_with(url: str, key: str, digest: Digest) -> bool:
    expires = int(query_value(url, "temp_url_expires"))
    expected = temp_url_signature(key.encode(), urlsplit(url).path, expires, digest)
    return query_value(url, "temp_url_sig") == expected


# --- what the VM sees -------------------------------------------------------------------


def test_url_serves_exactly_the_bytes_to_urllib_wget_and_curl(conn: Any, account: tuple[str, str]) -> None:
    with SwiftPublisher(connection=conn) as publisher:
        started = datetime.now(UTC)
        item = publisher.publish("run-1.pub", KEY_LINE, TTL)
        url = item.url.reveal()

        status, _, body = http("GET", url)
        assert (status, body) == (200, KEY_LINE)
        # What the guest script runs: the quoted URL with wget -qO- or curl -fsS.
        for argv in (["wget", "-qO-", url], ["curl", "-fsS", url]):
            assert subprocess.run(argv, capture_output=True, check=True, timeout=20).stdout == KEY_LINE
        assert (item.scheme, item.name, item.sha256) == ("swift", "run-1.pub", hashlib.sha256(KEY_LINE).hexdigest())
        assert started + TTL <= item.expires_at <= started + TTL + timedelta(seconds=2)
        # The label says where, never the signature.
        assert str(item.url).endswith("?temp_url_sig=***&temp_url_expires=***")
        assert query_value(url, "temp_url_sig") not in str(item.url)
        other = publisher.publish("run-1.pub", KEY_LINE, TTL).url.reveal()
        assert object_name(other) != object_name(url)  # a fresh random name each time

    storage_url, token = account
    status, headers, _ = http("HEAD", f"{storage_url}/recovery-keys", token)
    assert status == 204
    assert "X-Container-Read" not in headers  # created private: no ACL
    status, headers, _ = http("HEAD", f"{storage_url}/recovery-keys/{object_name(url)}", token)
    expires = int(query_value(url, "temp_url_expires"))
    assert status == 200
    assert expires + 29 <= int(headers["X-Delete-At"]) <= expires + 31  # Swift drops it by itself soon after


def test_tampered_or_retargeted_url_is_refused(conn: Any) -> None:
    with SwiftPublisher(connection=conn) as publisher:
        url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
        other = publisher.publish("k.pub", b"another\n", TTL).url.reveal()
    signature = query_value(url, "temp_url_sig")
    flipped = signature[:-5] + ("A" if signature[-5] != "A" else "B") + signature[-4:]
    assert http("GET", resigned(url, flipped))[0] == 401
    # The signature of one object does not open another.
    assert http("GET", urlsplit(other)._replace(query=urlsplit(url).query).geturl())[0] == 401
    assert http("GET", url.split("?")[0])[0] == 401  # no signature at all: the container is private


def test_expired_url_is_refused(conn: Any) -> None:
    with SwiftPublisher(connection=conn) as publisher:
        url = publisher.publish("k.pub", KEY_LINE, timedelta(seconds=1)).url.reveal()
    assert http("GET", url)[0] == 200
    deadline = time.monotonic() + 5  # valid for 1-2 s: expires is rounded up to a whole second
    while (status := http("GET", url)[0]) == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 401


def test_withdraw_deletes_the_object_and_the_url_stops_working(conn: Any, account: tuple[str, str]) -> None:
    storage_url, token = account
    with SwiftPublisher(connection=conn) as publisher:
        item = publisher.publish("k.pub", KEY_LINE, TTL)
        publisher.withdraw(item)
        assert http("GET", item.url.reveal())[0] == 404
        assert http("HEAD", f"{storage_url}/recovery-keys/{object_name(item.url.reveal())}", token)[0] == 404
        publisher.withdraw(item)  # already gone: nothing to do, no error


def test_withdraw_fails_when_the_object_is_still_served(conn: Any, account: tuple[str, str]) -> None:
    """A versioned container brings the previous copy back on DELETE: withdraw must notice."""
    storage_url, token = account
    with SwiftPublisher(connection=conn) as publisher:
        item = publisher.publish("k.pub", KEY_LINE, TTL)
        object_url = f"{storage_url}/recovery-keys/{object_name(item.url.reveal())}"
        assert http("PUT", f"{storage_url}/archive", token)[0] == 201
        assert http("POST", f"{storage_url}/recovery-keys", token, {"X-Versions-Location": "archive"})[0] == 204
        assert http("PUT", object_url, token, {"Content-Length": "0"})[0] == 201  # archives our copy
        with pytest.raises(PublishError, match="still serves the key after it was deleted") as caught:
            publisher.withdraw(item)
    assert query_value(item.url.reveal(), "temp_url_sig") not in str(caught.value)


def test_host_rewrite_changes_only_scheme_host_and_port(swift: SwiftCluster, conn: Any) -> None:
    port = urlsplit(swift.proxy_url).port
    with SwiftPublisher(connection=conn, host_rewrite=f"http://localhost:{port}") as publisher:
        item = publisher.publish("k.pub", KEY_LINE, TTL)
        url = item.url.reveal()
        assert url.startswith(f"http://localhost:{port}/v1/AUTH_")
        assert http("GET", url)[::2] == (200, KEY_LINE)  # the signature covers the path only
        publisher.withdraw(item)  # checked through the endpoint the agent reaches
        assert http("GET", url)[0] == 404


# --- the signature digest ---------------------------------------------------------------


def test_auto_digest_is_sha512_when_the_cluster_allows_it(conn: Any) -> None:
    with SwiftPublisher(connection=conn) as publisher:
        url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
        assert publisher.digest == "sha512"
    assert query_value(url, "temp_url_sig").startswith("sha512:")
    assert http("GET", url)[::2] == (200, KEY_LINE)


def test_explicit_sha256_gives_a_hex_signature_the_cluster_accepts(conn: Any) -> None:
    with SwiftPublisher(connection=conn, digest="sha256") as publisher:
        url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
    assert len(query_value(url, "temp_url_sig")) == 64
    assert http("GET", url)[::2] == (200, KEY_LINE)


def test_auto_digest_follows_what_get_info_allows() -> None:
    """A cluster that allows only sha1 and sha256: auto must pick sha256, and it must work."""
    with running_swift(allowed_digests="sha1 sha256") as cluster:
        connection = connect(cluster.storage_url, cluster.token())
        with SwiftPublisher(connection=connection) as publisher:
            url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
            assert publisher.digest == "sha256"
        connection.close()
        assert len(query_value(url, "temp_url_sig")) == 64
        assert http("GET", url)[::2] == (200, KEY_LINE)
        with pytest.raises(PublishError, match="does not accept sha512"):
            SwiftPublisher(connection=connect(cluster.storage_url, cluster.token()), digest="sha512").publish(
                "k.pub", KEY_LINE, TTL
            )


@pytest.mark.parametrize(
    ("info", "wanted", "digest"),
    [
        ({"tempurl": {"allowed_digests": ["sha1", "sha256", "sha512"]}}, "auto", "sha512"),
        ({"tempurl": {"allowed_digests": ["sha256", "sha1"]}}, "auto", "sha256"),
        ({"tempurl": {"allowed_digests": ["sha1"]}}, "auto", "sha1"),
        ({"tempurl": {}}, "auto", "sha1"),  # before Swift 2.17: no allowed_digests, sha1 only
        (None, "auto", "sha256"),  # /info not published
        ({"tempurl": {"allowed_digests": ["sha1", "sha512"]}}, "sha1", "sha1"),
    ],
)
def test_choose_digest(info: dict[str, Any] | None, wanted: str, digest: str) -> None:
    assert choose_digest(info, wanted) == digest


def test_choose_digest_refuses_a_cluster_without_tempurl() -> None:
    with pytest.raises(PublishError, match="does not offer TempURLs"):
        choose_digest({"swift": {}})


# --- the Temp-URL key -------------------------------------------------------------------


def test_no_key_creates_one_in_the_first_slot_and_reuses_it(conn: Any, account: tuple[str, str]) -> None:
    storage_url, token = account
    assert temp_url_keys(storage_url, token) == (None, None)
    with SwiftPublisher(connection=conn) as publisher:
        url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
    created, second = temp_url_keys(storage_url, token)
    assert created
    assert second is None
    assert signed_with(url, created, "sha512")
    with SwiftPublisher(connection=conn) as publisher:  # a later run finds and reuses it
        url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
    assert temp_url_keys(storage_url, token) == (created, None)
    assert signed_with(url, created, "sha512")


def test_an_existing_account_key_is_used_and_never_overwritten(conn: Any, account: tuple[str, str]) -> None:
    storage_url, token = account
    http("POST", storage_url, token, {"X-Account-Meta-Temp-URL-Key": "operators-key"})
    with SwiftPublisher(connection=conn) as publisher:
        url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
    assert temp_url_keys(storage_url, token) == ("operators-key", None)
    assert signed_with(url, "operators-key", "sha512")
    assert http("GET", url)[0] == 200


def test_a_key_in_the_second_slot_is_used_and_the_first_slot_left_empty(conn: Any, account: tuple[str, str]) -> None:
    storage_url, token = account
    http("POST", storage_url, token, {"X-Account-Meta-Temp-URL-Key-2": "rotation-key"})
    with SwiftPublisher(connection=conn) as publisher:
        url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
    assert temp_url_keys(storage_url, token) == (None, "rotation-key")
    assert signed_with(url, "rotation-key", "sha512")
    assert http("GET", url)[0] == 200


def test_container_scope_keeps_the_key_in_the_container(conn: Any, account: tuple[str, str]) -> None:
    storage_url, token = account
    http("POST", storage_url, token, {"X-Account-Meta-Temp-URL-Key": "account-key"})
    with SwiftPublisher(connection=conn, container="scoped", key_scope="container") as publisher:
        url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
    container_key, second = temp_url_keys(f"{storage_url}/scoped", token, "Container")
    assert container_key
    assert container_key != "account-key"
    assert second is None
    assert temp_url_keys(storage_url, token) == ("account-key", None)
    assert signed_with(url, container_key, "sha512")
    assert http("GET", url)[::2] == (200, KEY_LINE)


def test_a_user_who_cannot_set_the_key_gets_a_clear_error(swift: SwiftCluster) -> None:
    """tester3 may write objects in AUTH_test (account ACL) but does not own it: Swift hides
    Temp-URL keys from such users, refuses their account POST and drops their container keys."""
    owner = swift.token()
    acl = json.dumps({"read-write": ["test:tester3"]})
    assert http("POST", swift.storage_url, owner, {"X-Account-Access-Control": acl})[0] == 204
    connection = connect(swift.storage_url, swift.token("test:tester3", "testing3"))
    with (
        SwiftPublisher(connection=connection, container="tester3") as publisher,
        pytest.raises(PublishError, match=r"denied permission while setting a Temp-URL key on the account .*403"),
    ):
        publisher.publish("k.pub", KEY_LINE, TTL)
    with (
        SwiftPublisher(connection=connection, container="tester3", key_scope="container") as publisher,
        pytest.raises(PublishError, match="no Temp-URL key these credentials can see, and they cannot set one"),
    ):
        publisher.publish("k.pub", KEY_LINE, TTL)
    connection.close()


# --- faults -----------------------------------------------------------------------------


def test_proxy_down_is_unavailable(swift: SwiftCluster, conn: Any) -> None:
    with SwiftPublisher(connection=conn) as publisher, SwiftPublisher(connection=conn) as fresh:
        publisher.publish("k.pub", KEY_LINE, TTL)
        swift.stop_proxy()
        try:
            with pytest.raises(PublishUnavailable, match="cannot reach object storage while uploading"):
                publisher.publish("k.pub", KEY_LINE, TTL)
            with pytest.raises(PublishUnavailable, match=r"cannot reach object storage while reading .* /info"):
                fresh.publish("k.pub", KEY_LINE, TTL)  # down from the very first request
        finally:
            swift.start_proxy()
        publisher.publish("k.pub", KEY_LINE, TTL)  # and it recovers: what the runner's retry relies on


def test_object_server_down_is_a_5xx_and_unavailable(swift: SwiftCluster, conn: Any) -> None:
    with SwiftPublisher(connection=conn) as publisher:
        publisher.publish("k.pub", KEY_LINE, TTL)
        swift.stop_server("object")
        try:
            with pytest.raises(PublishUnavailable, match=r"while uploading object .* \(HTTP 503 .*, request tx"):
                publisher.publish("k.pub", KEY_LINE, TTL)
        finally:
            swift.start_server("object")


def test_wrong_credentials_are_a_publish_error(swift: SwiftCluster) -> None:
    connection = connect(swift.storage_url, "AUTH_tk0000000000000000000000000000000")
    with SwiftPublisher(connection=connection) as publisher:
        with pytest.raises(PublishError, match=r"rejected the credentials .*HTTP 401") as caught:
            publisher.publish("k.pub", KEY_LINE, TTL)
        assert not isinstance(caught.value, PublishUnavailable)  # not retried
    connection.close()


def test_other_refusals_name_the_container_and_the_request_id(conn: Any) -> None:
    name = "c" * 300  # Swift's limit is 256
    with (
        SwiftPublisher(connection=conn, container=name) as publisher,
        pytest.raises(PublishError, match=rf"container '{name}' \(HTTP 400 Bad Request, request tx\w+-\w+\): .*256"),
    ):
        publisher.publish("k.pub", KEY_LINE, TTL)


def test_a_public_container_is_refused(conn: Any, account: tuple[str, str]) -> None:
    storage_url, token = account
    http("PUT", f"{storage_url}/public", token, {"X-Container-Read": ".r:*,.rlistings"})
    with (
        SwiftPublisher(connection=conn, container="public") as publisher,
        pytest.raises(PublishError, match="container 'public' is publicly readable"),
    ):
        publisher.publish("k.pub", KEY_LINE, TTL)


# --- construction -----------------------------------------------------------------------


def test_a_cloud_name_from_clouds_yaml(swift: SwiftCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(swift.write_clouds_yaml(tmp_path / "clouds.yaml")))
    with SwiftPublisher(cloud="swift-test") as publisher:
        item = publisher.publish("k.pub", KEY_LINE, TTL)
        assert item.url.reveal().startswith(swift.storage_url + "/recovery-keys/")
        assert http("GET", item.url.reveal())[::2] == (200, KEY_LINE)
        publisher.withdraw(item)
    with pytest.raises(ConfigError, match="no-such-cloud"):
        SwiftPublisher(cloud="no-such-cloud")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of connection= or cloud="),
        ({"cloud": "a", "connection": object()}, "exactly one of connection= or cloud="),
        ({"cloud": "a", "digest": "md5"}, "digest 'md5' is invalid"),
        ({"cloud": "a", "key_scope": "object"}, "key_scope 'object' is invalid"),
        ({"cloud": "a", "container": "a/b"}, "container name 'a/b' is invalid"),
        ({"cloud": "a", "host_rewrite": "storage.example:8080"}, "host_rewrite .* is invalid"),
        ({"cloud": "a", "host_rewrite": "https://storage.example/v1"}, "host_rewrite .* is invalid"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SwiftPublisher(**options)


def test_registered_under_swift() -> None:
    assert load_publisher_class("swift") is SwiftPublisher
