"""The lab's serial console: our pty bridge (serial_port.py) behind websockify, as Nova has it.

Nova's serial proxy takes `ws://host:6083/?token=T`, looks the token up and
relays raw TTY bytes to QEMU's TCP serial port. websockify's TokenFile plugin
does the same lookup from a file it rereads on every connection, which also
lets a test repoint the token at a fault-injecting proxy while the lab runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from recovery.errors import LabError
from recovery.lab.layout import Layout
from recovery.lab.processes import alive, log_tail, poll_until, spawn
from recovery.safety.files import write_atomic

_SERIAL_PORT_SCRIPT = Path(__file__).with_name("serial_port.py")
_PROMPT = b"login:"
_PROBE_READ_TIMEOUT = 0.5
_RETRY_INTERVAL = 0.1
_PROBE_RESEND = 1.0  # a carriage return sent before agetty opened the line is lost


def start_serial_port(layout: Layout, record: Callable[[int], None]) -> int:
    """Start the pty bridge; returns its PID, given to `record` first. Its port appears later in `serial_port_file`.

    Run as a script with `-I` rather than `-m recovery.lab.serial_port`: it is
    stdlib-only, and this way it imports nothing from the recovery package or
    the caller's environment, which keeps it quick and independent.
    """
    return spawn(
        [
            sys.executable,
            "-I",
            str(_SERIAL_PORT_SCRIPT),
            "--port-file",
            str(layout.serial_port_file),
        ],
        log_path=layout.serial_port_log,
        record=record,
    )


def wait_serial_port(layout: Layout, *, pid: int, timeout: float) -> int:
    """The TCP port the bridge bound, once it has written it.

    Raises:
        LabError: the bridge exited or wrote no port within `timeout` seconds.
    """
    path = layout.serial_port_file
    if poll_until(lambda: path.exists() or not alive(pid), timeout) and path.exists():
        return int(path.read_text())
    raise LabError(
        f"The lab's serial port bridge (pid {pid}) did not start listening within "
        f"{timeout:.0f} s. Its log {layout.serial_port_log} ends with: "
        f"{log_tail(layout.serial_port_log)}"
    )


def require_websockify() -> None:
    """websockify is an optional extra; say how to get it rather than fail at start.

    Raises:
        LabError: websockify is not installed in this Python environment.
    """
    if importlib.util.find_spec("websockify") is None:
        raise LabError(
            "The lab's console needs websockify in the Python environment running recovery "
            f"({sys.executable}). Install the lab extra (pip install 'recovery[lab]') and "
            "start the lab again; nothing was started."
        )


def start_websockify(layout: Layout, record: Callable[[int], None]) -> tuple[int, int]:
    """Start websockify on a port we bind ourselves; returns (pid, port), the PID given to `record` first.

    The listening socket is handed over as stdin (`--inetd`), so the port is
    known at once and no other program can take it between choosing and binding.
    """
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        pid = spawn(
            [
                sys.executable,
                "-m",
                "websockify",
                "--inetd",
                "--token-plugin",
                "TokenFile",
                "--token-source",
                str(layout.tokens),
            ],
            log_path=layout.websockify_log,
            record=record,
            stdin_fd=listener.fileno(),
        )
        return pid, int(listener.getsockname()[1])


def write_target(layout: Layout, token: str, host: str, port: int) -> None:
    """Point `token` at host:port, replacing the file atomically (websockify rereads it)."""
    write_atomic(layout.tokens, f"{token}: {host}:{port}\n")


def wait_login_prompt(layout: Layout, *, url: str, pids: dict[str, int], timeout: float) -> None:
    """Poll the websocket console until a carriage return brings back a `login:` prompt.

    This proves the whole chain (websockify, token, bridge, agetty) and leaves the
    line at a fresh prompt for the first real client.

    Raises:
        LabError: a console process exited, or no prompt came within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [name for name, pid in pids.items() if not alive(pid)]
        if dead:
            raise LabError(_console_failure(layout, f"{' and '.join(dead)} exited"))
        if _prompt_seen(url, deadline):
            return
    raise LabError(_console_failure(layout, f"showed no login prompt within {timeout:.0f} s"))


def _prompt_seen(url: str, deadline: float) -> bool:
    import websocket  # websocket-client: only needed once the lab is starting

    # websockify may still be importing: its socket is already listening, so the
    # handshake simply waits, up to the deadline.
    handshake_timeout = max(0.1, deadline - time.monotonic())
    try:
        ws = websocket.create_connection(url, subprotocols=["binary"], timeout=handshake_timeout)
    except (OSError, websocket.WebSocketException):
        time.sleep(_RETRY_INTERVAL)
        return False
    ws.settimeout(_PROBE_READ_TIMEOUT)
    seen = b""
    next_return = 0.0
    try:
        while time.monotonic() < deadline:
            if time.monotonic() >= next_return:
                ws.send_binary(b"\r")
                next_return = time.monotonic() + _PROBE_RESEND
            with contextlib.suppress(websocket.WebSocketTimeoutException):
                frame = ws.recv()
                if not frame:
                    return False
                seen += frame if isinstance(frame, bytes) else frame.encode()
                if _PROMPT in seen:
                    return True
    except (OSError, websocket.WebSocketException):
        return False
    finally:
        ws.close(timeout=_PROBE_READ_TIMEOUT)
        if ws.sock is not None:  # close() skips this when the server closed first
            ws.sock.close()
    return False


def _console_failure(layout: Layout, what: str) -> str:
    return (
        f"The lab's serial console {what}. The bridge log {layout.serial_port_log} ends with: "
        f"{log_tail(layout.serial_port_log)}; websockify's log {layout.websockify_log} ends "
        f"with: {log_tail(layout.websockify_log)}"
    )
