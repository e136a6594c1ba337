"""The lab's VNC console: Xvfb, an xterm running `login` over and over, and x11vnc showing it.

What a cloud VM's VNC console shows is a text console with a login prompt; an xterm running
/bin/login on a virtual X display is the same for a VNC client, and x11vnc is a real VNC server.
With no window manager the keyboard follows the pointer, which X puts in the middle of the
screen, so the xterm covers the middle. `login` is restarted whenever it ends (a logout, or a
Ctrl-D at the prompt), as a getty is.

Each process has the lab directory in its command line, so `down` can prove a PID is ours.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from recovery.errors import LabError
from recovery.lab.commands import find_tool
from recovery.lab.directory import create_exclusive
from recovery.lab.layout import Layout
from recovery.lab.processes import alive, children, free_port, log_tail, poll_until, spawn

APT_PACKAGES = "xvfb x11vnc xterm xauth"
TOOLS = (("Xvfb", "xvfb"), ("x11vnc", "x11vnc"), ("xterm", "xterm"))
# What each process's command line contains, for lab._is_ours; stop order: the public face first.
PROGRAMS = {"x11vnc": "x11vnc", "vnc_xterm": "xterm", "xvfb": "Xvfb"}
# Each process's own log in the lab directory, for the errors here and `lab status`.
LOGS = {"x11vnc": "x11vnc.log", "vnc_xterm": "xterm.log", "xvfb": "xvfb.log"}
_X11_SOCKETS = Path("/tmp/.X11-unix")  # noqa: S108 - where every X server puts its socket
_FIRST_DISPLAY = 40
# `trap : INT` keeps the loop alive when Ctrl-C reaches the whole foreground group; a handler,
# unlike an ignored signal, is reset for `login`, which must still see its own Ctrl-C.
_LOGIN_LOOP = "trap : INT\nwhile :; do /bin/login; sleep 0.2; done\n"


def require_tools() -> None:
    """Raises LabError naming the package of a missing tool, before anything starts."""
    for name, package in TOOLS:
        try:
            find_tool(name, package)
        except LabError as exc:
            raise LabError(f"{exc} The lab's VNC console needs: apt-get install -y --no-install-recommends "
                           f"{APT_PACKAGES}") from exc


def files(layout: Layout) -> tuple[Path, ...]:
    """What the VNC console leaves in the lab directory besides logs: `down` removes them."""
    return (layout.directory / "vnc_login.sh", layout.directory / "Xvfb_screen0")


def _free_display() -> int:
    for number in range(_FIRST_DISPLAY, _FIRST_DISPLAY + 100):
        lock = Path(f"/tmp/.X{number}-lock")  # noqa: S108 - X's own lock file, only looked at
        if not (_X11_SOCKETS / f"X{number}").exists() and not lock.exists():
            return number
    raise LabError(f"No free X display between :{_FIRST_DISPLAY} and :{_FIRST_DISPLAY + 99}.")


def start(layout: Layout, record: Callable[[str, int], None], timeout: float) -> tuple[str, int]:
    """Start the three processes, each passed to `record` (name, PID) as it starts; returns (URL, port).

    Raises:
        LabError: a part failed to start or the login did not appear within `timeout` seconds.
    """
    directory = layout.directory
    display = _free_display()
    xvfb = spawn(
        [find_tool("Xvfb", "xvfb"), f":{display}", "-screen", "0", "1024x768x24", "-nolisten", "tcp",
         "-fbdir", f"{directory}/"],  # its screen file there; the path also marks the process as ours
        log_path=directory / LOGS["xvfb"],
        record=lambda pid: record("xvfb", pid),
    )
    socket_path = _X11_SOCKETS / f"X{display}"
    if not poll_until(lambda: socket_path.exists() or not alive(xvfb), timeout) or not alive(xvfb):
        raise LabError(f"Xvfb did not start on :{display}: {log_tail(directory / LOGS['xvfb'])}")
    loop = directory / "vnc_login.sh"
    create_exclusive(loop, _LOGIN_LOOP)
    xterm = spawn(
        [find_tool("xterm", "xterm"), "-display", f":{display}", "-geometry", "150x50+0+0", "-e", "/bin/sh",
         str(loop)],
        log_path=directory / LOGS["vnc_xterm"],
        record=lambda pid: record("vnc_xterm", pid),
    )
    port = free_port()
    x11vnc = spawn(
        [find_tool("x11vnc", "x11vnc"), "-display", f":{display}", "-rfbport", str(port), "-localhost", "-nopw",
         "-forever", "-shared", "-noxdamage", "-o", str(directory / LOGS["x11vnc"])],
        log_path=directory / "x11vnc.stderr.log",
        record=lambda pid: record("x11vnc", pid),
    )
    if not poll_until(lambda: _login_running(xterm) or not alive(xterm), timeout):
        raise LabError(f"The VNC console's xterm shows no login: {log_tail(directory / LOGS['vnc_xterm'])}")
    if not poll_until(lambda: answers(port) or not alive(x11vnc), timeout) or not alive(x11vnc):
        raise LabError(f"x11vnc did not start on port {port}: {log_tail(directory / LOGS['x11vnc'])}")
    return f"vnc://127.0.0.1:{port}", port


def _login_running(xterm_pid: int) -> bool:
    """True once /bin/login runs under the xterm (xterm -> sh loop -> login), reading its pty."""
    return any(name == "login" for shell, _ in children(xterm_pid) for _, name in children(shell))


def answers(port: int) -> bool:
    """True once the port speaks RFB (the probe hangs up at once, as a viewer that changed its mind)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            return conn.recv(12).startswith(b"RFB ")
    except OSError:
        return False
