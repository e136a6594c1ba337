"""A serial console over a websocket: Nova's serial proxy, or websockify in front of a pty.

Nova's `nova-serialproxy` (and websockify) carry raw TTY bytes in binary frames
under the `binary` subprotocol; the token travels in the URL's query string, so
the URL is a Secret and errors show it masked.
"""

from __future__ import annotations

import codecs
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from recovery.channels import connection_refusals
from recovery.errors import ChannelClosed, ChannelError, ChannelTimeout
from recovery.safety.redact import Secret, Text, masked_url, reveal

log = logging.getLogger(__name__)

SUBPROTOCOLS = ["binary", "base64"]


class SerialWebSocketChannel:
    """Implements `recovery.channels.Channel` over websocket-client."""

    has_output = True

    def __init__(self, url: Secret) -> None:
        self.url = url
        self._where = masked_url(url)
        self._socket: Any = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._received_any = False

    def open(self, timeout: float) -> None:
        import websocket  # lazy: keeps `recovery --help` fast

        with self._errors():
            self._socket = websocket.create_connection(
                self.url.reveal(), subprotocols=SUBPROTOCOLS, timeout=max(timeout, 0.1), enable_multithread=True
            )

    def check_typeable(self, data: Text) -> None:
        """Anything is: the serial line carries UTF-8 bytes."""

    def send(self, data: Text) -> None:
        import websocket

        sock = self._require()
        with self._errors():
            sock.send(reveal(data).encode("utf-8"), opcode=websocket.ABNF.OPCODE_BINARY)

    def read(self, timeout: float) -> str:
        import websocket

        sock = self._require()
        sock.settimeout(max(timeout, 0.01))
        with self._errors():
            try:
                opcode, payload = sock.recv_data(control_frame=False)
            except (websocket.WebSocketTimeoutException, TimeoutError):
                return ""
        if opcode == websocket.ABNF.OPCODE_CLOSE or (opcode == 0 and not payload):
            raise self._closed()
        self._received_any = True
        data = payload if isinstance(payload, bytes) else payload.encode("utf-8")
        return str(self._decoder.decode(data))

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is None:
            return
        try:
            sock.close(timeout=1)
        except Exception:  # closing a broken socket must not hide the real error
            log.debug("closing the console websocket failed", exc_info=True)
        finally:
            # websocket-client leaves the TCP socket open when the server closed first.
            if sock.sock is not None:
                sock.sock.close()

    def _require(self) -> Any:
        if self._socket is None:
            raise ChannelClosed(f"the console {self._where} is not open")
        return self._socket

    def _closed(self) -> ChannelClosed:
        self.close()
        if not self._received_any:
            return ChannelClosed(
                f"the console at {self._where} closed the connection before saying anything: the "
                "token was rejected or has expired (Nova console tokens last 10 minutes by default); "
                "ask the cloud for a new console URL"
            )
        return ChannelClosed(f"the console at {self._where} closed the connection mid-conversation")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate websocket and socket errors into ours, with the URL masked."""
        import websocket

        try:
            with connection_refusals(
                self._where, console="console", server="console proxy", url_kind="serial console URL"
            ):
                yield
        except (websocket.WebSocketTimeoutException, TimeoutError) as exc:
            raise ChannelTimeout(f"the console at {self._where} did not answer in time") from exc
        except (websocket.WebSocketConnectionClosedException, ConnectionResetError, BrokenPipeError) as exc:
            raise self._closed() from exc
        except (ssl.SSLError, socket.gaierror, OSError, websocket.WebSocketException) as exc:
            raise ChannelError(f"the console at {self._where} failed: {exc}") from exc
