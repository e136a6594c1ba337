"""Console and session channels: the keyboard and screen of a VM, whatever carries them.

The boundary is five verbs and nothing else. Prompt handling, markers, redaction
and the transcript sit above it in `recovery.channels.dialogue`, so every channel gets
them for free. Channels are chosen by URL scheme from a registry of
"module:Class" strings imported on first use, so that a heavy driver costs
nothing until a playbook picks it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from recovery.errors import ChannelError
from recovery.safety.redact import Secret, Text, masked_url, reveal


class Channel(Protocol):
    """A VM console: send keystrokes, read what the screen prints."""

    has_output: bool
    """False for a console that shows pixels, not text (VNC): nothing can be read back from it."""

    def open(self, timeout: float) -> None:
        """Connect. Raises ChannelError (refused, rejected) or ChannelTimeout."""

    def check_typeable(self, data: Text) -> None:
        """Raise ChannelError if `data` has a character this console cannot type; called before typing starts."""

    def send(self, data: Text) -> None:
        """Type `data`; a Secret is revealed only here, at the wire."""

    def read(self, timeout: float) -> str:
        """What arrived within `timeout` seconds; "" on timeout. Raises ChannelClosed."""

    def close(self) -> None:
        """Disconnect; safe to call twice."""


@runtime_checkable
class Screen(Protocol):
    """A console that shows pixels (VNC) can save them: the evidence where no text comes back."""

    def screenshot(self, path: Path) -> tuple[int, int]:
        """Save the whole screen as a PNG at `path`; returns (width, height)."""
        ...


@contextmanager
def connection_refusals(where: str, *, console: str, server: str, url_kind: str) -> Iterator[None]:
    """A refused connection or a refused websocket handshake, worded once for every console.

    Args:
        where: the console URL, masked.
        console: what the console is called in the message ("console", "VNC console").
        server: what should be listening ("console proxy", "VNC server or console proxy").
        url_kind: what the URL should have been ("serial console URL").
    """
    import websocket  # lazy: keeps `recovery --help` fast

    try:
        yield
    except ConnectionRefusedError as exc:
        raise ChannelError(
            f"the {console} at {where} refused the connection: is the {server} running, and are the "
            "URL's host and port right?"
        ) from exc
    except websocket.WebSocketBadStatusException as exc:
        status = getattr(exc, "status_code", "?")
        raise ChannelError(
            f"the {console} at {where} rejected the websocket (HTTP {status}): the token is wrong or "
            f"expired, or this is not a {url_kind}"
        ) from exc


CHANNELS: dict[str, str] = {
    "ws": "recovery.channels.serial_ws:SerialWebSocketChannel",
    "wss": "recovery.channels.serial_ws:SerialWebSocketChannel",
    # VNC: plain TCP, RFB over a websocket (a ws:// URL alone would be taken for a serial console),
    # and Nova's noVNC page URL, which is the only http(s) console URL a cloud hands out.
    "vnc": "recovery.channels.vnc:VncChannel",
    "vnc+ws": "recovery.channels.vnc:VncChannel",
    "vnc+wss": "recovery.channels.vnc:VncChannel",
    "http": "recovery.channels.vnc:VncChannel",
    "https": "recovery.channels.vnc:VncChannel",
}


def channel_targets() -> dict[str, str]:
    """The built-in channels and those of installed plug-ins (entry point group `recovery.channels`)."""
    from recovery.engine.plugins import CHANNELS_GROUP, targets

    return targets(CHANNELS_GROUP, CHANNELS)


# Which URL schemes belong to which kind of console, so a playbook written for one refuses the other's
# URL before anything is typed (VNC bytes sent into a serial login prompt help nobody).
CONSOLE_SCHEMES: dict[str, tuple[str, ...]] = {
    "serial": ("ws", "wss"),
    "vnc": ("vnc", "vnc+ws", "vnc+wss", "http", "https"),
}


def console_url_problem(url: Text, kind: str | None) -> str | None:
    """Why `url` cannot be a console of `kind` ("serial", "vnc", or None for any), or None."""
    scheme = urlsplit(reveal(url)).scheme.lower()
    every = tuple(channel_targets())
    allowed = CONSOLE_SCHEMES.get(kind, every) if kind else every
    if scheme in allowed:
        return None
    other = next((name for name, schemes in CONSOLE_SCHEMES.items() if scheme in schemes), None)
    if kind and other:
        return (
            f"{masked_url(url)} is a {other} console URL, but this step drives a {kind} console: use the "
            f"{other} playbook (restore-access-{other}.yaml), or give a {kind} console URL "
            f"({', '.join(s + '://' for s in allowed)})"
        )
    expected = ", ".join(s + "://" for s in allowed)
    return f"{masked_url(url)}: unsupported scheme {scheme or '(none)'!r} (expected {expected})"


def channel_for(url: Text, *, password: Secret | None = None) -> Channel:
    """A channel for a console URL, chosen by its scheme.

    Args:
        url: the console URL, token included.
        password: the console's own password (VNC Authentication), for channels that take one.

    Raises:
        ChannelError: the scheme is not one we can drive, or it takes no password and one was given.
    """
    problem = console_url_problem(url, None)
    if problem:
        raise ChannelError(f"cannot open console {problem}")
    raw = reveal(url)
    module_name, class_name = channel_targets()[urlsplit(raw).scheme.lower()].split(":")
    channel_class = getattr(importlib.import_module(module_name), class_name)
    secret_url = url if isinstance(url, Secret) else Secret(raw, masked_url(raw))
    if password is None:
        channel: Channel = channel_class(secret_url)
    elif getattr(channel_class, "takes_password", False):
        channel = channel_class(secret_url, password=password)
    else:
        raise ChannelError(f"the console {masked_url(url)} takes no console password; a VNC password is for VNC URLs")
    return channel
