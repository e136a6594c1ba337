"""Typing through VNC: characters per second and wrong characters, our channel against vncdotool.

    .venv/bin/pip install vncdotool      # for the comparison only; recovery does not use it
    .venv/bin/python benchmarks/vnc_typing.py [--rounds 9]

Each server shows an xterm with a shell; the text typed is `cat > FILE`, a 400-character
ssh-rsa public key line, Enter and Ctrl-D, and FILE is compared with the line. Servers: x11vnc
on Xvfb (keysyms with explicit Shift) and Xtigervnc (it advertises QEMU extended key events, so
scancodes), each over plain TCP and behind websockify. Speed counts until cat has written the
line, since vncdotool's keyPress returns before its key is on the wire. vncdotool types the same line with one
keyPress per character on plain TCP only (it has no websocket transport), in rounds alternating with
ours; it sends the keysym without Shift, which X servers accept, so it sends ~20% fewer key events
than we do for this line (we press Shift around each run of capitals). QEMU's own VNC server
(which drops the implied Shift) is benchmarks/qemu_vnc_typing.py.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import optional_module, require_programs
from tests.integration.vnc_fixture import VncServer, opened, running_vnc

LINE = ("ssh-rsa " + base64.b64encode(os.urandom(290)).decode() + " bench@vnc")[:400]


def ours(server: VncServer, target: Path) -> float:
    channel = opened(server.url, timeout=10)
    try:
        channel.send(f"cat > {target.name}\r")
        started = time.monotonic()
        channel.send(LINE + "\r")
        elapsed = arrived(target, started)
        channel.send("\x04")
    finally:
        channel.close()
    return elapsed


def vncdotool(server: VncServer, target: Path) -> float:
    from vncdotool import api

    client = api.connect(f"127.0.0.1::{server.port}")
    try:
        for key in f"cat > {target.name}":
            client.keyPress(key)
        client.keyPress("enter")
        started = time.monotonic()
        for key in LINE:
            client.keyPress(key)
        client.keyPress("enter")
        elapsed = arrived(target, started)
        client.keyDown("ctrl")
        client.keyPress("d")
        client.keyUp("ctrl")
    finally:
        client.disconnect()
    return elapsed


def arrived(target: Path, started: float) -> float:
    """Seconds from `started` until cat has written the whole line (or 20 s): typed is not yet arrived."""
    while time.monotonic() < started + 20 and not (target.exists() and target.read_text().endswith("\n")):
        time.sleep(0.005)
    return time.monotonic() - started


def wrong(target: Path) -> int:
    """Characters that differ from the line (a missing or extra one counts as wrong)."""
    got = target.read_text().rstrip("\n") if target.exists() else ""
    return sum(a != b for a, b in zip(got, LINE, strict=False)) + abs(len(got) - len(LINE))


def measure(typers: dict[str, Callable[[VncServer, Path], float]], server: VncServer, rounds: int) -> None:
    """Rounds alternate between the typers, so a noisy moment on the machine hits them alike."""
    speeds: dict[str, list[float]] = {name: [] for name in typers}
    errors = dict.fromkeys(typers, 0)
    for round_ in range(rounds):
        for name, typer in typers.items():
            target = server.directory / f"{name.replace(' ', '_')}-{round_}.txt"
            elapsed = typer(server, target)
            errors[name] += wrong(target)
            speeds[name].append(len(LINE) / elapsed)
    for name, values in speeds.items():
        print(f"{name:<34} {statistics.median(values):>7.0f} chars/s (range {min(values):.0f}-{max(values):.0f})"
              f"   wrong characters: {errors[name]} of {rounds * len(LINE)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    require_programs("Xvfb", "x11vnc", "xterm", "Xtigervnc", "websockify")
    compare = optional_module("vncdotool", ".venv/bin/pip install vncdotool", role="its comparison row")
    print(f"typing a {len(LINE)}-character line, {args.rounds} rounds, median speed")
    with tempfile.TemporaryDirectory() as scratch:
        for kind in ("x11vnc", "tigervnc"):
            for websocket in (False, True):
                directory = Path(scratch) / f"{kind}-{websocket}"
                directory.mkdir()
                with running_vnc(kind, directory, websocket=websocket) as server:
                    typers = {f"recovery {kind} {'websocket' if websocket else 'tcp'}": ours}
                    if compare and not websocket:
                        typers[f"vncdotool {kind} tcp"] = vncdotool
                    measure(typers, server, args.rounds)
    if compare:
        from vncdotool import api

        api.shutdown()  # its Twisted reactor runs in a thread and cannot be restarted: stop it once, at the end


if __name__ == "__main__":
    main()
