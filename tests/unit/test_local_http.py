"""The one-shot HTTP publisher, with real requests on 127.0.0.1 (urllib, wget, curl)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from recovery.errors import ConfigError, PublishError
from recovery.publishers import PUBLISHERS, Publisher, load_publisher_class
from recovery.publishers.local_http import LocalHTTPPublisher
from recovery.safety.redact import Secret

KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5ld2tleW5ld2tleW5ld2tleW5ld2tleW5ld2tl new\n"
MINUTE = timedelta(minutes=1)


@pytest.fixture
def publisher() -> Iterator[LocalHTTPPublisher]:
    with LocalHTTPPublisher() as server:
        yield server


def get(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install {name}")
    return path


def test_served_once_with_the_right_bytes_then_gone(publisher: LocalHTTPPublisher) -> None:
    item = publisher.publish("key.pub", KEY, MINUTE)

    assert get(item.url.reveal()) == (200, KEY)
    assert get(item.url.reveal())[0] == 410
    assert get(item.url.reveal())[0] == 410


def test_published_describes_the_object(publisher: LocalHTTPPublisher) -> None:
    before = datetime.now(UTC)
    item = publisher.publish("run-1.pub", KEY, MINUTE)

    assert (item.scheme, item.name) == ("http", "run-1.pub")
    assert item.sha256 == hashlib.sha256(KEY).hexdigest()
    assert before + MINUTE <= item.expires_at <= datetime.now(UTC) + MINUTE
    base = f"http://127.0.0.1:{publisher.port}/"
    assert str(item.url) == base + "***"
    token = item.url.reveal().removeprefix(base)
    assert token not in repr(item) + str(item.url)
    assert len(token) == 32
    assert "/" not in token
    assert publisher.publish("run-1.pub", KEY, MINUTE).url != item.url
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.name = "other"  # type: ignore[misc]


def test_wget_downloads_once(publisher: LocalHTTPPublisher) -> None:
    item = publisher.publish("key.pub", KEY, MINUTE)
    wget = [tool("wget"), "-qO-", item.url.reveal()]

    first = subprocess.run(wget, capture_output=True, timeout=30)
    second = subprocess.run(wget, capture_output=True, timeout=30)

    assert (first.returncode, first.stdout) == (0, KEY)
    assert (second.returncode, second.stdout) == (8, b"")  # wget: the server answered an error


def test_busybox_wget_downloads_once(publisher: LocalHTTPPublisher) -> None:
    item = publisher.publish("key.pub", KEY, MINUTE)
    wget = [tool("busybox"), "wget", "-qO-", item.url.reveal()]

    first = subprocess.run(wget, capture_output=True, timeout=30)
    second = subprocess.run(wget, capture_output=True, timeout=30)

    assert (first.returncode, first.stdout) == (0, KEY)
    assert second.returncode != 0
    assert b"410" in second.stderr


def test_curl_downloads_once(publisher: LocalHTTPPublisher) -> None:
    item = publisher.publish("key.pub", KEY, MINUTE)
    curl = [tool("curl"), "-fsS", item.url.reveal()]

    first = subprocess.run(curl, capture_output=True, timeout=30)
    second = subprocess.run(curl, capture_output=True, timeout=30)

    assert (first.returncode, first.stdout) == (0, KEY)
    assert second.returncode == 22  # curl -f: HTTP error
    assert b"410" in second.stderr


def test_expired_object_is_gone_without_being_served(publisher: LocalHTTPPublisher) -> None:
    item = publisher.publish("key.pub", KEY, timedelta(milliseconds=30))
    fresh = publisher.publish("key.pub", KEY, MINUTE)
    deadline = time.monotonic() + 5
    while datetime.now(UTC) < item.expires_at + timedelta(milliseconds=20):
        assert time.monotonic() < deadline, "the clock did not pass a 30 ms ttl within 5 s"
        time.sleep(0.005)

    assert get(item.url.reveal())[0] == 410
    assert get(fresh.url.reveal()) == (200, KEY)


def test_download_in_flight_blocks_others_and_a_broken_one_can_be_retried(
    publisher: LocalHTTPPublisher,
) -> None:
    big = bytes(32 << 20)  # more than loopback socket buffers hold: the first send blocks
    item = publisher.publish("big", big, MINUTE)
    path = item.url.reveal().removeprefix(publisher.base_url[:-1])
    stalled = socket.create_connection(("127.0.0.1", publisher.port), timeout=5)
    stalled.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    assert stalled.recv(15) == b"HTTP/1.0 200 OK"  # claimed; the body is stuck in the pipe

    assert get(item.url.reveal())[0] == 410  # nobody else gets it meanwhile

    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stalled.close()  # reset: the server's send fails, so the object was never delivered
    deadline = time.monotonic() + 5
    while (answer := get(item.url.reveal()))[0] == 410:
        assert time.monotonic() < deadline, "the broken download never released the object"
        time.sleep(0.01)
    assert answer == (200, big)
    assert get(item.url.reveal())[0] == 410


def test_unknown_paths_are_404(publisher: LocalHTTPPublisher) -> None:
    item = publisher.publish("key.pub", KEY, MINUTE)
    url = item.url.reveal()

    for probe in (publisher.base_url, publisher.base_url + "nope", url + "/x", url + "?a=1"):
        assert get(probe)[0] == 404, probe
    assert get(url) == (200, KEY)  # probing did not spend the object


def test_head_does_not_spend_the_object(publisher: LocalHTTPPublisher) -> None:
    item = publisher.publish("key.pub", KEY, MINUTE)

    assert get(item.url.reveal(), method="HEAD")[0] == 501
    assert get(item.url.reveal()) == (200, KEY)


def test_withdraw_removes_the_object(publisher: LocalHTTPPublisher) -> None:
    item = publisher.publish("key.pub", KEY, MINUTE)
    kept = publisher.publish("other.pub", KEY, MINUTE)

    publisher.withdraw(item)
    publisher.withdraw(item)  # already gone: nothing to do
    foreign = dataclasses.replace(item, url=Secret("http://198.51.100.7:1/abc"))
    publisher.withdraw(foreign)

    assert get(item.url.reveal())[0] == 404
    assert get(kept.url.reveal()) == (200, KEY)


def test_close_releases_the_port_and_is_idempotent() -> None:
    publisher = LocalHTTPPublisher()
    item = publisher.publish("key.pub", KEY, MINUTE)
    port = publisher.port

    publisher.close()
    publisher.close()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(PublishError, match="closed"):
        publisher.publish("key.pub", KEY, MINUTE)
    publisher.withdraw(item)
    with LocalHTTPPublisher(port=port) as again:
        assert again.port == port


def test_context_manager_closes() -> None:
    with LocalHTTPPublisher() as publisher:
        port = publisher.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_port_in_use_is_a_publish_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PublishError, match=f"cannot listen on 127.0.0.1:{port}.*in use"):
            LocalHTTPPublisher(port=port)


def test_address_that_is_not_ours_is_a_publish_error() -> None:
    with pytest.raises(PublishError, match=r"cannot listen on 192\.0\.2\.1:0"):
        LocalHTTPPublisher(bind_host="192.0.2.1")


def test_listening_everywhere_needs_an_advertised_host() -> None:
    with pytest.raises(ConfigError, match="advertise_host"):
        LocalHTTPPublisher(bind_host="0.0.0.0")
    with LocalHTTPPublisher(bind_host="0.0.0.0", advertise_host="127.0.0.1") as publisher:
        item = publisher.publish("key.pub", KEY, MINUTE)
        assert str(item.url) == f"http://127.0.0.1:{publisher.port}/***"
        assert get(item.url.reveal()) == (200, KEY)


def test_ipv6_loopback() -> None:
    with LocalHTTPPublisher(bind_host="::1") as publisher:
        item = publisher.publish("key.pub", KEY, MINUTE)
        assert item.url.reveal().startswith(f"http://[::1]:{publisher.port}/")
        assert get(item.url.reveal()) == (200, KEY)


def test_ttl_must_be_positive(publisher: LocalHTTPPublisher) -> None:
    with pytest.raises(ValueError, match="ttl"):
        publisher.publish("key.pub", KEY, timedelta(0))


def test_paths_are_masked_in_logs_and_absent_from_stderr(
    publisher: LocalHTTPPublisher,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    item = publisher.publish("key.pub", KEY, MINUTE)
    token = item.url.reveal().removeprefix(publisher.base_url)

    with caplog.at_level(logging.DEBUG, logger="recovery.publishers.local_http"):
        get(item.url.reveal())
        get(item.url.reveal())
        get(publisher.base_url + "unknown")

    out, err = capfd.readouterr()
    assert token not in out + err + caplog.text
    assert err == ""
    messages = [r.getMessage() for r in caplog.records]
    assert any('"GET /*** HTTP/1.1" 200' in m for m in messages), messages
    assert any('"GET /*** HTTP/1.1" 410' in m for m in messages), messages


def test_registry_loads_the_class_on_first_use() -> None:
    assert PUBLISHERS["http"] == "recovery.publishers.local_http:LocalHTTPPublisher"
    cls = load_publisher_class("http")
    assert cls is LocalHTTPPublisher
    assert cls.scheme == "http"
    with cls() as server:
        driver: Publisher = server  # mypy checks LocalHTTPPublisher against the Protocol
        assert driver.publish("key.pub", KEY, MINUTE).scheme == "http"


def test_registry_names_the_known_schemes() -> None:
    with pytest.raises(ConfigError, match="unknown publisher 'ftp'; known publishers: http"):
        load_publisher_class("ftp")


def test_registry_reports_a_module_that_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(PUBLISHERS, "broken", "recovery.publishers.no_such_driver:Driver")
    with pytest.raises(ConfigError, match="publisher 'broken' cannot be loaded"):
        load_publisher_class("broken")
