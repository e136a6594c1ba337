"""The VNC channel against real VNC servers: x11vnc on Xvfb and Xtigervnc, plain and behind websockify.

x11vnc takes keysyms (with our explicit Shift); Xtigervnc advertises the QEMU Extended Key Event
pseudo-encoding, so it takes scancodes: both typing paths run against a real server.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from recovery.channels import channel_for
from recovery.errors import ChannelClosed, ChannelError, ChannelTimeout, LoginRejected
from recovery.safety.redact import Secret
from tests.e2e.faults import CuttingProxy
from tests.integration.vnc_fixture import (
    PRINTABLE,
    VncServer,
    opened,
    require_tools,
    running_vnc,
    start_server,
)
from tests.processes import stop_child

SERVERS = [("x11vnc", False), ("x11vnc", True), ("tigervnc", False), ("tigervnc", True)]


@pytest.fixture(scope="module", params=SERVERS, ids=[f"{kind}{'-ws' if ws else ''}" for kind, ws in SERVERS])
def vnc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VncServer]:
    kind, websocket = request.param
    with running_vnc(kind, tmp_path_factory.mktemp(kind), websocket=websocket) as server:
        yield server


def wait_for_file(path: Path, expected: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if len(text) >= len(expected):
            break
        time.sleep(0.05)
    return text


def test_types_every_printable_ascii_character_exactly(vnc: VncServer) -> None:
    channel = opened(vnc.url)
    try:
        assert channel.qemu_keys == (vnc.kind == "tigervnc")  # each typing path is really exercised
        with pytest.raises(ChannelError, match="Nothing was typed"):
            channel.send("echo x \u00e9")  # if "echo x " were typed, the next line would go wrong
        target = vnc.directory / f"typed-{time.monotonic_ns()}.txt"
        expected = f"{PRINTABLE}\n{PRINTABLE[::-1]}\n"
        channel.send(f"cat > {target.name}\r")
        started = time.monotonic()
        channel.send(expected.replace("\n", "\r"))
        elapsed = time.monotonic() - started
        channel.send("\x04")  # Ctrl-D: cat ends, the shell prompt returns
    finally:
        channel.close()
    assert wait_for_file(target, expected) == expected
    print(f"{vnc.kind} {vnc.url.split(':')[0]}: {len(expected) / elapsed:.0f} characters/s")


def test_screenshot_is_a_png_of_the_screen(vnc: VncServer, tmp_path: Path) -> None:
    channel = opened(vnc.url)
    try:
        assert channel.screenshot(tmp_path / "screen.png") == (1024, 768)
    finally:
        channel.close()
    data = (tmp_path / "screen.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (1024, 768, 8, 2)
    idat_length = struct.unpack(">I", data[33:37])[0]
    rows = zlib.decompress(data[41:41 + idat_length])
    assert len(rows) == height * (1 + width * 3)
    middle = rows[(height // 2) * (1 + width * 3):][1:1 + width * 3]
    assert (middle[30:33], middle[-3:]) == (b"\xff" * 3, b"\0" * 3)  # the xterm's white page, the black root


@pytest.fixture(scope="module")
def x11vnc_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """Two x11vnc servers: one with -passwd, one with an -rfbauth file; returns their ports."""
    require_tools()
    directory = tmp_path_factory.mktemp("x11vnc-auth")
    rfbauth = directory / "passwd"
    subprocess.run(["x11vnc", "-storepasswd", "file-pw-1", str(rfbauth)], check=True, capture_output=True)
    with ExitStack() as stack:
        _, plain = start_server(stack, "x11vnc", directory, ("-passwd", "s3cret-pw"))
        _, stored = start_server(stack, "x11vnc", directory, ("-rfbauth", str(rfbauth)))
        yield plain, stored


def test_vnc_password_right_and_wrong(x11vnc_password: tuple[int, int]) -> None:
    plain, stored = x11vnc_password
    opened(f"vnc://127.0.0.1:{plain}", "s3cret-pw").close()
    opened(f"vnc://:file-pw-1@127.0.0.1:{stored}").close()  # the password in the URL works too
    with pytest.raises(LoginRejected, match="rejected the VNC password") as wrong:
        opened(f"vnc://127.0.0.1:{stored}", "not-it")
    assert "not-it" not in str(wrong.value)
    with pytest.raises(LoginRejected, match="asks for a VNC password, and none was given"):
        opened(f"vnc://127.0.0.1:{plain}")


def test_rejected_token_is_a_closed_channel(tmp_path: Path) -> None:
    """websockify's token plugin, like Nova's proxy, hangs up on an unknown token."""
    tokens = tmp_path / "tokens"
    tokens.write_text("good: 127.0.0.1:1\n")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with listener, ExitStack() as stack:
        log = stack.enter_context((tmp_path / "websockify.log").open("ab"))
        process = subprocess.Popen(
            [sys.executable, "-m", "websockify", "--inetd", "--token-plugin", "TokenFile", "--token-source",
             str(tokens)], stdin=listener.fileno(), stdout=log, stderr=log)
        stack.callback(stop_child, process, 5.0)
        url = f"http://127.0.0.1:{port}/vnc_auto.html?path=%3Ftoken%3Dexpired-token-123"
        with pytest.raises(ChannelClosed, match="token is rejected or has expired") as closed:
            opened(url)
    assert "expired-token-123" not in str(closed.value)


def test_a_server_that_never_sends_server_init_times_out() -> None:
    """A server that accepts security None and then says nothing more."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        conn.sendall(b"RFB 003.008\n")
        conn.recv(12)
        conn.sendall(b"\x01\x01")
        conn.recv(1)
        conn.sendall(b"\0\0\0\0")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    channel = channel_for(Secret(f"vnc://127.0.0.1:{port}"))
    started = time.monotonic()
    with pytest.raises(ChannelTimeout, match="no ServerInit"):
        channel.open(timeout=1.0)
    assert time.monotonic() - started < 3
    thread.join(timeout=2)
    for conn in (*held, listener):
        conn.close()


def test_a_connection_dropped_mid_typing_is_a_closed_channel(tmp_path: Path) -> None:
    with running_vnc("x11vnc", tmp_path) as server:
        tilde_down = struct.pack(">BBxxI", 4, 1, ord("~"))
        with CuttingProxy(server.port, trigger=tilde_down, extra=100) as proxy:
            channel = opened(f"vnc://127.0.0.1:{proxy.port}")
            try:
                with pytest.raises(ChannelClosed, match="closed the connection mid-conversation"):
                    channel.send("~" + "a" * 400)
            finally:
                channel.close()
            assert proxy.cut_done.is_set()


def test_urls() -> None:
    """Every URL form reaches the VNC channel; a noVNC page without a token is refused, masked."""
    from recovery.channels.vnc import endpoint

    assert endpoint("http://h:6080/vnc_auto.html?path=%3Ftoken%3Dabc").websocket == "ws://h:6080/?token=abc"
    assert endpoint("https://h:6080/vnc_lite.html?token=abc").websocket == "wss://h:6080/?token=abc"
    assert endpoint("vnc+wss://h:443/websockify?token=t").websocket == "wss://h:443/websockify?token=t"
    assert (endpoint("vnc://h").host, endpoint("vnc://h").port) == ("h", 5900)
    with pytest.raises(ChannelError, match="neither a path= nor a token="):
        endpoint("http://h:6080/vnc_auto.html?password=hunter2")
    with pytest.raises(ChannelError, match="takes no console password"):
        channel_for(Secret("ws://h:6083/?token=t"), password=Secret("pw"))
