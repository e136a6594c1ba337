"""Reading the screen of real VNC servers (x11vnc on Xvfb, Xtigervnc) showing an xterm: the text typed
comes back through `read`, exactly, and a reader with no font falls back to blind typing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.channels.dialogue import ConsoleSession
from recovery.channels.screen import UNKNOWN, GlyphReader
from recovery.channels.vnc import VncChannel
from recovery.safety.redact import Secret
from tests.integration.vnc_fixture import PRINTABLE, VncServer, opened, running_vnc

SERVERS = [("x11vnc", False), ("tigervnc", False), ("tigervnc", True)]


@pytest.fixture(scope="module", params=SERVERS, ids=[f"{kind}{'-ws' if ws else ''}" for kind, ws in SERVERS])
def vnc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VncServer]:
    kind, websocket = request.param
    with running_vnc(kind, tmp_path_factory.mktemp(kind), websocket=websocket) as server:
        yield server


def read_until(channel: VncChannel, wanted: str, timeout: float = 20.0) -> str:
    text = ""
    deadline = time.monotonic() + timeout
    while wanted not in text and time.monotonic() < deadline:
        text += channel.read(0.5)
    return text


def test_the_xterm_is_read_and_what_is_typed_comes_back_exactly(vnc: VncServer, tmp_path: Path) -> None:
    channel = opened(vnc.url)
    try:
        assert channel.has_output, "the screen was read, not fallen back on"
        assert channel.screen is not None
        assert channel.screen.font == "6x13-ISO8859-1 in 6x13 cells"
        channel.read(1.0)  # what is on the screen already
        channel.send(f"cat >/dev/null\r{PRINTABLE}\r{PRINTABLE[::-1]}\r\x04")
        text = read_until(channel, PRINTABLE[::-1].rstrip() + "\n")  # a screen shows no trailing space
        channel.send("echo RCV-$((6 * 7))-done\r")
        text += read_until(channel, "RCV-42-done\n")
        assert channel.screenshot(tmp_path / "screen.png") == (1024, 768)
    finally:
        channel.close()
    lines = text.splitlines()
    assert PRINTABLE in lines, lines  # every printable character, read as it was typed
    assert PRINTABLE[::-1].rstrip() in lines
    assert "RCV-42-done" in lines
    # What this test typed is read exactly. Rows an earlier test left on the xterm may be reported again (a
    # screen the text stream cannot align is reported whole), the X pointer over one of their cells.
    assert UNKNOWN not in text[text.rindex("cat >/dev/null"):]
    assert "RCV-42-done" in (tmp_path / "screen.txt").read_text().splitlines()


def test_a_console_session_reads_markers_from_the_screen(vnc: VncServer) -> None:
    channel = opened(vnc.url)
    try:
        session = ConsoleSession(channel)
        session.settle()
        result = session.run_script(["echo from-the-script", "exit 7"], delimiter="SCRIPT_END", nonce="c0ffee42",
                                    timeout=20)
    finally:
        channel.close()
    assert result.status == 7
    assert "from-the-script\n" in result.output


def test_a_screen_no_font_reads_is_driven_blind(vnc: VncServer) -> None:
    channel = VncChannel(Secret(vnc.url), reader=GlyphReader([]))
    channel.open(timeout=10)
    try:
        assert not channel.has_output
        assert channel.screen is None
        channel.send("echo blind\r")
        assert channel.read(1.0) == ""
    finally:
        channel.close()
