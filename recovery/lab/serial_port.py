"""The lab's serial line: one pty with a login on it, reachable on a loopback TCP port.

A VM's serial console is a single persistent terminal. QEMU exposes it with
`-serial tcp:HOST:PORT,server` and Nova's serial proxy puts a websocket in front
of that; whoever connects last gets the line, and nothing is lost or reset when
a client goes away. This program recreates that on the host so the recovery code
meets the same behaviour as on a real cloud:

* one pty for the whole life of the lab, with `agetty` (which runs `/bin/login`)
  on its slave side, respawned whenever it exits, as getty is on a real VM;
* a loopback TCP listener; a new connection closes the previous one;
* the guest's output is read and dropped while no client is connected, so the
  guest never blocks on a full terminal buffer.

It only relays bytes: the console password crosses it, so it never logs data.
It is stdlib-only and run as a script with `python -I`, so it starts fast and
imports nothing from the caller's environment.

Usage: python -I serial_port.py --port-file FILE [--host 127.0.0.1]
The bound port (we bind port 0, so there is no race for a free port) is written
to FILE once the listener is up.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

log = logging.getLogger("recovery.lab.serial_port")

_CHUNK = 4096
# Bytes from the client not yet taken by the guest. Past this we stop reading the
# client, so a fast sender gets TCP back-pressure instead of unbounded memory.
_MAX_PENDING = 64 * 1024
# A client that cannot take the guest's output for this long is dropped, as a
# serial line without flow control would drop the bytes.
_SEND_TIMEOUT = 5.0
# A getty that dies sooner than this after starting is failing, not logging out:
# wait before respawning it, longer each time, so a broken setup does not spin.
_HEALTHY_RUN = 1.0
_MAX_BACKOFF = 5.0
_STOP_GRACE = 0.8  # three of these stay within the parent's grace
_SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _guest_command(tty: str) -> tuple[list[str], bool]:
    """The program to run on the line, and whether it needs the tty as stdio.

    agetty opens the tty itself, becomes its session leader and prints the
    `login:` prompt as a real VM does. Without agetty, /bin/login on the tty as
    stdin/stdout/stderr gives the same dialogue.
    """
    search = os.environ.get("PATH", "") + ":" + _SYSTEM_PATH
    agetty = shutil.which("agetty", path=search)
    if agetty:
        return [agetty, "--noclear", "-L", tty.removeprefix("/dev/"), "115200", "vt102"], False
    login = shutil.which("login", path=search) or "/bin/login"
    return [login], True


def _take_controlling_tty() -> None:
    """In the child, make stdin (the pty slave) the controlling terminal, as getty would."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class SerialLine:
    """The pty, its guest program, and the single TCP client that may be attached."""

    def __init__(self, host: str) -> None:
        # Holding the slave open keeps the line alive between logins: without it
        # the master reads EIO each time the guest closes the tty.
        self._master, self._slave = os.openpty()
        os.set_blocking(self._master, False)
        self._tty = os.ttyname(self._slave)
        self._listener = socket.create_server((host, 0), backlog=8)
        self._listener.setblocking(False)
        self._client: socket.socket | None = None
        self._client_reading = False
        self._to_guest = bytearray()
        self._guest: subprocess.Popen[bytes] | None = None
        self._guest_pidfd = -1
        self._guest_started = 0.0
        self._backoff = 0.0
        self._next_spawn = time.monotonic()
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._master, selectors.EVENT_READ, self._on_master)
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, self._on_signal)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def serve(self) -> None:
        """Run until SIGTERM, SIGINT or SIGHUP, then end the guest and close the line."""
        signal.set_wakeup_fd(self._wakeup_w.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)
        log.info("serial line %s listening on port %d", self._tty, self.port)
        try:
            while not self._stopping:
                self._spawn_if_due()
                for key, events in self._selector.select(self._select_timeout()):
                    key.data(events)
        finally:
            self._close()

    def _select_timeout(self) -> float | None:
        if self._guest is not None:
            return None
        return max(0.0, self._next_spawn - time.monotonic())

    def _spawn_if_due(self) -> None:
        if self._guest is not None or time.monotonic() < self._next_spawn:
            return
        argv, on_stdio = _guest_command(self._tty)
        stdio = self._slave if on_stdio else subprocess.DEVNULL
        self._guest = subprocess.Popen(
            argv,
            stdin=stdio,
            stdout=stdio,
            stderr=self._slave if on_stdio else None,
            # init and systemd start getty as a session leader; agetty relies on
            # that to make the line its controlling tty (else: no job control).
            start_new_session=True,
            preexec_fn=_take_controlling_tty if on_stdio else None,
        )
        self._guest_started = time.monotonic()
        self._guest_pidfd = os.pidfd_open(self._guest.pid)
        self._selector.register(self._guest_pidfd, selectors.EVENT_READ, self._on_guest_exit)
        log.info("started %s (pid %d) on %s", Path(argv[0]).name, self._guest.pid, self._tty)

    def _on_guest_exit(self, _events: int) -> None:
        assert self._guest is not None
        code = self._guest.wait()
        self._selector.unregister(self._guest_pidfd)
        os.close(self._guest_pidfd)
        ran = time.monotonic() - self._guest_started
        self._backoff = 0.0 if ran >= _HEALTHY_RUN else min(_MAX_BACKOFF, self._backoff * 2 or 0.2)
        self._next_spawn = time.monotonic() + self._backoff
        log.info("guest pid %d exited with %d after %.1fs; respawning", self._guest.pid, code, ran)
        self._guest = None

    def _accept(self, _events: int) -> None:
        try:
            conn, peer = self._listener.accept()
        except BlockingIOError:
            return
        if self._client is not None:
            log.info("new client %s:%d replaces the previous one", *peer[:2])
            self._drop_client()
        else:
            log.info("client %s:%d connected", *peer[:2])
        conn.settimeout(_SEND_TIMEOUT)
        self._client = conn
        self._update_interest()

    def _drop_client(self) -> None:
        if self._client is None:
            return
        self._read_client(False)
        self._client.close()
        self._client = None

    def _on_client(self, _events: int) -> None:
        assert self._client is not None
        try:
            data = self._client.recv(_CHUNK)
        except OSError:
            data = b""
        if not data:
            log.info("client disconnected")
            self._drop_client()
            return
        self._to_guest += data
        self._update_interest()

    def _on_master(self, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            with contextlib.suppress(BlockingIOError):
                del self._to_guest[: os.write(self._master, self._to_guest)]
            self._update_interest()
        if events & selectors.EVENT_READ:
            self._from_guest()

    def _from_guest(self) -> None:
        try:
            data = os.read(self._master, _CHUNK)
        except BlockingIOError:
            return
        if self._client is None:
            return
        try:
            self._client.sendall(data)
        except OSError:
            log.info("client stopped reading; dropped it")
            self._drop_client()

    def _update_interest(self) -> None:
        """Watch the master for room only while bytes wait; read the client only below the cap."""
        master_events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._to_guest else 0)
        self._selector.modify(self._master, master_events, self._on_master)
        if self._client is not None:
            self._read_client(len(self._to_guest) < _MAX_PENDING)

    def _read_client(self, reading: bool) -> None:
        if self._client is None or reading == self._client_reading:
            return
        if reading:
            self._selector.register(self._client, selectors.EVENT_READ, self._on_client)
        else:
            self._selector.unregister(self._client)
        self._client_reading = reading

    def _on_signal(self, _events: int) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wakeup_r.recv(_CHUNK)
        self._stopping = True

    def _close(self) -> None:
        """Hang up the line, give the session a moment to end by itself, then end it.

        Closing both ends is a hangup, as when a serial cable is pulled: the
        session gets SIGHUP, and the shell can run its logout steps and save its
        history. Whatever still runs after a grace period gets SIGTERM, then SIGKILL.
        """
        self._drop_client()
        self._listener.close()
        os.close(self._master)
        os.close(self._slave)
        if self._guest is None:
            return
        for escalation in (None, signal.SIGTERM, signal.SIGKILL):
            if escalation is not None:
                self._guest.send_signal(escalation)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._guest.wait(_STOP_GRACE)
                return


def _write_port(path: Path, port: int) -> None:
    """Publish the port atomically: the parent polls for the file and must never read half of it.

    The temporary file is new (mkstemp: O_EXCL, no symlink followed) and the rename
    replaces a name, never writes through one.
    """
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(descriptor, "w") as out:
        out.write(f"{port}\n")
    os.replace(tmp, path)


def _loopback(host: str) -> str:
    if ipaddress.ip_address(host) not in ipaddress.ip_network("127.0.0.0/8"):
        raise argparse.ArgumentTypeError(f"{host} is not a 127.0.0.0/8 address")
    return host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a pty running agetty on a TCP port.")
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--host", type=_loopback, default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    line = SerialLine(args.host)
    _write_port(args.port_file, line.port)
    line.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
