"""Real VNC servers on 127.0.0.1 for the VNC channel tests: x11vnc on Xvfb, and Xtigervnc.

Each shows one xterm covering the middle of the screen (with no window manager the keyboard
follows the pointer, which X puts in the middle) running a shell in a scratch directory, so a
test can type `cat > FILE` and read FILE back. Optionally behind websockify, as noVNC has it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from recovery.channels import channel_for
from recovery.channels.vnc import VncChannel
from recovery.lab.processes import free_port, listening_addresses, poll_until
from recovery.lab.vnc import answers
from recovery.safety.redact import Secret
from tests.processes import stop_child

READY_TIMEOUT = 20.0
# Every character a VNC console must type exactly: the tests type it forwards and backwards.
PRINTABLE = "".join(chr(code) for code in range(0x20, 0x7F))
PACKAGES = "xvfb x11vnc xterm tigervnc-standalone-server xauth"


@dataclass(frozen=True)
class VncServer:
    kind: str  # "x11vnc" or "tigervnc"
    port: int
    directory: Path  # the xterm shell's working directory
    websocket_port: int | None = None

    @property
    def url(self) -> str:
        if self.websocket_port is not None:
            return f"vnc+ws://127.0.0.1:{self.websocket_port}/"
        return f"vnc://127.0.0.1:{self.port}"


def opened(url: str, password: str | None = None, timeout: float = 10) -> VncChannel:
    """A VNC channel to `url`, chosen by scheme as a playbook's console.open chooses it, and open."""
    channel = channel_for(Secret(url), password=Secret(password) if password is not None else None)
    assert isinstance(channel, VncChannel)
    channel.open(timeout=timeout)
    return channel


def require_tools() -> None:
    for tool in ("Xvfb", "x11vnc", "xterm", "Xtigervnc"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing: apt-get install -y --no-install-recommends {PACKAGES}")


def wait_banner(port: int, timeout: float = READY_TIMEOUT) -> None:
    """Poll until the port answers with an RFB banner, as the lab waits for its own x11vnc."""
    if not poll_until(lambda: answers(port), timeout):
        raise RuntimeError(f"no VNC server answered on port {port} within {timeout:.0f} s")


def _start_x(stack: ExitStack, argv: list[str], log: Path) -> str:
    """Start an X server with -displayfd (it picks a free display); returns ":N"."""
    read_end, write_end = os.pipe()
    out = stack.enter_context(log.open("ab"))
    process = subprocess.Popen([*argv, "-displayfd", str(write_end)], stdout=out, stderr=out, pass_fds=(write_end,))
    stack.callback(stop_child, process, 5.0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        display = pipe.readline().strip()
    if not display:
        raise RuntimeError(f"{argv[0]} did not start: {log.read_text(errors='replace')[-500:]}")
    return f":{display}"


def _spawn(stack: ExitStack, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    out = stack.enter_context(log.open("ab"))
    process = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
    stack.callback(stop_child, process, 5.0)


def start_xterm(stack: ExitStack, display: str, command: list[str], log: Path, ready: Path) -> None:
    """An xterm big enough to cover the screen's middle, where the pointer (and so the keyboard) is.

    Returns once the command has created `ready`.
    """
    env = {**os.environ, "DISPLAY": display}
    _spawn(stack, ["xterm", "-geometry", "150x50+0+0", "-e", *command], log, env)
    if not poll_until(ready.exists, READY_TIMEOUT):
        raise RuntimeError(f"the xterm on {display} did not start its shell: {log.read_text()[-500:]}")


def start_websockify(stack: ExitStack, target: int, log: Path) -> int:
    port = free_port()
    _spawn(stack, [sys.executable, "-m", "websockify", f"127.0.0.1:{port}", f"127.0.0.1:{target}"], log)
    if not poll_until(lambda: bool(listening_addresses(port)), READY_TIMEOUT):
        raise RuntimeError(f"websockify did not listen on {port}")
    return port


def start_server(stack: ExitStack, kind: str, directory: Path, vnc_args: tuple[str, ...] = ()) -> tuple[str, int]:
    """Start `kind` ("x11vnc" on Xvfb, or "tigervnc"); returns (display, rfb port) once it answers."""
    port = free_port()
    if kind == "x11vnc":
        display = _start_x(stack, ["Xvfb", "-screen", "0", "1024x768x24", "-nolisten", "tcp"], directory / "xvfb.log")
        auth = list(vnc_args) or ["-nopw"]
        _spawn(stack, ["x11vnc", "-display", display, "-rfbport", str(port), "-localhost", *auth,
                       "-forever", "-shared", "-noxdamage"], directory / "x11vnc.log")
    else:
        security = list(vnc_args) or ["-SecurityTypes", "None"]
        display = _start_x(stack, ["Xtigervnc", "-rfbport", str(port), "-localhost=1", "-geometry", "1024x768",
                                   *security], directory / "tigervnc.log")
    wait_banner(port)
    return display, port


@contextmanager
def running_vnc(kind: str, directory: Path, *, websocket: bool = False) -> Iterator[VncServer]:
    """A VNC server showing an xterm with a root shell in `directory`."""
    require_tools()
    with ExitStack() as stack:
        display, port = start_server(stack, kind, directory)
        ready = directory / "shell-ready"
        start_xterm(stack, display, ["sh", "-c", f"cd '{directory}' && touch shell-ready && exec sh"],
                    directory / "xterm.log", ready)
        ws_port = start_websockify(stack, port, directory / "websockify.log") if websocket else None
        yield VncServer(kind, port, directory, ws_port)
