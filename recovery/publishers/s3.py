"""S3-compatible object storage: the key is an object in a bucket, fetched through a presigned URL.

VK Cloud's object storage speaks S3, not Swift. The object gets a random name; the
URL is a SigV4 presigned GET (``X-Amz-Signature`` in the query string), so it is a
`Secret`. Addressing is path-style (``https://endpoint/bucket/key``): it works with
every S3-compatible service and with bucket names that are not valid host names.

Why botocore rather than our own SigV4: canonical requests, credential scopes and
presigning have many small rules, and botocore is the well-kept reference. We use its
low-level client only (boto3 adds nothing we need), imported on first use, so the
``s3`` extra costs nothing until chosen. Two of its defaults are turned off: retries
(the runner retries a `PublishUnavailable` once, in one place) and, since botocore
1.36, CRC32 checksum headers on every upload, which several S3-compatible services
reject.

Credentials: the ``access_key`` and ``secret_key`` options when both are set; else
botocore's own credential chain, as the AWS CLI finds them: ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` (with ``AWS_SESSION_TOKEN``), ``AWS_PROFILE`` in the shared
credentials and config files (SSO and assume-role profiles included), container and
instance roles. The secret and session token found are registered for scrubbing.

The bucket must exist: bucket names are global on some services and creating one has
billing and policy consequences, so the publisher never creates one. Unlike Swift's
``X-Delete-After``, S3 has no per-object expiry, so the object stays until `withdraw`
(the presigned URL still stops working after the ttl).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from recovery.errors import ConfigError, PublishError, PublishUnavailable
from recovery.publishers import ClosingPublisher, Published
from recovery.safety.redact import Secret, Text, masked_url, register, reveal, scrub

__all__ = ["S3Publisher"]

logger = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"})


class S3Publisher(ClosingPublisher):
    """Uploads into an existing bucket and hands out presigned GET URLs.

    Every option falls back to the standard environment variable, then to a default.

    Args:
        bucket: the bucket for published keys; it must exist (see the module docstring).
        endpoint: the service URL, e.g. ``https://hb.ru-msk.vkcloud-storage.ru``; else
            ``AWS_ENDPOINT_URL``; else AWS itself.
        region: the SigV4 signing region, which must match the service's; else
            ``AWS_DEFAULT_REGION``, or the profile's region; else us-east-1.
        access_key: with `secret_key`; else botocore's credential chain (module docstring).
        secret_key: with `access_key`.
        timeout: seconds to wait for a connection and for each answer.
    Raises:
        ConfigError: only one of `access_key` and `secret_key`, no credentials anywhere in
            the chain, an endpoint that is not http(s), or botocore is missing (the ``s3``
            extra).
    """

    scheme: ClassVar[str] = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: Text | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ConfigError(f"s3 bucket name {bucket!r} is invalid: it must be non-empty, without '/'")
        if bool(access_key) != bool(secret_key):
            raise ConfigError("the s3 publisher needs access_key and secret_key together, or neither")
        self._bucket = bucket
        self._endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        if self._endpoint and urlsplit(self._endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"s3 endpoint {self._endpoint!r} is invalid: it must be an http:// or https:// URL")
        self._timeout = timeout
        keys = (access_key, reveal(secret_key)) if access_key and secret_key else None
        self._client, self._region = _client(self._endpoint, region, keys, timeout)
        self._closed = False

    def publish(self, name: str, data: bytes, ttl: timedelta) -> Published:
        """Upload `data` under a random key and return a presigned GET URL for it.

        Args:
            name: what the object is, for reports; it does not appear in the URL.
            data: the bytes to publish.
            ttl: how long the URL works.
        Returns:
            the presigned URL (a Secret labelled with its masked form), sha256 and expiry.
        Raises:
            ValueError: `ttl` is not positive.
            PublishError: the service refused (credentials, permissions, no such bucket).
            PublishUnavailable: the service answered 5xx or could not be reached.
        """
        if ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        if self._closed:
            raise PublishError("the s3 publisher is closed; cannot publish")
        seconds = math.ceil(ttl.total_seconds())
        key = secrets.token_urlsafe(24)
        with self._errors(f"uploading object {key!r} into bucket {self._bucket!r}"):
            self._client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType="text/plain")
            url: str = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=seconds
            )
        query = parse_qs(urlsplit(url).query)
        for signature in query.get("X-Amz-Signature", []):
            register(signature)  # botocore's debug log prints request URLs
        # The URL works from its signing time, in whole seconds, for `seconds`.
        signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        logger.debug("published %s (%d bytes) as %s", name, len(data), masked_url(url))
        return Published(
            scheme=self.scheme,
            url=Secret(url, label=masked_url(url)),
            sha256=hashlib.sha256(data).hexdigest(),
            expires_at=signed_at + timedelta(seconds=seconds),
            name=name,
        )

    def withdraw(self, item: Published) -> None:
        """Delete the object, then prove its presigned URL no longer serves it (404 or 403).

        A no-op for a URL outside this publisher's bucket; deleting a missing object is
        not an error in S3.

        Raises:
            PublishError: the delete was refused, or the URL still serves the object.
            PublishUnavailable: the service answered 5xx or could not be reached.
        """
        url = item.url.reveal()
        bucket, _, key = unquote(urlsplit(url).path).lstrip("/").partition("/")
        if bucket != self._bucket or not key:
            return
        with self._errors(f"deleting object {key!r} from bucket {self._bucket!r}"):
            self._client.delete_object(Bucket=self._bucket, Key=key)
        what = f"checking that object {key!r} in bucket {self._bucket!r} is gone"
        try:
            with urllib.request.urlopen(url, timeout=self._timeout):  # noqa: S310 - http(s), checked in __init__
                pass
        except urllib.error.HTTPError as exc:
            request_id = exc.headers.get("x-amz-request-id")
            if exc.code >= 500:
                raise PublishUnavailable(_describe(what, exc.code, "", request_id)) from None
            if exc.code not in (403, 404):
                raise PublishError(_describe(what, exc.code, "", request_id)) from None
            return
        except OSError as exc:  # refused, reset, timed out (URLError is an OSError)
            raise PublishUnavailable(f"cannot reach S3 while {what}: {scrub(str(exc))}") from exc
        raise PublishError(f"{item.url} still serves the key after it was deleted")

    def close(self) -> None:
        """Release the client's connection pool. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._client.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn botocore failures while doing `what` into our errors."""
        from botocore import exceptions as boto

        where = f" at {self._endpoint}" if self._endpoint else ""
        try:
            yield
        except boto.ClientError as exc:
            error = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            code, status = str(error.get("Code", "")), int(meta.get("HTTPStatusCode", 0))
            request_id = meta.get("RequestId")
            if code in _CREDENTIAL_CODES:
                raise PublishError(
                    f"S3{where} rejected the credentials while {what} ({code or 'HTTP 403'}"
                    f"{f', request {request_id}' if request_id else ''}): check the access key, the secret "
                    f"and the region ({self._region})"
                ) from exc
            message = _describe(what, status, f"{code}: {error.get('Message', '')}", request_id)
            if status >= 500:
                raise PublishUnavailable(message) from exc
            raise PublishError(message) from exc
        except boto.SSLError as exc:
            raise PublishError(f"TLS failed while {what}{where}: {exc}") from exc
        except (boto.ConnectionError, boto.HTTPClientError) as exc:  # refused, reset, timed out
            raise PublishUnavailable(f"cannot reach S3{where} while {what}: {exc}") from exc
        except boto.BotoCoreError as exc:
            raise PublishError(f"S3 failed while {what}: {exc}") from exc


def _describe(what: str, status: int, said: str, request_id: str | None) -> str:
    detail = f"HTTP {status}" + (f", request {request_id}" if request_id else "")
    return f"S3 refused {what} ({detail})" + (f": {said}" if said else "")


def _client(endpoint: str | None, region: str | None, keys: tuple[str, str] | None, timeout: float) -> tuple[Any, str]:
    """A client signing with `keys`, or with what botocore's credential chain finds; and its region."""
    try:
        import botocore.session
        from botocore import exceptions as boto
        from botocore.config import Config
    except ImportError as exc:
        raise ConfigError(
            "the s3 publisher needs botocore, which comes with the s3 extra: pip install 'recovery[s3]'"
        ) from exc
    session = botocore.session.get_session()
    try:
        region = region or session.get_config_variable("region") or DEFAULT_REGION
        found = session.get_credentials() if keys is None else None
    except boto.BotoCoreError as exc:  # AWS_PROFILE names no profile, an SSO login expired...
        raise ConfigError(f"the s3 publisher cannot read its AWS configuration: {exc}") from exc
    if keys is not None:
        register(keys[1])
        credentials = {"aws_access_key_id": keys[0], "aws_secret_access_key": keys[1]}
    elif found is None:
        raise ConfigError(
            "the s3 publisher found no credentials: set access_key and secret_key, or the "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables, or AWS_PROFILE "
            "(a profile of ~/.aws/credentials or ~/.aws/config, SSO included), or run with an "
            "instance or container role"
        )
    else:
        frozen = found.get_frozen_credentials()
        for secret in (frozen.secret_key, frozen.token):
            if secret:
                register(secret)  # botocore's debug log prints request headers
        credentials = {}
    config = Config(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 1},
        connect_timeout=timeout,
        read_timeout=timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.create_client("s3", endpoint_url=endpoint, config=config, **credentials), region
