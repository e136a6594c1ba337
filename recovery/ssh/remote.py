"""Run a guest script over SSH with a key that works: ``sh -s``, the script on its stdin.

The same script the console types (`recovery.guest`) runs here unchanged: it is one
``{ ... } </dev/null`` group, so ``sh`` reads it whole from stdin before running it, and its facts
come back on stdout as on a console. The login is `recovery.ssh.verifier.connect`'s: the host key is
checked against the pin exactly as the proof of login checks it, and every paramiko and socket
failure comes out as the same `VerifyError` family, named the same way.

One `RemoteShell` keeps one login for several commands (reading a file, then changing it, then
reading it back), so a fleet run makes one SSH handshake per host, not one per command.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recovery.errors import ConnectTimeout, GuestCommandError
from recovery.ssh.verifier import Connection, SSHTarget, connect

if TYPE_CHECKING:
    from paramiko import Channel

    from recovery.guest import GuestScript
    from recovery.safety.redact import Secret
    from recovery.ssh.keys import KeyPair

__all__ = ["RemoteOutput", "RemoteShell", "remote_shell"]

_MAX_OUTPUT = 16 * 1024 * 1024  # a runaway command cannot fill the controller's memory


@dataclass(frozen=True)
class RemoteOutput:
    """A command's exit status and its output, stdout and stderr merged in the order they came."""

    status: int
    output: str


class RemoteShell:
    """Commands over one SSH login; each runs in its own channel, as ``ssh host command`` would."""

    def __init__(self, connection: Connection, target: SSHTarget) -> None:
        self.connection = connection
        self.target = target

    @property
    def host_key_fingerprint(self) -> str:
        return self.connection.check.offered_sha256

    def run(self, command: str, stdin: str = "", *, timeout: float) -> RemoteOutput:
        """Run `command` with `stdin` as its input and wait for its exit status.

        Raises:
            ConnectTimeout: no end of output or no exit status within `timeout` seconds.
            GuestCommandError: the output grew past 16 MiB.
        """
        where = f"{self.target.host}:{self.target.port}"
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            raise GuestCommandError(f"the SSH connection to {where} is closed")
        deadline = time.monotonic() + timeout
        channel = transport.open_session(timeout=timeout)
        try:
            channel.set_combine_stderr(True)
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
            output = bytearray()
            while chunk := self._recv(channel, deadline, where, command):
                output += chunk
                if len(output) > _MAX_OUTPUT:
                    raise GuestCommandError(f"`{command}` on {where} printed more than 16 MiB; stopped reading")
            if not channel.status_event.wait(max(deadline - time.monotonic(), 0.1)):
                raise ConnectTimeout(f"{where} sent no exit status for `{command}` within {timeout:g} s")
            return RemoteOutput(channel.recv_exit_status(), output.decode("utf-8", errors="replace"))
        finally:
            channel.close()

    def run_script(self, script: GuestScript, *, timeout: float) -> RemoteOutput:
        """Run a guest script as the console would, but through ``sh -s``: raw text only on the wire."""
        return self.run("sh -s", script.raw(), timeout=timeout)

    @staticmethod
    def _recv(channel: Channel, deadline: float, where: str, command: str) -> bytes:
        channel.settimeout(max(deadline - time.monotonic(), 0.1))
        try:
            return channel.recv(65536)
        except TimeoutError as exc:
            raise ConnectTimeout(f"`{command}` on {where} did not finish in time") from exc


@contextmanager
def remote_shell(
    target: SSHTarget, key: KeyPair, *, passphrase: Secret | None = None, timeout: float = 10.0
) -> Iterator[RemoteShell]:
    """Log in to `target` with `key` and hand out a `RemoteShell`; logs out on exit.

    Raises the `VerifyError` family (`recovery.ssh.verifier.connect`) for a login that fails.
    """
    with connect(target, key, passphrase=passphrase, timeout=timeout) as connection:
        yield RemoteShell(connection, target)
