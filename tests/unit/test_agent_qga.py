"""The QEMU guest agent protocol client against a scripted fake agent on a real unix socket.

The fake reads what the client sends and answers from a script: stale bytes left by an earlier
client, answers cut into single bytes, errors, silence. Nothing about qemu-ga is faked that the
real VM test (tests/e2e/test_agent_recovery.py) does not also exercise.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery.agent import agent_for, agent_url_problem
from recovery.agent.libvirt import LibvirtAgent
from recovery.agent.qga import QgaAgent, UnixSocketAgent, UnixSocketTransport
from recovery.errors import AgentError

Answer = list[bytes | float]  # chunks to send, and pauses (seconds) between them; b"" hangs up
Handler = Callable[[dict[str, Any]], Answer]


class FakeAgent:
    """A unix socket server that answers each JSON line with what `handler` scripts."""

    def __init__(self, path: Path, handler: Handler, *, greeting: bytes = b"") -> None:
        self.path = path
        self.handler = handler
        self.greeting = greeting
        self.requests: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.connections = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._talk(conn)

    def _talk(self, conn: socket.socket) -> None:
        if self.greeting:
            conn.sendall(self.greeting)
        buffer = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.raw.append(data)
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line.lstrip(b"\xff"))
                self.requests.append(request)
                for part in self.handler(request):
                    if isinstance(part, float):
                        time.sleep(part)
                    elif not part:
                        return
                    else:
                        conn.sendall(part)

    def names(self) -> list[str]:
        return [request["execute"] for request in self.requests]

    def close(self) -> None:
        self.server.close()


def reply(value: object) -> bytes:
    return json.dumps({"return": value}).encode() + b"\n"


def synced(answers: Callable[[dict[str, Any]], Answer]) -> Handler:
    """Answer guest-sync-delimited as qemu-ga does (0xFF, then the id), the rest with `answers`."""

    def handle(request: dict[str, Any]) -> Answer:
        if request["execute"] == "guest-sync-delimited":
            return [b"\xff" + reply(request["arguments"]["id"])]
        return answers(request)

    return handle


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., FakeAgent]]:
    agents: list[FakeAgent] = []

    def start(handler: Handler, **options: Any) -> FakeAgent:
        agent = FakeAgent(tmp_path / f"qga{len(agents)}.sock", handler, **options)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.close()


def test_the_first_bytes_flush_the_agents_parser_and_sync(serve: Callable[..., FakeAgent]) -> None:
    fake = serve(synced(lambda request: [reply({"version": "7.2.22"})]))
    transport = UnixSocketTransport(str(fake.path))
    assert transport.command("guest-info", None, 5) == {"version": "7.2.22"}
    transport.close()
    assert fake.raw[0].startswith(b"\xff{")
    assert fake.names() == ["guest-sync-delimited", "guest-info"]


def test_stale_output_of_an_earlier_client_is_skipped(serve: Callable[..., FakeAgent]) -> None:
    """An answer meant for a client that gave up, half a line, and a sync reply with another id."""

    def handle(request: dict[str, Any]) -> Answer:
        if request["execute"] == "guest-sync-delimited":
            return [b'{"return": {"pid": 7}}\n{"retu', b"\xff" + reply(12345), 0.05,
                    b"\xff" + reply(request["arguments"]["id"])]
        return [reply({})]

    fake = serve(handle, greeting=b'{"return": {"exited": true}}\n')
    transport = UnixSocketTransport(str(fake.path))
    assert transport.command("guest-ping", None, 5) == {}
    transport.close()


def test_answers_cut_into_single_bytes_are_put_together(serve: Callable[..., FakeAgent]) -> None:
    def handle(request: dict[str, Any]) -> Answer:
        whole = (b"\xff" + reply(request["arguments"]["id"]) if request["execute"] == "guest-sync-delimited"
                 else reply({"keys": ["ssh-ed25519 AAAA x"]}))
        parts: Answer = []
        for byte in whole:
            parts += [bytes([byte]), 0.001]
        return parts

    fake = serve(handle)
    transport = UnixSocketTransport(str(fake.path))
    assert transport.command("guest-ssh-get-authorized-keys", {"username": "u"}, 10) == {
        "keys": ["ssh-ed25519 AAAA x"]}
    transport.close()


def test_a_disabled_command_is_an_agent_error_marked_blocked(serve: Callable[..., FakeAgent]) -> None:
    fake = serve(synced(lambda request: [json.dumps({"error": {
        "class": "CommandNotFound", "desc": "The command guest-exec has been disabled for this instance"}}).encode()
        + b"\n"]))
    agent = QgaAgent(UnixSocketTransport(str(fake.path)))
    with pytest.raises(AgentError) as caught:
        agent.exec(["/bin/true"], timeout=5)
    agent.close()
    assert caught.value.blocked
    assert caught.value.command == "guest-exec"
    assert f"the guest agent of {fake.path} refuses guest-exec" in str(caught.value)
    assert "RHEL-family guests block guest-exec" in str(caught.value)


def test_other_agent_errors_are_not_blocked(serve: Callable[..., FakeAgent]) -> None:
    fake = serve(synced(lambda request: [json.dumps({"error": {
        "class": "GenericError", "desc": "failed to open file '/home/x/.ssh/authorized_keys'"}}).encode() + b"\n"]))
    agent = QgaAgent(UnixSocketTransport(str(fake.path)))
    with pytest.raises(AgentError, match="failed guest-ssh-get-authorized-keys: failed to open file") as caught:
        agent.get_authorized_keys("x", timeout=5)
    agent.close()
    assert not caught.value.blocked


def test_a_silent_agent_times_out_with_a_message(serve: Callable[..., FakeAgent]) -> None:
    fake = serve(lambda request: [])
    transport = UnixSocketTransport(str(fake.path))
    started = time.monotonic()
    with pytest.raises(AgentError, match="did not answer guest-sync-delimited in time: qemu-ga is not running"):
        transport.command("guest-ping", None, 0.5)
    assert time.monotonic() - started < 5


def test_a_silent_agent_does_not_hold_the_run_for_the_whole_command_timeout(
    serve: Callable[..., FakeAgent]
) -> None:
    fake = serve(lambda request: [])
    transport = UnixSocketTransport(str(fake.path), sync_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(AgentError, match="did not answer guest-sync-delimited in time"):
        transport.command("guest-exec", {"path": "/bin/true"}, 60)
    assert time.monotonic() - started < 10


def test_after_a_timeout_the_next_command_reconnects_and_syncs_again(serve: Callable[..., FakeAgent]) -> None:
    answers: list[Answer] = [[], [reply({})]]  # the first guest-ping is never answered
    fake = serve(synced(lambda request: answers.pop(0)))
    transport = UnixSocketTransport(str(fake.path))
    with pytest.raises(AgentError, match="did not answer guest-ping in time"):
        transport.command("guest-ping", None, 0.5)
    assert transport.command("guest-ping", None, 5) == {}
    transport.close()
    assert fake.connections == 2
    assert fake.names() == ["guest-sync-delimited", "guest-ping", "guest-sync-delimited", "guest-ping"]


def test_a_socket_closed_mid_answer_is_an_agent_error(serve: Callable[..., FakeAgent]) -> None:
    fake = serve(synced(lambda request: [b'{"return": {"pi', b""]))
    transport = UnixSocketTransport(str(fake.path))
    with pytest.raises(AgentError, match="closed during guest-exec: did QEMU stop"):
        transport.command("guest-exec", {"path": "/bin/true"}, 5)


def test_an_answer_that_is_not_json_is_an_agent_error(serve: Callable[..., FakeAgent]) -> None:
    fake = serve(synced(lambda request: [b"<html>\n"]))
    transport = UnixSocketTransport(str(fake.path))
    with pytest.raises(AgentError, match="something that is not JSON"):
        transport.command("guest-ping", None, 5)


def test_no_socket_names_the_qemu_options_that_make_one(tmp_path: Path) -> None:
    transport = UnixSocketTransport(str(tmp_path / "none.sock"))
    with pytest.raises(AgentError, match=r"there is no guest agent socket at .*none.sock: is the VM running") as caught:
        transport.command("guest-ping", None, 5)
    assert "virtserialport named org.qemu.guest_agent.0" in str(caught.value)


def exec_handler(statuses: list[dict[str, Any]], seen: list[dict[str, Any]]) -> Handler:
    def answer(request: dict[str, Any]) -> Answer:
        seen.append(request)
        if request["execute"] == "guest-exec":
            return [reply({"pid": 4242})]
        return [reply(statuses.pop(0) if len(statuses) > 1 else statuses[0])]

    return synced(answer)


def test_exec_sends_stdin_as_base64_and_polls_until_the_command_exits(serve: Callable[..., FakeAgent]) -> None:
    seen: list[dict[str, Any]] = []
    done = {"exited": True, "exitcode": 3, "out-data": base64.b64encode(b"out\n").decode(),
            "err-data": base64.b64encode(b"err\n").decode()}
    fake = serve(exec_handler([{"exited": False}, {"exited": False}, done], seen))
    agent = UnixSocketAgent(UnixSocketTransport(str(fake.path)))
    result = agent.exec(["runuser", "-u", "debian", "--", "/bin/sh"], stdin=b"echo hi\n", timeout=10)
    agent.close()
    assert (result.exit_code, result.stdout, result.stderr, result.truncated) == (3, b"out\n", b"err\n", False)
    assert seen[0]["arguments"] == {"path": "runuser", "arg": ["-u", "debian", "--", "/bin/sh"],
                                    "capture-output": True, "input-data": base64.b64encode(b"echo hi\n").decode()}
    assert [request["execute"] for request in seen] == ["guest-exec"] + ["guest-exec-status"] * 3
    assert all(request["arguments"] == {"pid": 4242} for request in seen[1:])


def test_a_command_killed_by_a_signal_has_no_exit_code(serve: Callable[..., FakeAgent]) -> None:
    fake = serve(exec_handler([{"exited": True, "signal": 9}], []))
    agent = UnixSocketAgent(UnixSocketTransport(str(fake.path)))
    result = agent.exec(["/bin/sleep", "100"], timeout=5)
    agent.close()
    assert (result.exit_code, result.signal) == (None, 9)


def test_a_command_that_outlives_the_timeout_is_reported_with_its_pid(serve: Callable[..., FakeAgent]) -> None:
    fake = serve(exec_handler([{"exited": False}], []))
    agent = UnixSocketAgent(UnixSocketTransport(str(fake.path)))
    with pytest.raises(AgentError, match=r"/bin/sleep \(pid 4242 in the guest.*still running after 1 s"):
        agent.exec(["/bin/sleep", "100"], timeout=1)
    agent.close()


def test_the_missing_final_newline_is_added_through_the_file_commands(serve: Callable[..., FakeAgent]) -> None:
    files = {"/etc/passwd": b"root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000::/home/debian:/bin/bash\n",
             "/home/debian/.ssh/authorized_keys": b"ssh-ed25519 AAAA old\nssh-ed25519 BBBB new"}
    handles: dict[int, list[Any]] = {}

    def answer(request: dict[str, Any]) -> Answer:
        arguments = request.get("arguments", {})
        name = request["execute"]
        if name == "guest-file-open":
            handles[len(handles) + 1] = [arguments["path"], 0, arguments["mode"]]
            return [reply(len(handles))]
        entry = handles[arguments["handle"]]
        data = files[entry[0]]
        if name == "guest-file-seek":
            entry[1] = len(data) + arguments["offset"]
            return [reply({"position": entry[1], "eof": False})]
        if name == "guest-file-read":
            chunk = data[entry[1]:entry[1] + arguments["count"]]
            entry[1] += len(chunk)
            return [reply({"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(), "eof": not chunk})]
        if name == "guest-file-write":
            assert entry[2] == "a"
            files[entry[0]] = data + base64.b64decode(arguments["buf-b64"])
            return [reply({"count": 1, "eof": False})]
        return [reply({})]

    fake = serve(synced(answer))
    agent = UnixSocketAgent(UnixSocketTransport(str(fake.path)))
    assert agent.append_newline_if_missing("debian", timeout=5) is True
    assert files["/home/debian/.ssh/authorized_keys"] == b"ssh-ed25519 AAAA old\nssh-ed25519 BBBB new\n"
    assert agent.append_newline_if_missing("debian", timeout=5) is False
    agent.close()
    assert fake.names().count("guest-file-write") == 1


def test_without_file_commands_the_newline_is_left_and_said_so(serve: Callable[..., FakeAgent]) -> None:
    fake = serve(synced(lambda request: [json.dumps({"error": {
        "class": "CommandNotFound", "desc": "The command guest-file-open has been disabled for this instance"}}
    ).encode() + b"\n"]))
    agent = UnixSocketAgent(UnixSocketTransport(str(fake.path)))
    assert agent.append_newline_if_missing("debian", timeout=5) is None
    agent.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("unix:///run/qga.sock", None),
        ("unix://run/qga.sock", "three slashes"),
        ("libvirt://web-1", None),
        ("libvirt://qemu:///system/web-1", None),
        ("libvirt://qemu+ssh://root@kvm1/system/web-1", None),
        ("libvirt://qemu:///system/", "no domain name"),
        ("libvirt://nonsense/web-1", "not a libvirt connection URI"),
        ("ssh://host", "ssh:// is not a guest agent we can reach"),
        ("/run/qga.sock", "no scheme is not a guest agent"),
    ],
)
def test_agent_urls(url: str, problem: str | None) -> None:
    found = agent_url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_a_libvirt_url_names_the_connection_and_the_domain() -> None:
    assert LibvirtAgent.split("libvirt://qemu:///system/web-1") == ("qemu:///system", "web-1")
    assert LibvirtAgent.split("libvirt://web-1") == (None, "web-1")


def test_agent_for_refuses_an_unknown_scheme() -> None:
    with pytest.raises(AgentError, match="tcp:// is not a guest agent"):
        agent_for("tcp://127.0.0.1:1")
