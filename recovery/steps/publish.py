"""publish.*: how the public key reaches the VM.

`inline` types the key itself into the console: an ed25519 key is about 100
characters, needs no egress from the VM and leaves nothing to clean up. The
others store it for minutes under a secret URL the VM downloads from: `http`
(the agent's own one-shot server), `swift` (a TempURL) and `s3` (a presigned
URL). Whatever is published is withdrawn at cleanup, after a failure or Ctrl-C
too, and `publish.key` picks the method from one input (`auto` included).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from recovery.cloud import NO_CLOUD, cloud_to_use
from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.errors import StepError
from recovery.publishers import Publisher
from recovery.steps.cloud import cloud_named

PUBLISH_OUTPUTS = {
    "url": "where the VM downloads the key (a secret); null when typed inline",
    "sha256": "sha256 of the published bytes (the key line and a newline)",
    "method": "inline, http, swift or s3",
}
DEFAULT_TTL = 300.0


def key_bytes(public_key: str) -> bytes:
    """What is published and checked: the key line with one trailing newline."""
    return (public_key.strip() + "\n").encode("ascii")


def _check_key(public_key: str) -> None:
    from recovery.ssh.keys import parse_public_line

    parse_public_line(public_key)  # refuse to publish or type something that is not a key


def _inline(ctx: StepContext, public_key: str) -> Outputs:
    _check_key(public_key)
    ctx.report.notes.append("public key typed inline: nothing was published")
    return {"url": None, "sha256": hashlib.sha256(key_bytes(public_key)).hexdigest(), "method": "inline"}


def _publish(ctx: StepContext, publisher: Publisher, public_key: str, ttl: float) -> Outputs:
    """Publish through any driver; the withdrawal is deferred before anything else can fail."""
    _check_key(public_key)
    ctx.defer(f"closed the {publisher.scheme} publisher", publisher.close)
    item = publisher.publish(f"{ctx.run_id}.pub", key_bytes(public_key), timedelta(seconds=ttl))

    def withdraw() -> None:
        publisher.withdraw(item)
        ctx.report.withdrawn.append(str(item.url))

    ctx.defer(f"withdrew the published key {item.url}", withdraw)
    ctx.report.published.append(f"{item.url} (expires {item.expires_at.isoformat(timespec='seconds')})")
    return {"url": item.url, "sha256": item.sha256, "method": item.scheme}


def _http_publisher(ctx: StepContext, bind: str | None, advertise_host: str | None) -> Publisher:
    from recovery.publishers.local_http import LocalHTTPPublisher

    settings = ctx.config.publish.http
    return LocalHTTPPublisher(
        bind_host=bind or settings.bind, port=settings.port, advertise_host=advertise_host or settings.advertise_host
    )


def _swift_publisher(
    ctx: StepContext, container: str | None = None, digest: str | None = None, host_rewrite: str | None = None
) -> Publisher:
    """Swift through the run's cloud connection: the token Nova got serves Swift too (one login)."""
    from recovery.publishers.swift import SwiftPublisher

    settings = ctx.config.publish.swift
    return SwiftPublisher(
        connection=ctx.require_cloud().connection,
        container=container or settings.container,
        digest=digest or settings.digest,
        key_scope=settings.key_scope,
        host_rewrite=host_rewrite or settings.host_rewrite,
    )


def _s3_publisher(
    ctx: StepContext, bucket: str | None = None, endpoint: str | None = None, region: str | None = None
) -> Publisher:
    from recovery.publishers.s3 import S3Publisher

    settings = ctx.config.publish.s3
    chosen = bucket or settings.bucket
    if not chosen:
        raise StepError("publishing to S3 needs a bucket: set publish.s3.bucket in the config, or the step's bucket")
    return S3Publisher(bucket=chosen, endpoint=endpoint or settings.endpoint, region=region or settings.region)


@dataclass(frozen=True)
class InlineParams:
    key: str = doc("the public key line")


@step(
    "publish.inline",
    params=InlineParams,
    outputs=PUBLISH_OUTPUTS,
    repeatable=True,
    predict=lambda values: {"url": None, "method": "inline"},
)
def inline(ctx: StepContext, params: InlineParams) -> Outputs:
    """Type the public key into the console itself; nothing is published."""
    return _inline(ctx, params.key)


@dataclass(frozen=True)
class HTTPParams:
    key: str = doc("the public key line")
    ttl: float = doc("seconds before the URL stops working", default=DEFAULT_TTL)
    bind: str | None = doc("address to listen on (default: publish.http.bind in the config)", default=None)
    advertise_host: str | None = doc("host name the VM uses to reach this machine", default=None)


@step("publish.http", params=HTTPParams, outputs=PUBLISH_OUTPUTS, repeatable=True)
def http(ctx: StepContext, params: HTTPParams) -> Outputs:
    """Serve the public key once from the agent's own HTTP server, stopped at cleanup."""
    return _publish(ctx, _http_publisher(ctx, params.bind, params.advertise_host), params.key, params.ttl)


@dataclass(frozen=True)
class SwiftParams:
    key: str = doc("the public key line")
    ttl: float = doc("seconds before the TempURL stops working", default=DEFAULT_TTL)
    container: str | None = doc("container (default: publish.swift.container)", default=None)
    digest: str | None = doc("auto, sha256 or sha512 (default: publish.swift.digest)", default=None)
    host_rewrite: str | None = doc("scheme://host:port the VM uses to reach object storage", default=None)


@step("publish.swift", params=SwiftParams, outputs=PUBLISH_OUTPUTS, repeatable=True, retryable=True, check=cloud_named)
def swift(ctx: StepContext, params: SwiftParams) -> Outputs:
    """Store the key in a private Swift container behind a short-lived TempURL, deleted at cleanup."""
    publisher = _swift_publisher(ctx, params.container, params.digest, params.host_rewrite)
    return _publish(ctx, publisher, params.key, params.ttl)


@dataclass(frozen=True)
class S3Params:
    key: str = doc("the public key line")
    ttl: float = doc("seconds before the presigned URL stops working", default=DEFAULT_TTL)
    bucket: str | None = doc("bucket (default: publish.s3.bucket)", default=None)
    endpoint: str | None = doc("S3 endpoint URL (default: publish.s3.endpoint, AWS_ENDPOINT_URL)", default=None)
    region: str | None = doc("signing region (default: publish.s3.region, AWS_DEFAULT_REGION)", default=None)


@step("publish.s3", params=S3Params, outputs=PUBLISH_OUTPUTS, repeatable=True, retryable=True)
def s3(ctx: StepContext, params: S3Params) -> Outputs:
    """Store the key in S3-compatible storage behind a presigned GET URL, deleted at cleanup."""
    publisher = _s3_publisher(ctx, params.bucket, params.endpoint, params.region)
    return _publish(ctx, publisher, params.key, params.ttl)


@dataclass(frozen=True)
class PluginParams:
    key: str = doc("the public key line")
    scheme: str = doc("a publisher a plug-in registers (entry point group recovery.publishers)")
    ttl: float = doc("seconds before the URL stops working", default=DEFAULT_TTL)


def _plugin_known(values: Mapping[str, object], config: Config) -> list[str]:
    scheme = values.get("scheme")
    if not isinstance(scheme, str):
        return []
    from recovery.errors import ConfigError
    from recovery.publishers import load_publisher_class

    try:
        load_publisher_class(scheme)
    except ConfigError as exc:
        return [str(exc)]
    return []


@step("publish.to", params=PluginParams, outputs=PUBLISH_OUTPUTS, repeatable=True, retryable=True,
      check=_plugin_known)
def publish_to(ctx: StepContext, params: PluginParams) -> Outputs:
    """Publish through a plug-in's publisher; it reads its own settings (environment, files), as botocore does."""
    from recovery.publishers import load_publisher_class

    return _publish(ctx, load_publisher_class(params.scheme)(), params.key, params.ttl)


def _predict(values: Mapping[str, object]) -> Mapping[str, object]:
    """Known before running: typed inline there is no URL, so a dry run shows the inline command."""
    method = values.get("method")
    if method == "inline":
        return {"url": None, "method": "inline"}
    return {"method": method} if method in ("http", "swift", "s3") else {}


def _storage_configured(values: Mapping[str, object], config: Config) -> list[str]:
    method = values.get("method")
    if method == "swift" and cloud_to_use(config.cloud.name) is None:
        return [f"publish=swift needs a cloud, but {NO_CLOUD}"]
    if method == "s3" and not config.publish.s3.bucket:
        return ["publish=s3 needs a bucket: set publish.s3.bucket in the config"]
    return []


@dataclass(frozen=True)
class KeyParams:
    key: str = doc("the public key line")
    method: Literal["inline", "http", "swift", "s3", "auto"] = doc(
        "auto: swift if the cloud has object storage, else s3 if configured, else inline", default="inline"
    )
    ttl: float = doc("seconds before a published URL stops working", default=DEFAULT_TTL)
    advertise_host: str | None = doc("for http, the host name the VM uses to reach this machine", default=None)


@step(
    "publish.key",
    params=KeyParams,
    outputs=PUBLISH_OUTPUTS,
    repeatable=True,
    retryable=True,
    check=_storage_configured,
    predict=_predict,
)
def publish_key(ctx: StepContext, params: KeyParams) -> Outputs:
    """Publish the key by the method named in one input (or pick one with auto)."""
    method: str = params.method
    if method == "auto":
        method = _choose(ctx)
        ctx.report.notes.append(f"publish method auto chose {method}")
    if method == "inline":
        return _inline(ctx, params.key)
    if method == "http":
        return _publish(ctx, _http_publisher(ctx, None, params.advertise_host), params.key, params.ttl)
    if method == "swift":
        return _publish(ctx, _swift_publisher(ctx), params.key, params.ttl)
    return _publish(ctx, _s3_publisher(ctx), params.key, params.ttl)


def _choose(ctx: StepContext) -> str:
    """auto: swift if the cloud's catalog has object storage, else s3 if configured, else inline."""
    if cloud_to_use(ctx.config.cloud.name) and ctx.require_cloud().has_object_store():
        return "swift"
    if ctx.config.publish.s3.bucket:
        return "s3"
    return "inline"
