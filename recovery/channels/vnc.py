"""A VNC console: an RFB client of our own, over plain TCP or a websocket (Nova's noVNC proxy).

Why our own: vncdotool speaks only plain TCP and has no `type()`, asyncvnc is stale, and typing is
exactly where VNC tools go wrong. The RFB subset needed is small: the 3.3/3.7/3.8 handshake,
security None and VNC Authentication, KeyEvent, FramebufferUpdateRequest and Raw pixels.

Typing never loses or changes a character:
- Every character is validated before the first key is sent, so nothing is half-typed.
- Shift (and Control) are pressed explicitly around every character that needs them: QEMU's VNC
  server, which libvirt and Nova VMs use, ignores the shift implied by a keysym (`&` becomes `7`).
- When the server advertises the QEMU Extended Key Event pseudo-encoding, keys go as US-layout
  scancodes, which do not depend on the guest's keyboard layout.
- Keys go in batches, each followed by a 1x1 non-incremental FramebufferUpdateRequest whose answer
  proves the server has processed the batch (servers handle a client's messages in order). Up to
  SYNCS_IN_FLIGHT barriers are outstanding, so the next batch is on the wire while the server
  works on the previous one. Servers merge pending requests into one answer, so each barrier asks
  for its own pixel in the top row and an answer covering barrier k's pixel settles every barrier up
  to k; `send` returns once all are answered. That is the whole pacing for X-based servers, which
  queue input without loss. A modifier stays down across a run of characters that need it.
- QEMU (its desktop name is "QEMU" or "QEMU (VM-NAME)", also through Nova's proxy) is different: it
  queues key events and feeds them to the emulated keyboard one per `key-delay-ms` (10 ms by
  default), and drops what does not fit its queue (1024 entries, 3 per key event). A barrier only
  proves the events were queued, so on QEMU the guest itself acknowledges: each burst of at most
  QEMU_EVENTS_PER_ACK key events ends with a Num Lock press, the guest's keyboard driver answers by
  switching its Num Lock light, QEMU reports the light (its LED State pseudo-encoding), and the next
  burst goes only then. That keeps QEMU's queue busy but never full, whatever the guest's speed.
  Num Lock changes only the numeric keypad, which we never type with; `close` leaves it as the
  connection found it (not each `send`: that cost an acknowledgement, ~50 ms, a send). A probe on
  connecting (two presses, before anything is typed) tells whether the guest answers; if it does
  not (no LED reports, or a console the guest does not drive), each key waits for its own barrier
  and then `QEMU_KEY_INTERVAL`, three times QEMU's default delay. TigerVNC
  advertises scancodes too, but feeds X: it needs none of this.
- On connecting, every key we type with is released: a connection cut mid-typing can leave one down.

VNC carries pixels, not text: a `ScreenReader` (recovery.channels.screen: exact glyph matching against the
console fonts the system ships) reads them. On opening, the screen is read; if a font reads it,
`has_output` is True and `read` returns the text that appeared on the screen since the last read
(`recovery.channels.screen.news`), as a serial console would have printed it, so `recovery.channels.dialogue` waits for
prompts and reads markers as on a serial console. If no font reads it (an unknown font), `has_output`
stays False and `read` only services the connection: `recovery.channels.dialogue` drives the console blind.
The Cursor pseudo-encoding keeps the server from drawing the mouse pointer into the screen (x11vnc
does otherwise), where it would hide characters. `screenshot` saves the screen as PNG, the evidence
a VNC console can give, and the text read from it beside it (`.txt`, scrubbed).

URLs (all Secrets: the token or password is in them):
- `vnc://[:PASSWORD@]HOST[:PORT]`: plain TCP, port 5900 by default (libvirt, QEMU, Proxmox).
- `vnc+ws://HOST:PORT/PATH?QUERY` and `vnc+wss://...`: RFB over a websocket (websockify), the same
  URL with `ws`/`wss`. Plain `ws://`/`wss://` stays the serial console: the URL alone cannot tell.
- `http(s)://HOST:PORT/vnc_auto.html?path=%3Ftoken%3DT` or `.../vnc_lite.html?token=T`: Nova's noVNC
  page; the websocket is `ws(s)://HOST:PORT/?token=T`. A `password=` parameter is the VNC password.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from recovery.channels import connection_refusals
from recovery.channels.screen import Frame, GlyphReader, ScreenReader, ScreenText, news
from recovery.errors import ChannelClosed, ChannelError, ChannelTimeout, LoginRejected
from recovery.safety.files import write_atomic
from recovery.safety.redact import Secret, Text, masked_url, reveal, scrub

log = logging.getLogger(__name__)

DEFAULT_PORT = 5900
KEYS_PER_SYNC = 256  # characters between two sync barriers
# Barriers sent but not yet answered while typing, at most. x11vnc answers a barrier ~25 ms after
# input (it defers updates while the screen changes), whatever the batch: waiting for each answer
# before the next batch capped typing at ~2000 characters/s; 2 in flight hide that latency.
SYNCS_IN_FLIGHT = 2
QEMU_KEY_INTERVAL = 0.03  # TESTBED: QEMU took a 300-character line exactly at 30 ms per key, not at 4 ms
# Key events in a burst, its Num Lock press and release aside: with them 774 of the 1024 entries QEMU
# queues (3 an event). A character is 2 events, and a modifier pressed and released around a run 2 more.
QEMU_EVENTS_PER_ACK = 256
NUM_LOCK_RESTORE_TIMEOUT = 2.0  # on closing: a guest that stopped answering does not hold the close up
QEMU_ACK_PER_EVENT = 0.05  # on top of SYNC_TIMEOUT, per key event in a burst: 5x QEMU's default delay
LED_PROBE_TIMEOUT = 2.0  # a guest that has not switched its Num Lock light by then does not answer
SYNC_TIMEOUT = 10.0
SCREEN_QUIET = 0.5  # a screenshot waits until the screen has not changed for this long,
SCREEN_SETTLE_LIMIT = 2.0  # or this long at most: a blinking cursor (QEMU's text mode) is never quiet
TEXT_QUIET = 0.15  # a screen that is read: quiet once its text has not changed for this long (5 QEMU refreshes)
MAX_PIXELS = 16 * 1024 * 1024  # a larger screen is no VM console (4K is 8.3 million): refused, not allocated
MAX_TEXT = 4096  # bytes of a desktop name or refusal reason kept; the rest is skipped as it arrives
SCREEN_READ_WAIT = 3.0  # on opening, seconds for the screen to show text a font reads (a console waking up)
# After an update, more that follows within this many seconds is taken before the screen is read: QEMU
# sends a scrolled screen in several updates, and a half-painted screen reads as lines redrawn.
SCREEN_UPDATE_GAP = 0.05

# RFB constants (RFC 6143), and QEMU's extension (qemu/docs/rfb: "QEMU Extended Key Event").
_SYNC_SLOTS = 2 * SYNCS_IN_FLIGHT  # barrier k asks for pixel (k % _SYNC_SLOTS, 0)
_SEC_INVALID, _SEC_NONE, _SEC_VNC_AUTH = 0, 1, 2
_ENC_RAW = 0
_ENC_QEMU_EXT_KEY = -258
_ENC_QEMU_LED_STATE = -261  # one byte: bit 0 Scroll Lock, bit 1 Num Lock, bit 2 Caps Lock
_ENC_CURSOR = -239  # the pointer's shape comes apart, not drawn into the screen
# The screen's new size, when the guest changes mode: a reboot goes from the OS's console to the firmware's
# and the boot loader's (QEMU: 720x400 text mode) and back. Without it the server paints a smaller screen
# into the corner of the old one, and cuts a larger one off.
_ENC_DESKTOP_SIZE = -223
_LED_NUM_LOCK = 0x02
_MSG_SET_PIXEL_FORMAT, _MSG_SET_ENCODINGS, _MSG_FB_REQUEST, _MSG_KEY_EVENT, _MSG_QEMU = 0, 2, 3, 4, 255
_SRV_FB_UPDATE, _SRV_COLOURMAP, _SRV_BELL, _SRV_CUT_TEXT = 0, 1, 2, 3
# 32 bits per pixel, depth 24, little-endian, true colour, 8 bits per channel: bytes B, G, R, X.
_PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)

_XK_SHIFT_L, _XK_CONTROL_L = 0xFFE1, 0xFFE3
_SC_SHIFT_L, _SC_CONTROL_L = 0x2A, 0x1D
# Ctrl-Alt-Del as (keysym, scancode): XK_Control_L, XK_Alt_L, XK_Delete (an extended key: 0xE0 0x53).
_CTRL_ALT_DEL = ((_XK_CONTROL_L, _SC_CONTROL_L), (0xFFE9, 0x38), (0xFFFF, 0xD3))
_NUM_LOCK = (0xFF7F, 0x45)  # (keysym, scancode)
# Non-printable characters we can type, as (keysym, scancode).
_SPECIAL = {"\r": (0xFF0D, 0x1C), "\n": (0xFF0D, 0x1C), "\t": (0xFF09, 0x0F), "\x1b": (0xFF1B, 0x01),
            "\x08": (0xFF08, 0x0E), "\x7f": (0xFF08, 0x0E)}
# US layout: each key's unshifted and shifted character, by PC/XT set-1 scancode.
_US_ROWS = (
    (0x02, "1234567890-=", "!@#$%^&*()_+"),
    (0x10, "qwertyuiop[]", "QWERTYUIOP{}"),
    (0x1E, "asdfghjkl;'`", 'ASDFGHJKL:"~'),
    (0x2B, "\\zxcvbnm,./", "|ZXCVBNM<>?"),
    (0x39, " ", " "),
)


@dataclass(frozen=True)
class Key:
    """One character as keys: the key itself and the modifier held around it (if any)."""

    keysym: int
    scancode: int
    modifier: tuple[int, int] | None  # (keysym, scancode) of Shift_L or Control_L


def qemu_bursts(keys: list[Key]) -> Iterator[list[Key]]:
    """`keys` in bursts of at most QEMU_EVENTS_PER_ACK key events, as `VncChannel._key_events` sends them: each
    key pressed and released, a modifier held across a run of keys that need it and released at the end."""
    burst: list[Key] = []
    events = 0
    for key in keys:
        held = burst[-1].modifier if burst else None
        cost = 2 + (0 if key.modifier == held else (held is not None) + (key.modifier is not None))
        if burst and events + cost + (key.modifier is not None) > QEMU_EVENTS_PER_ACK:
            yield burst
            burst, events, cost = [], 0, 2 + (key.modifier is not None)
        burst.append(key)
        events += cost
    if burst:
        yield burst


def _keymap() -> dict[str, Key]:
    keys: dict[str, Key] = {}
    for first, plain, shifted in _US_ROWS:
        for offset, (low, high) in enumerate(zip(plain, shifted, strict=True)):
            keys[low] = Key(ord(low), first + offset, None)
            if high != low:
                keys[high] = Key(ord(high), first + offset, (_XK_SHIFT_L, _SC_SHIFT_L))
    for char, (keysym, scancode) in _SPECIAL.items():
        keys[char] = Key(keysym, scancode, None)
    for code in range(1, 27):  # Ctrl-A .. Ctrl-Z, where not already a special key (Tab, Enter)
        char = chr(code)
        letter = chr(ord("a") + code - 1)
        keys.setdefault(char, Key(ord(letter), keys[letter].scancode, (_XK_CONTROL_L, _SC_CONTROL_L)))
    return keys


KEYMAP = _keymap()


def keys_for(data: Text) -> list[Key]:
    """The keys that type `data` on a US layout.

    Raises:
        ChannelError: a character has no key (non-ASCII, or a control character without Ctrl-letter);
            it is raised before anything is typed, and names the character unless `data` is a Secret.
    """
    text = reveal(data)
    bad = sorted({char for char in text if char not in KEYMAP})
    if bad:
        shown = (f"a character of {data} (not shown: it is secret)" if isinstance(data, Secret)
                 else ", ".join(repr(char) for char in bad[:10]))
        raise ChannelError(
            f"cannot type {shown} on a VNC console: only printable ASCII, Enter, Tab, Escape, Backspace "
            "and Ctrl-letters have keys on the US layout we type with. Nothing was typed."
        )
    return [KEYMAP[char] for char in text]


@dataclass(frozen=True)
class Endpoint:
    """Where a VNC URL points: a TCP (host, port) or a websocket URL, and the password in it."""

    host: str
    port: int
    websocket: str | None
    password: str | None


def endpoint(url: str) -> Endpoint:
    """Parse any of the VNC URL forms in the module docstring.

    Raises:
        ChannelError: not a VNC URL we understand (the message shows it masked).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = parse_qs(parts.query)
    where = masked_url(url)
    if not parts.hostname:
        raise ChannelError(f"the VNC console URL {where} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ChannelError(f"the VNC console URL {where} has a bad port") from exc
    if scheme == "vnc":
        return Endpoint(parts.hostname, port or DEFAULT_PORT, None, parts.password)
    if scheme in ("vnc+ws", "vnc+wss"):
        return Endpoint(parts.hostname, port or 0, url.split("+", 1)[1], parts.password)
    if scheme in ("http", "https"):
        path = query.get("path", [""])[0]
        token = query.get("token", [""])[0]
        if not path and not token:
            raise ChannelError(
                f"the console URL {where} is not a noVNC console URL: it has neither a path= nor a token= "
                "parameter (expected .../vnc_auto.html?path=%3Ftoken%3D... or .../vnc_lite.html?token=...)"
            )
        resource = "/" + path.lstrip("/") if path else f"/?token={token}"
        ws_scheme = "wss" if scheme == "https" else "ws"
        password = query.get("password", [None])[0]
        return Endpoint(parts.hostname, port or 0, f"{ws_scheme}://{parts.netloc}{resource}", password)
    raise ChannelError(f"the console URL {where} is not a VNC URL (vnc://, vnc+ws(s)://, or a noVNC http(s) page)")


def vnc_response(challenge: bytes, password: str) -> bytes:
    """The VNC Authentication answer: the challenge DES-encrypted with the password as key.

    VNC's quirk: the key is the password's first 8 bytes (NUL-padded) with each byte's bits reversed.
    Single DES is 3DES with three equal keys.
    """
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    raw = password.encode("latin-1", errors="replace")[:8].ljust(8, b"\0")
    key = bytes(int(f"{byte:08b}"[::-1], 2) for byte in raw)
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305 - the RFB protocol, not our choice
    return encryptor.update(challenge) + encryptor.finalize()


def png_bytes(width: int, height: int, rgb: bytes) -> bytes:
    """An 8-bit RGB PNG of `rgb` (rows top to bottom), with zlib and struct only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    stride = width * 3
    rows = b"".join(b"\0" + rgb[row * stride:(row + 1) * stride] for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def _update_request(x: int, y: int, width: int, height: int, *, incremental: bool = False) -> bytes:
    """A FramebufferUpdateRequest; a non-incremental one is answered even when nothing changed."""
    return struct.pack(">BBHHHH", _MSG_FB_REQUEST, incremental, x, y, width, height)


class _Transport(Protocol):
    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes:
        """Some bytes (never empty); raises TimeoutError, or ConnectionResetError when closed."""

    def close(self) -> None: ...


class _TcpTransport:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, timeout: float) -> bytes:
        self._sock.settimeout(max(timeout, 0.001))
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        return data

    def close(self) -> None:
        self._sock.close()


class _WebSocketTransport:
    def __init__(self, url: str, timeout: float) -> None:
        import websocket  # lazy: keeps `recovery --help` fast

        self._ws: Any = websocket.create_connection(url, subprotocols=["binary"], timeout=timeout)

    def send(self, data: bytes) -> None:
        self._ws.send_binary(data)

    def recv(self, timeout: float) -> bytes:
        import websocket

        self._ws.settimeout(max(timeout, 0.001))
        try:
            opcode, payload = self._ws.recv_data(control_frame=False)
        except websocket.WebSocketTimeoutException as exc:
            raise TimeoutError("no data") from exc
        except websocket.WebSocketConnectionClosedException as exc:
            raise ConnectionResetError("the websocket closed") from exc
        if opcode == websocket.ABNF.OPCODE_CLOSE or not payload:
            raise ConnectionResetError("the websocket closed")
        return payload if isinstance(payload, bytes) else bytes(payload, "latin-1")

    def close(self) -> None:
        try:
            self._ws.close(timeout=1)
        except Exception:  # closing a broken socket must not hide the real error
            log.debug("closing the VNC websocket failed", exc_info=True)
        finally:
            if self._ws.sock is not None:  # websocket-client leaves it open when the server closed first
                self._ws.sock.close()


class VncChannel:
    """Implements `recovery.channels.Channel` for VNC consoles, plus `screenshot`."""

    takes_password = True

    def __init__(self, url: Secret, *, password: Secret | None = None, reader: ScreenReader | None = None) -> None:
        # True once the screen has been read on opening: recovery.channels.dialogue then waits for prompts and
        # reads markers; False (no font reads the screen) and it types blind, proving results by SSH.
        self.has_output = False
        self._reader = reader
        self.screen: ScreenText | None = None  # the screen as last read
        self._seen: list[str] | None = None  # its lines, as `read` last reported them; None before the first
        self._painted = False  # pixels arrived since the screen was last read (also while typing: barriers)
        self.url = url
        self._where = masked_url(url)
        self._endpoint = endpoint(url.reveal())
        self._password = password.reveal() if password is not None else self._endpoint.password
        self._transport: _Transport | None = None
        self._buffer = bytearray()
        self._handshake_done = False
        self.width = self.height = 0
        self.name = ""
        self.qemu_keys = False  # the server takes scancodes (QEMU Extended Key Event)
        self.slow_keyboard = False  # QEMU's emulated keyboard: paced, see the module docstring
        self.guest_acks = False  # the guest answers a Num Lock press with its light (QEMU only)
        self._leds: int | None = None  # the guest's keyboard lights, as QEMU last reported them
        self._num_lock_found: bool | None = None  # Num Lock once the connection's probe was done
        self._framebuffer = bytearray()
        self._updated: list[tuple[int, int, int, int]] = []  # the Raw rectangles (x, y, w, h) of the last update

    # -- Channel ------------------------------------------------------------------------------

    def open(self, timeout: float) -> None:
        """Connect, authenticate and set up; learns whether the server takes scancodes.

        Raises:
            ChannelError: refused, not a VNC server, or no security type we support.
            LoginRejected: the VNC password is missing or wrong.
            ChannelClosed: the server or proxy closed at once (e.g. a rejected console token).
            ChannelTimeout: the handshake did not finish in `timeout` seconds.
        """
        deadline = time.monotonic() + max(timeout, 0.1)
        try:
            self._connect(deadline)
        except BaseException:
            self.close()
            raise
        log.info("VNC console %s: %dx%d %r, %s%s", self._where, self.width, self.height, self.name,
                 "scancodes (QEMU extended key events)" if self.qemu_keys else "keysyms",
                 "" if not self.slow_keyboard else ", typing acknowledged by the guest" if self.guest_acks
                 else ", the guest does not acknowledge keys: typing one key per barrier")
        self._read_screen(deadline)

    def _read_screen(self, deadline: float) -> None:
        """Read the screen for up to SCREEN_READ_WAIT while it changes: `has_output` says whether a font read it."""
        reader = self._reader if self._reader is not None else GlyphReader()
        self._reader = reader
        until = min(deadline, time.monotonic() + SCREEN_READ_WAIT)
        with self._errors():
            self._send(_update_request(0, 0, self.width, self.height))
            self._await_update(max(until, time.monotonic() + SYNC_TIMEOUT))
            while (text := reader.read(self.frame())) is None and time.monotonic() < until:
                self._send(_update_request(0, 0, self.width, self.height, incremental=True))
                try:  # a screen unchanged for SCREEN_QUIET will not become readable by waiting
                    self._await_update(min(until, time.monotonic() + SCREEN_QUIET))
                except TimeoutError:
                    break
        if text is None:
            log.warning("VNC console %s: no font we know reads its screen; typing blind (after pauses), "
                        "and the SSH login will be the only proof", self._where)
            return
        self.has_output, self.screen, self._seen = True, text, None
        log.info("VNC console %s: reading the screen (%s, %d columns)", self._where, text.font, text.columns)

    def _connect(self, deadline: float) -> None:
        timeout = max(deadline - time.monotonic(), 0.1)
        with self._errors():
            if self._endpoint.websocket is not None:
                self._transport = _WebSocketTransport(self._endpoint.websocket, timeout)
            else:
                self._transport = _TcpTransport(self._endpoint.host, self._endpoint.port, timeout)
            self._handshake(deadline)
            self._handshake_done = True
            self._send(struct.pack(">B3x", _MSG_SET_PIXEL_FORMAT) + _PIXEL_FORMAT)
            self._set_encodings(cursor=True)
            self._sync(deadline)
            if self.qemu_keys and not self.slow_keyboard:
                # TigerVNC (an X server that takes scancodes): with the Cursor pseudo-encoding it at times
                # left typing's barriers unanswered (1 run in 4 of the printable-ASCII test), and it does
                # not draw the pointer into the screen without it, so it is not asked for there.
                self._set_encodings(cursor=False)
                self._sync(deadline)
            self._send(self._release_all())
            self._sync(deadline)
            if self.slow_keyboard and self._leds is not None:
                self.guest_acks = self._probe_guest_acks(deadline)
                self._num_lock_found = self._num_lock() if self.guest_acks else None

    def probe_guest(self, timeout: float) -> bool:
        """Whether the guest that runs now switches its Num Lock light when asked; typing is paced by that
        from now on (`guest_acks`). A reboot changes the guest: firmware and boot loaders do not answer,
        the system that booted may.

        Raises:
            ChannelClosed, ChannelTimeout: as for `send`.
        """
        self._require()
        with self._errors():
            self.guest_acks = (self.slow_keyboard and self._leds is not None
                               and self._probe_guest_acks(time.monotonic() + max(timeout, LED_PROBE_TIMEOUT)))
        return self.guest_acks

    def _set_encodings(self, *, cursor: bool) -> None:
        encodings = (_ENC_RAW, _ENC_QEMU_EXT_KEY, _ENC_DESKTOP_SIZE, *((_ENC_CURSOR,) if cursor else ()),
                     *((_ENC_QEMU_LED_STATE,) if self.slow_keyboard else ()))
        self._send(struct.pack(f">BxH{len(encodings)}i", _MSG_SET_ENCODINGS, len(encodings), *encodings))

    def _probe_guest_acks(self, deadline: float) -> bool:
        """Press Num Lock twice: True if the guest switched its light both times, as typing will need."""
        if not self._acknowledged(b"", min(deadline, time.monotonic() + LED_PROBE_TIMEOUT)):
            log.warning("VNC console %s: the guest did not switch its Num Lock light within %.1f s; "
                        "typing one key per barrier instead", self._where, LED_PROBE_TIMEOUT)
            return False
        return self._acknowledged(b"", deadline)

    def _release_all(self) -> bytes:
        """Key-ups for every key we type with: a connection cut mid-typing can leave one down.

        x11vnc keeps a dropped client's keys pressed. After a cut between `r` down and `r` up, the
        next `r` (the first letter of the user name a `--resume` typed) was lost, a press of a key
        already down; a Shift left down would shift everything. Releasing a key that is not down
        changes nothing. Shifted keysyms too: x11vnc tracks keysyms, not keys, and after a cut with
        `)` down (Shift and `0`) the resumed run's next `)` was lost, though `0` had been released.
        Scancodes name keys: one release each.
        """
        keys = {(key.keysym, key.scancode) for key in KEYMAP.values()}
        keys |= {(_XK_SHIFT_L, _SC_SHIFT_L), (_XK_CONTROL_L, _SC_CONTROL_L)}
        if self.qemu_keys:
            codes = {scancode: keysym for keysym, scancode in sorted(keys)}
            return b"".join(struct.pack(">BBHII", _MSG_QEMU, 0, 0, sym, code) for code, sym in sorted(codes.items()))
        return b"".join(struct.pack(">BBxxI", _MSG_KEY_EVENT, 0, keysym) for keysym, _ in sorted(keys))

    def send_ctrl_alt_del(self) -> None:
        """Press Ctrl-Alt-Del: a running system reboots (systemd's ctrl-alt-del.target), a kernel that no init
        told otherwise restarts at once, the BIOS resets. Acknowledged by a barrier only: whatever runs may not
        switch Num Lock.

        Raises:
            ChannelClosed, ChannelTimeout: as for `send`.
        """
        self._require()
        with self._errors():
            self._send(self._events([(key, True) for key in _CTRL_ALT_DEL]
                                    + [(key, False) for key in reversed(_CTRL_ALT_DEL)]))
            self._sync(time.monotonic() + SYNC_TIMEOUT)

    def check_typeable(self, data: Text) -> None:
        """Raises ChannelError for a character with no key on the US layout (see `keys_for`)."""
        keys_for(data)

    def send(self, data: Text) -> None:
        """Type `data` exactly, on a US layout; every character is checked before the first key.

        Raises:
            ChannelError: a character cannot be typed (nothing was typed).
            ChannelClosed: the connection dropped while typing.
            ChannelTimeout: the server stopped answering the sync requests, or (QEMU) the guest
                stopped switching its Num Lock light.
        """
        keys = keys_for(data)
        self._require()
        with self._errors():
            if self.slow_keyboard and self.guest_acks:
                self._type_acknowledged(keys)
            elif self.slow_keyboard:
                self._type_one_key_per_barrier(keys)
            else:
                self._type_in_batches(keys)

    def _type_one_key_per_barrier(self, keys: list[Key]) -> None:
        """QEMU when the guest does not acknowledge: each key waits for a barrier and QEMU_KEY_INTERVAL."""
        for key in keys:
            self._send(self._key_events([key]))
            self._sync(time.monotonic() + SYNC_TIMEOUT)
            time.sleep(QEMU_KEY_INTERVAL)

    def _type_in_batches(self, keys: list[Key]) -> None:
        """X-based servers: batches of KEYS_PER_SYNC, up to SYNCS_IN_FLIGHT barriers outstanding."""
        pending: deque[int] = deque()  # the pixel x of each unanswered barrier, oldest first
        for number, start in enumerate(range(0, len(keys), KEYS_PER_SYNC)):
            while len(pending) >= SYNCS_IN_FLIGHT:
                self._settle(pending, time.monotonic() + SYNC_TIMEOUT)
            x = number % _SYNC_SLOTS
            events = self._key_events(keys[start:start + KEYS_PER_SYNC])
            self._send(events + _update_request(x, 0, 1, 1))
            pending.append(x)
        while pending:
            self._settle(pending, time.monotonic() + SYNC_TIMEOUT)

    def read(self, timeout: float) -> str:
        """The text that appeared on the screen within `timeout` seconds ("" if none); always "" on a
        screen no font reads (the connection is only serviced then).

        Raises:
            ChannelClosed: the server went away.
        """
        self._require()
        deadline = time.monotonic() + timeout
        if self.has_output and (self._seen is None or self._painted):  # servers send only changes: what
            text = self._screen_news()  # came with the answers to typing's barriers is read here
            if text:
                return text
        with self._errors():
            while (remaining := deadline - time.monotonic()) > 0:
                if self.has_output:  # servers keep one request pending per client: asking again is free
                    self._send(_update_request(0, 0, self.width, self.height, incremental=True))
                try:
                    self._fill(1, time.monotonic() + remaining)
                except TimeoutError:
                    break
                self._dispatch(time.monotonic() + SYNC_TIMEOUT)
                if self._painted and self.has_output:
                    self._take_following_updates()
                    text = self._screen_news()
                    if text:
                        return text
        return ""

    def _take_following_updates(self) -> None:
        """Handle the messages that follow within SCREEN_UPDATE_GAP of each other, for SCREEN_QUIET at most
        (a screen that never stops changing is read as it is then)."""
        until = time.monotonic() + SCREEN_QUIET
        while time.monotonic() < until:
            try:
                self._fill(1, time.monotonic() + SCREEN_UPDATE_GAP)
            except TimeoutError:
                return
            self._dispatch(time.monotonic() + SYNC_TIMEOUT)

    def _screen_news(self) -> str:
        """Read the screen; the text new since the last read (`recovery.channels.screen.news`)."""
        assert self._reader is not None  # has_output is set only with a reader
        self._painted = False
        text = self._reader.read(self.frame())
        if text is None:  # mid-change (a mode switch): the next update tells
            return ""
        self.screen = text
        lines = text.lines
        new = news(self._seen or [], lines)
        self._seen = lines
        return new

    def frame(self) -> Frame:
        """The screen as last received."""
        return Frame(self.width, self.height, bytes(self._framebuffer))

    def close(self) -> None:
        """Close the connection, Num Lock first switched back to how it was found where typing switched it."""
        switched = self._num_lock_found is not None and self._num_lock() != self._num_lock_found
        if self._transport is not None and switched:
            try:
                with self._errors():
                    self._acknowledged(b"", time.monotonic() + NUM_LOCK_RESTORE_TIMEOUT)
            except ChannelError:  # the connection is going anyway; the light is cosmetic
                log.debug("VNC console %s: Num Lock could not be switched back", self._where, exc_info=True)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    # -- evidence -----------------------------------------------------------------------------

    def screenshot(self, path: Path, timeout: float = SYNC_TIMEOUT) -> tuple[int, int]:
        """Save the whole screen as a PNG at `path`; returns (width, height).

        The first (non-incremental) answer can be the server's stale copy: x11vnc, for one, scans
        the X screen only while a client waits for changes. So incremental requests follow until
        the screen has been quiet for SCREEN_QUIET, or for SCREEN_SETTLE_LIMIT at most. One may stay
        pending; servers merge a client's requests, so the next sync request shares its answer. A
        screen that is read is quiet when its text is (TEXT_QUIET): QEMU's text mode blinks its
        cursor, which would keep every screenshot waiting SCREEN_SETTLE_LIMIT.

        Raises:
            ChannelClosed, ChannelTimeout: as for `send`.
        """
        self._require()
        deadline = time.monotonic() + timeout
        with self._errors():
            self._send(_update_request(0, 0, self.width, self.height))
            self._await_update(deadline)
            deadline = min(deadline, time.monotonic() + SCREEN_SETTLE_LIMIT)
            rows = self._text_rows()
            quiet = TEXT_QUIET if rows is not None else SCREEN_QUIET
            changed = time.monotonic()
            while time.monotonic() < min(deadline, changed + quiet):
                self._send(_update_request(0, 0, self.width, self.height, incremental=True))
                try:
                    self._await_update(min(deadline, changed + quiet))
                except TimeoutError:
                    break
                if rows is None or (now := self._text_rows()) != rows:  # pixels changed, or the text did
                    rows, changed = (None if rows is None else now), time.monotonic()
        fb = self._framebuffer
        rgb = bytearray(self.width * self.height * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = fb[2::4], fb[1::4], fb[0::4]
        write_atomic(path, png_bytes(self.width, self.height, bytes(rgb)))  # 0600, whatever the umask
        if self.has_output and self._reader is not None and (text := self._reader.read(self.frame())) is not None:
            write_atomic(path.with_suffix(".txt"), (scrub(text.text) + "\n").encode())
        return self.width, self.height

    def _text_rows(self) -> tuple[str, ...] | None:
        """The rows of text on the screen as it is now, where the screen is read; else None."""
        if not self.has_output or self._reader is None:
            return None
        text = self._reader.read(self.frame())
        return text.rows if text is not None else None

    # -- RFB ----------------------------------------------------------------------------------

    def _handshake(self, deadline: float) -> None:
        banner = self._read(12, deadline)
        version_seen = re.fullmatch(rb"RFB (\d{3})\.(\d{3})\n", banner)
        if version_seen is None:
            raise ChannelError(f"{self._where} is not a VNC server (it said {banner[:12]!r})")
        major, minor = int(version_seen[1]), int(version_seen[2])
        # 3.8 and anything newer (Apple's 3.889) speak 3.8; UltraVNC's 3.4/3.6 speak 3.3.
        version = 8 if (major, minor) >= (3, 8) else 7 if (major, minor) == (3, 7) else 3
        self._send(f"RFB 003.00{version}\n".encode())
        if version == 3:
            (chosen,) = struct.unpack(">I", self._read(4, deadline))
            if chosen == _SEC_INVALID:
                raise ChannelError(f"the VNC server at {self._where} refused us: {self._reason(deadline)}")
            offered = [chosen]
        else:
            (count,) = self._read(1, deadline)
            if count == 0:
                raise ChannelError(f"the VNC server at {self._where} refused us: {self._reason(deadline)}")
            offered = list(self._read(count, deadline))
            chosen = self._choose_security(offered)
            self._send(bytes([chosen]))
        if chosen == _SEC_VNC_AUTH:
            if self._password is None:
                raise LoginRejected(f"the VNC server at {self._where} asks for a VNC password, and none was given")
            self._send(vnc_response(self._read(16, deadline), self._password))
        elif chosen != _SEC_NONE:
            raise ChannelError(f"the VNC server at {self._where} offers only security types {offered}; "
                               "we support None (1) and VNC Authentication (2)")
        if chosen == _SEC_VNC_AUTH or version == 8:
            (result,) = struct.unpack(">I", self._read(4, deadline))
            if result != 0:
                reason = self._reason(deadline) if version == 8 else "no reason given"
                if chosen == _SEC_VNC_AUTH:
                    raise LoginRejected(f"the VNC server at {self._where} rejected the VNC password ({reason})")
                raise ChannelError(f"the VNC server at {self._where} refused us: {reason}")
        self._send(b"\x01")  # ClientInit: shared, so a watching operator's viewer stays connected
        self._resize(*struct.unpack(">HH", self._read(4, deadline)))
        self._read(16, deadline)  # the server's pixel format: we set our own next
        (name_length,) = struct.unpack(">I", self._read(4, deadline))
        self.name = self._read(min(name_length, MAX_TEXT), deadline).decode("utf-8", errors="replace")
        self._skip(name_length - min(name_length, MAX_TEXT), deadline)
        self.slow_keyboard = self.name == "QEMU" or self.name.startswith("QEMU (")

    def _resize(self, width: int, height: int) -> None:
        """A blank screen of the size the server announced; its pixels follow."""
        if width * height > MAX_PIXELS:
            raise ChannelError(f"the VNC server at {self._where} announced a {width}x{height} screen, "
                               f"more than the {MAX_PIXELS} pixels of any VM console: is this a VNC console?")
        self.width, self.height = width, height
        self._framebuffer = bytearray(width * height * 4)

    def _choose_security(self, offered: list[int]) -> int:
        if _SEC_VNC_AUTH in offered and (self._password is not None or _SEC_NONE not in offered):
            return _SEC_VNC_AUTH
        if _SEC_NONE in offered:
            return _SEC_NONE
        return offered[0]  # unsupported: _handshake names it

    def _reason(self, deadline: float) -> str:
        (length,) = struct.unpack(">I", self._read(4, deadline))  # the server closes after it: no need to read it all
        return self._read(min(length, MAX_TEXT), deadline).decode("utf-8", errors="replace") or "no reason given"

    def _type_acknowledged(self, keys: list[Key]) -> None:
        """Type in bursts, each sent once the guest has taken the one before (QEMU; see the module docstring)."""
        for burst in qemu_bursts(keys):
            timeout = self._ack_timeout(len(burst))
            if not self._acknowledged(self._key_events(burst), time.monotonic() + timeout):
                raise ChannelTimeout(
                    f"the VM behind the VNC console at {self._where} stopped taking keys: it did not switch its "
                    f"Num Lock light after the last {len(burst)} characters within {timeout:.0f} s (hung, or busy); "
                    "nothing after them was typed"
                )

    def _acknowledged(self, events: bytes, deadline: float) -> bool:
        """Send `events` and a Num Lock press; True once QEMU reports the guest's light switched by `deadline`.

        The guest handles its keyboard in order, so the switch proves every earlier key was taken.
        """
        expected = not self._num_lock()
        self._send(events + self._events([(_NUM_LOCK, True), (_NUM_LOCK, False)]))
        try:
            while self._num_lock() != expected:
                if time.monotonic() > deadline:  # screen updates keep coming, the light does not switch
                    return False
                self._dispatch(deadline)
        except TimeoutError:
            return False
        return True

    def _num_lock(self) -> bool:
        return bool((self._leds or 0) & _LED_NUM_LOCK)

    @staticmethod
    def _ack_timeout(characters: int) -> float:
        return SYNC_TIMEOUT + 4 * characters * QEMU_ACK_PER_EVENT

    def _key_events(self, keys: list[Key]) -> bytes:
        """KeyEvents typing `keys`; a modifier stays down across consecutive keys that need it."""
        events: list[tuple[tuple[int, int], bool]] = []
        held: tuple[int, int] | None = None
        for key in [*keys, None]:  # None: release what is still held
            modifier = key.modifier if key is not None else None
            if modifier != held:
                if held is not None:
                    events.append((held, False))
                if modifier is not None:
                    events.append((modifier, True))
                held = modifier
            if key is not None:
                events += [((key.keysym, key.scancode), True), ((key.keysym, key.scancode), False)]
        return self._events(events)

    def _events(self, events: list[tuple[tuple[int, int], bool]]) -> bytes:
        """KeyEvent messages for ((keysym, scancode), down) pairs: scancodes when the server takes them."""
        if self.qemu_keys:
            return b"".join(struct.pack(">BBHII", _MSG_QEMU, 0, down, keysym, scancode)
                            for (keysym, scancode), down in events)
        return b"".join(struct.pack(">BBxxI", _MSG_KEY_EVENT, down, keysym) for (keysym, _), down in events)

    def _sync(self, deadline: float) -> None:
        """A barrier: ask for one pixel, non-incrementally, and wait for the answer.

        The server answers after it has handled everything we sent before, and a non-incremental
        request is answered even when the screen has not changed.
        """
        self._send(_update_request(0, 0, 1, 1))
        self._await_update(deadline)

    def _settle(self, pending: deque[int], deadline: float) -> None:
        """Handle server messages until an update answers a pending barrier; drop it and all older ones.

        Only 1-pixel-high rectangles in the top row count: a screen-change update (a screenshot can
        leave an incremental request pending) is no answer to a barrier.
        """
        while True:
            if time.monotonic() > deadline:  # updates keep coming, none of them the answer
                raise TimeoutError("no answer to a sync request")
            if self._dispatch(deadline):
                answered = [index for index, x in enumerate(pending)
                            if any(y == 0 and h == 1 and rx <= x < rx + w for rx, y, w, h in self._updated)]
                if answered:
                    for _ in range(answered[-1] + 1):
                        pending.popleft()
                    return

    def _await_update(self, deadline: float) -> None:
        """Handle server messages until a FramebufferUpdate with pixels (not only pseudo-encodings)."""
        while not self._dispatch(deadline):
            pass

    def _dispatch(self, deadline: float) -> bool:
        """Handle one server message; True if it was a FramebufferUpdate carrying pixels.

        `deadline` is for the message to begin: once begun, it is read whole (within SYNC_TIMEOUT
        more), so a timeout never leaves half a message in the buffer.
        """
        (kind,) = self._read(1, deadline)
        deadline = max(deadline, time.monotonic() + SYNC_TIMEOUT)
        if kind == _SRV_FB_UPDATE:
            (count,) = struct.unpack(">xH", self._read(3, deadline))
            pixels = False
            self._updated = []
            for _ in range(count):
                x, y, width, height, encoding = struct.unpack(">HHHHi", self._read(12, deadline))
                if encoding == _ENC_QEMU_EXT_KEY:
                    self.qemu_keys = True
                elif encoding == _ENC_QEMU_LED_STATE:
                    (self._leds,) = self._read(1, deadline)
                elif encoding == _ENC_DESKTOP_SIZE:
                    self._resize(width, height)
                elif encoding == _ENC_CURSOR:  # the pointer's pixels and mask: not the screen's
                    self._skip(width * height * 4 + (width + 7) // 8 * height, deadline)
                elif encoding == _ENC_RAW:  # read a row at a time: a rectangle may claim up to 17 GB
                    for row in range(height):
                        self._paint(x, y + row, self._read(width * 4, deadline))
                    self._updated.append((x, y, width, height))
                    pixels = self._painted = True
                else:
                    raise ChannelError(f"the VNC server at {self._where} sent encoding {encoding}, "
                                       "which we did not ask for")
            return pixels
        if kind == _SRV_COLOURMAP:
            _, count = struct.unpack(">xHH", self._read(5, deadline))
            self._read(count * 6, deadline)
        elif kind == _SRV_CUT_TEXT:  # the VM's clipboard, up to 4 GiB: skipped, never held
            (length,) = struct.unpack(">3xI", self._read(7, deadline))
            self._skip(length, deadline)
        elif kind != _SRV_BELL:
            raise ChannelError(f"the VNC server at {self._where} sent message type {kind}, which RFB does not define")
        return False

    def _paint(self, x: int, y: int, row: bytes) -> None:
        """One row of pixels at (x, y), clipped to the screen (a server may paint past it after a resize)."""
        width = min(len(row) // 4, self.width - x)
        if y < self.height and width > 0:
            start = (y * self.width + x) * 4
            self._framebuffer[start:start + width * 4] = row[:width * 4]

    # -- bytes --------------------------------------------------------------------------------

    def _require(self) -> _Transport:
        if self._transport is None:
            raise ChannelClosed(f"the VNC console {self._where} is not open")
        return self._transport

    def _send(self, data: bytes) -> None:
        self._require().send(data)

    def _fill(self, count: int, deadline: float) -> None:
        transport = self._require()
        while len(self._buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no data in time")
            self._buffer += transport.recv(remaining)

    def _read(self, count: int, deadline: float) -> bytes:
        self._fill(count, deadline)
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _skip(self, count: int, deadline: float) -> None:
        """Drop the next `count` bytes as they arrive, holding no more than one receive of them."""
        while count > 0:
            self._fill(1, deadline)
            taken = min(count, len(self._buffer))
            del self._buffer[:taken]
            count -= taken

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate socket and websocket errors into ours, with the URL masked."""
        import websocket

        try:
            with connection_refusals(
                self._where, console="VNC console", server="VNC server or console proxy", url_kind="VNC console URL"
            ):
                yield
        except (TimeoutError, websocket.WebSocketTimeoutException) as exc:
            what = "to a sync request" if self._handshake_done else "before finishing the handshake (no ServerInit)"
            raise ChannelTimeout(f"the VNC console at {self._where} stopped answering {what}") from exc
        except (ConnectionResetError, BrokenPipeError, websocket.WebSocketConnectionClosedException) as exc:
            self.close()
            if not self._handshake_done:
                raise ChannelClosed(
                    f"the VNC console at {self._where} closed the connection during the handshake: a console "
                    "proxy does this when the token is rejected or has expired (Nova's last 10 minutes by "
                    "default); ask the cloud for a new console URL"
                ) from exc
            raise ChannelClosed(f"the VNC console at {self._where} closed the connection mid-conversation") from exc
        except (ssl.SSLError, OSError, websocket.WebSocketException) as exc:
            raise ChannelError(f"the VNC console at {self._where} failed: {exc}") from exc
