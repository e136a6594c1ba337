"""QEMU's guest agent protocol (qemu-ga), and the driver for QEMU's own agent socket.

The protocol is one JSON object per line each way: `{"execute": NAME, "arguments": {...}}`
in, `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}` out. The stream has no
request ids, so a client that timed out, or a client before us that left half a command
in the agent's parser, leaves the two sides out of step. `guest-sync-delimited` puts them
back: we send a 0xFF byte (the agent's parser drops what it holds when it sees one), then
the sync with a random id; the agent answers with 0xFF before the reply, and everything
before the last 0xFF and every reply with another id is stale. After any timeout the
connection is dropped, and the next command connects and syncs again.

`QgaAgent` speaks the commands over any `Transport` (QEMU's socket here, `virsh
qemu-agent-command` in `recovery.agent.libvirt`); the transport only carries one command
and its answer.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote, urlsplit

from recovery.agent import ExecResult
from recovery.errors import AgentError
from recovery.safety.redact import Secret

__all__ = ["QgaAgent", "Transport", "UnixSocketAgent", "UnixSocketTransport"]

SENTINEL = b"\xff"
MAX_LINE = 32 * 1024 * 1024  # a reply carries at most 16 MB of output, base64-encoded


class Transport(Protocol):
    """Carries one agent command and its answer."""

    where: str
    """What to call the agent in messages: the socket path, the domain."""

    def command(self, name: str, arguments: Mapping[str, object] | None, timeout: float) -> Any:
        """Send `name` and return the `return` member of the answer.

        Raises:
            AgentError: unreachable, silent past `timeout`, or the agent's `error` answer
                (`blocked` set for CommandNotFound: a disabled or unknown command).
        """

    def close(self) -> None:
        """Disconnect; safe to call twice."""


def error_from_reply(where: str, name: str, error: Mapping[str, object]) -> AgentError:
    """The AgentError for an agent's `{"error": {"class": ..., "desc": ...}}` answer to `name`."""
    kind, desc = str(error.get("class", "")), str(error.get("desc", "")).strip()
    if kind == "CommandNotFound":
        return AgentError(
            f"the guest agent of {where} refuses {name}: {desc or 'command not found'}. Its qemu-ga blocks "
            "the command (RHEL-family guests block guest-exec and guest-file-* unless the agent's "
            "configuration allows them) or is too old to have it",
            command=name, blocked=True,
        )
    return AgentError(f"the guest agent of {where} failed {name}: {desc or kind or 'no reason given'}",
                      command=name)


class QgaAgent:
    """`GuestAgent` over qemu-ga's own commands, whatever carries them."""

    poll: ClassVar[tuple[float, ...]] = (0.005, 0.01, 0.02, 0.03, 0.05)
    """Pauses between guest-exec-status polls, the last one repeated. A poll over QEMU's socket costs the
    guest ~2 ms, so a fine one is cheap, and it ends the wait within 50 ms of the script (a coarse 0.2 s
    cost up to 0.2 s of every command); a transport that starts a process per poll (virsh) sets its own."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @property
    def where(self) -> str:
        return self.transport.where

    def exec(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float) -> ExecResult:
        """Run `argv` through `guest-exec` with `stdin` as input-data; poll `guest-exec-status` until it ends."""
        if not argv:
            raise ValueError("exec needs a command")
        deadline = time.monotonic() + timeout
        arguments: dict[str, object] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
        if stdin:
            arguments["input-data"] = base64.b64encode(stdin).decode("ascii")
        started = self.transport.command("guest-exec", arguments, timeout)
        pid = started.get("pid") if isinstance(started, dict) else None
        if not isinstance(pid, int):
            raise AgentError(f"the guest agent of {self.where} started {argv[0]} but gave no pid: {started!r}",
                             command="guest-exec")
        for polls in range(1_000_000):
            status = self.transport.command("guest-exec-status", {"pid": pid}, max(deadline - time.monotonic(), 0.1))
            if not isinstance(status, dict):
                raise AgentError(f"the guest agent of {self.where} answered guest-exec-status with {status!r}",
                                 command="guest-exec-status")
            if status.get("exited"):
                return ExecResult(
                    exit_code=status.get("exitcode") if isinstance(status.get("exitcode"), int) else None,
                    stdout=base64.b64decode(str(status.get("out-data", ""))),
                    stderr=base64.b64decode(str(status.get("err-data", ""))),
                    signal=status.get("signal") if isinstance(status.get("signal"), int) else None,
                    truncated=bool(status.get("out-truncated") or status.get("err-truncated")),
                )
            pause = self.poll[min(polls, len(self.poll) - 1)]
            if time.monotonic() + pause > deadline:
                break
            time.sleep(pause)
        raise AgentError(
            f"{argv[0]} (pid {pid} in the guest, started by the guest agent of {self.where}) was still running "
            f"after {timeout:.0f} s; it may yet finish in the VM, and the agent cannot stop it",
            command="guest-exec",
        )

    def add_authorized_keys(self, user: str, keys: Sequence[str], *, timeout: float) -> None:
        """`guest-ssh-add-authorized-keys`: the agent writes the file with the user's owner and modes.

        qemu-ga 7.2 rejects a key that ends in a newline, and writes the file without a final one.
        """
        self.transport.command(
            "guest-ssh-add-authorized-keys", {"username": user, "keys": list(keys), "reset": False}, timeout)

    def get_authorized_keys(self, user: str, *, timeout: float) -> list[str]:
        answer = self.transport.command("guest-ssh-get-authorized-keys", {"username": user}, timeout)
        keys = answer.get("keys") if isinstance(answer, dict) else None
        if not isinstance(keys, list):
            raise AgentError(f"the guest agent of {self.where} answered guest-ssh-get-authorized-keys with {answer!r}",
                             command="guest-ssh-get-authorized-keys")
        return [str(key) for key in keys]

    def append_newline_if_missing(self, user: str, *, timeout: float) -> bool | None:
        """Read the user's home from /etc/passwd and end `~/.ssh/authorized_keys` with a newline.

        Everything goes through `guest-file-*`; where the agent blocks those, None. The file is
        opened for appending, never truncated, and only once its last byte was read.
        """
        try:
            passwd = self._read_file("/etc/passwd", timeout=timeout)
        except AgentError as exc:
            if exc.blocked:
                return None
            raise
        home = next((fields[5] for fields in (line.split(":") for line in passwd.decode("utf-8", "replace")
                                               .splitlines()) if len(fields) >= 7 and fields[0] == user), None)
        if home is None:
            raise AgentError(f"the guest agent of {self.where} shows no user {user!r} in /etc/passwd")
        path = home.rstrip("/") + "/.ssh/authorized_keys"
        handle = self.transport.command("guest-file-open", {"path": path, "mode": "r"}, timeout)
        try:
            self.transport.command("guest-file-seek", {"handle": handle, "offset": -1, "whence": "end"}, timeout)
            last = self._read(handle, 1, timeout)
        finally:
            self.transport.command("guest-file-close", {"handle": handle}, timeout)
        if last in (b"", b"\n"):
            return False
        handle = self.transport.command("guest-file-open", {"path": path, "mode": "a"}, timeout)
        try:
            self.transport.command("guest-file-write", {"handle": handle, "buf-b64": "Cg=="}, timeout)
        finally:
            self.transport.command("guest-file-close", {"handle": handle}, timeout)
        return True

    def _read_file(self, path: str, *, timeout: float) -> bytes:
        handle = self.transport.command("guest-file-open", {"path": path, "mode": "r"}, timeout)
        chunks = []
        try:
            while chunk := self._read(handle, 65536, timeout):
                chunks.append(chunk)
        finally:
            self.transport.command("guest-file-close", {"handle": handle}, timeout)
        return b"".join(chunks)

    def _read(self, handle: object, count: int, timeout: float) -> bytes:
        answer = self.transport.command("guest-file-read", {"handle": handle, "count": count}, timeout)
        return base64.b64decode(str(answer.get("buf-b64", ""))) if isinstance(answer, dict) else b""

    def close(self) -> None:
        self.transport.close()


class UnixSocketTransport:
    """QEMU's agent chardev (`-chardev socket,path=...,server=on`), one JSON line each way."""

    def __init__(self, path: str, *, connect_timeout: float = 10.0, sync_timeout: float = 15.0) -> None:
        """`sync_timeout` bounds the wait for the first answer: a running qemu-ga syncs in milliseconds, and a
        silent one (not installed, stopped, the VM still booting) must not hold a run for a whole step timeout."""
        self.path = path
        self.where = path
        self.connect_timeout = connect_timeout
        self.sync_timeout = sync_timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def command(self, name: str, arguments: Mapping[str, object] | None, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        sock = self._connected(deadline)
        request: dict[str, object] = {"execute": name}
        if arguments is not None:
            request["arguments"] = dict(arguments)
        self._send(sock, json.dumps(request).encode() + b"\n", name)
        reply = self._reply(sock, deadline, name)
        if "error" in reply:
            error = reply["error"]
            raise error_from_reply(self.where, name, error if isinstance(error, dict) else {"desc": str(error)})
        if "return" not in reply:
            raise AgentError(f"the guest agent of {self.where} answered {name} with neither return nor error: "
                             f"{str(reply)[:200]}", command=name)
        return reply["return"]

    def close(self) -> None:
        sock, self._sock, self._buffer = self._sock, None, b""
        if sock is not None:
            sock.close()

    def _connected(self, deadline: float) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(min(self.connect_timeout, deadline - time.monotonic()), 0.1))
            sock.connect(self.path)
        except FileNotFoundError as exc:
            sock.close()
            raise AgentError(
                f"there is no guest agent socket at {self.path}: is the VM running, and was QEMU started with "
                f"-chardev socket,path={self.path},server=on,wait=off and a virtserialport named "
                "org.qemu.guest_agent.0?") from exc
        except ConnectionRefusedError as exc:
            sock.close()
            raise AgentError(f"nothing listens on the guest agent socket {self.path}: has QEMU stopped?") from exc
        except PermissionError as exc:
            sock.close()
            raise AgentError(f"no permission to open the guest agent socket {self.path}: run as the user QEMU "
                             "or libvirt gives the socket to") from exc
        except OSError as exc:
            sock.close()
            raise AgentError(f"cannot connect to the guest agent socket {self.path}: {exc}") from exc
        self._sock, self._buffer = sock, b""
        try:
            self._sync(sock, min(deadline, time.monotonic() + self.sync_timeout))
        except BaseException:
            self.close()
            raise
        return sock

    def _sync(self, sock: socket.socket, deadline: float) -> None:
        """Flush the agent's parser with 0xFF, then skip everything up to the reply to our own sync."""
        token = secrets.randbelow(2**31 - 1) + 1
        request = json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": token}}).encode()
        self._send(sock, SENTINEL + request + b"\n", "guest-sync-delimited")
        while True:
            while SENTINEL not in self._buffer:
                self._buffer = b""  # stale output of an earlier client: never ours
                self._receive(sock, deadline, "guest-sync-delimited")
            self._buffer = self._buffer[self._buffer.rindex(SENTINEL) + 1:]
            reply = self._reply(sock, deadline, "guest-sync-delimited")
            if reply.get("return") == token:
                return

    def _reply(self, sock: socket.socket, deadline: float, name: str) -> dict[str, object]:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                self.close()
                raise AgentError(f"the guest agent of {self.where} sent over {MAX_LINE} bytes without a line end "
                                 f"in answer to {name}", command=name)
            self._receive(sock, deadline, name)
        line, self._buffer = self._buffer.split(b"\n", 1)
        line = line.strip().lstrip(SENTINEL)
        if not line:
            return self._reply(sock, deadline, name)
        try:
            reply = json.loads(line.decode("utf-8", "replace"))
        except ValueError as exc:
            self.close()
            raise AgentError(f"the guest agent of {self.where} answered {name} with something that is not JSON: "
                             f"{line[:200]!r}", command=name) from exc
        if not isinstance(reply, dict):
            self.close()
            raise AgentError(f"the guest agent of {self.where} answered {name} with {line[:200]!r}", command=name)
        return reply

    def _receive(self, sock: socket.socket, deadline: float, name: str) -> None:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            data = sock.recv(65536)
        except TimeoutError as exc:
            self.close()  # the answer may still come: the next command reconnects and resyncs
            raise AgentError(
                f"the guest agent of {self.where} did not answer {name} in time: qemu-ga is not running in the VM "
                "(still booting, not installed, or stopped), or another client holds the socket", command=name,
            ) from exc
        except OSError as exc:
            self.close()
            raise AgentError(f"the guest agent socket {self.where} failed during {name}: {exc}", command=name) from exc
        if not data:
            self.close()
            raise AgentError(f"the guest agent socket {self.where} closed during {name}: did QEMU stop?",
                             command=name)
        self._buffer += data

    def _send(self, sock: socket.socket, data: bytes, name: str) -> None:
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise AgentError(f"cannot write to the guest agent socket {self.where} ({name}): {exc}",
                             command=name) from exc


class UnixSocketAgent(QgaAgent):
    """`unix:///path/to/qga.sock`: the agent socket QEMU itself serves."""

    scheme: ClassVar[str] = "unix"

    @staticmethod
    def url_problem(url: str) -> str | None:
        parts = urlsplit(url)
        if parts.netloc or not parts.path.startswith("/"):
            return f"{url}: a QEMU agent socket is unix:///absolute/path/to/qga.sock (three slashes)"
        return None

    @classmethod
    def from_url(cls, url: str, *, token: Secret | None = None) -> UnixSocketAgent:
        return cls(UnixSocketTransport(unquote(urlsplit(url).path)))
