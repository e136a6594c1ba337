"""publish.inline and publish.http: how the public key reaches the VM.

`inline` types the key itself into the console: an ed25519 key is about 100
characters, needs no egress from the VM and leaves nothing to clean up.
`http` serves it once from the agent's own short-lived HTTP server, for keys too
long to type comfortably or consoles that mangle typing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from recovery.context import StepContext
from recovery.registry import Outputs, doc, step

PUBLISH_OUTPUTS = {
    "url": "where the VM downloads the key (a secret); null when typed inline",
    "sha256": "sha256 of the published bytes (the key line and a newline)",
    "method": "inline or the publisher's scheme",
}


def key_bytes(public_key: str) -> bytes:
    """What is published and checked: the key line with one trailing newline."""
    return (public_key.strip() + "\n").encode("ascii")


@dataclass(frozen=True)
class InlineParams:
    key: str = doc("the public key line")


@step("publish.inline", params=InlineParams, outputs=PUBLISH_OUTPUTS, repeatable=True)
def inline(ctx: StepContext, params: InlineParams) -> Outputs:
    """Type the public key into the console itself; nothing is published."""
    from recovery.keys import parse_public_line

    parse_public_line(params.key)  # refuse to type something that is not a key
    ctx.report.notes.append("public key typed inline: nothing was published")
    return {"url": None, "sha256": hashlib.sha256(key_bytes(params.key)).hexdigest(), "method": "inline"}


@dataclass(frozen=True)
class HTTPParams:
    key: str = doc("the public key line")
    ttl: float = doc("seconds before the URL stops working", default=300.0)
    bind: str | None = doc("address to listen on (default: publish.http.bind in the config)", default=None)
    advertise_host: str | None = doc("host name the VM uses to reach this machine", default=None)


@step("publish.http", params=HTTPParams, outputs=PUBLISH_OUTPUTS, repeatable=True)
def http(ctx: StepContext, params: HTTPParams) -> Outputs:
    """Serve the public key once from the agent's own HTTP server, stopped at cleanup."""
    from recovery.keys import parse_public_line
    from recovery.publishers.local_http import LocalHTTPPublisher

    parse_public_line(params.key)
    settings = ctx.config.publish.http
    publisher = LocalHTTPPublisher(
        bind_host=params.bind or settings.bind,
        port=settings.port,
        advertise_host=params.advertise_host or settings.advertise_host,
    )
    ctx.defer("stopped the one-shot HTTP server", publisher.close)
    item = publisher.publish(f"{ctx.run_id}.pub", key_bytes(params.key), timedelta(seconds=params.ttl))
    ctx.report.published.append(f"{item.url} (expires {item.expires_at.isoformat(timespec='seconds')})")

    def withdraw() -> None:
        publisher.withdraw(item)
        ctx.report.withdrawn.append(str(item.url))

    ctx.defer(f"withdrew the published key {item.url}", withdraw)
    return {"url": item.url, "sha256": item.sha256, "method": item.scheme}
