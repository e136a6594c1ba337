"""A real Debian 12 VM with qemu-guest-agent, for the guest-agent routes (issue 10).

The image (.cache/agent-vm, built once by build_image.sh) is a cloud-image-like guest: systemd,
sshd with a known ed25519 host key, qemu-ga, and a user `debian` whose password field is `*`
(no usable password; key logins only) with one old key. QEMU runs it under software emulation
(no KVM here): the agent channel on a unix socket, the serial console logged to a file (a
socket nobody reads would stall the guest), user-mode networking restricted to the SSH forward
on 127.0.0.1.

A boot costs ~25 s, so a test session boots once, waits for the agent and sshd, and saves the
running VM in its qcow2 overlay (`savevm`); each test then starts from that moment with
`loadvm` (a few seconds) instead of a boot. Everything lives in a temp dir of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recovery.agent.qga import UnixSocketTransport
from recovery.errors import AgentError
from recovery.lab.processes import free_port
from tests.processes import stop_child

ROOT = Path(__file__).resolve().parents[2]
IMAGE = Path(os.environ.get("AGENT_VM_DIR", ROOT / ".cache" / "agent-vm"))
BUILD = ROOT / "tests" / "agentvm" / "build_image.sh"
USER = "debian"
BOOT_TIMEOUT = 240.0  # ~25 s alone; a busy 2-core machine running other VMs is slower
SNAPSHOT = "ready"


def ensure_image() -> Path:
    """The built image; build_image.sh makes it once (it needs root, debootstrap and qemu-img)."""
    if not (IMAGE / "base.qcow2").exists():
        subprocess.run(["bash", str(BUILD)], check=True)
    return IMAGE


class Qmp:
    """Just enough QMP to save and restore the VM: one command at a time, events skipped."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while True:
            line = self.file.readline()
            if not line:
                raise RuntimeError("QMP closed")
            message: dict[str, Any] = json.loads(line)
            if "event" not in message:
                return message

    def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.file.write(json.dumps(request).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"QMP {command}: {reply['error']}")
        return reply.get("return")

    def hmp(self, command_line: str, timeout: float = 120.0) -> str:
        """An HMP command (savevm, loadvm); its text output is empty on success."""
        self.sock.settimeout(timeout)
        output = str(self.execute("human-monitor-command", **{"command-line": command_line}))
        if output.strip():
            raise RuntimeError(f"{command_line}: {output.strip()}")
        return output

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class AgentVm:
    """One running VM. `agent_url` and `ssh_port` are what a playbook is given."""

    directory: Path
    process: subprocess.Popen[bytes]
    qga_socket: Path
    qmp_socket: Path
    serial_log: Path
    ssh_port: int
    host_key_fingerprint: str
    old_key: Path
    user: str = USER
    boot_seconds: float = 0.0
    save_seconds: float = 0.0

    @property
    def agent_url(self) -> str:
        return f"unix://{self.qga_socket}"

    def restore(self) -> float:
        """Back to the moment the session saved (agent and sshd up); returns the seconds it took."""
        started = time.monotonic()
        qmp = Qmp(self.qmp_socket)
        try:
            qmp.hmp(f"loadvm {SNAPSHOT}")
        finally:
            qmp.close()
        wait_ready(self, deadline=time.monotonic() + 60)
        return time.monotonic() - started

    def agent(self, command: str, arguments: dict[str, object] | None = None, timeout: float = 30.0) -> Any:
        """One agent command, straight through the socket (for tests to look at the guest)."""
        transport = UnixSocketTransport(str(self.qga_socket))
        try:
            return transport.command(command, arguments, timeout)
        finally:
            transport.close()

    def shell(self, script: str, timeout: float = 30.0) -> tuple[int | None, str]:
        """Run `script` as root in the guest through the agent; exit status and stdout."""
        from recovery.agent.qga import QgaAgent

        agent = QgaAgent(UnixSocketTransport(str(self.qga_socket)))
        try:
            result = agent.exec(["/bin/sh", "-c", script], timeout=timeout)
        finally:
            agent.close()
        return result.exit_code, result.stdout.decode()


def host_key_fingerprint(image: Path) -> str:
    import base64
    import hashlib

    blob = base64.b64decode((image / "host_ed25519.pub").read_text().split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def wait_ready(vm: AgentVm, *, deadline: float) -> None:
    """Until the agent answers a sync and sshd sends its banner."""
    while True:
        if vm.process.poll() is not None:
            raise RuntimeError(f"QEMU exited ({vm.process.returncode}); serial log: {tail(vm.serial_log)}")
        try:
            vm.agent("guest-ping", timeout=3)
            with socket.create_connection(("127.0.0.1", vm.ssh_port), timeout=3) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except (AgentError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent VM was not ready in time; serial log: {tail(vm.serial_log)}")
        time.sleep(0.5)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"


@contextmanager
def running_vm(*, memory_mb: int = 512) -> Iterator[AgentVm]:
    """Boot the VM once, wait for agent and sshd, save that moment (`loadvm` returns to it)."""
    if shutil.which("qemu-system-x86_64") is None:
        raise RuntimeError("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    image = ensure_image()
    directory = Path(tempfile.mkdtemp(prefix="rcv-agentvm-"))
    overlay = directory / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image / "base.qcow2"), "-F", "qcow2",
                    str(overlay)], check=True)
    old_key = directory / "old_key"
    shutil.copy(image / "old_key", old_key)
    old_key.chmod(0o600)
    port = free_port()
    qga, qmp, serial = directory / "qga.sock", directory / "qmp.sock", directory / "serial.log"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", "1",
        "-nodefaults", "-display", "none", "-vga", "none",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        "-append", "root=/dev/vda rw console=ttyS0 quiet",
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-chardev", f"socket,path={qga},server=on,wait=off,id=qga0",
        "-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-serial", f"file:{serial}",
        "-qmp", f"unix:{qmp},server=on,wait=off",
    ]
    started = time.monotonic()
    with open(directory / "qemu.log", "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    vm = AgentVm(directory, process, qga, qmp, serial, port, host_key_fingerprint(image), old_key)
    try:
        while not qmp.exists() or not qga.exists():
            if process.poll() is not None or time.monotonic() - started > 30:
                raise RuntimeError(f"QEMU did not start: {tail(directory / 'qemu.log')}")
            time.sleep(0.05)
        wait_ready(vm, deadline=started + BOOT_TIMEOUT)
        vm.boot_seconds = time.monotonic() - started
        saved = time.monotonic()
        qmp_client = Qmp(qmp)
        try:
            qmp_client.hmp(f"savevm {SNAPSHOT}")
        finally:
            qmp_client.close()
        vm.save_seconds = time.monotonic() - saved
        yield vm
    finally:
        stop_child(process)
        shutil.rmtree(directory, ignore_errors=True)
