"""Property-based tests of what reads a console's output: any input, cut anywhere, ends in a result or
one of our own errors, in bounded time.

The console side (terminal text, the login dialogue, the `RCV-<nonce>-<status>` marker, the install
script's report) and the RFB server messages of the VNC channel. A fake channel or transport hands
over the pieces and then reports silence (or a closed connection) at once, so no example waits for
a real timeout.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import struct
import time

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from recovery.channels.dialogue import ConsoleSession, TerminalText
from recovery.channels.vnc import VncChannel
from recovery.errors import ChannelClosed, ChannelError, GuestCommandError
from recovery.guest import parse_report
from recovery.safety.redact import Secret, Text, reveal

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BOUND = 5.0  # seconds any example may take, however hostile: far above what one needs

# Console output: what terminals, logins and shells print, and anything else.
CONSOLE_ATOMS = st.sampled_from([
    "\r", "\n", "\r\n", "\x1b", "\x1b[", "\x1b[?2004h", "\x1b[?2004l", "\x1b[6n", "\x1b]0;title\x07", "\x1b\\",
    "\x1b(B", "\x1b[0m", "[", "[   12.345678] ", "]", " ", "login: ", "vm login: ", "Last login: ", "Password: ",
    "Login incorrect", "ops@vm:~$ ", "# ", "> ", "logout", "\x00", "RCV-", "RCV-abcd1234-", "0", "7", "-", "é",
])
CONSOLE_TEXT = st.lists(st.one_of(CONSOLE_ATOMS, st.text(max_size=8)), max_size=40).map("".join)


def cut(text: str, cuts: list[int]) -> list[str]:
    """`text` in pieces, cut at the given offsets (taken modulo its length)."""
    points = sorted({0, len(text), *(point % (len(text) + 1) for point in cuts)})
    return [text[start:end] for start, end in itertools.pairwise(points)]


class Pieces:
    """A console that prints `pieces`, one per read, then nothing; it takes any key."""

    has_output = True

    def __init__(self, pieces: list[str], *, closes: bool = False) -> None:
        self.pieces = list(pieces)
        self.closes = closes
        self.sent: list[str] = []

    def open(self, timeout: float) -> None:
        return None

    def check_typeable(self, data: Text) -> None:
        return None

    def send(self, data: Text) -> None:
        self.sent.append(reveal(data))

    def read(self, timeout: float) -> str:
        if self.pieces:
            return self.pieces.pop(0)
        if self.closes:
            raise ChannelClosed("the console closed")
        return ""

    def close(self) -> None:
        return None


@FUZZ
@given(CONSOLE_TEXT, st.lists(st.integers(min_value=0), max_size=12))
@example("a\r\x1b[0m\nb", [5])  # an escape between CR and LF, cut after it: once two line ends
@example("[ 1.000000] a [ 2.000000] b\nc", [16, 18])  # a kernel message holding a second `[`: once kept
@example("\x1b]title\x1b\\x", [7])  # an OSC ended by ESC \\, cut inside its end
@example("x[ 1.000000] " + "a" * 1200 + "\nz", [5, 300, 1000])  # longer than printk writes: not a kernel message
@example("[[   12.345678] \n", [2])  # a `[` before a kernel message was shown or held depending on the cut
def test_terminal_text_does_not_depend_on_where_the_output_was_cut(text: str, cuts: list[int]) -> None:
    whole = TerminalText().feed(text)
    screen = TerminalText()
    fed = [screen.feed(piece) for piece in cut(text, cuts)]
    assert "".join(piece for piece, _ in fed) == whole[0]
    assert sum(queries for _, queries in fed) == whole[1]


@FUZZ
@example("\x1b]", "\x1b\\", 3, [])  # a stray OSC swallowed the marker line up to its end
@given(CONSOLE_TEXT, CONSOLE_TEXT, st.integers(min_value=0, max_value=255), st.lists(st.integers(min_value=0)))
def test_the_status_marker_is_read_wherever_the_output_was_cut(
    before: str, after: str, status: int, cuts: list[int]
) -> None:
    assume("RCV-abcd1234-" not in TerminalText().feed(before + "\n")[0])  # the shell prints one marker
    output = f"{before}\r\nRCV-abcd1234-{status}\r\n{after}"
    session = ConsoleSession(Pieces(cut(output, cuts)))
    result = session.run_script(["true"], delimiter="RECOVERY_SCRIPT_abcd1234", nonce="abcd1234", timeout=BOUND)
    assert result.status == status


@FUZZ
@given(CONSOLE_TEXT, st.lists(st.integers(min_value=0)), st.booleans())
def test_any_output_ends_a_script_in_a_status_or_our_error(text: str, cuts: list[int], closes: bool) -> None:
    session = ConsoleSession(Pieces(cut(text, cuts), closes=closes))
    started = time.monotonic()
    try:
        result = session.run_script(["true"], delimiter="RECOVERY_SCRIPT_abcd1234", nonce="abcd1234", timeout=0.05)
    except ChannelError:
        pass
    else:
        assert result.status is not None
        assert f"RCV-abcd1234-{result.status}" in text.replace("\x1b[6n", "")
    assert time.monotonic() - started < BOUND


@FUZZ
@given(CONSOLE_TEXT, st.lists(st.integers(min_value=0)), st.booleans())
def test_any_output_ends_a_login_in_a_shell_or_our_error(text: str, cuts: list[int], closes: bool) -> None:
    """The console answers nothing we type with sense: the login must still end, and never type the
    password where no password prompt was seen."""
    console = Pieces(cut(text, cuts), closes=closes)
    started = time.monotonic()
    with contextlib.suppress(ChannelError):
        ConsoleSession(console).login("ops", Secret("s3cret-pass"), timeout=0.05)
    assert time.monotonic() - started < BOUND
    if "s3cret-pass\r" in console.sent:
        assert re.search(r"[Pp]assword|Passwort|Mot de passe|Contrase\u00f1a", text), console.sent


FACT_NAMES = st.sampled_from(["exit", "error", "added", "backup", "before_lines", "after_key", "sshd_config",
                              "sshd_authorized_keys_file", "selinux", "x"])
FACT_LINES = st.builds(lambda name, value: f"RCV-t3stN0nce {name}={value}", FACT_NAMES, st.text(max_size=20))


@FUZZ
@given(st.lists(st.one_of(FACT_LINES, CONSOLE_TEXT), max_size=20))
@example(["RCV-t3stN0nce exit=\u00b9"])  # a digit to str.isdigit, not to int(): was a ValueError
@example(["\x1b]", "RCV-t3stN0nce exit=0", "\x1b\\"])  # a stray OSC swallowed the lines up to its end
def test_parse_report_reads_any_output_or_says_nothing_ran(lines: list[str]) -> None:
    output = "\r\n".join(lines)
    try:
        report = parse_report(output, "t3stN0nce")
    except GuestCommandError:
        assert "RCV-t3stN0nce " not in output
    else:
        assert report.facts
        assert report.exit_code is None or report.exit_code >= 0


# -- RFB ----------------------------------------------------------------------------------------


class Transport:
    """A VNC server that sends `pieces` and then falls silent (or closes)."""

    def __init__(self, pieces: list[bytes], *, closes: bool) -> None:
        self.pieces = list(pieces)
        self.closes = closes
        self.received = 0

    def send(self, data: bytes) -> None:
        self.received += len(data)

    def recv(self, timeout: float) -> bytes:
        if self.pieces:
            return self.pieces.pop(0)
        if self.closes:
            raise ConnectionResetError("closed")
        raise TimeoutError("silent")

    def close(self) -> None:
        return None


def bytes_cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(point % (len(data) + 1) for point in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points) if end > start]


def channel_with(data: bytes, cuts: list[int], *, closes: bool, size: tuple[int, int] = (16, 8)) -> VncChannel:
    channel = VncChannel(Secret("vnc://127.0.0.1:5900"))
    channel._transport = Transport(bytes_cut(data, cuts), closes=closes)
    channel._handshake_done = True
    channel.width, channel.height = size
    channel._framebuffer = bytearray(size[0] * size[1] * 4)
    return channel


def rect(x: int, y: int, width: int, height: int, encoding: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHHi", x, y, width, height, encoding) + payload


# Server messages as servers send them, with sizes and counts that may lie.
RFB_MESSAGES = st.one_of(
    st.builds(lambda rects: b"\x00\x00" + struct.pack(">H", len(rects)) + b"".join(rects), st.lists(st.one_of(
        st.builds(lambda x, y, w, h: rect(x, y, w, h, 0, bytes(w * h * 4)),
                  st.integers(0, 20), st.integers(0, 10), st.integers(0, 4), st.integers(0, 4)),
        st.builds(lambda leds: rect(0, 0, 1, 1, -261, bytes([leds])), st.integers(0, 255)),
        st.just(rect(0, 0, 16, 8, -258)),
        st.builds(lambda x, y, w, h, e: rect(x, y, w, h, e),
                  st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535),
                  st.integers(-(2**31), 2**31 - 1)),
    ), max_size=4)),
    st.builds(lambda first, colours: b"\x01\x00" + struct.pack(">HH", first, len(colours)) + b"".join(colours),
              st.integers(0, 65535), st.lists(st.binary(min_size=6, max_size=6), max_size=4)),
    st.just(b"\x02"),
    st.builds(lambda text: b"\x03\x00\x00\x00" + struct.pack(">I", len(text)) + text, st.binary(max_size=40)),
    st.builds(lambda length: b"\x03\x00\x00\x00" + struct.pack(">I", length), st.integers(0, 2**32 - 1)),
    st.binary(max_size=24),
)


@FUZZ
@given(st.lists(RFB_MESSAGES, max_size=6).map(b"".join), st.lists(st.integers(min_value=0), max_size=10),
       st.booleans())
def test_any_server_messages_are_handled_or_refused_with_our_error(data: bytes, cuts: list[int], closes: bool) -> None:
    channel = channel_with(data, cuts, closes=closes)
    started = time.monotonic()
    with contextlib.suppress(ChannelError):
        assert channel.read(0.05) == ""
    assert time.monotonic() - started < BOUND
    assert len(channel._buffer) <= len(data)
    assert len(channel._framebuffer) == 16 * 8 * 4


class Streaming(Transport):
    """Sends `header` and then `size` zero bytes in 64 KiB pieces; records the most the channel held."""

    def __init__(self, channel: VncChannel, header: bytes, size: int) -> None:
        piece = bytes(65536)
        super().__init__([header, *[piece] * (size // len(piece))], closes=False)
        self.channel = channel
        self.most_held = 0

    def recv(self, timeout: float) -> bytes:
        self.most_held = max(self.most_held, len(self.channel._buffer))
        return super().recv(timeout)


@pytest.mark.parametrize(
    ("header", "size"),
    [
        (struct.pack(">B3xI", 3, 16 * 1024 * 1024), 16 * 1024 * 1024),  # clipboard text: up to 4 GiB
        (b"\x00\x00" + struct.pack(">H", 1) + rect(0, 0, 4096, 1024, 0), 4096 * 1024 * 4),  # pixels off screen
    ],
    ids=["clipboard", "rectangle"],
)
def test_a_huge_server_message_is_taken_as_it_arrives(header: bytes, size: int) -> None:
    """Both were read whole into memory before they were handled."""
    channel = channel_with(b"", [], closes=False)
    transport = Streaming(channel, header, size)
    channel._transport = transport
    assert channel.read(0.05) == ""
    assert transport.most_held <= 2 * 65536
    assert not transport.pieces
    assert len(channel._framebuffer) == 16 * 8 * 4


def test_a_rectangle_past_the_screen_is_painted_where_it_is_on_it() -> None:
    pixels = b"".join(bytes([column, row, 0, 0]) for row in range(10) for column in range(20))
    channel = channel_with(b"\x00\x00" + struct.pack(">H", 1) + rect(4, 2, 20, 10, 0, pixels), [], closes=False)
    assert channel.read(0.05) == ""
    screen = channel._framebuffer
    assert len(screen) == 16 * 8 * 4
    assert screen[(2 * 16 + 4) * 4:(2 * 16 + 4) * 4 + 4] == bytes([0, 0, 0, 0])
    assert screen[(7 * 16 + 15) * 4:(7 * 16 + 15) * 4 + 4] == bytes([11, 5, 0, 0])
    assert not channel._buffer


def test_a_screen_larger_than_any_console_is_refused_before_it_is_allocated() -> None:
    channel = VncChannel(Secret("vnc://127.0.0.1:5900"))
    server_init = struct.pack(">HH", 65535, 65535) + bytes(16) + struct.pack(">I", 4) + b"QEMU"
    channel._transport = Transport([b"RFB 003.008\n", b"\x01\x01", bytes(4), server_init], closes=False)
    with pytest.raises(ChannelError, match="65535x65535 screen"):
        channel._handshake(time.monotonic() + 1)


HANDSHAKES = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda version, rest: b"RFB " + version + b"\n" + rest,
              st.sampled_from([b"003.008", b"003.007", b"003.003", b"003.889", b"004.001", b"abc.def", b"3.8    ",
                               b"-03.008", b"\xff\xfe\xfd.008"]),
              st.binary(max_size=64)),
    st.builds(lambda security, width, height, name: (
        b"RFB 003.008\n" + bytes([len(security), *security]) + struct.pack(">I", 0)
        + struct.pack(">HH", width, height) + bytes(16) + struct.pack(">I", len(name)) + name),
        st.lists(st.integers(0, 255), max_size=3), st.integers(0, 65535), st.integers(0, 65535),
        st.binary(max_size=12)),
)


@FUZZ
@given(HANDSHAKES, st.lists(st.integers(min_value=0), max_size=8), st.booleans())
def test_any_handshake_ends_in_a_connection_or_our_error(data: bytes, cuts: list[int], closes: bool) -> None:
    channel = VncChannel(Secret("vnc://127.0.0.1:5900"))
    channel._transport = Transport(bytes_cut(data, cuts), closes=closes)
    started = time.monotonic()
    try:
        with channel._errors():
            channel._handshake(time.monotonic() + 0.05)
    except ChannelError:
        pass
    else:
        assert channel.width * channel.height <= 16 * 1024 * 1024
    assert time.monotonic() - started < BOUND
