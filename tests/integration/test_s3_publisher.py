"""S3Publisher against Swift's s3api on 127.0.0.1: a server that really checks SigV4.

moto and s3rver serve a tampered presigned URL, so they cannot prove a refusal; s3api
does. With tempauth the access key is ``account:user`` and the secret its password;
the signing region must be the filter's ``location`` (us-east-1).
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from recovery.errors import ConfigError, PublishError, PublishUnavailable
from recovery.publishers import load_publisher_class
from recovery.publishers.s3 import S3Publisher
from recovery.safety.redact import Secret
from tests.cloud.swift_fixture import SwiftCluster, running_swift

KEY_LINE = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0bqZ8Y1jW3oQ recovery-test\n"
TTL = timedelta(minutes=5)
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture(scope="module")
def swift() -> Iterator[SwiftCluster]:
    with running_swift() as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets: a developer's own AWS variables and ~/.aws files must not leak in,
    and botocore must not ask an instance metadata service (none answers here)."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def bucket(swift: SwiftCluster) -> str:
    """A fresh bucket (a Swift container in AUTH_test), made with the owner's token."""
    name = "keys-" + secrets.token_hex(4)
    assert http("PUT", f"{swift.storage_url}/{name}", {"X-Auth-Token": swift.token()})[0] == 201
    return name


def publisher_for(swift: SwiftCluster, bucket: str, **options: Any) -> S3Publisher:
    settings: dict[str, Any] = {
        "bucket": bucket,
        "endpoint": swift.s3_endpoint,
        "region": swift.s3_region,
        "access_key": swift.s3_access_key,
        "secret_key": Secret(swift.s3_secret_key),
    }
    return S3Publisher(**(settings | options))


def http(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def with_query_value(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = "&".join(
        f"{key}={value if key == name else urllib.parse.quote(old, safe='')}"
        for key, (old,) in parse_qs(parts.query).items()
    )
    return parts._replace(query=query).geturl()


def test_presigned_url_serves_exactly_the_bytes_to_urllib_wget_and_curl(swift: SwiftCluster, bucket: str) -> None:
    with publisher_for(swift, bucket) as publisher:
        started = datetime.now(UTC)
        item = publisher.publish("run-1.pub", KEY_LINE, TTL)
    url = item.url.reveal()
    assert http("GET", url) == (200, KEY_LINE)
    for argv in (["wget", "-qO-", url], ["curl", "-fsS", url]):
        assert subprocess.run(argv, capture_output=True, check=True, timeout=20).stdout == KEY_LINE
    assert url.startswith(f"{swift.s3_endpoint}/{bucket}/")  # path-style
    assert parse_qs(urlsplit(url).query)["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["300"]
    assert (item.scheme, item.name, item.sha256) == ("s3", "run-1.pub", hashlib.sha256(KEY_LINE).hexdigest())
    # SigV4 counts from the signing time, which is in whole seconds.
    assert started - timedelta(seconds=1) + TTL <= item.expires_at <= started + TTL + timedelta(seconds=2)
    assert "X-Amz-Signature=***" in str(item.url)
    assert parse_qs(urlsplit(url).query)["X-Amz-Signature"][0] not in str(item.url)


def test_tampered_or_retargeted_url_is_refused(swift: SwiftCluster, bucket: str) -> None:
    with publisher_for(swift, bucket) as publisher:
        url = publisher.publish("k.pub", KEY_LINE, TTL).url.reveal()
        other = publisher.publish("k.pub", b"another\n", TTL).url.reveal()
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert http("GET", with_query_value(url, "X-Amz-Signature", flipped))[0] == 403
    assert http("GET", urlsplit(other)._replace(query=urlsplit(url).query).geturl())[0] == 403  # another object
    assert http("GET", with_query_value(url, "X-Amz-Expires", "86400"))[0] == 403  # a longer life


def test_expired_url_is_refused(swift: SwiftCluster, bucket: str) -> None:
    with publisher_for(swift, bucket) as publisher:
        url = publisher.publish("k.pub", KEY_LINE, timedelta(seconds=2)).url.reveal()
    assert http("GET", url)[0] == 200
    deadline = time.monotonic() + 5  # valid for 1-2 s: the signing time is in whole seconds
    while (status := http("GET", url)[0]) == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 403


def test_withdraw_deletes_the_object(swift: SwiftCluster, bucket: str) -> None:
    with publisher_for(swift, bucket) as publisher:
        item = publisher.publish("k.pub", KEY_LINE, TTL)
        publisher.withdraw(item)
        assert http("GET", item.url.reveal())[0] == 404
        key = urlsplit(item.url.reveal()).path.rsplit("/", 1)[1]
        assert http("HEAD", f"{swift.storage_url}/{bucket}/{key}", {"X-Auth-Token": swift.token()})[0] == 404
        publisher.withdraw(item)  # already gone: no error


def test_credentials_and_region_from_the_standard_environment(
    swift: SwiftCluster, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", swift.s3_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", swift.s3_secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", swift.s3_region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", swift.s3_endpoint)
    with S3Publisher(bucket=bucket) as publisher:
        item = publisher.publish("k.pub", KEY_LINE, TTL)
        assert http("GET", item.url.reveal()) == (200, KEY_LINE)
        publisher.withdraw(item)


# s3api hands the signature to tempauth, which cannot tell an unknown user from a wrong
# secret: both are SignatureDoesNotMatch here (AWS says InvalidAccessKeyId for the first).
@pytest.mark.parametrize("options", [{"secret_key": "wrong"}, {"access_key": "test:nobody"}])
def test_wrong_credentials_are_a_publish_error(swift: SwiftCluster, bucket: str, options: dict[str, str]) -> None:
    with publisher_for(swift, bucket, **options) as publisher:
        with pytest.raises(
            PublishError, match=r"rejected the credentials .*\(SignatureDoesNotMatch, request tx"
        ) as caught:
            publisher.publish("k.pub", KEY_LINE, TTL)
        assert not isinstance(caught.value, PublishUnavailable)  # not retried
        assert "wrong" not in str(caught.value)


def test_a_missing_bucket_is_a_publish_error(swift: SwiftCluster) -> None:
    with (
        publisher_for(swift, "no-such-bucket") as publisher,
        pytest.raises(PublishError, match=r"bucket 'no-such-bucket' \(HTTP 404, request tx\w+-\w+\): NoSuchBucket"),
    ):
        publisher.publish("k.pub", KEY_LINE, TTL)


def test_storage_down_is_unavailable(swift: SwiftCluster, bucket: str) -> None:
    with publisher_for(swift, bucket) as publisher:
        swift.stop_proxy()
        try:
            with pytest.raises(PublishUnavailable, match=r"cannot reach S3 at http://127\.0\.0\.1:\d+ while uploading"):
                publisher.publish("k.pub", KEY_LINE, TTL)
        finally:
            swift.start_proxy()


def test_credentials_from_a_profile_of_the_shared_files(
    swift: SwiftCluster, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No keys configured: botocore's chain finds AWS_PROFILE's keys, session token and region."""
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = test:nobody\naws_secret_access_key = wrong\n\n"
        f"[recovery-test]\naws_access_key_id = {swift.s3_access_key}\n"
        f"aws_secret_access_key = {swift.s3_secret_key}\naws_session_token = session-token-of-the-test\n",
        encoding="utf-8",
    )
    config = tmp_path / "config"
    config.write_text(f"[profile recovery-test]\nregion = {swift.s3_region}\n", encoding="utf-8")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "recovery-test")
    with S3Publisher(bucket=bucket, endpoint=swift.s3_endpoint) as publisher:
        item = publisher.publish("k.pub", KEY_LINE, TTL)
        url = item.url.reveal()
        assert parse_qs(urlsplit(url).query)["X-Amz-Security-Token"] == ["session-token-of-the-test"]
        assert "session-token-of-the-test" not in str(item.url)  # registered as a secret: masked
        assert http("GET", url) == (200, KEY_LINE)
        publisher.withdraw(item)
        assert http("GET", url)[0] == 404


def test_a_session_token_from_the_environment_is_sent(
    swift: SwiftCluster, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", swift.s3_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", swift.s3_secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-from-sts")
    with S3Publisher(bucket=bucket, endpoint=swift.s3_endpoint, region=swift.s3_region) as publisher:
        item = publisher.publish("k.pub", KEY_LINE, TTL)
        assert parse_qs(urlsplit(item.url.reveal()).query)["X-Amz-Security-Token"] == ["token-from-sts"]
        assert http("GET", item.url.reveal()) == (200, KEY_LINE)
        publisher.withdraw(item)


def test_a_profile_that_does_not_exist_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ConfigError, match=r"cannot read its AWS configuration: .*no-such-profile"):
        S3Publisher(bucket="keys", endpoint="http://127.0.0.1:9")


def test_missing_credentials_name_the_chain() -> None:
    with pytest.raises(ConfigError, match=r"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY .*AWS_PROFILE"):
        S3Publisher(bucket="keys", endpoint="http://127.0.0.1:9")


def test_an_access_key_without_its_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="access_key and secret_key together"):
        S3Publisher(bucket="keys", endpoint="http://127.0.0.1:9", access_key="test:tester")


def test_without_botocore_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "botocore.session", None)  # what an environment without it gives
    with pytest.raises(ConfigError, match=r"pip install 'recovery\[s3\]'"):
        S3Publisher(bucket="keys", endpoint="http://127.0.0.1:9", access_key="a", secret_key="b")


def test_registered_under_s3() -> None:
    assert load_publisher_class("s3") is S3Publisher
