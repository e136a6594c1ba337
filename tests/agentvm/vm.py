"""A real Debian 12 VM with qemu-guest-agent, for the guest-agent routes (issue 10).

The image (.cache/agent-vm, built once by build_image.sh) is a cloud-image-like guest: systemd,
sshd with a known ed25519 host key, qemu-ga, and a user `debian` whose password field is `*`
(no usable password; key logins only) with one old key. QEMU runs it under software emulation
(no KVM here): the agent channel on a unix socket, the serial console logged to a file (a
socket nobody reads would stall the guest), user-mode networking restricted to the SSH forward
on 127.0.0.1.

A boot costs ~25 s (30-50 s on a busy machine), so a test module boots once, waits for the agent
and sshd, stops the VM and saves it to a file with QEMU's migration (`migrate exec:cat > state`,
~1 s, ~150 MB); the overlay it booted on is frozen from then on. Each test resumes its own copy:
a new overlay on that one and `-incoming exec:cat state` (~1.5 s to agent and sshd), so no test
sees another's changes and a wedged guest ends with its test. (`savevm`/`loadvm` in one QEMU took
about as long, ~1 s, but leaves every test on the same QEMU process and overlay.) Everything lives
in a temp dir of its own.
"""

from __future__ import annotations

import base64
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


def ensure_image() -> Path:
    """The built image; build_image.sh makes it once (it needs root, debootstrap and qemu-img)."""
    if not (IMAGE / "base.qcow2").exists():
        subprocess.run(["bash", str(BUILD)], check=True)
    return IMAGE


class Qmp:
    """Just enough QMP to save and resume the VM: one command at a time, events skipped."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:  # the socket file appears a moment before QEMU listens on it
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(str(path))
                break
            except ConnectionRefusedError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
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
    start_seconds: float = 0.0  # from QEMU's start to agent and sshd answering
    serial_port: int | None = None  # the serial console on 127.0.0.1 (TCP, raw), where asked for

    @property
    def agent_url(self) -> str:
        return f"unix://{self.qga_socket}"

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


@dataclass
class SavedVm:
    """A VM saved the moment its agent and sshd answered: `start()` resumes a copy of that moment."""

    directory: Path
    disk: Path  # the session's overlay, frozen at the save; each VM gets an overlay of its own on it
    state: Path  # QEMU's migration stream: RAM and devices
    host_key_fingerprint: str
    old_key: Path
    boot_seconds: float
    save_seconds: float
    started: int = 0

    @contextmanager
    def start(self, *, serial_port: int | None = None) -> Iterator[AgentVm]:
        """A VM resumed from the saved moment, on its own overlay and ports; stopped and removed afterwards.

        `serial_port`: its serial console (ttyS0, a getty on it) also on that TCP port of 127.0.0.1, as a
        cloud's serial proxy reaches a console; still logged to the file.
        """
        self.started += 1
        directory = self.directory / f"vm{self.started}"
        directory.mkdir()
        disk = overlay(self.disk, directory / "disk.qcow2")
        began = time.monotonic()
        vm = _launch(directory, disk, self.host_key_fingerprint, self.old_key, incoming=self.state,
                     serial_port=serial_port)
        try:
            qmp = Qmp(vm.qmp_socket)
            try:
                while qmp.execute("query-status")["status"] == "inmigrate":
                    time.sleep(0.05)
                qmp.execute("cont")
            finally:
                qmp.close()
            wait_ready(vm, deadline=time.monotonic() + 60)
            vm.start_seconds = time.monotonic() - began
            yield vm
        finally:
            stop_child(vm.process)
            shutil.rmtree(directory, ignore_errors=True)


def ssh_run(ssh_port: int, private_key: Path, command: str, user: str = USER) -> str:
    """Log in to a guest made from this image on `ssh_port` with `private_key`, the host key pinned to
    the image's own, and run `command`: the proof every route's test ends with."""
    import paramiko

    host_key = (IMAGE / "host_ed25519.pub").read_text().split()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(f"[127.0.0.1]:{ssh_port}", host_key[0],
                               paramiko.PKey.from_type_string(host_key[0], base64.b64decode(host_key[1])))
    client.connect("127.0.0.1", port=ssh_port, username=user, key_filename=str(private_key),
                   allow_agent=False, look_for_keys=False, timeout=30, banner_timeout=30, auth_timeout=30)
    try:
        _, stdout, _ = client.exec_command(command, timeout=30)
        return stdout.read().decode()
    finally:
        client.close()


def guest(vm: AgentVm, script: str) -> str:
    """Run `script` on the guest through its agent; it must succeed."""
    status, output = vm.shell(script)
    assert status == 0, output
    return output


def overlay(backing: Path, disk: Path) -> Path:
    """A qcow2 overlay `disk` on `backing`: a test writes to its own copy, never to the built image."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", "qcow2", str(disk)],
                   check=True)
    return disk


def copy_old_key(image: Path, directory: Path) -> Path:
    """The image's old key (already in the guest's authorized_keys), 0600 as ssh demands, in `directory`."""
    old_key = directory / "old_key"
    shutil.copy(image / "old_key", old_key)
    old_key.chmod(0o600)
    return old_key


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


def _launch(directory: Path, disk: Path, fingerprint: str, old_key: Path, *, incoming: Path | None = None,
            memory_mb: int = 512, serial_port: int | None = None) -> AgentVm:
    """QEMU on `disk`, booting the image's kernel, or resuming the migration stream `incoming`.

    The serial console goes to a file; with `serial_port`, to a TCP server there that logs to the same
    file (with no client, QEMU drops the output: nothing stalls). Devices, not back ends, are in a
    migration stream, so a VM saved with one resumes with the other.
    """
    port = free_port()
    qga, qmp, serial = directory / "qga.sock", directory / "qmp.sock", directory / "serial.log"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", "1",
        "-nodefaults", "-display", "none", "-vga", "none",
        "-kernel", str(IMAGE / "vmlinuz"), "-initrd", str(IMAGE / "initrd.img"),
        "-append", "root=/dev/vda rw console=ttyS0 quiet",
        "-drive", f"file={disk},if=virtio,format=qcow2",
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-chardev", f"socket,path={qga},server=on,wait=off,id=qga0",
        "-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        *(["-chardev", f"socket,id=ser0,host=127.0.0.1,port={serial_port},server=on,wait=off,logfile={serial}",
            "-serial", "chardev:ser0"] if serial_port is not None else ["-serial", f"file:{serial}"]),
        "-qmp", f"unix:{qmp},server=on,wait=off",
        *(["-incoming", f"exec:cat {incoming}"] if incoming is not None else []),
    ]
    started = time.monotonic()
    with open(directory / "qemu.log", "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    vm = AgentVm(directory, process, qga, qmp, serial, port, fingerprint, old_key, serial_port=serial_port)
    while not qmp.exists() or not qga.exists():
        if process.poll() is not None or time.monotonic() - started > 30:
            stop_child(process)
            raise RuntimeError(f"QEMU did not start: {tail(directory / 'qemu.log')}")
        time.sleep(0.02)
    return vm


@contextmanager
def saved_vm() -> Iterator[SavedVm]:
    """Boot the VM once, wait for agent and sshd, and save that moment to a file (QEMU migration).

    Each test then resumes its own copy with `SavedVm.start()` (~1.5 s) instead of booting (~30 s).
    """
    if shutil.which("qemu-system-x86_64") is None:
        raise RuntimeError("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    image = ensure_image()
    directory = Path(tempfile.mkdtemp(prefix="rcv-agentvm-"))
    try:
        disk = overlay(image / "base.qcow2", directory / "session.qcow2")
        old_key = copy_old_key(image, directory)
        boot = directory / "boot"
        boot.mkdir()
        started = time.monotonic()
        vm = _launch(boot, disk, host_key_fingerprint(image), old_key)
        try:
            wait_ready(vm, deadline=started + BOOT_TIMEOUT)
            # Saved once the boot's jobs are done, so each copy resumes an idle guest, as on call.
            vm.shell("systemctl is-system-running --wait >/dev/null", timeout=max(started + BOOT_TIMEOUT
                                                                                  - time.monotonic(), 10))
            booted = time.monotonic()
            state = directory / "state"
            qmp = Qmp(vm.qmp_socket)
            try:
                qmp.execute("stop")
                qmp.execute("migrate", uri=f"exec:cat > {state}")
                while (status := qmp.execute("query-migrate").get("status")) != "completed":
                    if status == "failed":
                        raise RuntimeError(f"saving the VM failed: {qmp.execute('query-migrate')}")
                    time.sleep(0.05)
            finally:
                qmp.close()
        finally:
            stop_child(vm.process)
        yield SavedVm(directory, disk, state, vm.host_key_fingerprint, old_key, booted - started,
                      time.monotonic() - booted)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
