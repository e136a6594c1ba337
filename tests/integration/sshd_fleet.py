"""More real sshd servers beside the lab's: other host keys, up to 16 ports each, for audits of a fleet.

The lab (`recovery.lab.up`) provides the user, its home and authorized_keys; an
`ExtraSSHD` is one more OpenSSH server for that user with host keys of its own,
so a test can present a host whose key changed, or several key types. One sshd
listens on at most 16 ports (OpenSSH's MAX_LISTEN_SOCKS). Its configuration is
the lab's (`recovery.lab.sshd.config_text`), `MaxStartups` raised for a fleet's
many concurrent clients included.

The benchmark (benchmarks/audit_fleet.py) builds its fleets from the same parts.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recovery.lab import commands, processes, sshd
from recovery.lab.commands import fingerprint, generate_key

MAX_PORTS_PER_SSHD = 16
BIND_ATTEMPTS = 3  # fresh ports for an sshd that lost one of its ports to another server
HOST = "127.0.0.1"


def known_hosts_line(port: int, public_line: str) -> str:
    """A known_hosts line vouching for `public_line` (its type and key; no comment) at HOST:`port`."""
    return f"[{HOST}]:{port} " + " ".join(public_line.split()[:2])


@dataclass(frozen=True)
class ExtraSSHD:
    """A running sshd: its ports and its host keys (public lines by type)."""

    ports: tuple[int, ...]
    host_keys: dict[str, str]  # "ed25519" -> "ssh-ed25519 AAAA... comment"

    def fingerprint(self, key_type: str) -> str:
        return fingerprint(self.host_keys[key_type])

    def known_hosts_lines(self, key_type: str) -> list[str]:
        """known_hosts lines vouching for every port with this server's key of `key_type`."""
        return [known_hosts_line(port, self.host_keys[key_type]) for port in self.ports]


@contextmanager
def extra_sshd(
    directory: Path,
    user: str,
    *,
    ports: int = 1,
    key_types: tuple[str, ...] = ("ed25519",),
    accept_keys: bool = True,
    name: str = "extra",
    address: str = HOST,
    port_numbers: tuple[int, ...] = (),
) -> Iterator[ExtraSSHD]:
    """Start an sshd for `user` on `ports` free ports; stopped on exit.

    :param directory: where its config, host keys and log go (created).
    :param key_types: `ssh-keygen -t` types of its host keys, e.g. ("ecdsa", "ed25519").
    :param accept_keys: False makes it refuse every key (`AuthorizedKeysFile none`).
    :param address: a loopback address to listen on instead of 127.0.0.1, with
        `port_numbers` instead of free ports: a VM's `127.x.y.z:22` (root only), as
        a cloud's server is audited on port 22, without taking 127.0.0.1:22.
    """
    if not 1 <= ports <= MAX_PORTS_PER_SSHD:
        raise ValueError(f"one sshd serves 1 to {MAX_PORTS_PER_SSHD} ports, not {ports}")
    directory.mkdir(parents=True, exist_ok=True)
    key_paths = {key_type: directory / f"{name}_host_{key_type}_key" for key_type in key_types}
    host_keys = {}
    for key_type, path in key_paths.items():
        if not path.exists():
            generate_key(path, comment=f"{name}-{key_type}", key_type=key_type)
        host_keys[key_type] = path.with_name(path.name + ".pub").read_text().strip()
    binary = commands.find_tool("sshd", "openssh-server")
    config = directory / f"{name}_sshd_config"
    log_path = directory / f"{name}_sshd.log"
    for attempt in range(1, BIND_ATTEMPTS + 1):
        # A free port can be taken by another test's server before sshd binds it; sshd then serves the ports
        # it got and only logs the others, and that server answers there with its own host key.
        chosen = port_numbers or tuple(processes.free_port() for _ in range(ports))
        text = sshd.config_text(
            ports=chosen,
            host_keys=list(key_paths.values()),
            pid_file=directory / f"{name}_sshd.pid",
            user=user,
            authorized_keys=".ssh/authorized_keys" if accept_keys else "none",
        )
        if address != HOST:
            if not ipaddress.ip_address(address).is_loopback:
                raise ValueError(f"test servers listen on loopback only, not {address}")
            listen = f"ListenAddress {HOST}\n"
            assert listen in text, "the lab's sshd_config no longer names its ListenAddress"
            text = text.replace(listen, f"ListenAddress {address}\n")
        config.write_text(text)
        commands.run([binary, "-t", "-f", str(config)], purpose=f"check {config}")
        log_path.write_text("")
        pid = processes.spawn([binary, "-D", "-f", str(config), "-E", str(log_path)], log_path=log_path)
        try:
            if not processes.poll_until(lambda ports=chosen: all(_speaks_ssh(address, port) for port in ports), 20.0):
                raise RuntimeError(f"sshd {pid} did not answer on {chosen}: {processes.log_tail(log_path)}")
            if "Address already in use" not in log_path.read_text(errors="replace"):
                yield ExtraSSHD(chosen, host_keys)
                return
            if port_numbers or attempt == BIND_ATTEMPTS:
                raise RuntimeError(f"sshd {pid} could not bind all of {chosen}: {processes.log_tail(log_path)}")
        finally:
            processes.stop(pid)


def _speaks_ssh(address: str, port: int) -> bool:
    """True when something on `address`:`port` accepts and sends an SSH banner."""
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=2) as conn:
        return conn.recv(64).startswith(b"SSH-")
    return False


@contextmanager
def closed_port() -> Iterator[int]:
    """A port bound but not listening: a connection gets an immediate reset (refused)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


class Tarpit:
    """Accepts TCP connections and never says a word, like a hung sshd or a black-holing firewall.

    `accept_one` lets a test wait until a client is stuck in it.
    """

    def __init__(self, backlog: int = 128) -> None:
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(backlog)
        self.port: int = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []

    def accept_one(self, timeout: float) -> bool:
        """Take one waiting connection (and hold it open); False if none came within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return False
        self._held.append(conn)
        return True

    def close(self) -> None:
        for conn in self._held:
            conn.close()
        self.sock.close()


@contextmanager
def tarpit(backlog: int = 128) -> Iterator[Tarpit]:
    pit = Tarpit(backlog)
    try:
        yield pit
    finally:
        pit.close()


class Speaker:
    """Accepts TCP connections and says `greeting` at once on each, then holds it open or hangs up.

    Not an SSH server: a service on the wrong port (`b"220 smtp ready\\r\\n"`), garbage, or
    an sshd that sends its banner and then stalls (`b"SSH-2.0-OpenSSH_9.6\\r\\n"`, held open).
    """

    def __init__(self, greeting: bytes, *, hang_up: bool) -> None:
        self.greeting = greeting
        self.hang_up = hang_up
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name=f"speaker-{self.port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with contextlib.suppress(OSError):
                conn.sendall(self.greeting)
            if self.hang_up:
                conn.close()
            else:
                self._held.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self.sock.close()
        self._thread.join(5)
        for conn in self._held:
            conn.close()


@contextmanager
def speaker(greeting: bytes, *, hang_up: bool = False) -> Iterator[Speaker]:
    server = Speaker(greeting, hang_up=hang_up)
    try:
        yield server
    finally:
        server.close()


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Not on the test's stderr."""


@contextmanager
def http_server() -> Iterator[int]:
    """A real HTTP server (the standard library's) on a free port: a web service where sshd was expected."""
    server = http.server.ThreadingHTTPServer((HOST, 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
