"""The agent's own one-shot HTTP server: the VM downloads the key straight from us.

Used by the lab, and when the VM can reach the operator's machine. Each object lives
at ``/<random token>``; the token (``secrets.token_urlsafe(24)``, 192 bits) is the only
credential, so the URL is a `Secret` and request paths are never logged unmasked.

An object is served once: after one complete ``200`` response, or once its ttl has
passed, its URL answers ``410 Gone``; a withdrawn object, like an unknown path, is
``404``. "Complete" means the whole body was handed to the kernel; a client that drops
the connection mid-body leaves the object downloadable. While one download is in
flight a concurrent request gets ``410`` as well, so two readers can never both get the
key. Only GET is served; there are no directory listings.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from recovery.errors import ConfigError, PublishError
from recovery.publishers import ClosingPublisher, Published
from recovery.safety.redact import MASK, Secret, register

__all__ = ["LocalHTTPPublisher"]

logger = logging.getLogger(__name__)

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names we refuse to advertise


class _State(Enum):
    READY = "ready"
    SENDING = "sending"
    SERVED = "served"


@dataclass
class _Item:
    data: bytes
    deadline: float  # time.monotonic(): a wall-clock jump neither shortens nor extends a ttl
    state: _State = _State.READY


class LocalHTTPPublisher(ClosingPublisher):
    """Serves published keys from a background thread until closed.

    The server listens from construction on; use it as a context manager, or call `close`.

    Args:
        bind_host: address to listen on; ``127.0.0.1`` for the lab, an interface address
            the VM can reach otherwise. An address with ``:`` is IPv6.
        port: TCP port; 0 picks a free one (read it back from `port`).
        advertise_host: host name or address the VM should use in the URL, when it differs
            from `bind_host` (NAT, or listening on every address).
    Raises:
        ConfigError: `bind_host` is a wildcard and no `advertise_host` says how to reach us.
        PublishError: the address cannot be bound (in use, not local, unknown name).
    """

    scheme: ClassVar[str] = "http"

    def __init__(
        self, bind_host: str = "127.0.0.1", port: int = 0, advertise_host: str | None = None
    ) -> None:
        if advertise_host is None and bind_host in _WILDCARDS:
            raise ConfigError(
                f"the local HTTP publisher listens on every address ({bind_host or '*'}); "
                "set advertise_host to the address the VM should download from"
            )
        self._lock = threading.Lock()
        self._items: dict[str, _Item] = {}
        self._closed = False
        try:
            self._server = _Server(bind_host, port, self)
        except OSError as exc:
            raise PublishError(
                f"cannot listen on {bind_host}:{port} to serve the key to the VM: {exc}"
            ) from exc
        self.port: int = self._server.server_address[1]
        host = advertise_host or bind_host
        self.base_url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # close() waits up to one poll interval
            name=f"recovery-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("local HTTP publisher listening on %s", self.base_url)

    def publish(self, name: str, data: bytes, ttl: timedelta) -> Published:
        """Serve `data` once at a fresh random URL, for at most `ttl`.

        Args:
            name: what the object is, for reports; it does not appear in the URL.
            data: the bytes to serve.
            ttl: how long the URL works if nobody downloads it; must be positive.
        Returns:
            the URL (a Secret labelled ``http://host:port/***``), sha256 and expiry.
        Raises:
            ValueError: `ttl` is not positive.
            PublishError: the publisher is closed.
        """
        if ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        token = secrets.token_urlsafe(24)
        register(token)  # the path alone grants the download: scrub it wherever it shows up
        with self._lock:
            if self._closed:
                raise PublishError("the local HTTP publisher is closed; cannot publish")
            self._items[token] = _Item(data, time.monotonic() + ttl.total_seconds())
        return Published(
            scheme=self.scheme,
            url=Secret(self.base_url + token, label=self.base_url + MASK),
            sha256=hashlib.sha256(data).hexdigest(),
            expires_at=datetime.now(UTC) + ttl,
            name=name,
        )

    def withdraw(self, item: Published) -> None:
        """Stop serving `item` (its URL then answers 404); a no-op if it is not ours or gone."""
        url = item.url.reveal()
        if url.startswith(self.base_url):
            with self._lock:
                self._items.pop(url[len(self.base_url) :], None)

    def close(self) -> None:
        """Stop the server, release the port and forget every object. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        logger.debug("local HTTP publisher on port %d closed", self.port)

    def _claim(self, path: str) -> tuple[HTTPStatus, bytes]:
        """Decide the answer to a GET of `path`; a 200 marks the object as being sent."""
        with self._lock:
            item = self._items.get(path[1:]) if path.startswith("/") else None
            if item is None:
                return HTTPStatus.NOT_FOUND, b""
            if item.state is not _State.READY or time.monotonic() >= item.deadline:
                return HTTPStatus.GONE, b""
            item.state = _State.SENDING
            return HTTPStatus.OK, item.data

    def _settle(self, path: str, *, sent: bool) -> None:
        """After a 200: the object is spent if all of it went out, downloadable again if not."""
        with self._lock:
            item = self._items.get(path[1:])
            if item is not None:
                item.state = _State.SERVED if sent else _State.READY


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client must not make close() wait for it

    def __init__(self, host: str, port: int, publisher: LocalHTTPPublisher) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.publisher = publisher
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(host), a reverse DNS lookup that can
        # stall for seconds on a VM with broken DNS; nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.socket.getsockname()[:2]

    def handle_error(self, request: object, client_address: object) -> None:
        # The default prints a traceback to stderr, in the middle of the operator's console.
        logger.debug("request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "recovery"
    sys_version = ""
    timeout = 10  # seconds a client may take to send its request line and headers

    def do_GET(self) -> None:
        status, data = self.server.publisher._claim(self.path)
        if status is not HTTPStatus.OK:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        sent = False
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            sent = True
        except OSError as exc:
            logger.debug("download from %s broke off: %s", self.address_string(), exc)
        finally:
            self.server.publisher._settle(self.path, sent=sent)

    def log_message(self, format: str, *args: object) -> None:
        # The default writes the request line, secret path included, to stderr.
        text = format % args
        path = getattr(self, "path", "")
        if len(path) > 1:  # "/" alone is no secret, and masking it would mangle "HTTP/1.1"
            text = text.replace(path, "/" + MASK)
        logger.debug("%s %s", self.address_string(), text)
