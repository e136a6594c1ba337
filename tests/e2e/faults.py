"""A TCP proxy that cuts the console once, in the middle of what we type: a real fault, on real parts.

It sits between websockify and the lab's serial port, where the typed bytes are
plain text (websocket frames from the client are masked, so the cut cannot be
aimed from the other side). After `trigger` plus `extra` bytes have gone through,
it closes both sides, exactly once; later connections pass through untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class CuttingProxy:
    def __init__(self, target_port: int, *, trigger: bytes, extra: int) -> None:
        self.target_port = target_port
        self.trigger = trigger
        self.extra = extra
        self.cut_done = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._accepting.join(timeout=2)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            cut = not self.cut_done.is_set()
            for source, sink, watch in ((client, upstream, cut), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, sink, watch, client, upstream), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, watch: bool, *both: socket.socket) -> None:
        seen = b""
        try:
            while True:
                data = source.recv(4096)
                if not data:
                    break
                if watch and not self.cut_done.is_set():
                    seen += data
                    at = seen.find(self.trigger)
                    if at >= 0 and len(seen) >= at + len(self.trigger) + self.extra:
                        keep = len(data) - (len(seen) - (at + len(self.trigger) + self.extra))
                        sink.sendall(data[:keep])
                        self.cut_done.set()
                        break
                sink.sendall(data)
        except OSError:
            pass
        for sock in both:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
