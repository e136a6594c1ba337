"""A forwarding HTTP proxy on 127.0.0.1 that records every request it passes on.

Why: to count what one client asked of a server that does not say it in its own
log. Put in front of Keystone as the client's auth URL, it counts the client's
logins (`POST /v3/auth/tokens`) and no one else's: Swift's authtoken and the
tests' admin calls reach Keystone directly. The Host header is passed on as the
client sent it, so Keystone's version document points the client back at the
proxy and every identity call goes through it.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOST = "127.0.0.1"
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own, never passed on.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class RecordingProxy:
    """Where the proxy listens (`url`: the target URL with the proxy's host and port) and what it saw."""

    url: str
    requests: list[SeenRequest] = field(default_factory=list)

    def count(self, method: str, path: str) -> int:
        """How many requests had this method and path (query string excluded)."""
        return sum(1 for seen in self.requests if seen.method == method and seen.path.split("?")[0] == path)


@contextmanager
def recording_proxy(target_url: str) -> Iterator[RecordingProxy]:
    """Serve a proxy to `target_url`'s origin on a free port of 127.0.0.1; stop it on exit."""
    target = urlsplit(target_url)
    lock = threading.Lock()
    seen: list[SeenRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP}
            with lock:
                seen.append(SeenRequest(self.command, self.path, headers))
            upstream = http.client.HTTPConnection(target.hostname or HOST, target.port or 80, timeout=60)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                upstream.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass  # the record is `seen`

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    proxy = RecordingProxy(url=target._replace(netloc=f"{HOST}:{server.server_address[1]}").geturl(), requests=seen)
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
