"""A stand-in for QEMU's VNC server and the guest behind it, to test how we pace typing on QEMU.

It models what matters (see recovery/channels/vnc.py): QEMU queues key events, hands them to the
guest one per `delay` seconds and drops what does not fit `queue_limit`; the guest switches its Num
Lock light on every Num Lock press, and QEMU reports the lights (LED State pseudo-encoding). The real
thing (QEMU with a booted VM) is benchmarks/qemu_vnc_typing.py.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import deque
from types import TracebackType

from recovery.channels.vnc import KEYMAP

NUM_LOCK_SCANCODE, SHIFT_SCANCODE = 0x45, 0x2A
_CHARS: dict[tuple[int, bool], str] = {}
for _char, _key in KEYMAP.items():  # Enter types "\r" ("\n" shares its key)
    if _key.modifier is None or _key.modifier[1] == SHIFT_SCANCODE:
        _CHARS.setdefault((_key.scancode, _key.modifier is not None), _char)


class FakeQemuVnc:
    """`with FakeQemuVnc(...) as qemu:` serves one client on 127.0.0.1:`qemu.port`."""

    def __init__(self, *, queue_limit: int, delay: float, answered_presses: int | None = None) -> None:
        self.queue_limit = queue_limit
        self.delay = delay
        self.answered_presses = answered_presses  # Num Lock presses the guest answers; None: all
        self.leds = 0
        self.typed = ""  # what the guest got, as text
        self.dropped = 0  # key events QEMU threw away: its queue was full
        self.received = 0  # key events QEMU read off the connection, queued or dropped
        self._queue: deque[tuple[int, bool]] = deque()
        self._unhandled = 0  # key events queued or taken but not yet typed by the guest
        self._shift = False
        self._presses = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._conn: socket.socket | None = None
        self._threads = [threading.Thread(target=self._serve, daemon=True),
                         threading.Thread(target=self._guest, daemon=True)]

    def __enter__(self) -> FakeQemuVnc:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        for sock in (self._conn, self._listener):
            if sock is not None:
                sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until the guest has typed every queued key (not only taken it off the queue)."""
        deadline = time.monotonic() + timeout
        while self._unhandled and time.monotonic() < deadline:
            time.sleep(0.01)

    def wait_received(self, count: int, timeout: float = 10.0) -> None:
        """Wait until QEMU has read `count` key events, whatever became of them."""
        deadline = time.monotonic() + timeout
        while self.received < count and time.monotonic() < deadline:
            time.sleep(0.01)

    # -- QEMU ---------------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self._conn = conn
        try:
            self._handshake(conn)
            while not self._stop.is_set():
                self._message(conn)
        except (OSError, ConnectionError):
            return

    def _handshake(self, conn: socket.socket) -> None:
        conn.sendall(b"RFB 003.008\n")
        _read(conn, 12)
        conn.sendall(b"\x01\x01")  # one security type: None
        _read(conn, 1)
        conn.sendall(struct.pack(">I", 0))
        _read(conn, 1)  # ClientInit
        name = b"QEMU"
        conn.sendall(struct.pack(">HH16xI", 4, 1, len(name)) + name)

    def _message(self, conn: socket.socket) -> None:
        (kind,) = _read(conn, 1)
        if kind == 0:  # SetPixelFormat
            _read(conn, 19)
        elif kind == 2:  # SetEncodings
            (count,) = struct.unpack(">xH", _read(conn, 3))
            encodings = struct.unpack(f">{count}i", _read(conn, 4 * count))
            if -258 in encodings:
                self._update(conn, [(0, 0, 0, 0, -258, b"")])
            if -261 in encodings:
                self._update(conn, [(0, 0, 1, 1, -261, bytes([self.leds]))])
        elif kind == 3:  # FramebufferUpdateRequest: answer with black pixels
            x, y, width, height = struct.unpack(">xHHHH", _read(conn, 9))
            width, height = max(min(width, 4 - x), 0), max(min(height, 1 - y), 0)
            self._update(conn, [(x, y, width, height, 0, bytes(width * height * 4))])
        elif kind == 4:  # KeyEvent: keysyms are not what this fake tests
            _read(conn, 7)
        elif kind == 255:  # QEMU Extended Key Event
            down, _keysym, scancode = struct.unpack(">xHII", _read(conn, 11))
            with self._lock:
                self.received += 1
                if len(self._queue) >= self.queue_limit:
                    self.dropped += 1
                else:
                    self._queue.append((scancode, bool(down)))
                    self._unhandled += 1
        else:
            raise ConnectionError(f"unexpected message {kind}")

    def _update(self, conn: socket.socket, rects: list[tuple[int, int, int, int, int, bytes]]) -> None:
        data = struct.pack(">BxH", 0, len(rects))
        for x, y, width, height, encoding, payload in rects:
            data += struct.pack(">HHHHi", x, y, width, height, encoding) + payload
        with self._lock:
            conn.sendall(data)

    # -- the guest ----------------------------------------------------------------------------

    def _guest(self) -> None:
        while not self._stop.is_set():
            time.sleep(self.delay)
            with self._lock:
                if not self._queue:
                    continue
                scancode, down = self._queue.popleft()
            self._take(scancode, down)
            with self._lock:
                self._unhandled -= 1

    def _take(self, scancode: int, down: bool) -> None:
        """What the guest's keyboard driver does with one key event."""
        if scancode == SHIFT_SCANCODE:
            self._shift = down
        elif scancode == NUM_LOCK_SCANCODE and down:
            self._presses += 1
            if self.answered_presses is None or self._presses <= self.answered_presses:
                self.leds ^= 0x02
                if self._conn is not None:
                    with contextlib.suppress(OSError):  # the client went away
                        self._update(self._conn, [(0, 0, 1, 1, -261, bytes([self.leds]))])
        elif down:
            self.typed += _CHARS[(scancode, self._shift)]


def _read(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data
