"""A VM that only its bastion can reach: both in a network namespace of their own, as behind a real bastion.

The VM's sshd and the bastion's sshd run in a new network namespace (`unshare --net`, its
loopback up); from the test's namespace nothing reaches the VM's port. The bastion alone is
reachable, through a forwarder in the test: a socket made by a thread that entered the namespace
(setns), bridged to a listening socket on the test's own loopback.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.lab import commands, processes, sshd
from recovery.ssh.keys import generate_keypair
from tests.integration.sshd_fixture import running_sshd
from tests.integration.test_jump_sshd import JUMP_KEYS, authorize_at_bastion

_CLONE_NEWNET = 0x40000000


def connect_inside(namespace: Path, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` of the namespace, made by a thread that enters it for that alone."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_connect() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(namespace, os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {namespace}")
            made.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        except BaseException as exc:
            failed.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=enter_and_connect)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def _copy(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def forwarder(namespace: Path, port: int) -> Iterator[int]:
    """A port on the test's loopback whose connections reach 127.0.0.1:`port` inside the namespace."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    opened: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            opened.append(client)
            client.settimeout(None)
            try:
                inside = connect_inside(namespace, port)
            except OSError:  # the bastion is not listening yet: this client is refused, the next may not be
                client.close()
                continue
            opened.append(inside)
            inside.settimeout(None)
            for source, target in ((client, inside), (inside, client)):
                threading.Thread(target=_copy, args=(source, target), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        for sock in opened:
            sock.close()


def start_sshd(directory: Path, name: str, namespace: Path, port: int, user: str, authorized_keys: str,
               extra: str = "") -> tuple[int, str]:
    """An sshd in the namespace; (its PID, its host key fingerprint)."""
    key_path = directory / f"{name}_host_key"
    public = commands.generate_key(key_path, comment=f"{name}-host")
    config = directory / f"{name}_sshd_config"
    config.write_text(sshd.config_text(ports=[port], host_keys=[key_path], pid_file=None, user=user,
                                       authorized_keys=authorized_keys) + extra)
    binary = commands.find_tool("sshd", "openssh-server")
    commands.run([binary, "-t", "-f", str(config)], purpose=f"check {config}")
    log = directory / f"{name}.log"
    pid = processes.spawn(["/usr/bin/nsenter", f"--net={namespace}", binary, "-D", "-f", str(config), "-E", str(log)],
                          log_path=log)
    return pid, commands.fingerprint(public)


def test_an_audit_reaches_a_vm_only_its_bastion_can_reach(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(running_sshd())  # the user, its home and its authorized_keys
        log = tmp_path / "netns.log"
        holder = processes.spawn(
            ["/usr/bin/unshare", "--net", "/bin/sh", "-c", "/usr/sbin/ip link set lo up && exec sleep 100000"],
            log_path=log)
        stack.callback(processes.stop, holder)
        namespace = Path(f"/proc/{holder}/ns/net")
        assert processes.poll_until(lambda: namespace.exists(), 10.0)
        vm_port, bastion_port = processes.free_port(), processes.free_port()
        vm_pid, vm_key_pin = start_sshd(tmp_path, "vm", namespace, vm_port, lab.user, ".ssh/authorized_keys")
        stack.callback(processes.stop, vm_pid)
        bastion_pid, bastion_pin = start_sshd(tmp_path, "bastion", namespace, bastion_port, lab.user, JUMP_KEYS,
                                              "AllowTcpForwarding yes\n")
        stack.callback(processes.stop, bastion_pid)
        vm_key = generate_keypair(tmp_path / "vm", comment="vm")
        jump_key = generate_keypair(tmp_path / "jump", comment="jump")
        lab.authorize(vm_key.public_line)
        authorize_at_bastion(lab.home, jump_key.public_line)
        entry = stack.enter_context(forwarder(namespace, bastion_port))
        assert processes.poll_until(lambda: sshd.answers(entry), 20.0), processes.log_tail(tmp_path / "bastion.log")
        inventory = tmp_path / "vm.yaml"
        inventory.write_text(
            f"hosts:\n  - {{name: vm, host: 127.0.0.1, port: {vm_port}, user: {lab.user}, "
            f"key: {vm_key.private_path}, host_key: '{vm_key_pin}'}}\n")

        direct = main(["audit", "--inventory", str(inventory), "--format", "json", "--timeout", "30"])
        [alone] = json.loads(capsys.readouterr().out)["hosts"]
        through = main(["audit", "--inventory", str(inventory), "--format", "json", "--timeout", "60",
                        "--jump", f"{lab.user}@127.0.0.1:{entry}", "--jump-keys", str(jump_key.private_path),
                        "--jump-host-keys", bastion_pin])
        [behind] = json.loads(capsys.readouterr().out)["hosts"]

    assert (direct, alone["status"]) == (1, "refused")
    assert (through, behind["status"]) == (0, "ok"), behind["message"]
