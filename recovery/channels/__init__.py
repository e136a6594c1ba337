"""Console and session channels: the keyboard and screen of a VM, whatever carries them.

The boundary is four verbs and nothing else. Prompt handling, markers, redaction
and the transcript sit above it in `recovery.console`, so every channel gets
them for free. Channels are chosen by URL scheme from a registry of
"module:Class" strings imported on first use, so that a heavy driver costs
nothing until a playbook picks it.
"""

from __future__ import annotations

import importlib
from typing import Protocol
from urllib.parse import urlsplit

from recovery.errors import ChannelError
from recovery.redact import Secret, Text, masked_url, reveal


class Channel(Protocol):
    """A VM console: send keystrokes, read what the screen prints."""

    def open(self, timeout: float) -> None:
        """Connect. Raises ChannelError (refused, rejected) or ChannelTimeout."""

    def send(self, data: Text) -> None:
        """Type `data`; a Secret is revealed only here, at the wire."""

    def read(self, timeout: float) -> str:
        """What arrived within `timeout` seconds; "" on timeout. Raises ChannelClosed."""

    def close(self) -> None:
        """Disconnect; safe to call twice."""


CHANNELS: dict[str, str] = {
    "ws": "recovery.channels.serial_ws:SerialWebSocketChannel",
    "wss": "recovery.channels.serial_ws:SerialWebSocketChannel",
}


def channel_for(url: Text) -> Channel:
    """A channel for a console URL, chosen by its scheme.

    Raises:
        ChannelError: the scheme is not one we can drive.
    """
    raw = reveal(url)
    scheme = urlsplit(raw).scheme.lower()
    target = CHANNELS.get(scheme)
    if target is None:
        raise ChannelError(
            f"cannot open console {masked_url(url)}: unsupported scheme {scheme or '(none)'!r} "
            f"(supported: {', '.join(sorted(CHANNELS))})"
        )
    module_name, class_name = target.split(":")
    channel_class = getattr(importlib.import_module(module_name), class_name)
    secret_url = url if isinstance(url, Secret) else Secret(raw, masked_url(raw))
    channel: Channel = channel_class(secret_url)
    return channel
